//! The run report: runs/<run-id>/report.json and report.md, plus the `status` views.
//!
//! The report is its own serialized type (not the state file): per-phase start/end, counts before
//! and after, rates, stalls, timeouts, restarts, the export's path and checksum.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use crate::plex::db::DbSample;
use crate::state::{ExportRecord, LeftOnTarget, PhaseRecord, State};

#[derive(Debug, Serialize)]
pub struct Report {
    pub report_version: u32,
    pub run_id: String,
    pub status: crate::state::RunStatus,
    pub target: String,
    pub created_at: String,
    pub updated_at: String,
    pub plex_version: Option<String>,
    pub options: crate::plan::RunOptions,
    pub phases: Vec<PhaseReport>,
    pub export: Option<ExportRecord>,
    pub error: Option<String>,
    /// What the run leaves on its target, as its last cleanup found it.
    pub left_on_target: Option<LeftOnTarget>,
}

#[derive(Debug, Serialize)]
pub struct PhaseReport {
    pub name: String,
    pub status: crate::state::PhaseStatus,
    pub attempts: u32,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub duration_secs: Option<f64>,
    pub detail: Option<String>,
    pub counts_before: Option<DbSample>,
    pub counts_after: Option<DbSample>,
    pub rate_per_sec: Option<f64>,
    pub samples: u64,
    pub failed_samples: u64,
    pub stalls: u32,
    pub timeouts: u32,
    pub restarts: u32,
}

fn duration(p: &PhaseRecord) -> Option<f64> {
    let a: jiff::Timestamp = p.started_at.as_ref()?.parse().ok()?;
    let b: jiff::Timestamp = p.ended_at.as_ref()?.parse().ok()?;
    Some(b.duration_since(a).as_secs_f64())
}

impl Report {
    pub fn from_state(s: &State) -> Report {
        Report {
            report_version: 1,
            run_id: s.run_id.clone(),
            status: s.status,
            target: s.target.clone(),
            created_at: s.created_at.clone(),
            updated_at: s.updated_at.clone(),
            plex_version: s.plex_version.clone(),
            options: s.options.clone(),
            phases: s
                .phases
                .iter()
                .map(|p| PhaseReport {
                    name: p.name.clone(),
                    status: p.status,
                    attempts: p.attempts,
                    started_at: p.started_at.clone(),
                    ended_at: p.ended_at.clone(),
                    duration_secs: duration(p),
                    detail: p.detail.clone(),
                    counts_before: p.counts_before.clone(),
                    counts_after: p.counts_after.clone(),
                    rate_per_sec: p.rate_per_sec,
                    samples: p.samples,
                    failed_samples: p.failed_samples,
                    stalls: p.stalls,
                    timeouts: p.timeouts,
                    restarts: p.restarts,
                })
                .collect(),
            export: s.export.clone(),
            error: s.error.clone(),
            left_on_target: s.left_on_target.clone(),
        }
    }

    pub fn markdown(&self) -> String {
        let mut m = format!("# plexburst run {}\n\n", self.run_id);
        m.push_str(&format!(
            "- status: **{:?}**\n- target: {}\n",
            self.status, self.target
        ));
        m.push_str(&format!(
            "- started: {}\n- last update: {}\n",
            self.created_at, self.updated_at
        ));
        if let Some(v) = &self.plex_version {
            m.push_str(&format!("- Plex: {v}\n"));
        }
        if let Some(e) = &self.error {
            m.push_str(&format!("- error: {e}\n"));
        }
        m.push_str("\n## Phases\n\n| phase | status | duration | rate/s | samples (failed) | stalls | timeouts | restarts | detail |\n|---|---|---|---|---|---|---|---|---|\n");
        for p in &self.phases {
            m.push_str(&format!(
                "| {} | {:?} | {} | {} | {} ({}) | {} | {} | {} | {} |\n",
                p.name,
                p.status,
                p.duration_secs
                    .map(|d| format!("{d:.1}s"))
                    .unwrap_or_default(),
                p.rate_per_sec
                    .map(|r| format!("{r:.1}"))
                    .unwrap_or_default(),
                p.samples,
                p.failed_samples,
                p.stalls,
                p.timeouts,
                p.restarts,
                p.detail
                    .as_deref()
                    .unwrap_or("")
                    .replace('|', "\\|")
                    .replace('\n', " ")
            ));
        }
        for p in &self.phases {
            if p.counts_before.is_none() && p.counts_after.is_none() {
                continue;
            }
            m.push_str(&format!("\n## Counts, {}\n\n| section | type | items before | items after | tracks | Sonic | photos | thumbnailed | deleted |\n|---|---|---|---|---|---|---|---|---|\n", p.name));
            let after = p.counts_after.clone().unwrap_or_default();
            let before = p.counts_before.clone().unwrap_or_default();
            for c in &after.sections {
                let b = before
                    .sections
                    .iter()
                    .find(|x| x.section_id == c.section_id)
                    .map(|x| x.items);
                m.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    c.name,
                    c.section_type,
                    b.map(|b| b.to_string()).unwrap_or_else(|| "-".into()),
                    c.items,
                    c.tracks,
                    c.sonic_analyzed,
                    c.photos,
                    c.thumbnailed,
                    c.deleted
                ));
            }
        }
        if let Some(x) = &self.export {
            m.push_str(&format!(
                "\n## Export\n\n- archive: `{}`\n- manifest: `{}`\n- sha256: `{}`\n- size: {} bytes, {} entries (verified by one read back: decompressed, listed, hashed)\n",
                x.archive, x.manifest, x.sha256, x.bytes, x.files
            ));
        }
        if let Some(left) = &self.left_on_target {
            m.push_str(&format!(
                "\n## Left on the target\n\n```text\n{}```\n",
                render_left(left, &self.target)
            ));
        }
        m
    }
}

/// What a run leaves on its target, for people (the end of a run, `destroy`, the report): what
/// stays on purpose with sizes, then either that nothing else remains or what does, and any Plex
/// setting that could not be put back.
pub fn render_left(left: &LeftOnTarget, target: &str) -> String {
    let size = |b: Option<u64>| {
        b.map(crate::units::format_bytes)
            .unwrap_or_else(|| "size unknown".into())
    };
    let mut out = format!("left on {target} on purpose, as {} found it:\n", left.by);
    if left.kept.is_empty() {
        out.push_str("  nothing\n");
    }
    for k in &left.kept {
        out.push_str(&format!("  {}: {} ({})\n", k.what, k.path, size(k.bytes)));
    }
    if left.stray.is_empty() {
        out.push_str(&format!(
            "nothing else plexburst put on {target} remains (looked at: its secret, cache and scratch files, its work dir, the run's files beside the archive)\n"
        ));
    } else {
        out.push_str(&format!(
            "also still on {target}, though it should not be (remove it, or run `plexburst destroy` again):\n"
        ));
        for k in &left.stray {
            out.push_str(&format!("  {}: {} ({})\n", k.what, k.path, size(k.bytes)));
        }
    }
    if !left.prefs_not_restored.is_empty() {
        out.push_str(&format!(
            "Plex settings plexburst changed and could NOT put back; set them again (Plex's settings, or Preferences.xml with Plex stopped): {}\n",
            left.prefs_not_restored.join(", ")
        ));
    }
    out
}

/// Write `runs/<run-id>/report.json` and `report.md`; returns that directory.
pub fn write(state_dir: &Path, s: &State) -> anyhow::Result<PathBuf> {
    let dir = state_dir.join("runs").join(&s.run_id);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let r = Report::from_state(s);
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&r)?)
        .with_context(|| format!("cannot write the report in {}", dir.display()))?;
    std::fs::write(dir.join("report.md"), r.markdown())
        .with_context(|| format!("cannot write the report in {}", dir.display()))?;
    Ok(dir)
}

/// `plexburst status --json`.
#[derive(Debug, Serialize)]
pub struct StatusJson {
    pub status_version: u32,
    pub run_id: String,
    pub status: crate::state::RunStatus,
    pub current_phase: Option<String>,
    pub target: String,
    pub updated_at: String,
    pub phases: Vec<(String, crate::state::PhaseStatus)>,
    pub last_sample: Option<DbSample>,
    pub export: Option<ExportRecord>,
    pub error: Option<String>,
}

impl StatusJson {
    pub fn from_state(s: &State) -> StatusJson {
        StatusJson {
            status_version: 1,
            run_id: s.run_id.clone(),
            status: s.status,
            current_phase: s.current_phase.clone(),
            target: s.target.clone(),
            updated_at: s.updated_at.clone(),
            phases: s
                .phases
                .iter()
                .map(|p| (p.name.clone(), p.status))
                .collect(),
            last_sample: s.last_sample.clone(),
            export: s.export.clone(),
            error: s.error.clone(),
        }
    }
}

/// `plexburst status`.
pub fn render_status(s: &State) -> String {
    let mut out = format!("run {} on {}: {:?}\n", s.run_id, s.target, s.status);
    for p in &s.phases {
        out.push_str(&format!(
            "  {:<10} {:<11} {}\n",
            p.name,
            format!("{:?}", p.status).to_lowercase(),
            p.detail.as_deref().unwrap_or("")
        ));
    }
    if let Some(sample) = &s.last_sample {
        out.push_str("last sample:\n");
        for c in &sample.sections {
            out.push_str(&format!(
                "  {:<20} items {:>8}  tracks {:>8}  sonic {:>8}  photos {:>6}  thumbs {:>6}  deleted {:>5}\n",
                c.name, c.items, c.tracks, c.sonic_analyzed, c.photos, c.thumbnailed, c.deleted
            ));
        }
    }
    if let Some(e) = &s.error {
        out.push_str(&format!("error: {e}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::KeptItem;

    fn item(what: &str, path: &str, bytes: Option<u64>) -> KeptItem {
        KeptItem {
            what: what.into(),
            path: path.into(),
            bytes,
        }
    }

    #[test]
    fn what_stays_is_listed_with_sizes_and_anything_else_is_not_hidden() {
        let mut left = LeftOnTarget {
            checked_at: "t".into(),
            by: "destroy".into(),
            kept: vec![item("Plex data dir", "/srv/plex", Some(3 << 30))],
            stray: Vec::new(),
            prefs_not_restored: Vec::new(),
        };
        let text = render_left(&left, "ssh u@h:22");
        assert_eq!(
            text,
            "left on ssh u@h:22 on purpose, as destroy found it:\n  Plex data dir: /srv/plex (3.0 GiB)\nnothing else plexburst put on ssh u@h:22 remains (looked at: its secret, cache and scratch files, its work dir, the run's files beside the archive)\n"
        );
        left.stray = vec![item("rclone config", "/w/rclone/rclone.conf", None)];
        left.prefs_not_restored = vec!["autoEmptyTrash=true".into()];
        let text = render_left(&left, "local");
        assert!(!text.contains("nothing else"), "{text}");
        assert!(
            text.contains("  rclone config: /w/rclone/rclone.conf (size unknown)\n"),
            "{text}"
        );
        assert!(
            text.contains("could NOT put back") && text.contains("autoEmptyTrash=true"),
            "{text}"
        );
    }
}
