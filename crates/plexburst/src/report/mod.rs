//! The run report: runs/<run-id>/report.json and report.md, plus the `status` views.
//!
//! The report is its own serialized type (not the state file): per-phase start/end, counts before
//! and after, rates, stalls, timeouts, restarts, the export's path and checksum. `report.html`
//! (`html`) draws the run's time series (`samples`) beside it.

pub mod html;
pub mod samples;

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
    /// What the run found wrong without failing; non-empty: "done with warnings".
    pub warnings: Vec<String>,
    /// The status as `status` prints it (`Done with 1 warning`).
    pub status_text: String,
    /// What the rented machines cost (none for a machine not rented).
    pub cost: Option<String>,
    /// What teardown deleted.
    pub released: Vec<String>,
    /// Per section: the media files the preflight found against the items the scan made.
    pub files_and_items: Vec<FilesAndItems>,
    /// A seeded run: the seed as checked, remapped and sampled, and what the run changed.
    pub seed: Option<crate::seed::SeedRecord>,
    /// What Sonic analysis cost per track on this run's machine, as measured.
    pub sonic_cpu: Option<SonicCpu>,
}

/// The run's measured Sonic CPU cost: what `plex.sonic_cpu_seconds_per_track` is calibrated with.
#[derive(Debug, Serialize)]
pub struct SonicCpu {
    pub cpu_seconds: f64,
    pub tracks: i64,
    pub cpu_seconds_per_track: f64,
}

impl SonicCpu {
    fn of(s: &State) -> Option<SonicCpu> {
        let p = s.phase("analyze")?;
        (p.sonic_tracks > 0).then(|| SonicCpu {
            cpu_seconds: p.sonic_cpu_secs,
            tracks: p.sonic_tracks,
            cpu_seconds_per_track: p.sonic_cpu_secs / p.sonic_tracks as f64,
        })
    }

    pub fn sentence(&self) -> String {
        let per = significant(self.cpu_seconds_per_track);
        format!(
            "Sonic analysis took {per} CPU seconds per track on this machine ({:.1} CPU s of Plex for {} tracks); to forecast with it, set plex.sonic_cpu_seconds_per_track = {per}",
            self.cpu_seconds, self.tracks
        )
    }
}

/// `x` with three significant digits (`23.4`, `0.00417`): a measured cost as precise as it is,
/// never rounded to a zero the config would refuse.
fn significant(x: f64) -> String {
    if x <= 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let decimals = (2 - x.log10().floor() as i32).clamp(0, 12) as usize;
    format!("{x:.decimals$}")
}

#[derive(Debug, Serialize)]
pub struct FilesAndItems {
    pub section: String,
    pub media_files: u64,
    pub media_bytes: u64,
    /// Items after the scan; `None` before the scan ended.
    pub items: Option<i64>,
}

/// Files found against items made, from the preflight's survey and the scan's last counts.
fn files_and_items(s: &State) -> Vec<FilesAndItems> {
    let after = s.phase("scan").and_then(|p| p.counts_after.as_ref());
    s.survey
        .iter()
        .map(|v| FilesAndItems {
            section: v.name.clone(),
            media_files: v.media_files,
            media_bytes: v.media_bytes,
            items: after.and_then(|a| {
                a.sections
                    .iter()
                    .find(|c| c.name == v.name)
                    .map(|c| c.items)
            }),
        })
        .collect()
}

/// `Done`, `Done with 2 warnings`, `Failed`, … for a human.
pub fn status_word(s: &State) -> String {
    match (s.status, s.warnings.len()) {
        (crate::state::RunStatus::Done, 0) => "Done".into(),
        (crate::state::RunStatus::Done, 1) => "Done with 1 warning".into(),
        (crate::state::RunStatus::Done, n) => format!("Done with {n} warnings"),
        (st, _) => format!("{st:?}"),
    }
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
    /// What the rented machines cost while this phase ran (none when nothing was rented).
    pub cost_eur: Option<f64>,
}

/// The rented machines' cost over a phase's interval: each server's price times the part of its
/// lifetime inside the phase.
fn phase_cost(s: &State, p: &PhaseRecord) -> Option<f64> {
    if s.rented.is_empty() {
        return None;
    }
    let a: jiff::Timestamp = p.started_at.as_ref()?.parse().ok()?;
    let b: jiff::Timestamp = p.ended_at.as_ref()?.parse().ok()?;
    let mut sum = 0.0;
    for r in &s.rented {
        let Ok(ra) = r.started_at.parse::<jiff::Timestamp>() else {
            continue;
        };
        let rb = r
            .ended_at
            .as_ref()
            .and_then(|e| e.parse::<jiff::Timestamp>().ok())
            .unwrap_or(b);
        let (from, to) = (a.max(ra), b.min(rb));
        if to > from {
            sum += r.hourly_price * to.duration_since(from).as_secs_f64() / 3600.0;
        }
    }
    Some(sum)
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
                    cost_eur: phase_cost(s, p),
                })
                .collect(),
            export: s.export.clone(),
            error: s.error.clone(),
            warnings: s.warnings.clone(),
            files_and_items: files_and_items(s),
            seed: s.seed.clone(),
            sonic_cpu: SonicCpu::of(s),
            status_text: status_word(s),
            cost: (!s.rented.is_empty()).then(|| cost_line(s, jiff::Timestamp::now())),
            released: s.released.clone(),
            left_on_target: s.left_on_target.clone(),
        }
    }

    pub fn markdown(&self) -> String {
        let mut m = format!("# plexburst run {}\n\n", self.run_id);
        m.push_str(&format!(
            "- status: **{}**\n- target: {}\n",
            self.status_text, self.target
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
        if let Some(c) = &self.cost {
            m.push_str(&format!("- cost: {c}\n"));
        }
        if let Some(c) = &self.sonic_cpu {
            m.push_str(&format!("- {}\n", c.sentence()));
        }
        if !self.released.is_empty() {
            m.push_str(&format!(
                "- deleted at the end: {}\n",
                self.released.join(", ")
            ));
        }
        if !self.warnings.is_empty() {
            m.push_str("\n## Warnings\n\n");
            for w in &self.warnings {
                m.push_str(&format!("- {w}\n"));
            }
        }
        if let Some(sd) = &self.seed {
            m.push_str(&seed_markdown(sd));
        }
        if !self.files_and_items.is_empty() {
            m.push_str("\n## Files found and items made\n\n| section | media files | size | items after the scan |\n|---|---|---|---|\n");
            for f in &self.files_and_items {
                m.push_str(&format!(
                    "| {} | {} | {} | {} |\n",
                    f.section,
                    f.media_files,
                    crate::units::format_bytes(f.media_bytes),
                    f.items.map(|i| i.to_string()).unwrap_or_else(|| "-".into())
                ));
            }
        }
        m.push_str("\n## Phases\n\n| phase | status | duration | cost EUR | rate/s | samples (failed) | stalls | timeouts | restarts | detail |\n|---|---|---|---|---|---|---|---|---|---|\n");
        for p in &self.phases {
            m.push_str(&format!(
                "| {} | {:?} | {} | {} | {} | {} ({}) | {} | {} | {} | {} |\n",
                p.name,
                p.status,
                p.duration_secs
                    .map(|d| format!("{d:.1}s"))
                    .unwrap_or_default(),
                p.cost_eur.map(|c| format!("{c:.4}")).unwrap_or_default(),
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
/// The seed, its repair and remap, the path sample, and per section what the run changed.
fn seed_markdown(sd: &crate::seed::SeedRecord) -> String {
    let mut m = format!("\n## Seed\n\n- from: {}\n", sd.source);
    m.push_str(&format!(
        "- check: {} tables by quick_check, {} by reading every row (ICU objects); {}\n",
        sd.check.quick_checked,
        sd.check.read_checked,
        if sd.check.ok() {
            "sound".to_string()
        } else {
            format!("damaged: {}", sd.check.problems.join("; "))
        }
    ));
    if let Some(k) = &sd.recovered_from {
        m.push_str(&format!(
            "- repaired with .recover; the original is kept as {k}\n"
        ));
    }
    if !sd.remap.is_empty() {
        let rows: Vec<String> = sd.remap.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        m.push_str(&format!("- remap, rows changed: {}\n", rows.join(", ")));
    }
    if let Some(b) = &sd.remap_backup {
        m.push_str(&format!("- the DB before the remap: {b}\n"));
    }
    if let Some(smp) = &sd.sample {
        m.push_str(&format!("- paths on the storage: {}\n", smp.summary()));
    }
    if !sd.delta.is_empty() {
        m.push_str("\n| section | items seeded | items now | added | removed | Sonic seeded | Sonic now | newly analysed |\n|---|---|---|---|---|---|---|---|\n");
        for d in &sd.delta {
            m.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                d.name,
                d.seeded_items,
                d.items,
                d.added,
                d.removed,
                d.seeded_sonic,
                d.sonic,
                d.newly_analysed
            ));
        }
    } else if !sd.sections.is_empty() {
        m.push_str("\n| section | items seeded | tracks | Sonic-analysed |\n|---|---|---|---|\n");
        for s in &sd.sections {
            m.push_str(&format!(
                "| {} | {} | {} | {} |\n",
                s.name, s.items, s.tracks, s.sonic
            ));
        }
    }
    m
}

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

/// Write `runs/<run-id>/report.json`, `report.md` and `report.html` (drawn from the run's
/// `samples.jsonl`); returns that directory.
pub fn write(state_dir: &Path, s: &State) -> anyhow::Result<PathBuf> {
    let dir = state_dir.join("runs").join(&s.run_id);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let r = Report::from_state(s);
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&r)?)
        .with_context(|| format!("cannot write the report in {}", dir.display()))?;
    std::fs::write(dir.join("report.md"), r.markdown())
        .with_context(|| format!("cannot write the report in {}", dir.display()))?;
    let lines = samples::read(&samples::path(state_dir, &s.run_id))?;
    std::fs::write(dir.join("report.html"), html::page(&r, &lines))
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
    pub warnings: Vec<String>,
    pub progress: Option<crate::state::Progress>,
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
            warnings: s.warnings.clone(),
            progress: s.progress.clone(),
        }
    }
}

/// How long a phase ran (or, still running, has run so far).
fn phase_elapsed(p: &PhaseRecord, now: jiff::Timestamp) -> Option<std::time::Duration> {
    let a: jiff::Timestamp = p.started_at.as_ref()?.parse().ok()?;
    let b: jiff::Timestamp = match &p.ended_at {
        Some(e) => e.parse().ok()?,
        None if p.status == crate::state::PhaseStatus::Running => now,
        None => return None,
    };
    std::time::Duration::try_from(b.duration_since(a)).ok()
}

/// `plexburst status`: the run, each phase with its time, where the watched phase stands (rate,
/// ETA), the last counts and the warnings.
pub fn render_status(s: &State) -> String {
    let now = jiff::Timestamp::now();
    let mut out = format!("run {} on {}: {}\n", s.run_id, s.target, status_word(s));
    for p in &s.phases {
        out.push_str(&format!(
            "  {:<10} {:<11} {:>9}  {}\n",
            p.name,
            format!("{:?}", p.status).to_lowercase(),
            phase_elapsed(p, now)
                .map(crate::units::format_secs)
                .unwrap_or_default(),
            p.detail.as_deref().unwrap_or("")
        ));
    }
    if let Some(g) = &s.progress
        && s.current_phase.as_deref() == Some(g.phase.as_str())
    {
        out.push_str(&format!(
            "{}: {}{} {}, {} /s, ETA {}\n",
            g.label,
            g.done,
            g.total.map(|t| format!("/{t}")).unwrap_or_default(),
            g.unit,
            g.rate_per_sec
                .map(|r| format!("{r:.1}"))
                .unwrap_or_else(|| "?".into()),
            g.eta_secs
                .and_then(|e| std::time::Duration::try_from_secs_f64(e).ok())
                .map(crate::plan::forecast::human)
                .unwrap_or_else(|| "?".into())
                + if g.eta_estimated { " (estimated)" } else { "" }
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
    for w in &s.warnings {
        out.push_str(&format!("warning: {w}\n"));
    }
    if !s.rented.is_empty() {
        out.push_str(&format!("cost: {}\n", cost_line(s, jiff::Timestamp::now())));
        if let Some(more) = rest_of_phase_cost(s) {
            out.push_str(&format!("       {more}\n"));
        }
    }
    if let Some(e) = &s.error {
        out.push_str(&format!("error: {e}\n"));
    }
    out
}

/// `+0.0456 EUR for the rest of the analyze phase (at the live rate)`: the running machines'
/// price over the watched phase's ETA, from the live rate or, before there is one, the estimate.
pub fn rest_of_phase_cost(s: &State) -> Option<String> {
    let g = s.progress.as_ref()?;
    if s.current_phase.as_deref() != Some(g.phase.as_str()) {
        return None;
    }
    let price: f64 = s
        .rented
        .iter()
        .filter(|r| r.ended_at.is_none())
        .map(|r| r.hourly_price)
        .sum();
    let eta = g.eta_secs?;
    Some(format!(
        "+{:.4} EUR for the rest of the {} phase ({})",
        price * eta / 3600.0,
        g.phase,
        if g.eta_estimated {
            "at the estimated CPU cost per track"
        } else {
            "at the live rate"
        }
    ))
}

/// `0.0123 EUR (DEV1-S in fr-par-1 at 0.0090 EUR/h for 1h22m, running)`.
pub fn cost_line(s: &State, now: jiff::Timestamp) -> String {
    let parts: Vec<String> = s
        .rented
        .iter()
        .map(|r| {
            format!(
                "{} in {} at {:.4} EUR/h for {}{}",
                r.commercial_type,
                r.zone,
                r.hourly_price,
                crate::units::format_secs(std::time::Duration::from_secs_f64(r.seconds(now))),
                if r.ended_at.is_none() {
                    ", running"
                } else {
                    ""
                }
            )
        })
        .collect();
    format!(
        "{:.4} EUR ({})",
        crate::state::cost(&s.rented, now),
        parts.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::KeptItem;

    #[test]
    fn status_forecasts_the_rest_of_the_phase_from_the_estimate_then_the_live_rate() {
        let mut s = State::new(
            Path::new("/c"),
            Default::default(),
            "scaleway".into(),
            &["analyze"],
        );
        s.current_phase = Some("analyze".into());
        s.rented = vec![crate::state::Rented {
            server_id: "1".into(),
            commercial_type: "GP1-S".into(),
            zone: "fr-par-1".into(),
            hourly_price: 0.5,
            started_at: crate::state::now(),
            ended_at: None,
        }];
        let mut g = crate::state::Progress {
            phase: "analyze".into(),
            label: "Sonic analysis of Music".into(),
            unit: "tracks".into(),
            done: 0,
            total: Some(10),
            rate_per_sec: None,
            eta_secs: Some(7200.0),
            eta_estimated: true,
            at: crate::state::now(),
        };
        s.progress = Some(g.clone());
        assert_eq!(
            rest_of_phase_cost(&s).unwrap(),
            "+1.0000 EUR for the rest of the analyze phase (at the estimated CPU cost per track)"
        );
        assert!(render_status(&s).contains("ETA 2h (estimated)"));
        g.eta_estimated = false;
        g.rate_per_sec = Some(0.01);
        g.eta_secs = Some(1800.0);
        s.progress = Some(g);
        assert_eq!(
            rest_of_phase_cost(&s).unwrap(),
            "+0.2500 EUR for the rest of the analyze phase (at the live rate)"
        );
        // Another phase running: nothing to forecast from this progress.
        s.current_phase = Some("export".into());
        assert_eq!(rest_of_phase_cost(&s), None);
    }

    #[test]
    fn a_measured_cost_keeps_three_significant_digits() {
        assert_eq!(
            [
                significant(23.456),
                significant(0.004171),
                significant(1.0),
                significant(312.7)
            ],
            ["23.5", "0.00417", "1.00", "313"]
        );
    }

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
