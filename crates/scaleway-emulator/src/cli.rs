//! Command line: `serve`. New subcommands are one more `Command` variant and one more `run` arm.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "scaleway-emulator",
    version,
    about = "A stateful emulator of the Scaleway Instance, Block, Marketplace and IAM APIs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the APIs until SIGTERM/SIGINT.
    Serve(crate::server::ServeArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(a) => crate::server::serve(a.into()),
    }
}
