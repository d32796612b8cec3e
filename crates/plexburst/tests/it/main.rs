//! Integration tests: one binary, one module per topic; `harness` holds the shared setup.

mod apply;
mod audit;
mod bad_input;
mod claim;
mod cli;
mod config_table;
mod e2e;
mod export_gate;
mod harness;
mod layers;
mod leftovers;
mod matrix;
mod picture;

mod plex_api;
mod preflight;
mod rclone;
mod remote;
mod scaleway;
mod seed;
mod sshd;
mod terminal;
