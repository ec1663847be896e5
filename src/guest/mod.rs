//! The guest-client domain: the daemon that runs inside the VM (spec
//! guest-side.md). Pure state machines (`fsm`, `health`, `vote`, `apps`),
//! the two-stage config reader (`config`), the app API frame codec
//! (`api_wire`) and its Rust client library (`api`), the thin IO threads
//! (`channel`, `script`, `api_server`, `signals`) and the dispatcher that
//! owns all state (`dispatcher`).

pub mod api_wire;
pub mod apps;
pub mod config;
pub mod fsm;
pub mod health;
pub mod rng;
pub mod vote;
