//! Integration tests: every test runs the real `scaleway-emulator` binary on 127.0.0.1 (one
//! checks the in-process `spawn`), and one drives it with the official Scaleway Python SDK.

mod api;
mod faults;
mod harness;
mod hook;
mod iam;
mod lifecycle;
mod sdk;
mod state_file;
