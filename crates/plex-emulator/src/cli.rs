//! Command line: `serve`, `plextv`, `gen-library`, and the hidden `media-scanner` analysis child. New
//! subcommands are one more `Command` variant and one more `run` arm.

use clap::{Parser, Subcommand};

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
    Serve(crate::server::ServeArgs),
    /// Run an emulated plex.tv: PIN login, accounts, claim tokens and their exchange.
    Plextv(crate::plextv::PlexTvArgs),
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

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(a) => crate::server::serve(a.into()),
        Command::Plextv(a) => crate::plextv::serve(a.into()),
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
