//! guestServer binary (placeholder until the dispatcher lands).
fn main() {}
