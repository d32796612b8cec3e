//! Integration tests: every test runs the real `plex-emulator` binary on 127.0.0.1 with temp
//! dirs and a generated library.

mod analysis;
mod api;
mod faults;
mod genlib;
mod harness;
mod image;
mod lifecycle;
mod plexapi_library;
mod plextv;
mod prefs;
mod scan;
mod schema;
