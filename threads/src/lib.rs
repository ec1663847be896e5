//! Thin, named, generic I/O threads for guest-heartbeat.
//!
//! Every thread here does blocking I/O, decodes what it reads into a typed
//! message, maps it into the caller's event type `E` and sends it on a
//! crossbeam channel. None of them makes a domain decision. The pure helpers
//! (`framer`, `wheel`, `ratelimit`) run on whichever thread owns them, which
//! in practice is the dispatcher or a reader.
//!
//! Channels: the caller chooses whether its event channel is bounded. Per-socket
//! readers are meant to send into a bounded channel, so a flooding guest is
//! throttled by a blocking send rather than by unbounded memory. The only
//! channel this crate creates that is unbounded is the timer's request channel,
//! because the dispatcher must never block when it asks for a wake-up.
//!
//! Handles: every `spawn_*` returns a handle whose drop stops the thread and
//! joins it (except `ReaderHandle`, which detaches; see `reader`). Dropping a
//! joining handle on the thread that drains the event channel can deadlock if
//! that channel is bounded and full, so drop handles after the event receiver
//! is gone or from `main` once the dispatcher has returned.

pub mod framer;
pub mod guard;
pub mod http;
mod http_gate;
pub mod http_head;
pub mod ratelimit;
pub mod reader;
pub mod signals;
#[cfg(test)]
mod testutil;
pub mod timer;
pub mod udp;
pub mod watcher;
pub mod wheel;

/// Where to connect to reach a socket bound to `local` (to wake a thread
/// blocked on it): the same address, with an unspecified IP replaced by the
/// loopback of the same family. Used by `udp` and `http_gate`.
pub(crate) fn wake_addr(local: std::net::SocketAddr) -> std::net::SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    std::net::SocketAddr::new(ip, local.port())
}

/// Re-exported so that the domain crate builds its handlers against the very
/// same rouille version as the server thread.
pub use rouille;
