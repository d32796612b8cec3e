//! The `Plex Media Scanner` child: the arguments of the hidden `media-scanner` subcommand and how
//! the server re-execs itself under that name. Scans (file probes) and analysis (hashing) both run
//! in it, so it sits below both and imports nothing from the crate; `cli` sends the child to
//! `scan::probe_main` or `analysis::scanner_main` by mode.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};

/// Arguments of the hidden `media-scanner` subcommand: analysis mode by default, scan mode with
/// `--scan`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScannerArgs {
    /// Analysis task name (see `Task::name`).
    #[arg(long)]
    pub task: Option<String>,
    /// Scan mode: read NUL-separated paths, answer one probe line per path (see `scan::probe_main`).
    #[arg(long)]
    pub scan: bool,
    #[arg(long)]
    pub section: Option<i64>,
    /// Scan mode: paths whose files must read as unreadable (the `--unreadable` knob).
    #[arg(long)]
    pub unreadable: Vec<PathBuf>,
    /// CPU burnt per item on top of hashing the file.
    #[arg(long, default_value_t = 5)]
    pub cost_ms: u64,
    /// Items per second at most, over all workers.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Analysis mode: how many items are analysed at once, each on its own thread
    /// (`LongRunningJobThreads`, plex.md §3).
    #[arg(long, default_value_t = 1)]
    pub threads: u32,
    /// Stop working (no CPU, no output) after this many items, until the parent goes away.
    #[arg(long)]
    pub stall_after: Option<u64>,
    #[arg(long)]
    pub server_action: Option<String>,
}

/// Re-exec ourselves as a child whose argv[0] is `Plex Media Scanner`, so process monitors match
/// it as they match the real binary (plex.md §5). Pipes on stdin and stdout.
#[allow(clippy::disallowed_methods)] // The emulator's one spawn point; not product code.
pub fn spawn(args: &[String]) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let child = std::process::Command::new(exe)
        .arg0("Plex Media Scanner")
        .arg("media-scanner")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    Ok(child)
}
