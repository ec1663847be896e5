//! The guestServer domain: per-instance state machines, the dispatcher that
//! owns them, discovery, the agent link, the state file and the status API.

pub mod instance;
pub mod vote;
