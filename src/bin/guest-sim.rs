//! guest-sim binary (being written).
fn main() {}
