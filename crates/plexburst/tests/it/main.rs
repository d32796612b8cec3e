//! Integration tests: one binary, one module per topic; `harness` holds the shared setup.

mod config_table;
mod harness;

mod rclone;
mod remote;
mod sshd;
