//! plex-emulator binary: parse, run, map errors to exit code 1.
fn main() {
    // Started as pms-docker's `Plex Media Server` (the image entrypoint), argv means `container`.
    let cli =
        <plex_emulator::cli::Cli as clap::Parser>::parse_from(plex_emulator::container::argv());
    if let Err(e) = plex_emulator::cli::run(cli) {
        eprintln!("plex-emulator: {e:#}");
        std::process::exit(1);
    }
}
