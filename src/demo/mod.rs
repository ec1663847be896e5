//! The one-command local deployment (`guest-heartbeat-demo`): on loopback, in
//! a temp dir, with no root and no libvirt, it runs a guestAgent, two
//! guestServers, simulated guests (guest-sim, in-process) and a VIM stand-in,
//! walks through a scenario (heartbeats, a guest turning unhealthy, a guest
//! going silent, a vote rejected and one accepted) and prints a live
//! timeline. It exits after `--duration` seconds or on Ctrl-C and removes
//! everything it made.
//!
//! Threads: the main thread runs the scenario; "timeline" prints notes;
//! "vim" serves the VIM stand-in; one forwarder per sim and per daemon log.

mod http;
mod procs;
mod scenario;
mod timeline;
mod vim;

use thiserror::Error;

pub use scenario::{run, Options};
pub use timeline::Outcome;

/// Something the timeline prints.
#[derive(Debug, Clone)]
pub enum Note {
    /// A scenario step.
    Step(String),
    /// A line from a daemon's log.
    Log { who: String, text: String },
    /// What a simulated guest saw or did.
    Guest { label: String, text: String },
    /// An event the VIM stand-in received.
    Vim { uuid: String, text: String },
    /// A call the VIM made to guestAgent and its answer.
    VimCall(String),
    /// The end: the printer returns (other threads may still hold senders).
    Done,
}

/// Why the demo could not run.
#[derive(Debug, Error)]
pub enum DemoError {
    #[error("cannot start {0}")]
    Spawn(String, #[source] std::io::Error),
    #[error("{0} not found: build it with `cargo build --release --bins`")]
    Missing(String),
    #[error("cannot prepare {0}")]
    Setup(String, #[source] std::io::Error),
    #[error("guest simulator")]
    Sim(#[from] crate::sim::SimError),
    #[error("guestAgent's API did not come up on {0}")]
    AgentDown(std::net::SocketAddr),
}
