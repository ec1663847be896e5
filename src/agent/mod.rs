//! guestAgent: the controller-side broker between the NFV VIM, the
//! guestServers on the workers and mtcAgent (spec `agent.md`).
//!
//! Threads: one dispatcher owns all state (`dispatcher`, `state`); thin
//! threads feed it events: the HTTP server (`api`), one UDP receiver per
//! guestServer listen address and one for mtcAgent, the timer, the signal
//! thread and two VIM sender threads (`vim_sender`). See docs/AGENT.md for the
//! code map and the invariants.

pub mod api;
pub mod audit;
pub mod config;
pub mod dedup;
pub mod dispatcher;
pub mod events;
pub mod inventory;
pub mod link;
pub mod metrics;
pub mod mtc;
pub mod outbox;
pub mod persist;
pub mod run;
pub mod state;
pub mod url;
pub mod vim_client;
pub mod vim_sender;

#[cfg(test)]
mod prop_tests;
