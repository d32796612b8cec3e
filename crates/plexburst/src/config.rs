//! plexburst.toml: schema, defaults, and validation with errors that name the field and the fix.
//!
//! The file is read into loosely typed "raw" structs (durations and enums as strings) so that one
//! pass can report *every* problem at once; `Config::load` then returns either a fully checked
//! `Config` or a `ConfigError` listing each `field: problem; fix`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub(crate) mod storage;

pub use crate::plex::SectionType;
pub use crate::units::{format_duration, parse_duration};
pub use storage::{MtimeMode, RcloneConfig, StorageConfig, Tuning};

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
    #[serde(default = "default_true")]
    scan_force: bool,
    startup_timeout: Option<String>,
    stop_grace: Option<String>,
}

fn default_runtime() -> String {
    "docker".into()
}
fn default_true() -> bool {
    true
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
    pub scan_force: bool,
    #[serde(with = "secs")]
    pub startup_timeout: Duration,
    #[serde(with = "secs")]
    pub stop_grace: Duration,
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
}

/// Durations serialize as whole seconds in JSON (plan, state, report).
mod secs {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

fn is_abs(p: &str) -> bool {
    p.starts_with('/')
}

/// Collects problems while the raw config is turned into the checked one.
struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, field: &str, msg: impl AsRef<str>) {
        self.0.push(format!("{field} {}", msg.as_ref()));
    }
    fn duration(&mut self, field: &str, v: &Option<String>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => match parse_duration(s) {
                Ok(d) if d.is_zero() => {
                    self.push(
                        field,
                        format!("{s:?} is zero; give a positive duration like \"90s\" or \"1h\""),
                    );
                    default
                }
                Ok(d) => d,
                Err(e) => {
                    self.push(
                        field,
                        format!("{e}; write it like \"500ms\", \"90s\", \"10m\" or \"1h30m\""),
                    );
                    default
                }
            },
        }
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
            let loc = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            ConfigError::one(format!(
                "{msg}{loc}; fix that key or value (`plexburst init` writes a commented example)"
            ))
        })?;
        validate(raw)
    }
}

fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let mut p = Problems(Vec::new());

    // [target]
    let t = &raw.target;
    let kind = match t.kind.as_str() {
        "local" => {
            for (field, set) in [
                ("target.host", t.host.is_some()),
                ("target.port", t.port.is_some()),
                ("target.user", t.user.is_some()),
                ("target.identity", t.identity.is_some()),
            ] {
                if set {
                    p.push(
                        field,
                        "is only used with target.kind = \"ssh\"; remove it or set kind = \"ssh\"",
                    );
                }
            }
            TargetKind::Local
        }
        "ssh" => {
            let host = t.host.clone().unwrap_or_default();
            if host.trim().is_empty() {
                p.push(
                    "target.host",
                    "is missing; set the SSH host name or address, e.g. host = \"10.0.0.5\"",
                );
            }
            let port = t.port.unwrap_or(22);
            if port == 0 {
                p.push("target.port", "is 0; use the SSH port (22 by default)");
            }
            let user = t.user.clone().unwrap_or_else(|| "root".into());
            if user.trim().is_empty() {
                p.push(
                    "target.user",
                    "is empty; set the SSH user, e.g. user = \"root\"",
                );
            }
            if let Some(id) = &t.identity
                && !(is_abs(id) || id.starts_with("~/"))
            {
                p.push(
                    "target.identity",
                    format!(
                        "{id:?} is not an absolute path; write the full path to the private key"
                    ),
                );
            }
            for (i, o) in t.ssh_options.iter().enumerate() {
                if !o.contains('=') {
                    p.push(
                        &format!("target.ssh_options[{i}]"),
                        format!(
                            "{o:?} is not KEY=VALUE; write it like \"StrictHostKeyChecking=no\""
                        ),
                    );
                }
            }
            TargetKind::Ssh {
                host,
                port,
                user,
                identity: t.identity.clone(),
                ssh_options: t.ssh_options.clone(),
            }
        }
        other => {
            p.push(
                "target.kind",
                format!("{other:?} is not one of local, ssh; use one of those"),
            );
            TargetKind::Local
        }
    };
    let profile = t.profile.clone().unwrap_or_else(|| "standard".into());
    if !["lite", "standard", "power", "superpower"].contains(&profile.as_str()) {
        p.push(
            "target.profile",
            format!(
                "{profile:?} is not one of lite, standard, power, superpower; use one of those"
            ),
        );
    }

    // [storage]
    let storage = match raw.storage {
        Some(s) => {
            for (field, msg) in s.validate() {
                p.push(&field, msg);
            }
            Some(s)
        }
        None => {
            p.push(
                "storage",
                "is missing; add [storage] with kind = \"path\" and path = \"/where/the/media/is\"",
            );
            None
        }
    };

    // [plex]
    let plex = match raw.plex {
        Some(px) => Some(check_plex(px, &mut p)),
        None => {
            p.push(
                "plex",
                "is missing; add [plex] with runtime and data_dir (see `plexburst init`)",
            );
            None
        }
    };
    let work_dir = match &t.work_dir {
        Some(w) => {
            if !is_abs(w) {
                p.push(
                    "target.work_dir",
                    format!("{w:?} is not an absolute path; write the full path on the target"),
                );
            }
            w.clone()
        }
        None => plex
            .as_ref()
            .map(|px| format!("{}/.plexburst", px.data_dir.trim_end_matches('/')))
            .unwrap_or_default(),
    };

    // [timeouts] and [monitor]
    let timeouts = Timeouts {
        scan: p.duration(
            "timeouts.scan",
            &raw.timeouts.scan,
            Duration::from_secs(3600),
        ),
        analysis: p.duration(
            "timeouts.analysis",
            &raw.timeouts.analysis,
            Duration::from_secs(3600),
        ),
        photo: p.duration(
            "timeouts.photo",
            &raw.timeouts.photo,
            Duration::from_secs(4 * 3600),
        ),
    };
    let m = &raw.monitor;
    let poll_interval = p.duration(
        "monitor.poll_interval",
        &m.poll_interval,
        Duration::from_secs(10),
    );
    let stall_window = p.duration(
        "monitor.stall_window",
        &m.stall_window,
        Duration::from_secs(600),
    );
    let log_interval = p.duration(
        "monitor.log_interval",
        &m.log_interval,
        poll_interval.max(Duration::from_secs(10)),
    );
    if stall_window <= poll_interval {
        p.push(
            "monitor.stall_window",
            format!(
                "({}) is not longer than monitor.poll_interval ({}); make it several poll intervals long",
                format_duration(stall_window),
                format_duration(poll_interval)
            ),
        );
    }
    let mut count = |field: &str, v: Option<i64>, default: u32| -> u32 {
        match v {
            None => default,
            Some(n) if (1..=1000).contains(&n) => n as u32,
            Some(n) => {
                p.push(field, format!("is {n}; use a number from 1 to 1000"));
                default
            }
        }
    };
    let stable_samples = count("monitor.stable_samples", m.stable_samples, 3);
    let max_failed_samples = count("monitor.max_failed_samples", m.max_failed_samples, 5);

    // [export]
    let allow_deleted = raw
        .export
        .as_ref()
        .and_then(|e| e.allow_deleted)
        .unwrap_or(false);
    let staged = raw.export.as_ref().and_then(|e| e.staged).unwrap_or(false);
    let uploads = matches!(&storage, Some(StorageConfig::Rclone(rc)) if rc.export_path.is_some());
    if staged && !uploads {
        p.push(
            "export.staged",
            "only applies when the archive is uploaded (storage.kind = \"rclone\" with storage.export_path); remove it or set export_path",
        );
    }
    let destination = match raw.export.and_then(|e| e.destination) {
        Some(d) if is_abs(&d) => d,
        Some(d) => {
            p.push(
                "export.destination",
                format!(
                    "{d:?} is not an absolute path; write the full directory path on the target"
                ),
            );
            d
        }
        None => {
            p.push(
                "export.destination",
                "is missing; add [export] destination = \"/path/for/archives\"",
            );
            String::new()
        }
    };

    // [[sections]]
    if raw.sections.is_empty() {
        p.push(
            "sections",
            "is empty; add at least one [[sections]] with name, type and paths",
        );
    }
    let media_root = storage
        .as_ref()
        .map(|s| s.media_root().trim_end_matches('/').to_string());
    let mut sections = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, s) in raw.sections.into_iter().enumerate() {
        let f = |k: &str| format!("sections[{i}].{k}");
        let name = s.name.clone().unwrap_or_default();
        if name.trim().is_empty() {
            p.push(
                &f("name"),
                "is missing; give the section the name Plex should show, e.g. name = \"Music\"",
            );
        } else if !seen.insert(name.clone()) {
            p.push(
                &f("name"),
                format!("{name:?} is used by another section; section names must be unique"),
            );
        }
        let kind = match s.kind.as_deref() {
            None => {
                p.push(
                    &f("type"),
                    format!("is missing; use one of {}", SectionType::NAMES),
                );
                None
            }
            Some(k) => match SectionType::parse(k) {
                Some(k) => Some(k),
                None => {
                    p.push(
                        &f("type"),
                        format!(
                            "{k:?} is not one of {}; use one of those",
                            SectionType::NAMES
                        ),
                    );
                    None
                }
            },
        };
        if s.paths.is_empty() {
            p.push(
                &f("paths"),
                "is empty; list the folders of this section, e.g. paths = [\"/data/Music\"]",
            );
        }
        for (j, path) in s.paths.iter().enumerate() {
            let field = format!("sections[{i}].paths[{j}]");
            if !is_abs(path) {
                p.push(
                    &field,
                    format!("{path:?} is not an absolute path; write the full path Plex will see"),
                );
            } else if let Some(root) = &media_root
                && !root.is_empty()
                && !(path == root || path.starts_with(&format!("{root}/")))
            {
                p.push(
                    &field,
                    format!("{path:?} is not under the storage root {root:?}; put the section under it or change [storage]"),
                );
            }
        }
        for (k, v) in [
            ("agent", &s.agent),
            ("scanner", &s.scanner),
            ("language", &s.language),
        ] {
            if let Some(v) = v
                && v.trim().is_empty()
            {
                p.push(
                    &f(k),
                    "is empty; remove it to use the default for the section type",
                );
            }
        }
        if let Some(kind) = kind {
            let default_timeout = if kind == SectionType::Photo {
                timeouts.photo
            } else {
                timeouts.analysis
            };
            let timeout = p.duration(&f("timeout"), &s.timeout, default_timeout);
            sections.push(SectionConfig {
                name,
                kind,
                paths: s.paths,
                agent: s.agent.unwrap_or_else(|| kind.default_agent().into()),
                scanner: s.scanner.unwrap_or_else(|| kind.default_scanner().into()),
                language: s.language.unwrap_or_else(|| "en-US".into()),
                timeout,
            });
        }
    }

    // The archive must not land inside the tree it archives.
    if let Some(px) = &plex {
        let lib = format!("{}/Library", px.data_dir);
        if destination == lib || destination.starts_with(&format!("{lib}/")) {
            p.push(
                "export.destination",
                format!(
                    "{destination:?} is inside the Plex data folder it archives; put it outside {lib:?}"
                ),
            );
        }
    }
    if !p.0.is_empty() {
        return Err(ConfigError { problems: p.0 });
    }
    Ok(Config {
        target: Target {
            kind,
            work_dir,
            profile,
        },
        storage: storage.expect("checked above"),
        plex: plex.expect("checked above"),
        timeouts,
        monitor: MonitorConfig {
            poll_interval,
            stall_window,
            stable_samples,
            max_failed_samples,
            log_interval,
        },
        export: ExportConfig {
            destination,
            allow_deleted,
            staged,
        },
        sections,
    })
}

fn check_plex(px: RawPlex, p: &mut Problems) -> PlexConfig {
    let data_dir = match &px.data_dir {
        Some(d) if is_abs(d) => d.trim_end_matches('/').to_string(),
        Some(d) => {
            p.push(
                "plex.data_dir",
                format!("{d:?} is not an absolute path; write the full path on the target"),
            );
            d.clone()
        }
        None => {
            p.push(
                "plex.data_dir",
                "is missing; set where Plex keeps its data (the container's /config)",
            );
            String::new()
        }
    };
    let port = px.port.unwrap_or(32400);
    if port == 0 {
        p.push(
            "plex.port",
            "is 0; use the port Plex listens on, 32400 by default",
        );
    }
    for key in px.env.keys() {
        if key == "PLEX_CLAIM" {
            p.push(
                "plex.env.PLEX_CLAIM",
                "must not be in the config file (it is a secret); export PLEX_CLAIM in the environment instead",
            );
        } else if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            p.push(
                &format!("plex.env.{key}"),
                "is not a valid variable name; use letters, digits and _",
            );
        }
    }
    let runtime = match px.runtime.as_str() {
        "docker" => {
            if px.command.is_some() {
                p.push(
                    "plex.command",
                    "is only used with runtime = \"command\"; remove it or change plex.runtime",
                );
            }
            let image = px
                .image
                .clone()
                .unwrap_or_else(|| "plexinc/pms-docker:latest".into());
            if image.trim().is_empty() {
                p.push(
                    "plex.image",
                    "is empty; use e.g. \"plexinc/pms-docker:latest\"",
                );
            }
            let container_name = px
                .container_name
                .clone()
                .unwrap_or_else(|| "plexburst-plex".into());
            if container_name.is_empty()
                || !container_name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            {
                p.push(
                    "plex.container_name",
                    format!("{container_name:?} is not a valid container name; use letters, digits, _ . -"),
                );
            }
            RuntimeConfig::Docker {
                image,
                container_name,
                docker_args: px.docker_args.clone(),
            }
        }
        "command" => {
            if px.image.is_some() {
                p.push(
                    "plex.image",
                    "is only used with runtime = \"docker\"; remove it or change plex.runtime",
                );
            }
            let command = px.command.clone().unwrap_or_default();
            if command.trim().is_empty() {
                p.push(
                    "plex.command",
                    "is missing; give the shell line that starts the server, e.g. \"plex-emulator serve --data-dir {data_dir} --listen 127.0.0.1:{port}\"",
                );
            } else if command.contains("PLEX_CLAIM=") {
                p.push(
                    "plex.command",
                    "sets PLEX_CLAIM on the command line; reference $PLEX_CLAIM instead (plexburst passes it in the environment)",
                );
            }
            RuntimeConfig::Command { command }
        }
        other => {
            p.push(
                "plex.runtime",
                format!("{other:?} is not one of docker, command; use one of those"),
            );
            RuntimeConfig::Command {
                command: String::new(),
            }
        }
    };
    PlexConfig {
        runtime,
        data_dir,
        port,
        env: px.env,
        scan_force: px.scan_force,
        startup_timeout: p.duration(
            "plex.startup_timeout",
            &px.startup_timeout,
            Duration::from_secs(300),
        ),
        stop_grace: p.duration("plex.stop_grace", &px.stop_grace, Duration::from_secs(60)),
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
# Where Plex runs: "local" (this machine) or "ssh" (an existing host).
kind = "local"
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
# One global scan with force=1; set false for a delta run on a seeded data folder.
# scan_force = true
# startup_timeout = "5m"
# stop_grace = "60s"

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
        assert_eq!(format_duration(Duration::from_secs(5400)), "90m");
    }

    #[test]
    fn every_problem_is_reported() {
        let bad = EXAMPLE
            .replace("type = \"movie\"", "type = \"film\"")
            .replace("scan = \"1h\"", "scan = \"soon\"");
        let e = Config::parse(&bad).unwrap_err();
        assert_eq!(e.problems.len(), 2, "{e}");
        assert!(
            e.to_string()
                .contains("sections[1].type \"film\" is not one of movie, show, music, photo")
        );
        assert!(e.to_string().contains("timeouts.scan"));
    }
}
