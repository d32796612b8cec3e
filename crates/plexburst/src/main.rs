//! plexburst binary: parse the command line, run it, map the outcome to an exit code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = plexburst::cli::Cli::parse();
    plexburst::app::init_logging(cli.verbose);
    match plexburst::app::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(plexburst::app::exit_code(&e))
        }
    }
}
