//! The guestServer domain: per-instance state machines (`instance`, `vote`),
//! the dispatcher that owns them (`dispatcher`, `slots`, `agent_link`,
//! `status`), settings, discovery, metrics and the restart state file.

pub mod agent_link;
pub mod config;
pub mod discovery;
pub mod dispatcher;
pub mod instance;
pub mod metrics;
pub mod retransmit;
pub mod slots;
pub mod statefile;
pub mod status;
pub mod vote;
