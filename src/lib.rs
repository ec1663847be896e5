//! guest-heartbeat: the domain crate. Wire types (`wire`), the guestServer
//! domain (`server`), the guest-client domain (`guest`), the guest simulator
//! (`sim`), process plumbing (`daemon`), and the binaries under `src/bin/`.

pub mod bench;
pub mod daemon;
pub mod guest;
pub mod ini;
pub mod rng;
pub mod server;
pub mod sim;
pub mod wire;
