//! plexburst: run Plex's full scan and Sonic analysis of a big library on a short-lived machine.

pub mod plex;
pub mod remote;
