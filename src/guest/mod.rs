//! The guest-client domain: the daemon that runs inside the VM (spec
//! guest-side.md). Pure state machines (`fsm`, `health`, `vote`, `apps`),
//! the two-stage config reader (`config`), the app API frame codec
//! (`api_wire`) and its Rust client library (`api`), the thin IO threads
//! (`channel`, `script`, `api_server`, `signals`) and the dispatcher that
//! owns all state (`dispatcher`).

pub mod api;
pub mod api_server;
pub mod api_wire;
pub mod apps;
pub mod channel;
pub mod config;
pub mod dispatcher;
mod dispatcher_action;
pub mod events;
pub mod fsm;
pub mod health;
pub mod script;
pub mod vote;
