//! guest-heartbeat: the domain crate (wire types, state machines, dispatchers).
