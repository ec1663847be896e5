//! guest-heartbeat: the domain crate. Wire types (`wire`), the guestServer
//! domain (`server`), the guestAgent domain (`agent`), the guest-client
//! domain (`guest`), the guest simulator (`sim`), process plumbing
//! (`daemon`, `ini`, `keyfile`), and the binaries under `src/bin/`.

pub mod agent;
pub mod bench;
pub mod daemon;
pub mod demo;
pub mod guest;
pub mod ini;
pub mod keyfile;
pub mod rng;
pub mod server;
pub mod sim;
pub mod wire;
