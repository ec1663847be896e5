//! guest-heartbeat: the domain crate. Wire types (`wire`), the guest-client
//! domain (`guest`), the guest simulator (`sim`), and the binaries under
//! `src/bin/`.

pub mod guest;
pub mod wire;
