//! plex-emulator binary.
fn main() {}
