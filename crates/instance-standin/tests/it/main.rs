//! The instance stand-in end to end: the real hook boots a container of Debian's real cloud-init
//! and sshd from Scaleway-style user data, the tests log in over real SSH as plexburst will, and
//! the hook halts it without leaving anything behind.

mod boot;
mod harness;
mod hook;
mod tidy;
