//! plexburst binary.
fn main() {}
