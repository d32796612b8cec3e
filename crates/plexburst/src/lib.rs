//! plexburst: run Plex's full scan and Sonic analysis of a big library on a short-lived machine.

pub mod app;
pub mod apply;
pub mod archive;
pub mod cli;
pub mod cloud;
pub mod config;
pub mod error;
pub mod export;
pub mod host;
pub mod logging;
pub mod monitor;
pub mod pipeline;
pub mod plan;
pub mod plex;
pub mod plextv;
pub mod progress;
pub mod remote;
pub mod report;
pub mod runtime;
pub mod seed;
pub mod session;
pub mod state;
pub mod storage;
pub mod survey;
pub mod units;
