//! Thin, named, generic I/O threads for guest-heartbeat.
//!
//! Every thread here does blocking I/O, decodes what it reads into a typed
//! message, maps it into the caller's event type `E` and sends it on a
//! crossbeam channel. None of them makes a domain decision. The pure helpers
//! (`framer`, `wheel`, `ratelimit`) run on whichever thread owns them.
