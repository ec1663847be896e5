//! guest-client binary (being written).
fn main() {}
