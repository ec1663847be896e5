//! guest-bench: measures guestServer (CPU per second and per heartbeat
//! round, memory, threads, context switches, loss-detection latency,
//! challenge jitter) with the guest simulator and a UDP sink standing in
//! for guestAgent. Everything runs on the bench's main thread except the
//! sink's receive thread and the sim-event drain thread (see `case`).

pub mod agent;
pub mod case;
pub mod machine;
pub mod procstat;
pub mod report;
pub mod server;
pub mod sink;
pub mod stats;

use thiserror::Error;

/// Why a bench run failed.
#[derive(Debug, Error)]
pub enum BenchError {
    #[error("{0}")]
    Io(String, #[source] std::io::Error),
    #[error("cannot read /proc/{0}/{1}")]
    Proc(u32, String),
    #[error("{0}")]
    Other(String),
}
