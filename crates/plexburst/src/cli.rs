//! Command-line definitions (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Run Plex's full scan and Sonic analysis of a library on a short-lived machine, export the data
/// folder as a verified archive, and leave nothing running.
#[derive(Debug, Parser)]
#[command(name = "plexburst", version, about, long_about = None)]
pub struct Cli {
    /// The config file.
    #[arg(
        long,
        global = true,
        default_value = "plexburst.toml",
        value_name = "FILE"
    )]
    pub config: PathBuf,
    /// Where run state and reports live (default: .plexburst/ beside the config).
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// More log output (-v debug, -vv trace). PLEXBURST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented example plexburst.toml.
    Init {
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Validate the config and print everything the run will do (no side effects).
    Plan {
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        /// Do not touch the target or the bucket: skip the read-only preflight of the section
        /// folders and the library's size (so no analysis forecast).
        #[arg(long)]
        offline: bool,
        /// The `run` flags to plan for.
        #[command(flatten)]
        run: RunArgs,
    },
    /// Run the whole job: prepare, preflight, start Plex, configure, scan, analyze, restore, export, teardown.
    Run(RunArgs),
    /// Show the state of the current (or last) run.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Refresh until the run ends.
        #[arg(long)]
        watch: bool,
    },
    /// Sign in to your Plex account (plex.tv's PIN link flow) and store the account token (0600),
    /// so runs fetch a fresh claim token right before Plex starts.
    Login,
    /// The sizing profiles with live Scaleway prices, stock and end-of-service flags; with a
    /// config, the Sonic analysis time and cost of its library on each.
    Profiles {
        /// The zone (default: the Scaleway credentials' default zone).
        #[arg(long)]
        zone: Option<String>,
    },
    /// Bring an exported archive home: verify it against its manifest, stop the home Plex, back
    /// up its databases, Metadata/, Media/ and Preferences.xml, install the archive's, keep the
    /// home's identity, start it and check the counts it serves (rolled back when they differ).
    /// Reads no config.
    Apply(ApplyArgs),
    /// Continue an interrupted or failed run from its state file.
    Resume {
        /// Export even if Plex's trash grew during the run (see `export.allow_deleted`).
        #[arg(long)]
        allow_deleted: bool,
        /// Resume with the plan the config yields now, even where it differs from the stored one.
        #[arg(long)]
        replan: bool,
    },
    /// Stop everything a run left behind (Plex, mounts), put back the Plex settings it changed,
    /// remove its files from the target (but what stays on purpose), and close its state.
    Destroy {
        /// Also find every resource tagged `plexburst` at Scaleway (servers and their volumes, IPs,
        /// the deadlines' IAM objects), whatever run made it, list them and delete them.
        #[arg(long)]
        sweep: bool,
        /// The zones to sweep (repeatable; default: the config's zones, else the credentials').
        #[arg(long = "zone", value_name = "ZONE")]
        zones: Vec<String>,
        /// Delete what the sweep lists without asking.
        #[arg(long)]
        yes: bool,
    },
    /// Print the last lines of the Plex server's log on the target.
    Logs {
        /// How many lines.
        #[arg(short = 'n', long, default_value_t = 100)]
        lines: usize,
    },
    /// Run a command on the target (or print how to open a shell there).
    Ssh {
        /// The command to run; empty prints the ssh command line for an interactive shell.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
}

#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// Only this section (repeatable); the others in the config are left alone.
    #[arg(long = "only-section", value_name = "NAME")]
    pub only_section: Vec<String>,
    /// Skip the analysis phase (no Plex Pass needed).
    #[arg(long)]
    pub skip_analysis: bool,
    /// Force a full metadata refresh in the scan (force=1) even when the config says scan_force = false.
    #[arg(long)]
    pub deep_scan: bool,
    /// Leave Plex running at the end (stop it later with `plexburst destroy`).
    #[arg(long)]
    pub keep: bool,
    /// Keep the rclone mount's VFS cache on the target at the end (e.g. for a run the next day);
    /// by default teardown and destroy remove it.
    #[arg(long)]
    pub keep_cache: bool,
    /// Export even if Plex's trash (items marked deleted) grew during the run; by default the
    /// export refuses, because a scan on a degraded mount trashes what it cannot read.
    #[arg(long)]
    pub allow_deleted: bool,
    /// Exit 1 when the run ends "done with warnings" (a section with no items, or far fewer
    /// items than media files), instead of 0.
    #[arg(long)]
    pub strict: bool,
    /// Copy the target's logs (Plex, rclone, cloud-init) into runs/<id>/target-logs/ on success
    /// too; a failed or interrupted run always keeps them.
    #[arg(long)]
    pub keep_logs: bool,
    /// Start from your home server's library: a plexburst archive (`.tar.zst`) or a
    /// `com.plexapp.plugins.library.db`, on this machine (a path), on the target
    /// (`target:/path`) or in the bucket (`bucket:bucket/key`). The scan is then incremental
    /// (force=0) unless --deep-scan, and only what is not analysed yet is analysed.
    #[arg(long, value_name = "ARCHIVE|DB")]
    pub seed: Option<String>,
    /// Scan a seeded library even when more of its sampled paths are missing on the storage than
    /// `seed.missing_limit` (folders really gone or moved; check `[remap]` first).
    #[arg(long)]
    pub allow_missing: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// The archive the export wrote (`<run id>.tar.zst`); its manifest is read from beside it.
    #[arg(value_name = "ARCHIVE")]
    pub archive: Option<PathBuf>,
    /// The home data dir (the folder holding `Library/`): PATH, or ssh://user@host[:port]/PATH.
    #[arg(long, value_name = "PATH|ssh://user@host[:port]/PATH")]
    pub to: String,
    /// How to stop and start the home Plex: systemd:NAME, docker:NAME, or command:'CMD' (run as
    /// `CMD stop` and `CMD start`).
    #[arg(long, value_name = "KIND:NAME")]
    pub service: Option<String>,
    /// The manifest (default: `<run id>.manifest.json` beside the archive).
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,
    /// Take the archive's server identity (MachineIdentifier, PlexOnlineToken, ...) instead of
    /// keeping the home's.
    #[arg(long)]
    pub take_identity: bool,
    /// Print every step and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Restore the last backup (finishing or undoing an interrupted apply, or undoing the last one).
    #[arg(long)]
    pub rollback: bool,
    /// The home Plex's port on the home host's loopback.
    #[arg(long, default_value_t = 32400)]
    pub plex_port: u16,
    /// How long to wait for the home Plex to answer after it is started.
    #[arg(long, default_value = "5m", value_parser = crate::units::parse_duration)]
    pub timeout: std::time::Duration,
    /// The ssh key for an ssh:// home.
    #[arg(long, value_name = "FILE")]
    pub ssh_identity: Option<PathBuf>,
    /// An extra ssh `-o` option for an ssh:// home (repeatable), e.g. UserKnownHostsFile=PATH.
    #[arg(long = "ssh-option", value_name = "KEY=VALUE")]
    pub ssh_options: Vec<String>,
}
