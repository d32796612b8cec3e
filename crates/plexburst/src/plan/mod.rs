//! Config + run options -> `Plan`: everything the run will do, as typed data (no I/O).
//!
//! The plan is built once. `plexburst plan` prints it (`render`) or serializes it (`--json`);
//! `run` stores it in the state dir and every phase reads it, never the config; `resume` executes
//! the stored plan and refuses (exit 2, naming each field) when the config on disk now yields a
//! different one, unless `--replan`. Secrets appear only as the names of the environment variables
//! they come from.

pub mod forecast;
mod render;
pub mod storage;

use serde::{Deserialize, Serialize};

use crate::config::{Config, RuntimeConfig, TargetKind};
use crate::plex::SectionType;
use crate::remote::ssh::SshTarget;
use crate::runtime::{CommandSpec, DockerSpec, Runtime, Volume};

use crate::storage::StorageSpec;

/// The version of the plan's JSON form (`plan --json`, `<state dir>/plan.json`). Bump it when a
/// field changes meaning; a stored plan of another version is not resumed.
pub const PLAN_VERSION: u32 = 4;

pub use crate::archive::EXPORT_EXCLUDES;

/// Where the run's own secrets come from; the plan holds these names, never a value.
pub const CLAIM_ENV: &str = "PLEX_CLAIM";

/// The `run` flags that change what runs (`cli::RunArgs` maps onto it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOptions {
    /// Only these sections (empty: all of the config's).
    #[serde(default)]
    pub only_section: Vec<String>,
    #[serde(default)]
    pub skip_analysis: bool,
    #[serde(default)]
    pub deep_scan: bool,
    /// Leave Plex running at the end.
    #[serde(default)]
    pub keep: bool,
    #[serde(default)]
    pub allow_deleted: bool,
    /// A run that ends with warnings (a section with far fewer items than files) exits 1.
    #[serde(default)]
    pub strict: bool,
    /// Copy the target's logs into the run's directory on success too (always on failure).
    #[serde(default)]
    pub keep_logs: bool,
    /// Keep the mount's VFS cache on the target at teardown and destroy (for a run soon after on
    /// the same library); by default it goes with the rest of plexburst's files.
    #[serde(default)]
    pub keep_cache: bool,
    /// Start from this database or plexburst archive (`run --seed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<SeedOption>,
    /// Scan a seeded DB even when more of its sampled paths are missing than `seed.missing_limit`.
    #[serde(default)]
    pub allow_missing: bool,
}

/// `--seed`: where, and what it turned out to be (read by `app`, which can look at the file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedOption {
    pub source: crate::seed::SeedSource,
    pub kind: crate::seed::SeedKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub version: u32,
    pub target: TargetPlan,
    pub options: RunOptions,
    /// Commands the target must have before anything starts.
    pub tools: Vec<String>,
    pub storage: StorageSpec,
    pub plex: PlexPlan,
    pub sections: Vec<SectionPlan>,
    pub monitor: MonitorPlan,
    pub export: ExportPlan,
    /// A seeded run: the phase `seed` restores it into the data dir before Plex starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<SeedPlan>,
    pub phases: Vec<PhasePlan>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedPlan {
    pub source: crate::seed::SeedSource,
    pub kind: crate::seed::SeedKind,
    /// Where the seed file is on the target once staged.
    pub staged: String,
    /// The SQLite shell line that writes the DB (it gets the DB path as its last argument and
    /// the SQL on stdin): the image's `Plex SQLite` on docker, `plex.sqlite` on command.
    pub sqlite: String,
    /// (old prefix, new prefix), longest old prefix first.
    pub remap: Vec<(String, String)>,
    pub sample: u32,
    pub missing_limit: f64,
    pub allow_missing: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TargetSpec {
    Local,
    /// `identity` already has `~/` expanded.
    Ssh(SshTarget),
    /// An instance rented for the run; the run connects to it over SSH once it is provisioned.
    Scaleway(crate::cloud::scaleway::ScalewayPlan),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetPlan {
    pub spec: TargetSpec,
    /// `local` or `ssh user@host:port`.
    pub describe: String,
    /// plexburst's own directory on the target (pid file, server log, rclone files).
    pub work_dir: String,
    pub profile: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlexPlan {
    /// How the server is started: the full docker spec (binds, env, secret names) or the command.
    pub runtime: Runtime,
    /// The line that starts it, exactly as the run issues it (`Runtime::start_line`).
    pub start_line: String,
    pub port: u16,
    pub data_dir: String,
    pub db_path: String,
    pub prefs_path: String,
    #[serde(with = "crate::units::human")]
    pub startup_timeout: std::time::Duration,
    #[serde(with = "crate::units::human")]
    pub stop_grace: std::time::Duration,
    /// `force=1` on the global refresh.
    pub scan_force: bool,
    /// Where a claim token comes from when one is needed.
    pub claim: String,
    /// plex.tv: the account token is checked and a claim token fetched there.
    pub plextv_url: String,
    /// `LongRunningJobThreads` while a music section is analysed (Sonic workers, plex.md §3);
    /// `None`: the target's vCPU count, read with `nproc` when the analysis starts.
    pub analysis_threads: Option<u32>,
    /// CPU seconds per track for the analysis forecast and the ETA before the run has a rate.
    pub sonic_cost: forecast::SonicCost,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SectionPlan {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SectionType,
    pub paths: Vec<String>,
    pub agent: String,
    pub scanner: String,
    pub language: String,
    /// What the analyze phase does for it, in order; empty: nothing to analyse (or skipped).
    pub analysis: Vec<String>,
    #[serde(with = "crate::units::human")]
    pub timeout: std::time::Duration,
    /// What the preflight counts as this section's media files (lower case, no dot).
    pub extensions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorPlan {
    #[serde(with = "crate::units::human")]
    pub poll_interval: std::time::Duration,
    #[serde(with = "crate::units::human")]
    pub stall_window: std::time::Duration,
    pub stable_samples: u32,
    pub max_failed_samples: u32,
    #[serde(with = "crate::units::human")]
    pub log_interval: std::time::Duration,
    #[serde(with = "crate::units::human")]
    pub scan_timeout: std::time::Duration,
    /// Share of a section's media files that may end without an item before the run ends
    /// "done with warnings".
    pub scan_gap: f64,
}

/// How the archive leaves the data folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum ExportMode {
    /// Written to `destination` on the target, and left there.
    Local,
    /// Written to `destination`, verified, then copied to `object` with retries.
    Staged { object: String },
    /// `tar | zstd | rclone rcat` straight to `object`; nothing staged on the target.
    Streamed { object: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportPlan {
    pub data_dir: String,
    pub destination: String,
    /// The archive's path, with `RUN-ID` for the run's id.
    pub archive: String,
    pub excludes: Vec<String>,
    /// Export even when Plex's trash grew during the run.
    pub allow_deleted: bool,
    pub mode: ExportMode,
    /// The commands the export runs on the target, in order (list, archive, compress or upload),
    /// each exactly as the run issues it, with `RUN-ID` for the run's id.
    pub stages: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhasePlan {
    pub name: String,
    pub does: String,
}

/// The placeholder for the run id in the plan's paths and commands (e.g. `20261127-095922-82b2fc`).
/// Only characters the shell needs no quotes for: a quoted placeholder would quote the command
/// differently from the one the run issues with the real id.
pub const RUN_ID: &str = "RUN-ID";

impl Plan {
    /// The phases' names, in the order the run executes them.
    pub fn phase_names(&self) -> Vec<&str> {
        self.phases.iter().map(|p| p.name.as_str()).collect()
    }

    /// The sections of the plan, for the phases.
    pub fn section(&self, name: &str) -> Option<&SectionPlan> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Let the export through even though Plex's trash grew (`resume --allow-deleted`): the same
    /// plan as one built with `--allow-deleted`.
    pub fn allow_deletions(&mut self) {
        self.options.allow_deleted = true;
        self.export.allow_deleted = true;
        self.phases = phases(
            &self.options,
            self.plex.scan_force,
            &self.target,
            &self.storage,
            &self.export,
            self.seed.as_ref(),
        );
    }

    /// The music sections the run Sonic-analyses (what the forecast sizes).
    pub fn sonic_sections(&self) -> Vec<&SectionPlan> {
        self.sections
            .iter()
            .filter(|s| s.kind == SectionType::Music && !s.analysis.is_empty())
            .collect()
    }

    /// Whether the run will run Sonic analysis (the part that needs Plex Pass).
    pub fn needs_plex_pass(&self) -> bool {
        !self.options.skip_analysis && self.sections.iter().any(|s| s.kind == SectionType::Music)
    }

    /// The fields of `other` that differ from this plan, as JSON paths with both values
    /// (`storage.settings.buffer_size: "16M" -> "32M"`), for `resume`'s refusal.
    pub fn differences(&self, other: &Plan) -> Vec<String> {
        let (a, b) = (
            serde_json::to_value(self).unwrap_or_default(),
            serde_json::to_value(other).unwrap_or_default(),
        );
        let mut out = Vec::new();
        diff_json("", &a, &b, &mut out);
        out
    }
}

fn diff_json(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    let join = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let null = Value::Null;
                diff_json(
                    &join(k),
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    out,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff_json(&format!("{path}[{i}]"), p, q, out);
            }
        }
        _ if a != b => out.push(format!("{path}: {a} -> {b}")),
        _ => {}
    }
}

/// The tools the run needs on the target, for this runtime and storage.
fn required_tools(runtime: &Runtime, storage: &StorageSpec) -> Vec<String> {
    let mut t = vec![
        "sh",
        "sqlite3",
        "tar",
        "zstd",
        "sha256sum",
        "find",
        // The export's one walk sorts the snapshot and cuts the names out of it (`cut -z`).
        "sort",
        "cut",
        // The preflight's survey counts each section's media files with one `find | awk`.
        "awk",
        "timeout",
        "xargs",
    ];
    t.push(match runtime {
        Runtime::Docker(_) => "docker",
        Runtime::Command(_) => "setsid",
    });
    if let StorageSpec::Rclone(_) = storage {
        t.extend(["rclone", "fusermount3", "findmnt"]);
    }
    t.into_iter().map(String::from).collect()
}

/// What the analysis of a section of this type does, in order (empty: nothing to analyse).
fn analysis_steps(kind: SectionType, storage: &StorageSpec, threads: Option<u32>) -> Vec<String> {
    let warm = match storage {
        StorageSpec::Rclone(_) => Some(
            "read the first 64 KiB of each of its files through the mount (missing and unreadable files reported)",
        ),
        StorageSpec::Path { .. } => None,
    };
    let workers = match threads {
        Some(n) => format!("{n} (plex.analysis_threads)"),
        None => "the target's vCPU count (nproc)".to_string(),
    };
    let music_on = format!(
        "set LongRunningJobThreads (Sonic workers; Plex's default is half the cores) to {workers} and turn on MusicAnalysisBehavior; the restore phase puts LongRunningJobThreads back"
    );
    let (on, trigger, watch) = match kind {
        SectionType::Music => (
            music_on.as_str(),
            "POST /butler/MusicAnalysis",
            "watch Sonic-analysed tracks and Plex's CPU until done, stalled or timed out",
        ),
        SectionType::Photo => (
            "turn on the photo thumbnail prefs",
            "PUT /library/sections/{id}/analyze",
            "watch thumbnailed photos and Plex's CPU until done, stalled or timed out",
        ),
        SectionType::Movie | SectionType::Show => return Vec::new(),
    };
    // The prefetcher reads whole files ahead of the Sonic analyser (storage/rclone/prefetch.rs).
    let prefetch = match storage {
        StorageSpec::Rclone(rc)
            if kind == SectionType::Music && rc.settings.prefetch_readers > 0 =>
        {
            Some(format!(
                "start the prefetcher: {} readers keep {} s of analysis (at least two files each, at most half the VFS cache and of the free disk) of unanalysed tracks read whole through the mount, ahead of the analyser",
                rc.settings.prefetch_readers, rc.settings.prefetch_lead_secs
            ))
        }
        _ => None,
    };
    let stop = prefetch
        .as_ref()
        .map(|_| "stop the prefetcher; report the files it could not read".to_string());
    warm.map(String::from)
        .into_iter()
        .chain([on.to_string()])
        .chain(prefetch)
        .chain([trigger.to_string(), watch.to_string()])
        .chain(stop)
        .chain(["turn every background task off again".to_string()])
        .collect()
}

fn target_plan(config: &Config, home: &str) -> TargetPlan {
    let spec = match &config.target.kind {
        TargetKind::Local => TargetSpec::Local,
        TargetKind::Ssh {
            host,
            port,
            user,
            identity,
            ssh_options,
        } => TargetSpec::Ssh(SshTarget {
            host: host.clone(),
            port: *port,
            user: user.clone(),
            identity: identity.as_ref().map(|i| match i.strip_prefix("~/") {
                Some(rest) => std::path::Path::new(home).join(rest),
                None => i.into(),
            }),
            extra_options: ssh_options.clone(),
        }),
        TargetKind::Scaleway(sc) => {
            let machine = crate::cloud::scaleway::profile_machine(&config.target.profile);
            let mut types = vec![
                sc.commercial_type
                    .clone()
                    .unwrap_or_else(|| machine.commercial_type.to_string()),
            ];
            types.extend(
                sc.fallback_types
                    .iter()
                    .filter(|t| !types.contains(t))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
            TargetSpec::Scaleway(crate::cloud::scaleway::ScalewayPlan {
                zones: sc.zones.clone(),
                types,
                image_label: sc.image.clone(),
                root_volume_type: sc.root_volume_type.clone(),
                root_volume_bytes: sc.root_volume_gb.unwrap_or(machine.root_volume_gb)
                    * 1_000_000_000,
                ssh_port: sc.ssh_port,
                max_lifetime: sc.max_lifetime,
                boot_timeout: sc.boot_timeout,
                tags: vec![
                    crate::cloud::scaleway::TAG.to_string(),
                    crate::cloud::scaleway::run_tag(RUN_ID),
                ],
                budget_eur: sc.budget_eur,
                max_runtime: sc.max_runtime,
                allow_weak_deadline: sc.allow_weak_deadline,
            })
        }
    };
    let describe = match &spec {
        TargetSpec::Local => "local".to_string(),
        TargetSpec::Ssh(t) => format!("ssh {}@{}:{}", t.user, t.host, t.port),
        TargetSpec::Scaleway(sc) => format!(
            "scaleway {} in {}",
            sc.types.join(" or "),
            if sc.zones.is_empty() {
                "the credentials' default zone".to_string()
            } else {
                sc.zones.join(" or ")
            }
        ),
    };
    TargetPlan {
        spec,
        describe,
        work_dir: config.target.work_dir.trim_end_matches('/').to_string(),
        profile: config.target.profile.clone(),
    }
}

fn runtime(config: &Config, storage: &StorageSpec) -> Runtime {
    let plex = &config.plex;
    match &plex.runtime {
        RuntimeConfig::Docker {
            image,
            container_name,
            docker_args,
        } => {
            let mut env: Vec<(String, String)> = vec![
                ("PLEX_UID".into(), "1000".into()),
                ("PLEX_GID".into(), "1000".into()),
                ("TZ".into(), "UTC".into()),
            ];
            for (k, v) in &plex.env {
                env.retain(|(ek, _)| ek != k);
                env.push((k.clone(), v.clone()));
            }
            let mut volumes = vec![Volume {
                host: plex.data_dir.clone(),
                container: "/config".into(),
                options: "rw".into(),
            }];
            // The storage decides how the media is bound (same path inside, rslave for mounts).
            volumes.extend(storage.container_volumes());
            Runtime::Docker(DockerSpec {
                name: container_name.clone(),
                image: image.clone(),
                env,
                secret_env: vec![CLAIM_ENV.into()],
                volumes,
                port: plex.port,
                extra_args: docker_args.clone(),
            })
        }
        RuntimeConfig::Command { command } => Runtime::Command(CommandSpec {
            command: command_line(command, &plex.data_dir, plex.port),
            env: plex
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            secret_env: vec![CLAIM_ENV.into()],
            port: plex.port,
            pid_file: format!("{}/plex.pid", config.target.work_dir.trim_end_matches('/')),
            log_file: format!("{}/plex.log", config.target.work_dir.trim_end_matches('/')),
        }),
    }
}

/// The command runtime's shell line with `{data_dir}` and `{port}` substituted.
pub fn command_line(template: &str, data_dir: &str, port: u16) -> String {
    template
        .replace("{data_dir}", &crate::remote::quote(data_dir))
        .replace("{port}", &port.to_string())
}

fn export_plan(config: &Config, options: &RunOptions, storage: &StorageSpec) -> ExportPlan {
    let destination = config.export.destination.trim_end_matches('/').to_string();
    let archive = crate::archive::archive_path(&destination, RUN_ID);
    let data_dir = config.plex.data_dir.clone();
    let bucket = match storage {
        StorageSpec::Rclone(rc) => rc
            .export_path
            .as_ref()
            .map(|p| (rc, format!("{}/{RUN_ID}.tar.zst", p.trim_end_matches('/')))),
        StorageSpec::Path { .. } => None,
    };
    let (mode, stages) = match bucket {
        None => (
            ExportMode::Local,
            crate::archive::local_stages(&data_dir, &archive),
        ),
        Some((rc, object)) if config.export.staged => (
            ExportMode::Staged {
                object: rc.object(&object),
            },
            crate::archive::local_stages(&data_dir, &archive),
        ),
        Some((rc, object)) => (
            ExportMode::Streamed {
                object: rc.object(&object),
            },
            crate::archive::streamed_stages(
                &data_dir,
                &destination,
                RUN_ID,
                &rc.rcat_line(&object),
            ),
        ),
    };
    ExportPlan {
        data_dir,
        destination,
        archive,
        excludes: EXPORT_EXCLUDES.iter().map(|s| s.to_string()).collect(),
        allow_deleted: config.export.allow_deleted || options.allow_deleted,
        mode,
        stages,
    }
}

/// Build the plan. `home` expands `~/` in an ssh identity (this machine's `$HOME`).
pub fn build(config: &Config, options: &RunOptions, home: &str) -> Plan {
    let plex = &config.plex;
    let target = target_plan(config, home);
    let storage = storage::resolve(&config.storage, &target.profile, &target.work_dir);
    let runtime = runtime(config, &storage);
    let sections: Vec<SectionPlan> = config
        .sections
        .iter()
        .filter(|s| options.only_section.is_empty() || options.only_section.contains(&s.name))
        .map(|s| SectionPlan {
            name: s.name.clone(),
            kind: s.kind,
            paths: s.paths.clone(),
            agent: s.agent.clone(),
            scanner: s.scanner.clone(),
            language: s.language.clone(),
            analysis: if options.skip_analysis {
                Vec::new()
            } else {
                analysis_steps(s.kind, &storage, plex.analysis_threads)
            },
            timeout: s.timeout,
            extensions: s.extensions.clone(),
        })
        .collect();
    // A seeded DB knows the library: an incremental scan (force=0) unless asked otherwise.
    let scan_force = options.deep_scan || plex.scan_force.unwrap_or(options.seed.is_none());
    let export = export_plan(config, options, &storage);
    let tools = required_tools(&runtime, &storage);
    let seed = options
        .seed
        .as_ref()
        .map(|s| seed_plan(config, options, s, &runtime, &target));
    let phases = phases(
        options,
        scan_force,
        &target,
        &storage,
        &export,
        seed.as_ref(),
    );
    Plan {
        version: PLAN_VERSION,
        tools,
        plex: PlexPlan {
            start_line: runtime.start_line(),
            runtime,
            port: plex.port,
            data_dir: plex.data_dir.clone(),
            db_path: plex.db_path(),
            prefs_path: plex.prefs_path(),
            startup_timeout: plex.startup_timeout,
            stop_grace: plex.stop_grace,
            scan_force,
            claim: format!(
                "only when Sonic analysis is asked and Preferences.xml has no token: a fresh claim token from {} with the account token (env {} or `plexburst login`), fetched right before Plex starts; else env {CLAIM_ENV}; else asked on a terminal; never stored",
                plex.plextv_url,
                crate::plextv::TOKEN_ENV
            ),
            plextv_url: plex.plextv_url.clone(),
            analysis_threads: plex.analysis_threads,
            sonic_cost: forecast::SonicCost::of(plex.sonic_cpu_seconds_per_track),
        },
        sections,
        monitor: MonitorPlan {
            poll_interval: config.monitor.poll_interval,
            stall_window: config.monitor.stall_window,
            stable_samples: config.monitor.stable_samples,
            max_failed_samples: config.monitor.max_failed_samples,
            log_interval: config.monitor.log_interval,
            scan_timeout: config.timeouts.scan,
            scan_gap: config.monitor.scan_gap,
        },
        export,
        storage,
        target,
        options: options.clone(),
        seed,
        phases,
    }
}

/// The DB writer: a one-off container of the Plex image running its `Plex SQLite` (plex.md §5)
/// on the data dir, or the command runtime's `plex.sqlite`.
pub const PLEX_SQLITE: &str = "/usr/lib/plexmediaserver/Plex SQLite";

fn seed_plan(
    config: &Config,
    options: &RunOptions,
    s: &SeedOption,
    runtime: &Runtime,
    target: &TargetPlan,
) -> SeedPlan {
    let staged = match &s.source {
        crate::seed::SeedSource::Target { path } => path.clone(),
        other => format!(
            "{}/seed/{}",
            target.work_dir.trim_end_matches('/'),
            other.file_name()
        ),
    };
    let sqlite = match runtime {
        Runtime::Docker(d) => {
            let dir = crate::remote::quote(&config.plex.data_dir);
            format!(
                "docker run --rm -i --network none --entrypoint {} -v {dir}:{dir} {}",
                crate::remote::quote(PLEX_SQLITE),
                crate::remote::quote(&d.image)
            )
        }
        Runtime::Command(_) => config.plex.sqlite.clone(),
    };
    SeedPlan {
        source: s.source.clone(),
        kind: s.kind,
        staged,
        sqlite,
        remap: config.remap.clone(),
        sample: config.seed.sample,
        missing_limit: config.seed.missing_limit,
        allow_missing: options.allow_missing,
    }
}

fn phases(
    options: &RunOptions,
    scan_force: bool,
    target: &TargetPlan,
    storage: &StorageSpec,
    export: &ExportPlan,
    seed: Option<&SeedPlan>,
) -> Vec<PhasePlan> {
    let prepare = match storage {
        StorageSpec::Path { path } => format!(
            "check the tools on the target; have the Plex image there (pulled now, never inside a claim's 4 minutes); create the directories; read a file under {path} to prove the library is readable"
        ),
        StorageSpec::Rclone(rc) => format!(
            "check the tools and rclone >= 1.68; have the Plex image there (pulled now, never inside a claim's 4 minutes); push the rclone config (0600); mount {} at {} and wait until a file reads through it; prewarm the directory cache",
            rc.fs, rc.mount_point
        ),
    };
    let analyze = if options.skip_analysis {
        "skipped (--skip-analysis)".to_string()
    } else {
        "one section at a time, as listed under each section".to_string()
    };
    let trash = if export.allow_deleted {
        "export even if Plex's trash grew (allowed)"
    } else {
        "refuse if Plex's trash grew since the scan started"
    };
    let upload = match &export.mode {
        ExportMode::Local => "keep it in the destination".to_string(),
        ExportMode::Staged { object } => format!("copy it to {object} with retries, read back"),
        ExportMode::Streamed { object } => {
            format!("stream it to {object}, then read it back once")
        }
    };
    let provision = match &target.spec {
        TargetSpec::Scaleway(sc) => Some((
            "provision",
            format!(
                "create the server ({}, image {}, root {} {} GB, tags {}, a dynamic IPv4, no flexible IP) with each id journaled before any wait; set its cloud-init user data; power on (out of stock: delete what was made, try the next zone or type); wait for running and an address; SSH with the run's own key, pinning the host key; cloud-init status --wait",
                sc.types[0],
                sc.image_label,
                sc.root_volume_type,
                sc.root_volume_bytes / 1_000_000_000,
                sc.tags.join(", ")
            ),
        )),
        _ => None,
    };
    let rented = provision.is_some();
    let seed = seed.map(|sp| {
        let remap = if sp.remap.is_empty() {
            "no [remap]".to_string()
        } else {
            format!(
                "back the DB up, then rewrite the media paths in one transaction with `{}`: {}",
                sp.sqlite,
                sp.remap
                    .iter()
                    .map(|(o, n)| format!("{o} -> {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        (
            "seed",
            format!(
                "put {} at {} and restore it into the empty data dir ({}); check every table without ICU objects (quick_check, or reading every row), rebuild a damaged one into a new file keeping the original (.recover, else table by table), stop if it cannot be rebuilt; count its sections, tracks and Sonic-analysed tracks; {remap}; check every section's locations against the config; look {} of its paths up on the storage, by top folder, and stop when more than {:.0} % are missing{}",
                sp.source.describe(),
                sp.staged,
                match sp.kind {
                    crate::seed::SeedKind::Archive => "DBs, Metadata/, Media/; not Preferences.xml: the run's Plex has its own identity",
                    crate::seed::SeedKind::Db => "the library DB",
                },
                sp.sample,
                100.0 * sp.missing_limit,
                if sp.allow_missing { " (--allow-missing: warn only)" } else { "" }
            ),
        )
    });
    provision
        .into_iter()
        .chain([
        ("prepare", prepare),
        (
            "preflight",
            "check that every section path is a folder holding files of its type (a missing one is named with its nearest sibling); count each section's media files and bytes, the scan's total".into(),
        ),
    ])
    .chain(seed)
    .chain([
        (
            "start-plex",
            "start Plex (with a claim token fetched that moment when it needs one), wait for /identity, read the token from Preferences.xml, check Plex Pass when analysis is asked".into(),
        ),
        (
            "configure",
            "save current prefs, turn every background task off (one PUT /:/prefs), create missing sections".into(),
        ),
        (
            "scan",
            format!(
                "one GET /library/sections/all/refresh?force={}, watched through the DB until stable",
                u8::from(scan_force)
            ),
        ),
        ("analyze", analyze),
        ("restore", "put back the prefs saved in configure: every one plexburst turned off or on, LongRunningJobThreads included".into()),
        (
            "export",
            format!(
                "{trash}; stop Plex cleanly; archive the data folder (tar | zstd), verify by decompressing and listing; {upload}; manifest"
            ),
        ),
        ("teardown", teardown(options, storage, rented)),
    ])
    .map(|(n, d)| PhasePlan {
        name: n.into(),
        does: d,
    })
    .collect()
}

/// What teardown does: stop what the run started and remove what it put on the target, but for
/// what stays on purpose (the data dir, the archive, logs, a cache the user keeps).
fn teardown(options: &RunOptions, storage: &StorageSpec, rented: bool) -> String {
    let logs = if options.keep_logs {
        "copy the target's logs into the run's directory (--keep-logs); "
    } else {
        ""
    };
    match (rented, options.keep) {
        (true, false) => {
            return format!(
                "{logs}stop Plex and unmount the storage; terminate the server, wait until it is gone, delete every volume, IP and IAM object it had, check that nothing tagged for the run is left"
            );
        }
        (true, true) => {
            return format!(
                "{logs}leave the instance running (--keep); delete it later with `plexburst destroy`"
            );
        }
        _ => {}
    }
    let stop = if options.keep {
        "leave Plex running (--keep)"
    } else {
        "stop Plex and unmount the storage"
    };
    let files = match storage {
        StorageSpec::Path { .. } => String::new(),
        StorageSpec::Rclone(rc) if options.keep => format!(
            "; remove the rclone config (the mount left running keeps its VFS cache {})",
            rc.cache_dir
        ),
        StorageSpec::Rclone(rc) if options.keep_cache => format!(
            "; remove the rclone config, the mount's log and probes, keep its VFS cache {} (--keep-cache)",
            rc.cache_dir
        ),
        StorageSpec::Rclone(rc) => format!(
            "; remove the rclone config, the VFS cache {} and the mount's log and probes",
            rc.cache_dir
        ),
    };
    format!("{logs}{stop}{files}; list what stays on the target, with sizes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Config {
        Config::parse(crate::config::EXAMPLE).unwrap()
    }

    #[test]
    fn plan_of_the_example_lists_every_phase_and_section() {
        let p = build(&example(), &RunOptions::default(), "/home/u");
        // The order itself is checked through `plan --json` (tests/it/config_table.rs).
        assert_eq!(p.phase_names().len(), 9);
        assert_eq!(p.sections[0].name, "Music");
        assert!(
            p.export.stages[0]
                .contains("-path 'Library/Application Support/Plex Media Server/Cache'")
        );
        assert!(p.tools.contains(&"docker".to_string()));
        let only = build(
            &example(),
            &RunOptions {
                only_section: vec!["Movies".into()],
                ..Default::default()
            },
            "/home/u",
        );
        assert_eq!(only.sections.len(), 1);
    }

    #[test]
    fn the_docker_line_carries_the_media_bind_ids_and_only_the_claims_name() {
        let p = build(&example(), &RunOptions::default(), "/home/u");
        let line = &p.plex.start_line;
        for part in [
            "-e PLEX_UID=1000",
            "-e PLEX_GID=1000",
            "-e TZ=UTC",
            "-e PLEX_CLAIM ",
            "-p '127.0.0.1:32400:32400'",
        ] {
            assert!(line.contains(part), "{part} missing from {line}");
        }
        let media = p.storage.media_root().to_string();
        assert!(line.contains(&format!("{media}:{media}:ro")), "{line}");
    }

    #[test]
    fn keep_cache_is_a_run_option_teardown_states() {
        let mut c = example();
        c.storage = crate::config::StorageConfig::Rclone(crate::config::storage::tests::cfg());
        let teardown = |o: &RunOptions| {
            let p = build(&c, o, "/home/u");
            p.phases.last().unwrap().does.clone()
        };
        let cache = match &build(&c, &RunOptions::default(), "/home/u").storage {
            StorageSpec::Rclone(rc) => rc.cache_dir.clone(),
            other => panic!("{other:?}"),
        };
        let default = teardown(&RunOptions::default());
        assert!(
            default.contains(&format!("remove the rclone config, the VFS cache {cache}")),
            "{default}"
        );
        let keep = RunOptions {
            keep_cache: true,
            ..Default::default()
        };
        let kept = teardown(&keep);
        assert!(
            kept.contains("remove the rclone config")
                && kept.contains(&format!("keep its VFS cache {cache} (--keep-cache)")),
            "{kept}"
        );
        let d =
            build(&c, &RunOptions::default(), "/home/u").differences(&build(&c, &keep, "/home/u"));
        assert!(
            d.contains(&"options.keep_cache: false -> true".to_string()),
            "{d:?}"
        );
    }

    #[test]
    fn a_plan_round_trips_through_its_json_and_differences_name_the_field() {
        let p = build(&example(), &RunOptions::default(), "/home/u");
        let back: Plan = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        assert!(p.differences(&back).is_empty());
        let mut c = example();
        c.monitor.stable_samples += 1;
        c.plex.port = 32999;
        let q = build(&c, &RunOptions::default(), "/home/u");
        let d = p.differences(&q);
        assert!(
            d.iter().any(|l| l.starts_with("monitor.stable_samples: ")),
            "{d:?}"
        );
        assert!(d.iter().any(|l| l == "plex.port: 32400 -> 32999"), "{d:?}");
        // Allowing deletions afterwards gives the plan built with --allow-deleted.
        let mut later = p.clone();
        later.allow_deletions();
        let allowed = RunOptions {
            allow_deleted: true,
            ..Default::default()
        };
        assert_eq!(later, build(&example(), &allowed, "/home/u"));
    }
}
