//! Wire formats, and nothing else: the guest channel protocol (`guest`), the
//! 1060-byte UDP envelope shared with guestAgent and mtcAgent (`envelope`),
//! the JSON payloads carried inside it (`payload`), the JSON bodies
//! exchanged with the NFV VIM over HTTP (`vim`), and the optional HMAC tag
//! on the envelope (`auth`).
//!
//! Pure code; it runs on whichever thread decodes or encodes (reader threads
//! decode guest lines, the UDP thread decodes datagrams, dispatchers encode).
//! Only this module knows about JSON shapes (house rule 12).

pub mod auth;
pub mod envelope;
pub mod guest;
pub mod payload;
pub mod vim;
pub mod vocab;

#[cfg(test)]
mod prop_tests;
