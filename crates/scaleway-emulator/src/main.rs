//! scaleway-emulator binary: parse, run, map errors to exit code 1.
fn main() {
    let cli = <scaleway_emulator::cli::Cli as clap::Parser>::parse();
    if let Err(e) = scaleway_emulator::cli::run(cli) {
        eprintln!("scaleway-emulator: {e:#}");
        std::process::exit(1);
    }
}
