//! guest-heartbeat: the domain crate. Wire types (`wire`), the guestServer
//! domain (`server`), the guestAgent domain (`agent`), and the binaries under
//! `src/bin/`.

pub mod agent;
pub mod daemon;
pub mod ini;
pub mod rng;
pub mod server;
pub mod wire;
