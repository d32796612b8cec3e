//! plex-emulator binary: parse, run, map errors to exit code 1.
fn main() {
    let cli = <plex_emulator::cli::Cli as clap::Parser>::parse();
    if let Err(e) = plex_emulator::cli::run(cli) {
        eprintln!("plex-emulator: {e:#}");
        std::process::exit(1);
    }
}
