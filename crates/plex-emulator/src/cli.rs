//! Command line: `serve`, `gen-library`, and the hidden `media-scanner` analysis child. New
//! subcommands are one more `Command` variant and one more `run` arm.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::faults::{Fault, parse_duration};

#[derive(Debug, Parser)]
#[command(
    name = "plex-emulator",
    version,
    about = "A Plex Media Server emulator for tests and demos"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Write a media tree and print its counts as JSON.
    GenLibrary(crate::genlib::GenArgs),
    /// The analysis child (started by the server with argv[0] "Plex Media Scanner").
    #[command(hide = true)]
    MediaScanner(crate::scanner::ScannerArgs),
    /// The Docker image's entrypoint: pms-docker's env contract, then serve on 0.0.0.0:32400.
    Container(crate::container::ContainerArgs),
    /// Exit 0 when GET /identity answers 200 (the image's HEALTHCHECK).
    Healthcheck(crate::container::HealthcheckArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Plays pms-docker's /config.
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:32400")]
    pub listen: SocketAddr,
    /// Claim token; read from PLEX_CLAIM when the flag is absent.
    #[arg(long, env = "PLEX_CLAIM", hide_env_values = true)]
    pub claim: Option<String>,
    /// Delay between start and PlexOnlineToken appearing in Preferences.xml.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub claim_delay: Duration,
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub plex_pass: bool,
    /// Files per second (default: as fast as possible).
    #[arg(long)]
    pub scan_rate: Option<f64>,
    /// Tracks per second for Sonic/loudness (default: as fast as possible).
    #[arg(long)]
    pub analysis_rate: Option<f64>,
    /// Photos per second for thumbnails (default: as fast as possible).
    #[arg(long)]
    pub thumb_rate: Option<f64>,
    /// Section calls answer "server is still starting up" for this long.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub startup_delay: Duration,
    /// KIND[:PHASE][:ARG], repeatable: crash:scan:N, stall:analysis:N, slow-api:500ms, refuse:3s, starting:2s.
    #[arg(long = "fault")]
    pub faults: Vec<Fault>,
    /// CPU time burnt per analysed item by the Plex Media Scanner child, on top of hashing the file.
    #[arg(long, default_value = "5ms", value_parser = parse_duration)]
    pub analysis_cost: Duration,
    /// Every file under this path lists but cannot be read (simulates a degraded mount). Repeatable.
    #[arg(long)]
    pub unreadable: Vec<PathBuf>,
}

impl From<ServeArgs> for crate::ServeOptions {
    fn from(a: ServeArgs) -> Self {
        crate::ServeOptions {
            data_dir: a.data_dir,
            listen: a.listen,
            claim: a.claim,
            claim_delay: a.claim_delay,
            plex_pass: a.plex_pass,
            scan_rate: a.scan_rate,
            analysis_rate: a.analysis_rate,
            thumb_rate: a.thumb_rate,
            startup_delay: a.startup_delay,
            faults: a.faults,
            analysis_cost: a.analysis_cost,
            unreadable: a.unreadable,
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(a) => crate::serve(a.into()),
        Command::GenLibrary(a) => {
            let counts = crate::genlib::generate(&a)?;
            println!("{}", serde_json::to_string(&counts)?);
            Ok(())
        }
        // One child binary, two modes: the scan's file probes or an analysis task's hashing.
        Command::MediaScanner(a) if a.scan => crate::scan::probe_main(&a.unreadable),
        Command::MediaScanner(a) => crate::analysis::scanner_main(&a),
        Command::Container(a) => crate::container::main(a),
        Command::Healthcheck(a) => crate::container::healthcheck(a.addr, a.timeout),
    }
}
