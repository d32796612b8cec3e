//! The run state file: versioned JSON, written atomically with mode 0600, locked against a second run.
//!
//! `<state dir>/state.json` describes the current (or last) run: its options, each phase's record,
//! the prefs saved before plexburst changed them, and what was started. Nothing secret is stored:
//! the server token is re-read from Preferences.xml on resume, the claim token lives only in memory.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

pub use crate::export::ExportRecord;
use crate::plan::{PLAN_VERSION, Plan, RunOptions};
use crate::plex::db::DbSample;

pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Interrupted,
    Failed,
    Done,
    Destroyed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PhaseStatus {
    Pending,
    Running,
    Done,
    Skipped,
    Failed,
    Interrupted,
}

/// One phase as it happened. `attempts` counts how many times it was entered (resume re-enters).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseRecord {
    pub name: String,
    pub status: PhaseStatus,
    pub attempts: u32,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub detail: Option<String>,
    pub counts_before: Option<DbSample>,
    pub counts_after: Option<DbSample>,
    pub rate_per_sec: Option<f64>,
    pub samples: u64,
    pub failed_samples: u64,
    pub stalls: u32,
    pub timeouts: u32,
    pub restarts: u32,
    /// The analyze phase's prefetcher, as it last stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefetch: Option<crate::storage::rclone::PrefetchStatus>,
    /// Plex's CPU seconds while Sonic analysis made progress, and the tracks it analysed
    /// meanwhile: the measured cost per track the forecast can be calibrated with.
    #[serde(default)]
    pub sonic_cpu_secs: f64,
    #[serde(default)]
    pub sonic_tracks: i64,
}

impl PhaseRecord {
    pub fn new(name: &str) -> Self {
        PhaseRecord {
            name: name.into(),
            status: PhaseStatus::Pending,
            attempts: 0,
            started_at: None,
            ended_at: None,
            detail: None,
            counts_before: None,
            counts_after: None,
            rate_per_sec: None,
            samples: 0,
            failed_samples: 0,
            stalls: 0,
            timeouts: 0,
            restarts: 0,
            prefetch: None,
            sonic_cpu_secs: 0.0,
            sonic_tracks: 0,
        }
    }
}

/// A pref value saved before the run changed it (`GET /:/prefs`, values only).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedPref {
    pub id: String,
    pub kind: String,
    pub value: String,
    pub default: String,
}

/// One thing a run leaves on its target on purpose (the data dir, the archive, a log, a kept
/// cache), with its size when it could be measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptItem {
    pub what: String,
    pub path: String,
    pub bytes: Option<u64>,
}

/// What a run leaves on its target, as the last cleanup (teardown, after a failure, destroy)
/// found it there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftOnTarget {
    /// When it was looked at, and by which cleanup (`teardown`, `failure`, `destroy`).
    pub checked_at: String,
    pub by: String,
    /// What stays on purpose.
    pub kept: Vec<KeptItem>,
    /// Anything else of plexburst's still there (a removal that failed): empty when nothing else
    /// remains.
    pub stray: Vec<KeptItem>,
    /// Plex settings plexburst changed and could not put back, as `id=value` (the user's value).
    pub prefs_not_restored: Vec<String>,
}

/// A section as Plex knows it, matched by name to the config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SectionRef {
    pub name: String,
    pub id: i64,
    pub section_type: i64,
    pub created: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    pub run_id: String,
    pub config_path: String,
    pub created_at: String,
    pub updated_at: String,
    pub status: RunStatus,
    pub options: RunOptions,
    /// The target as described by the remote (e.g. `local`, `ssh root@10.0.0.5:22`).
    pub target: String,
    pub phases: Vec<PhaseRecord>,
    /// Plex was started by this run and may still be running.
    pub plex_started: bool,
    /// The storage was mounted by this run.
    pub storage_mounted: bool,
    pub saved_prefs: Option<Vec<SavedPref>>,
    /// The managed prefs' attributes in Preferences.xml when `saved_prefs` was taken (`None`: no
    /// attribute, Plex's default), so a restore with Plex stopped writes the file back as it was.
    #[serde(default)]
    pub saved_prefs_file: Option<std::collections::BTreeMap<String, Option<String>>>,
    pub sections: Vec<SectionRef>,
    pub plex_version: Option<String>,
    pub export: Option<ExportRecord>,
    pub error: Option<String>,
    /// The last monitor sample (for `status`), refreshed every few seconds.
    pub last_sample: Option<DbSample>,
    pub current_phase: Option<String>,
    /// What the run leaves on its target (see `LeftOnTarget`).
    #[serde(default)]
    pub left_on_target: Option<LeftOnTarget>,
    /// The preflight's count of each section's media files (the scan's total).
    #[serde(default)]
    pub survey: Vec<crate::survey::SectionSurvey>,
    /// What the run found wrong without failing (a section with far fewer items than files):
    /// the run ends "done with warnings".
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The rented machine, while it exists (`None` before provisioning and after teardown).
    #[serde(default)]
    pub instance: Option<Instance>,
    /// The IAM objects of the instance's deadline, (kind, id), journaled as each is made and
    /// deleted at teardown.
    #[serde(default)]
    pub iam: Vec<(String, String)>,
    /// Every server the run rented, with its price and lifetime: the run's cost.
    #[serde(default)]
    pub rented: Vec<Rented>,
    /// What teardown removed (`server 1234 (GP1-S, fr-par-1)`, `volume …`), for the report.
    #[serde(default)]
    pub released: Vec<String>,
    /// Where the claim token comes from, as decided in prepare (never the token).
    #[serde(default)]
    pub claim: Option<String>,
    /// The monitor's latest progress line, for `status`.
    #[serde(default)]
    pub progress: Option<Progress>,
    /// A seeded run: what the seed held and what the run did to it.
    #[serde(default)]
    pub seed: Option<crate::seed::SeedRecord>,
}

/// A machine rented for the run, journaled before anything waits on it, so `destroy` finds it
/// whatever happened to plexburst.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Instance {
    pub provider: String,
    pub zone: String,
    pub commercial_type: String,
    pub server_id: Option<String>,
    /// (id, type) of every volume the server had: deleted after the server.
    pub volumes: Vec<(String, String)>,
    pub address: Option<String>,
    pub ssh_port: u16,
    /// The run's private key (0600) and its known_hosts, in the run's directory.
    pub key_path: String,
    pub known_hosts: String,
    /// The host key was recorded at first contact; checking is strict from then on.
    pub host_key_pinned: bool,
}

/// One server the run paid for: its price and how long it existed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Rented {
    pub server_id: String,
    pub commercial_type: String,
    pub zone: String,
    pub hourly_price: f64,
    pub started_at: String,
    /// When it was seen gone; `None` while it exists.
    pub ended_at: Option<String>,
}

impl Rented {
    /// Seconds it existed (or has existed until `now`).
    pub fn seconds(&self, now: jiff::Timestamp) -> f64 {
        let Ok(a) = self.started_at.parse::<jiff::Timestamp>() else {
            return 0.0;
        };
        let b = self
            .ended_at
            .as_ref()
            .and_then(|e| e.parse::<jiff::Timestamp>().ok())
            .unwrap_or(now);
        b.duration_since(a).as_secs_f64().max(0.0)
    }
}

/// What the rented servers of a run cost so far, in EUR (pro rata of the hourly price).
pub fn cost(rented: &[Rented], now: jiff::Timestamp) -> f64 {
    rented
        .iter()
        .map(|r| r.hourly_price * r.seconds(now) / 3600.0)
        .sum()
}

/// Where the phase being watched stands, as of the last poll.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    pub phase: String,
    pub label: String,
    pub unit: String,
    pub done: i64,
    pub total: Option<i64>,
    pub rate_per_sec: Option<f64>,
    pub eta_secs: Option<f64>,
    /// The ETA comes from the estimated CPU cost per track, the run having no rate of its own yet.
    #[serde(default)]
    pub eta_estimated: bool,
    pub at: String,
}

pub fn now() -> String {
    // Milliseconds: phase durations in the report are computed from these.
    jiff::Timestamp::now()
        .round(jiff::Unit::Millisecond)
        .unwrap_or_else(|_| jiff::Timestamp::now())
        .to_string()
}

impl State {
    pub fn new(config_path: &Path, options: RunOptions, target: String, phases: &[&str]) -> State {
        let ts = jiff::Timestamp::now();
        let run_id = format!(
            "{}-{}",
            ts.strftime("%Y%m%d-%H%M%S"),
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        );
        State {
            version: STATE_VERSION,
            run_id,
            config_path: config_path.display().to_string(),
            created_at: now(),
            updated_at: now(),
            status: RunStatus::Running,
            options,
            target,
            phases: phases.iter().map(|p| PhaseRecord::new(p)).collect(),
            plex_started: false,
            storage_mounted: false,
            saved_prefs: None,
            sections: Vec::new(),
            plex_version: None,
            export: None,
            error: None,
            last_sample: None,
            current_phase: None,
            survey: Vec::new(),
            warnings: Vec::new(),
            claim: None,
            instance: None,
            iam: Vec::new(),
            rented: Vec::new(),
            released: Vec::new(),
            progress: None,
            seed: None,
            saved_prefs_file: None,
            left_on_target: None,
        }
    }

    pub fn phase(&self, name: &str) -> Option<&PhaseRecord> {
        self.phases.iter().find(|p| p.name == name)
    }

    pub fn phase_mut(&mut self, name: &str) -> &mut PhaseRecord {
        if let Some(i) = self.phases.iter().position(|p| p.name == name) {
            return &mut self.phases[i];
        }
        self.phases.push(PhaseRecord::new(name));
        self.phases.last_mut().expect("just pushed")
    }
}

/// The state dir with its lock held: only one plexburst process works on a state dir at a time.
pub struct StateStore {
    dir: PathBuf,
    _lock: File,
}

impl StateStore {
    pub fn state_path(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    /// Create the dir if needed and take its lock, failing at once if another run holds it.
    pub fn lock(dir: &Path) -> anyhow::Result<StateStore> {
        // A state dir that cannot be made or written is the user's to fix, before anything runs.
        let unusable = |e: std::io::Error| {
            crate::error::BadInput(format!(
                "--state-dir {}: cannot write there ({e}); pass --state-dir a directory you can write, or fix its permissions",
                dir.display()
            ))
        };
        std::fs::create_dir_all(dir).map_err(unusable)?;
        let lock_path = dir.join("lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(unusable)?;
        match f.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => bail!(
                "another plexburst process is working on {} (its lock {} is held); wait for it, or look at it with `plexburst status`",
                dir.display(),
                lock_path.display()
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", lock_path.display()));
            }
        }
        Ok(StateStore {
            dir: dir.to_path_buf(),
            _lock: f,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn load(&self) -> anyhow::Result<Option<State>> {
        read(&self.dir)
    }

    /// Write atomically: temp file (0600) in the same dir, fsync, rename over.
    pub fn save(&self, state: &mut State) -> anyhow::Result<()> {
        state.updated_at = now();
        self.write_json("state.json", &serde_json::to_vec_pretty(state)?)
    }

    /// `plan.json`: the plan this run executes (what `resume` and `destroy` read back).
    pub fn save_plan(&self, plan: &Plan) -> anyhow::Result<()> {
        self.write_json("plan.json", &serde_json::to_vec_pretty(plan)?)
    }

    /// The stored plan of the run in `dir`, if any; one of another version is an error.
    pub fn read_plan(dir: &Path) -> anyhow::Result<Option<Plan>> {
        read_versioned(&dir.join("plan.json"), "plan", u64::from(PLAN_VERSION))
    }

    fn write_json(&self, name: &str, json: &[u8]) -> anyhow::Result<()> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        {
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            f.write_all(json)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
        Ok(())
    }
}

/// Whether a plexburst process holds the state dir's lock right now (a "running" state whose lock
/// is free belongs to a process that died). Probes with a shared lock, released at once.
pub fn run_alive(dir: &Path) -> bool {
    match File::open(dir.join("lock")) {
        Ok(f) => matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

/// Read the state without taking the lock (for `status`, which must work while a run is going).
pub fn read(dir: &Path) -> anyhow::Result<Option<State>> {
    read_versioned(
        &StateStore::state_path(dir),
        "state",
        u64::from(STATE_VERSION),
    )
}

/// A JSON file with a `version` field (state, plan): `None` when absent, an error when of
/// another version or damaged.
fn read_versioned<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &str,
    want: u64,
) -> anyhow::Result<Option<T>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let v: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "{} is not valid JSON (damaged); move it aside, then `plexburst run` starts a new run",
            path.display()
        )
    })?;
    let version = v.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
    if version != want {
        bail!(
            "{} has {what} version {version}, this plexburst reads version {want}; use the plexburst that wrote it, or `plexburst destroy` and start again",
            path.display()
        );
    }
    Ok(Some(serde_json::from_value(v).with_context(|| {
        format!("{} is damaged", path.display())
    })?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cost_is_each_servers_price_times_its_lifetime() {
        let r = |price: f64, from: &str, to: Option<&str>| Rented {
            server_id: "s".into(),
            commercial_type: "GP1-S".into(),
            zone: "fr-par-1".into(),
            hourly_price: price,
            started_at: from.into(),
            ended_at: to.map(String::from),
        };
        let now: jiff::Timestamp = "2026-11-27T12:00:00Z".parse().unwrap();
        let rented = [
            // Out of stock at power-on: deleted after 36 s.
            r(0.2, "2026-11-27T09:59:24Z", Some("2026-11-27T10:00:00Z")),
            // Still running, 2 h so far.
            r(0.19, "2026-11-27T10:00:00Z", None),
        ];
        let c = cost(&rented, now);
        assert!((c - (0.2 * 0.01 + 0.19 * 2.0)).abs() < 1e-9, "{c}");
        assert_eq!(cost(&[], now), 0.0);
    }
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn save_is_0600_and_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let store = StateStore::lock(d.path()).unwrap();
        let mut s = State::new(
            Path::new("x.toml"),
            RunOptions::default(),
            "local".into(),
            &["prepare", "scan"],
        );
        s.phase_mut("scan").status = PhaseStatus::Done;
        store.save(&mut s).unwrap();
        let mode = std::fs::metadata(StateStore::state_path(d.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let back = store.load().unwrap().unwrap();
        assert_eq!(back.run_id, s.run_id);
        assert_eq!(back.phase("scan").unwrap().status, PhaseStatus::Done);
    }

    #[test]
    fn second_lock_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let _a = StateStore::lock(d.path()).unwrap();
        let e = StateStore::lock(d.path()).err().unwrap();
        assert!(e.to_string().contains("another plexburst process"), "{e}");
    }

    #[test]
    fn unknown_version_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(StateStore::state_path(d.path()), r#"{"version": 99}"#).unwrap();
        assert!(
            read(d.path())
                .unwrap_err()
                .to_string()
                .contains("version 99")
        );
    }
}
