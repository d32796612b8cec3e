//! The human rendering of a `Plan` (`plexburst plan`): every command as the run issues it.

use std::fmt::Write;

use super::{ExportMode, Plan, StorageSpec, TargetSpec};
use crate::remote::quote;
use crate::units::format_duration as d;

impl Plan {
    /// What `plexburst plan` prints.
    pub fn render(&self) -> String {
        let mut s = String::new();
        // `write!` into a String cannot fail.
        let _ = self.render_into(&mut s);
        s
    }

    fn render_into(&self, s: &mut String) -> std::fmt::Result {
        writeln!(s, "target:   {}", self.target.describe)?;
        if let TargetSpec::Ssh(t) = &self.target.spec {
            let args: Vec<String> = t.login_args().iter().map(|a| quote(a)).collect();
            writeln!(s, "          ssh {}", args.join(" "))?;
        }
        writeln!(
            s,
            "work dir: {} (profile {})",
            self.target.work_dir, self.target.profile
        )?;
        writeln!(s, "tools:    {}", self.tools.join(", "))?;
        match &self.storage {
            StorageSpec::Path { path } => {
                writeln!(s, "storage:  path {path} (already on the target)")?
            }
            StorageSpec::Rclone(rc) => {
                writeln!(
                    s,
                    "storage:  rclone {} read-only at {}",
                    rc.fs, rc.mount_point
                )?;
                writeln!(
                    s,
                    "          config: {} (0600; removed at teardown, after a failure and by destroy)",
                    rc.conf_source_text()
                )?;
                let line: Vec<String> = rc.mount_argv.iter().map(|a| quote(a)).collect();
                writeln!(s, "          {}", line.join(" "))?;
                writeln!(
                    s,
                    "          prewarm: list every directory{}; probe: {}",
                    if rc.prewarm_stat {
                        format!(
                            ", stat every file ({} in parallel)",
                            rc.settings.stat_parallel
                        )
                    } else {
                        String::new()
                    },
                    rc.anchor
                        .as_deref()
                        .map(|a| format!("{a} and one file per top-level folder"))
                        .unwrap_or_else(|| "one file per top-level folder".into())
                )?;
            }
        }
        writeln!(
            s,
            "plex:     {} on 127.0.0.1:{}",
            match self.plex.runtime {
                crate::runtime::Runtime::Docker(_) => "docker",
                crate::runtime::Runtime::Command(_) => "command",
            },
            self.plex.port
        )?;
        writeln!(s, "          {}", self.plex.start_line)?;
        writeln!(s, "          claim: {}", self.plex.claim)?;
        if !self.sonic_sections().is_empty() {
            writeln!(
                s,
                "          Sonic cost: {}",
                self.plex.sonic_cost.describe()
            )?;
        }
        writeln!(
            s,
            "data dir: {}\ndatabase: {}",
            self.plex.data_dir, self.plex.db_path
        )?;
        writeln!(s, "sections:")?;
        for sec in &self.sections {
            writeln!(
                s,
                "  - {} ({}) {} [{} / {} / {}]",
                sec.name,
                sec.kind.as_str(),
                sec.paths.join(", "),
                sec.agent,
                sec.scanner,
                sec.language
            )?;
            writeln!(
                s,
                "      media files: {}",
                sec.extensions
                    .iter()
                    .map(|e| format!(".{e}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )?;
            if !sec.analysis.is_empty() {
                writeln!(s, "      analysis (timeout {}):", d(sec.timeout))?;
                for (i, step) in sec.analysis.iter().enumerate() {
                    writeln!(s, "        {}. {step}", i + 1)?;
                }
            }
        }
        writeln!(s, "phases:")?;
        for (i, p) in self.phases.iter().enumerate() {
            writeln!(s, "  {}. {:<10} {}", i + 1, p.name, p.does)?;
        }
        writeln!(
            s,
            "monitor:  every {}, stalled after {} without progress, done after {} stable samples, scan timeout {}",
            d(self.monitor.poll_interval),
            d(self.monitor.stall_window),
            self.monitor.stable_samples,
            d(self.monitor.scan_timeout)
        )?;
        writeln!(s, "export:   {}", self.export.archive)?;
        for stage in &self.export.stages {
            writeln!(s, "          {stage}")?;
        }
        match &self.export.mode {
            ExportMode::Local => writeln!(s, "          kept on the target")?,
            ExportMode::Staged { object } => writeln!(
                s,
                "          staged (export.staged = true): copied to {object} with retries after the local verification, size and sha256 read back"
            )?,
            ExportMode::Streamed { object } => writeln!(
                s,
                "          streamed to {object} (nothing staged on the target), then its size, and one read back for sha256 and entries; the manifest beside it"
            )?,
        }
        writeln!(
            s,
            "          trash: {}",
            if self.export.allow_deleted {
                "allowed: the export proceeds even if items went to Plex's trash during the run"
            } else {
                "refuse the export if items went to Plex's trash during the run (allow with export.allow_deleted = true or --allow-deleted)"
            }
        )
    }
}
