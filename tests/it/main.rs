//! Integration tests: one binary, one module per area (house rule 15).

mod agent_api;
mod agent_fakes;
mod agent_link;
mod agent_support;
mod agent_vim;
