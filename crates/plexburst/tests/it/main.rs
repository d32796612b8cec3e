//! Integration tests.

mod remote;
mod sshd;
