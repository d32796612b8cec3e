//! Config -> Plan: everything the run will do, as plain data (no I/O).

use serde::Serialize;

use crate::config::{Config, RuntimeConfig, SectionType, TargetKind, format_duration};

/// Directories of the data folder that are not exported (regenerable or diagnostic only).
pub const EXPORT_EXCLUDES: &[&str] = &["Cache", "Logs", "Crash Reports", "Diagnostics", "Updates"];

/// The tools each run needs on the target, before anything starts.
pub fn required_tools(config: &Config) -> Vec<&'static str> {
    let mut t = vec!["sh", "sqlite3", "tar", "zstd", "sha256sum", "find"];
    match config.plex.runtime {
        RuntimeConfig::Docker { .. } => t.push("docker"),
        RuntimeConfig::Command { .. } => t.push("setsid"),
    }
    t
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub version: u32,
    pub target: String,
    pub work_dir: String,
    pub required_tools: Vec<String>,
    pub storage: serde_json::Value,
    pub plex: PlexPlan,
    pub sections: Vec<SectionPlan>,
    pub phases: Vec<PhasePlan>,
    pub monitor: MonitorPlan,
    pub export: ExportPlan,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlexPlan {
    pub runtime: String,
    /// The command line (command runtime) or the image (docker runtime).
    pub start: String,
    pub port: u16,
    pub data_dir: String,
    pub db_path: String,
    pub preferences: String,
    pub scan_force: bool,
    pub claim: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SectionPlan {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub paths: Vec<String>,
    pub agent: String,
    pub scanner: String,
    pub language: String,
    pub analysis: String,
    pub timeout: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PhasePlan {
    pub name: String,
    pub does: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct MonitorPlan {
    pub poll_interval: String,
    pub stall_window: String,
    pub stable_samples: u32,
    pub max_failed_samples: u32,
    pub scan_timeout: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExportPlan {
    pub destination: String,
    /// What happens when Plex's trash grew during the run.
    pub trash_gate: String,
    pub excludes: Vec<String>,
    pub command: String,
    /// Where the archive goes besides (or instead of) `destination`.
    pub upload: String,
}

/// What the analysis of a section of this type does (empty: nothing to analyse).
pub fn analysis_of(kind: SectionType) -> &'static str {
    match kind {
        SectionType::Music => "Sonic analysis (MusicAnalysisBehavior + POST /butler/MusicAnalysis)",
        SectionType::Photo => "photo thumbnails (PUT /library/sections/{id}/analyze)",
        SectionType::Movie | SectionType::Show => "",
    }
}

/// The `find` that lists what the export archives: the data folder's `Library` tree minus the
/// excluded directories, NUL-separated (names may hold newlines), in a stable order.
pub fn find_command(data_dir: &str) -> String {
    let prunes: Vec<String> = EXPORT_EXCLUDES
        .iter()
        .map(|x| {
            format!(
                "-path {}",
                quote(&format!(
                    "Library/Application Support/Plex Media Server/{x}"
                ))
            )
        })
        .collect();
    format!(
        "cd {} && find Library \\( {} \\) -prune -o -print0 | LC_ALL=C sort -z",
        quote(data_dir),
        prunes.join(" -o ")
    )
}

/// Size, mtime and name of every entry the export archives (to prove nothing changed meanwhile).
pub fn snapshot_command(data_dir: &str) -> String {
    find_command(data_dir).replace("-print0", "-printf '%s %T@ %p\\0'")
}

/// The `tar` half of the export: exactly the entries of the list `find_command` wrote.
pub fn tar_command(data_dir: &str, list: &str) -> String {
    format!(
        "tar -C {} --null --no-recursion -T {} -cf -",
        quote(data_dir),
        quote(list)
    )
}

/// The `zstd` half of the export, writing `archive`.
pub fn zstd_command(archive: &str) -> String {
    format!("zstd -T0 -3 -q -f -o {}", quote(archive))
}

/// The export pipeline the target runs (quoted for `sh`): list, then archive exactly that list.
pub fn export_command(data_dir: &str, archive: &str) -> String {
    let list = format!("{archive}.files");
    format!(
        "{} > {}; {} | {}",
        find_command(data_dir),
        quote(&list),
        tar_command(data_dir, &list),
        zstd_command(archive)
    )
}

pub fn quote(s: &str) -> String {
    shell_escape::unix::escape(s.into()).into_owned()
}

/// Sections the run works on (`--only-section` filters by name; unknown names are checked by the caller).
pub fn selected<'a>(config: &'a Config, only: &[String]) -> Vec<&'a crate::config::SectionConfig> {
    config
        .sections
        .iter()
        .filter(|s| only.is_empty() || only.contains(&s.name))
        .collect()
}

pub fn describe_target(config: &Config) -> String {
    match &config.target.kind {
        TargetKind::Local => "local".into(),
        TargetKind::Ssh {
            host, port, user, ..
        } => format!("ssh {user}@{host}:{port}"),
    }
}

pub fn build(config: &Config, run: &crate::cli::RunArgs) -> Plan {
    let plex = &config.plex;
    let (runtime, start) = match &plex.runtime {
        RuntimeConfig::Docker {
            image,
            container_name,
            ..
        } => (
            "docker".to_string(),
            format!(
                "docker run --name {container_name} -p 127.0.0.1:{}:32400 -v {}:/config {image}",
                plex.port, plex.data_dir
            ),
        ),
        RuntimeConfig::Command { command } => (
            "command".to_string(),
            command_line(command, &plex.data_dir, plex.port),
        ),
    };
    let sections: Vec<SectionPlan> = selected(config, &run.only_section)
        .into_iter()
        .map(|s| SectionPlan {
            name: s.name.clone(),
            kind: s.kind.as_str().into(),
            paths: s.paths.clone(),
            agent: s.agent.clone(),
            scanner: s.scanner.clone(),
            language: s.language.clone(),
            analysis: if run.skip_analysis {
                "skipped (--skip-analysis)".into()
            } else {
                analysis_of(s.kind).into()
            },
            timeout: format_duration(s.timeout),
        })
        .collect();
    let force = plex.scan_force || run.deep_scan;
    let phases = [
        ("prepare", format!("check {} on the target; prepare and mount the storage", required_tools(config).join(", "))),
        (
            "start-plex",
            "start Plex, wait for /identity, read the token from Preferences.xml, check Plex Pass when analysis is asked"
                .into(),
        ),
        ("configure", "save current prefs, turn every background task off (one PUT /:/prefs), create missing sections".into()),
        ("scan", format!("one GET /library/sections/all/refresh?force={}, watched through the DB until stable", u8::from(force))),
        (
            "analyze",
            if run.skip_analysis {
                "skipped (--skip-analysis)".into()
            } else {
                "one section at a time: enable only what it needs, trigger, watch analysed counts and CPU, turn it off".into()
            },
        ),
        ("restore", "put back the prefs saved in configure".into()),
        ("export", "refuse if Plex's trash grew since the scan started (unless allowed), stop Plex cleanly, tar | zstd the data folder, sha256, verify by decompressing and listing, manifest".into()),
        (
            "teardown",
            if run.keep { "leave Plex running (--keep)".into() } else { "stop Plex and unmount the storage".into() },
        ),
    ]
    .into_iter()
    .map(|(n, d)| PhasePlan { name: n.into(), does: d })
    .collect();
    let archive = format!(
        "{}/<run-id>.tar.zst",
        config.export.destination.trim_end_matches('/')
    );
    let storage = config
        .storage
        .build(&config.target.profile, &config.target.work_dir);
    let bucket = storage
        .as_rclone()
        .and_then(|rc| rc.config().export_path.clone().map(|p| (rc, p)));
    let (command, upload) = match bucket {
        None => (
            export_command(&plex.data_dir, &archive),
            "none: the archive stays in the destination on the target".to_string(),
        ),
        Some((rc, prefix)) => {
            let object = format!("{}/<run-id>.tar.zst", prefix.trim_end_matches('/'));
            if config.export.staged {
                (
                    export_command(&plex.data_dir, &archive),
                    format!(
                        "staged (export.staged = true): after the local verification, rclone copyto of the archive and its manifest to {} with retries, then size and sha256 read back",
                        rc.object(&object)
                    ),
                )
            } else {
                let list = format!(
                    "{}/<run-id>.stream.files",
                    config.export.destination.trim_end_matches('/')
                );
                (
                    format!(
                        "{} > {}; {} | zstd -q -T0 -3 | {}",
                        find_command(&plex.data_dir),
                        quote(&list),
                        tar_command(&plex.data_dir, &list),
                        rc.plan_rcat(&object)
                    ),
                    format!(
                        "streamed to {} (nothing staged on the target), then its size, and one read back for sha256 and entries; the manifest is uploaded beside it (export.staged = true stages it first, with retries)",
                        rc.object(&object)
                    ),
                )
            }
        }
    };
    Plan {
        version: 1,
        target: describe_target(config),
        work_dir: config.target.work_dir.clone(),
        required_tools: required_tools(config).into_iter().map(String::from).collect(),
        storage: serde_json::to_value(&config.storage).unwrap_or(serde_json::Value::Null),
        plex: PlexPlan {
            runtime,
            start,
            port: plex.port,
            data_dir: plex.data_dir.clone(),
            db_path: plex.db_path(),
            preferences: plex.prefs_path(),
            scan_force: force,
            claim: "from env PLEX_CLAIM (or a prompt on a terminal) when the server is unclaimed and analysis is asked; never stored".into(),
        },
        sections,
        phases,
        monitor: MonitorPlan {
            poll_interval: format_duration(config.monitor.poll_interval),
            stall_window: format_duration(config.monitor.stall_window),
            stable_samples: config.monitor.stable_samples,
            max_failed_samples: config.monitor.max_failed_samples,
            scan_timeout: format_duration(config.timeouts.scan),
        },
        export: ExportPlan {
            destination: config.export.destination.clone(),
            trash_gate: if config.export.allow_deleted || run.allow_deleted {
                format!(
                    "allowed ({}): the export proceeds even if items went to Plex's trash during the run",
                    if run.allow_deleted { "--allow-deleted" } else { "export.allow_deleted = true" }
                )
            } else {
                "refuse the export if items went to Plex's trash during the run (allow with export.allow_deleted = true or --allow-deleted)".into()
            },
            excludes: EXPORT_EXCLUDES.iter().map(|s| s.to_string()).collect(),
            command,
            upload,
        },
    }
}

/// The command runtime's shell line with `{data_dir}` and `{port}` substituted.
pub fn command_line(template: &str, data_dir: &str, port: u16) -> String {
    template
        .replace("{data_dir}", &quote(data_dir))
        .replace("{port}", &port.to_string())
}

impl Plan {
    /// The human rendering of `plexburst plan`.
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!("target:   {}\n", self.target));
        s.push_str(&format!("tools:    {}\n", self.required_tools.join(", ")));
        s.push_str(&format!("storage:  {}\n", self.storage));
        s.push_str(&format!(
            "plex:     {} on 127.0.0.1:{}\n          {}\n",
            self.plex.runtime, self.plex.port, self.plex.start
        ));
        s.push_str(&format!(
            "data dir: {}\ndatabase: {}\n",
            self.plex.data_dir, self.plex.db_path
        ));
        s.push_str("sections:\n");
        for sec in &self.sections {
            s.push_str(&format!(
                "  - {} ({}) {} [{} / {} / {}]\n",
                sec.name,
                sec.kind,
                sec.paths.join(", "),
                sec.agent,
                sec.scanner,
                sec.language
            ));
            if !sec.analysis.is_empty() {
                s.push_str(&format!(
                    "      analysis: {} (timeout {})\n",
                    sec.analysis, sec.timeout
                ));
            }
        }
        s.push_str("phases:\n");
        for (i, p) in self.phases.iter().enumerate() {
            s.push_str(&format!("  {}. {:<10} {}\n", i + 1, p.name, p.does));
        }
        s.push_str(&format!(
            "monitor:  every {}, stalled after {} without progress, done after {} stable samples\n",
            self.monitor.poll_interval, self.monitor.stall_window, self.monitor.stable_samples
        ));
        s.push_str(&format!(
            "export:   {}\n          {}\n          upload: {}\n          trash: {}\n",
            self.export.destination,
            self.export.command,
            self.export.upload,
            self.export.trash_gate
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_of_the_example_lists_every_phase_and_section() {
        let c = Config::parse(crate::config::EXAMPLE).unwrap();
        let p = build(&c, &Default::default());
        assert_eq!(p.phases.len(), 8);
        assert_eq!(p.sections[0].name, "Music");
        assert!(
            p.export
                .command
                .contains("-path 'Library/Application Support/Plex Media Server/Cache'")
        );
        assert!(p.required_tools.contains(&"docker".to_string()));
        let only = build(
            &c,
            &crate::cli::RunArgs {
                only_section: vec!["Movies".into()],
                ..Default::default()
            },
        );
        assert_eq!(only.sections.len(), 1);
    }

    #[test]
    fn rclone_export_path_streams_by_default_and_stages_when_asked() {
        let mut c = Config::parse(crate::config::EXAMPLE).unwrap();
        c.storage = toml::from_str(
            "kind = \"rclone\"\nremote = \"s3lib\"\nbucket = \"media\"\nmount_point = \"/mnt/media\"\nexport_path = \"exports/pb\"\n",
        )
        .unwrap();
        let p = build(&c, &Default::default());
        assert!(
            p.export.command.ends_with(
                "| zstd -q -T0 -3 | rclone rcat --s3-chunk-size 64M --s3-upload-concurrency 8 --retries 5 --low-level-retries 20 's3lib:exports/pb/<run-id>.tar.zst'"
            ),
            "{}",
            p.export.command
        );
        assert!(
            p.export
                .upload
                .starts_with("streamed to s3lib:exports/pb/<run-id>.tar.zst")
        );
        c.export.staged = true;
        let p = build(&c, &Default::default());
        assert!(
            p.export.command.contains("zstd -T0 -3 -q -f -o"),
            "{}",
            p.export.command
        );
        assert!(p.export.upload.starts_with("staged"), "{}", p.export.upload);
        assert!(p.export.trash_gate.starts_with("refuse"));
        let allowed = build(
            &c,
            &crate::cli::RunArgs {
                allow_deleted: true,
                ..Default::default()
            },
        );
        assert!(
            allowed
                .export
                .trash_gate
                .starts_with("allowed (--allow-deleted)")
        );
    }
}
