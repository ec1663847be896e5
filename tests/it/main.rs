//! Integration tests, compiled as one binary (house rule 15c): each module
//! runs a real program (`CARGO_BIN_EXE_*`) in its own temporary directory.
//! unwrap is fine in tests (house rule 10), helpers included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;
mod util;

mod agent_api;
mod agent_fakes;
mod agent_link;
mod agent_support;
mod agent_vim;
mod bench_smoke;
mod client_server;
mod demo;
mod guest_client;
mod guest_sim;
mod rel_ack;
mod rel_agent_faults;
mod rel_faults;
mod rel_hmac;
mod rel_hostile;
mod rel_http;
mod rel_persist;
mod rel_support;
mod server_process;
mod server_protocol;
mod server_scale;
