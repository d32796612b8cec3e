//! plexburst.toml: schema, defaults, and validation with errors that name the field and the fix.
//!
//! The file is read into loosely typed "raw" structs (durations and enums as strings) so that one
//! pass can report *every* problem at once; `Config::load` then returns either a fully checked
//! `Config` or a `ConfigError` listing each `field: problem; fix`. The checks, one function per
//! table, are in `validate.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub(crate) mod storage;

pub use crate::plex::SectionType;
pub use crate::units::{format_duration, parse_duration};
pub use storage::{MtimeMode, RcloneConfig, StorageConfig, Tuning};

mod validate;

/// Where Plex keeps its library DB, relative to the data dir (pms-docker's `/config`).
pub const DB_RELATIVE: &str = "Library/Application Support/Plex Media Server/Plug-in Support/Databases/com.plexapp.plugins.library.db";
/// Preferences.xml, relative to the data dir.
pub const PREFS_RELATIVE: &str = "Library/Application Support/Plex Media Server/Preferences.xml";

/// Every problem found in a config file. The caller maps it to exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.iter().map(|p| format!("config: {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    fn one(p: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![p.into()],
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw (as written) form.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    target: RawTarget,
    storage: Option<StorageConfig>,
    plex: Option<RawPlex>,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    monitor: RawMonitor,
    export: Option<RawExport>,
    #[serde(default)]
    sections: Vec<RawSection>,
    /// Old path prefix -> new one, applied to a seeded DB's media paths.
    #[serde(default)]
    remap: BTreeMap<String, String>,
    #[serde(default)]
    seed: RawSeed,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeed {
    sample: Option<i64>,
    missing_limit: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    #[serde(default = "default_target_kind")]
    kind: String,
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    identity: Option<String>,
    #[serde(default)]
    ssh_options: Vec<String>,
    work_dir: Option<String>,
    profile: Option<String>,
    // kind = "scaleway"
    zone: Option<String>,
    #[serde(default)]
    zones: Vec<String>,
    #[serde(rename = "type")]
    commercial_type: Option<String>,
    #[serde(default)]
    fallback_types: Vec<String>,
    image: Option<String>,
    root_volume_gb: Option<u64>,
    root_volume_type: Option<String>,
    ssh_port: Option<u16>,
    max_lifetime: Option<String>,
    boot_timeout: Option<String>,
    budget_eur: Option<f64>,
    max_runtime: Option<String>,
    #[serde(default)]
    allow_weak_deadline: bool,
}

impl Default for RawTarget {
    fn default() -> Self {
        RawTarget {
            kind: default_target_kind(),
            host: None,
            port: None,
            user: None,
            identity: None,
            ssh_options: Vec::new(),
            work_dir: None,
            profile: None,
            zone: None,
            zones: Vec::new(),
            commercial_type: None,
            fallback_types: Vec::new(),
            image: None,
            root_volume_gb: None,
            root_volume_type: None,
            ssh_port: None,
            max_lifetime: None,
            boot_timeout: None,
            budget_eur: None,
            max_runtime: None,
            allow_weak_deadline: false,
        }
    }
}

fn default_target_kind() -> String {
    "local".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlex {
    #[serde(default = "default_runtime")]
    runtime: String,
    data_dir: Option<String>,
    port: Option<u16>,
    command: Option<String>,
    image: Option<String>,
    container_name: Option<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    docker_args: Vec<String>,
    scan_force: Option<bool>,
    sqlite: Option<String>,
    startup_timeout: Option<String>,
    stop_grace: Option<String>,
    plextv_url: Option<String>,
    analysis_threads: Option<i64>,
    sonic_cpu_seconds_per_track: Option<f64>,
}

fn default_runtime() -> String {
    "docker".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    scan: Option<String>,
    analysis: Option<String>,
    photo: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMonitor {
    poll_interval: Option<String>,
    stall_window: Option<String>,
    stable_samples: Option<i64>,
    max_failed_samples: Option<i64>,
    log_interval: Option<String>,
    scan_gap: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExport {
    destination: Option<String>,
    allow_deleted: Option<bool>,
    staged: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSection {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    paths: Vec<String>,
    agent: Option<String>,
    scanner: Option<String>,
    language: Option<String>,
    timeout: Option<String>,
    extensions: Option<Vec<String>>,
}

// ---------------------------------------------------------------------------------------------
// Checked form.

#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub target: Target,
    pub storage: StorageConfig,
    pub plex: PlexConfig,
    pub timeouts: Timeouts,
    pub monitor: MonitorConfig,
    pub export: ExportConfig,
    pub sections: Vec<SectionConfig>,
    /// `[remap]`: (old prefix, new prefix), longest old prefix first.
    pub remap: Vec<(String, String)>,
    pub seed: SeedConfig,
}

/// `[seed]`: how a seeded run checks the DB's paths against the storage before scanning.
#[derive(Debug, Clone, Serialize)]
pub struct SeedConfig {
    /// How many of the DB's file paths are looked up on the storage.
    pub sample: u32,
    /// Share of the sample that may be missing before the run stops (a wrong `[remap]`).
    pub missing_limit: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TargetKind {
    Local,
    Ssh {
        host: String,
        port: u16,
        user: String,
        identity: Option<String>,
        ssh_options: Vec<String>,
    },
    /// A Scaleway instance rented for the run (scaleway.md).
    Scaleway(ScalewayConfig),
}

#[derive(Debug, Clone, Serialize)]
pub struct ScalewayConfig {
    /// Zones to try in order; empty: the credentials' default zone.
    pub zones: Vec<String>,
    /// The commercial type; `None`: the profile's.
    pub commercial_type: Option<String>,
    /// Types to try, in order, when the first is out of stock.
    pub fallback_types: Vec<String>,
    /// Marketplace image label.
    pub image: String,
    /// `None`: the profile's size.
    pub root_volume_gb: Option<u64>,
    /// `l_ssd` (local, dies with the server) or `sbs_volume`.
    pub root_volume_type: String,
    pub ssh_port: u16,
    #[serde(with = "secs")]
    pub max_lifetime: Duration,
    #[serde(with = "secs")]
    pub boot_timeout: Duration,
    /// Stop the work (export what exists, tear down) once the instance has cost this much.
    pub budget_eur: Option<f64>,
    /// The same once the instance has run this long.
    pub max_runtime: Option<Duration>,
    /// Accept an in-guest shutdown as the deadline when the key may not make the IAM key the
    /// instance would delete itself with.
    pub allow_weak_deadline: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    #[serde(flatten)]
    pub kind: TargetKind,
    /// plexburst's own directory on the target (pid file, server log, rclone files).
    pub work_dir: String,
    /// Sizing profile handed to the storage (lite/standard/power/superpower).
    pub profile: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "runtime", rename_all = "lowercase")]
pub enum RuntimeConfig {
    Docker {
        image: String,
        container_name: String,
        docker_args: Vec<String>,
    },
    Command {
        command: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct PlexConfig {
    #[serde(flatten)]
    pub runtime: RuntimeConfig,
    pub data_dir: String,
    pub port: u16,
    pub env: BTreeMap<String, String>,
    /// `None`: force=1, but force=0 on a seeded run (`--deep-scan` forces it).
    pub scan_force: Option<bool>,
    /// The SQLite shell that writes to the DB for runtime = "command" (a real Plex DB needs
    /// Plex's own build: ICU collations and FTS tokenizers); docker uses the image's `Plex SQLite`.
    pub sqlite: String,
    #[serde(with = "secs")]
    pub startup_timeout: Duration,
    #[serde(with = "secs")]
    pub stop_grace: Duration,
    /// Where plex.tv is (the account, the claim token); tests point it at an emulator.
    pub plextv_url: String,
    /// `LongRunningJobThreads` during analysis; `None`: the target's vCPU count.
    pub analysis_threads: Option<u32>,
    /// CPU seconds one track's Sonic analysis costs, for the forecast; `None`: the unmeasured
    /// default (`plan::forecast::DEFAULT_CPU_SECONDS_PER_TRACK`).
    pub sonic_cpu_seconds_per_track: Option<f64>,
}

impl PlexConfig {
    pub fn db_path(&self) -> String {
        format!("{}/{}", self.data_dir.trim_end_matches('/'), DB_RELATIVE)
    }
    pub fn prefs_path(&self) -> String {
        format!("{}/{}", self.data_dir.trim_end_matches('/'), PREFS_RELATIVE)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Timeouts {
    #[serde(with = "secs")]
    pub scan: Duration,
    #[serde(with = "secs")]
    pub analysis: Duration,
    #[serde(with = "secs")]
    pub photo: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct MonitorConfig {
    #[serde(with = "secs")]
    pub poll_interval: Duration,
    #[serde(with = "secs")]
    pub stall_window: Duration,
    pub stable_samples: u32,
    pub max_failed_samples: u32,
    #[serde(with = "secs")]
    pub log_interval: Duration,
    /// A section whose scan created fewer items than this share of its media files short of
    /// the count ends the run "done with warnings" (0.1: more than 10 % missing).
    pub scan_gap: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExportConfig {
    /// A directory on the target where the archive and its manifest are written.
    pub destination: String,
    /// Export even if Plex's trash grew during the run (default false: a degraded mount makes
    /// Plex trash what it cannot read, and that damaged library must not be shipped).
    pub allow_deleted: bool,
    /// rclone storage with `export_path`: archive on the target first, then `rclone copyto` with
    /// retries, instead of streaming `tar | zstd | rclone rcat` (a stream cannot be retried).
    pub staged: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SectionConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SectionType,
    pub paths: Vec<String>,
    pub agent: String,
    pub scanner: String,
    pub language: String,
    /// Analysis timeout for this section (defaults: photo -> timeouts.photo, else timeouts.analysis).
    #[serde(with = "secs")]
    pub timeout: Duration,
    /// The file extensions (lower case, no dot) counted as this section's media by the preflight.
    pub extensions: Vec<String>,
}

/// Durations serialize as whole seconds in JSON (plan, state, report).
mod secs {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

impl Config {
    /// Read and validate `path`. A missing file is a `ConfigError` that says how to create one.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::one(format!(
                "cannot read {}: {e}; create one with `plexburst init` or pass --config FILE",
                path.display()
            ))
        })?;
        Config::parse(&text)
    }

    /// Parse and validate TOML text, collecting every problem.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let msg = e.message().to_string();
            let start = e.span().map(|s| s.start.min(text.len()));
            let loc = start
                .map(|at| format!(" (line {})", text[..at].matches('\n').count() + 1))
                .unwrap_or_default();
            let field = start
                .and_then(|at| field_at(text, at))
                .map(|f| format!("{f}: "))
                .unwrap_or_default();
            ConfigError::one(format!(
                "{field}{msg}{loc}; fix that key or value (`plexburst init` writes a commented example)"
            ))
        })?;
        validate::validate(raw)
    }
}

/// The field path (`plex.data_dir`, `sections[1].name`) of the key on the line holding byte
/// `at`, so a TOML error names the field as a validation error does.
fn field_at(text: &str, at: usize) -> Option<String> {
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("").trim();
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_string())
        .filter(|k| !k.is_empty() && !line.starts_with('['));
    let headers: Vec<&str> = text[..line_start]
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('['))
        .collect();
    let table = headers.last().map(|h| {
        if let Some(name) = h.strip_prefix("[[").and_then(|r| r.split_once("]]")) {
            let name = name.0.trim();
            let n = headers
                .iter()
                .filter(|o| {
                    o.strip_prefix("[[")
                        .and_then(|r| r.split_once("]]"))
                        .is_some_and(|(x, _)| x.trim() == name)
                })
                .count();
            format!("{name}[{}]", n - 1)
        } else {
            h.trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        }
    });
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, Some(k)) => Some(k),
        _ => None,
    }
}

/// The default state dir: `.plexburst/` beside the config file.
pub fn default_state_dir(config_path: &Path) -> PathBuf {
    let dir = config_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir.join(".plexburst")
}

/// The commented example `plexburst init` writes.
pub const EXAMPLE: &str = r#"# plexburst.toml — what to scan, where Plex runs, where the export goes.
# Durations are written like "500ms", "90s", "10m", "1h30m".

[target]
# Where Plex runs: "local" (this machine), "ssh" (an existing host) or "scaleway" (an instance
# rented for the run and deleted after it; credentials as the scw CLI reads them).
kind = "local"
# Sizing: lite (DEV1-S), standard (DEV1-M), power (GP1-S), superpower (GP1-M).
# profile = "standard"
# For kind = "scaleway" (needs storage.kind = "rclone" with export_path):
# zones = ["fr-par-1", "nl-ams-1"]   # tried in order (default: the scw config's zone)
# type = "GP1-S"                     # instead of the profile's
# fallback_types = ["GP1-M"]         # tried when the type is out of stock
# image = "debian_bookworm"
# root_volume_gb = 200
# max_lifetime = "96h"
# For kind = "ssh":
# host = "10.0.0.5"
# port = 22
# user = "root"
# identity = "/home/me/.ssh/id_ed25519"
# ssh_options = ["StrictHostKeyChecking=accept-new"]
# plexburst's own directory on the target (default: <plex.data_dir>/.plexburst).
# work_dir = "/var/lib/plexburst/work"

[storage]
# "path": the media is already on the target at this path.
kind = "path"
path = "/srv/media"
# "rclone": an S3 bucket mounted read-only with `rclone mount` (never copied). Replace the two
# lines above with, for example:
# kind = "rclone"
# endpoint = "https://s3.fr-par.scw.cloud"    # or: remote = "myremote" (a name in your rclone.conf)
# provider = "Scaleway"
# region = "fr-par"
# access_key_id = "SCWXXXXXXXXXXXXXXXXX"
# # The secret key is read from $PLEXBURST_S3_SECRET_ACCESS_KEY (or $AWS_SECRET_ACCESS_KEY), never
# # from this file; it reaches the target only in a 0600 rclone.conf.
# bucket = "my-media/library"
# mount_point = "/srv/media"                  # the same path Plex sees; sections live under it
# mtime = "server"                            # "server" (--use-server-modtime, fast) or "real":
# #                                             pick what your home server will use
# export_path = "my-media/plexburst-exports"  # upload the archive to the bucket
# [storage.tuning]                            # overrides of the target.profile defaults
# vfs_read_chunk_streams = 16
# upload_bwlimit = "80M"                      # cap the export upload (bytes/s); default: none

[plex]
# "docker" runs plexinc/pms-docker (media bound at the same path inside, port on 127.0.0.1 only);
# "command" runs any PMS-compatible server from a shell line (the emulator in tests and the demo).
runtime = "docker"
# image = "plexinc/pms-docker:latest"
# container_name = "plexburst-plex"
# For runtime = "command" ({data_dir} and {port} are substituted; $PLEX_CLAIM is in the environment):
# command = "plex-emulator serve --data-dir {data_dir} --listen 127.0.0.1:{port}"
# Plex's data folder on the target (the container's /config). The export archives it.
data_dir = "/var/lib/plexburst/plex"
# Plex listens on the target's 127.0.0.1 only.
port = 32400
# Extra environment (PLEX_UID/PLEX_GID default to 1000, TZ to UTC). Never put PLEX_CLAIM here:
# export it in the environment, plexburst passes it on without writing it anywhere.
# env = { TZ = "Europe/Paris" }
# One global scan with force=1 (a seeded run, `run --seed`, scans with force=0 unless this is
# true or --deep-scan is given).
# scan_force = true
# For runtime = "command": the SQLite shell that repairs and remaps a seeded DB. A real Plex DB
# needs Plex's own build (ICU collations): "/usr/lib/plexmediaserver/Plex SQLite".
# sqlite = "sqlite3"
# startup_timeout = "5m"
# stop_grace = "60s"
# Sonic analysis workers (Plex's hidden pref LongRunningJobThreads, whose default is half the
# cores) during the analyze phase; put back afterwards. Default: the target's vCPU count.
# analysis_threads = 8
# CPU seconds one track's Sonic analysis costs, for the time and cost forecast of `plan` and
# `plexburst profiles`. The default (20) is an unmeasured guess: no tracks/hour figure is
# published. Calibrate it with the "CPU seconds per track" a run's report.md prints.
# sonic_cpu_seconds_per_track = 20

[timeouts]
scan = "1h"
analysis = "1h"
photo = "4h"

[monitor]
poll_interval = "10s"
# A phase is stalled when counts and CPU stop moving this long while work remains.
stall_window = "10m"
# Done when Plex is idle and counts are unchanged for this many samples.
stable_samples = 3
# The phase fails after this many failed samples in a row (a failed sample never reads as zero).
max_failed_samples = 5

[export]
# A directory on the target: <run-id>.tar.zst and <run-id>.manifest.json are written there.
destination = "/var/backups/plexburst"
# The export refuses when Plex's trash grew during the run (a degraded mount makes Plex mark what
# it cannot read as deleted). Set true (or pass --allow-deleted) when the deletions are real.
# allow_deleted = false
# With storage.kind = "rclone" and storage.export_path, the archive is streamed to the bucket
# (tar | zstd | rclone rcat); staged = true writes it here first and uploads it with retries.
# staged = false

# A seeded run (`plexburst run --seed ARCHIVE|DB`) starts from your home server's library.
# [remap]                                     # folders that moved: old prefix = new prefix
# "/mnt/nas/music" = "/srv/media/Music"
# [seed]
# sample = 1000                               # DB paths looked up on the storage before the scan
# missing_limit = 0.1                         # stop when more of them are missing (a wrong remap)

[[sections]]
name = "Music"
type = "music"          # movie | show | music | photo
paths = ["/srv/media/Music"]
# agent, scanner and language default per type; timeout defaults to timeouts.analysis
# (timeouts.photo for photos).

[[sections]]
name = "Movies"
type = "movie"
paths = ["/srv/media/Movies"]
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_is_valid() {
        let c = Config::parse(EXAMPLE).unwrap();
        assert_eq!(c.sections.len(), 2);
        assert_eq!(c.sections[0].agent, "tv.plex.agents.music");
        assert_eq!(c.timeouts.photo, Duration::from_secs(4 * 3600));
        assert!(
            c.plex
                .db_path()
                .ends_with("Databases/com.plexapp.plugins.library.db")
        );
    }

    /// The commented rclone block of the example is a working config once uncommented.
    #[test]
    fn example_rclone_block_is_valid() {
        let mut lines = Vec::new();
        let mut in_block = false;
        for line in EXAMPLE.lines() {
            if line.starts_with("# kind = \"rclone\"") {
                in_block = true;
            } else if in_block && !line.starts_with('#') {
                in_block = false;
            }
            match line {
                "kind = \"path\"" | "path = \"/srv/media\"" => continue,
                _ if in_block && !line.starts_with("# #") => {
                    lines.push(line.trim_start_matches("# ").to_string());
                    if line.starts_with("# access_key_id") {
                        // Any variable that is set stands in for the secret's.
                        lines.push("secret_access_key_env = \"PATH\"".to_string());
                    }
                }
                _ => lines.push(line.to_string()),
            }
        }
        let text = lines.join("\n");
        let c = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"));
        let StorageConfig::Rclone(r) = &c.storage else {
            panic!("the uncommented block is not an rclone storage:\n{text}");
        };
        assert_eq!(r.bucket, "my-media/library");
        assert_eq!(r.tuning.vfs_read_chunk_streams, Some(16));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("1 fortnight").is_err());
        assert!(
            parse_duration(&format!("1{}d", "0".repeat(30))).is_err(),
            "no panic"
        );
        assert_eq!(format_duration(Duration::from_secs(5400)), "90m");
    }
}
