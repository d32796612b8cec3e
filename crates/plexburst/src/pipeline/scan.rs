//! Phase scan: one global `all/refresh` on a healthy storage, watched through the DB until Plex is
//! idle and the counts are stable.

use anyhow::{Context, bail};

use super::Outcome;
use crate::monitor::{self, Job};
use crate::plex::db::Sampler;
use crate::session::Ctx;
use crate::storage::Health;

pub fn run(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    ctx.ensure_plex()?;
    // Scanning a mount that lists but cannot read would mark the library deleted: refuse.
    match ctx
        .storage
        .health(ctx.remote.as_ref())
        .context("cannot check the storage's health")?
    {
        Health::Healthy => {}
        Health::Degraded(why) => bail!(
            "the storage is degraded ({why}); refusing to scan, because Plex would mark unreadable items deleted. Fix the mount, then `plexburst resume`"
        ),
    }
    // Incremental DB sampling: this full count is the base the watch goes on from.
    let mut sampler = Sampler::new(ctx.plan.plex.db_path.clone());
    let before = sampler
        .sample(ctx.remote.as_ref())
        .context("cannot read Plex's DB before the scan")?;
    let watched: Vec<i64> = ctx.state.sections.iter().map(|s| s.id).collect();
    let initial: i64 = before
        .sections
        .iter()
        .filter(|c| watched.contains(&c.section_id))
        .map(|c| c.items)
        .sum();
    let rec = ctx.state.phase_mut("scan");
    if rec.counts_before.is_none() {
        rec.counts_before = Some(before);
    }
    ctx.save()?;
    let force = ctx.plan.plex.scan_force;
    let files: i64 = ctx
        .state
        .survey
        .iter()
        .filter(|v| ctx.state.sections.iter().any(|s| s.name == v.name))
        .map(|v| v.media_files as i64)
        .sum();
    let job = Job::Scan {
        force,
        files: (!ctx.state.survey.is_empty()).then_some(files),
    };
    job.trigger(ctx).context("cannot start the scan")?;
    tracing::info!("scan requested (force={})", u8::from(force));
    let report = match monitor::watch(
        ctx,
        "scan",
        &job,
        &watched,
        ctx.plan.monitor.scan_timeout,
        Some(initial),
        &mut sampler,
    ) {
        Err(e) if e.downcast_ref::<crate::error::LimitReached>().is_some() => {
            // A cap reached: what Plex has is exported, the rest is the user's to decide.
            let why = format!("limit: {e}; the run exports what exists");
            tracing::warn!("{why}");
            ctx.state.warnings.push(why.clone());
            return Ok(Outcome::Done(Some(why)));
        }
        other => other?,
    };
    monitor::settle(ctx, "scan", &job, &report)?;
    if let Some(last) = &report.last {
        let found = short_sections(&ctx.state.survey, last, ctx.plan.monitor.scan_gap);
        ctx.state.warnings.retain(|w| !w.starts_with(SCAN_WARNING));
        for w in found {
            tracing::warn!("{w}");
            ctx.state.warnings.push(w);
        }
    }
    let per_section = report
        .last
        .as_ref()
        .map(|s| {
            s.sections
                .iter()
                .filter(|c| watched.contains(&c.section_id))
                .map(|c| format!("{}: {}", c.name, c.items))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    Ok(Outcome::Done(Some(format!(
        "{} items ({per_section}) in {:.0}s",
        report.done,
        report.elapsed.as_secs_f64()
    ))))
}

/// How the scan's warnings begin (a rerun of the phase replaces them).
const SCAN_WARNING: &str = "scan: ";

/// The sections whose scan made no item, or fewer items than `gap` allows short of the media
/// files the preflight counted: the run ends "done with warnings" and says why.
pub fn short_sections(
    survey: &[crate::survey::SectionSurvey],
    after: &crate::plex::db::DbSample,
    gap: f64,
) -> Vec<String> {
    let mut out = Vec::new();
    for v in survey {
        let Some(c) = after.sections.iter().find(|c| c.name == v.name) else {
            continue;
        };
        let files = v.media_files as i64;
        if files == 0 {
            continue;
        }
        let short = files - c.items;
        if c.items == 0 {
            out.push(format!(
                "{SCAN_WARNING}section {:?} has 0 items from {files} media files: Plex made nothing of them (files it cannot read, or of a format it does not take for a {} section; see `plexburst logs`)",
                v.name,
                v.kind.as_str()
            ));
        } else if short as f64 > files as f64 * gap {
            out.push(format!(
                "{SCAN_WARNING}section {:?} has {} items from {files} media files: {short} ({:.0} %) short, more than monitor.scan_gap ({:.0} %) allows; see `plexburst logs` for what Plex skipped",
                v.name,
                c.items,
                short as f64 * 100.0 / files as f64,
                gap * 100.0
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plex::SectionType;
    use crate::plex::db::{DbSample, SectionCounts};
    use crate::survey::SectionSurvey;

    fn survey(name: &str, files: u64) -> SectionSurvey {
        SectionSurvey {
            name: name.into(),
            kind: SectionType::Music,
            paths: Vec::new(),
            media_files: files,
            media_bytes: 0,
        }
    }

    fn items(name: &str, n: i64) -> SectionCounts {
        SectionCounts {
            name: name.into(),
            items: n,
            ..Default::default()
        }
    }

    #[test]
    fn a_section_short_of_its_files_beyond_the_gap_is_a_warning() {
        let s = [
            survey("A", 100),
            survey("B", 100),
            survey("C", 100),
            survey("D", 0),
        ];
        let after = DbSample {
            sections: vec![items("A", 90), items("B", 89), items("C", 0), items("D", 0)],
        };
        let w = short_sections(&s, &after, 0.1);
        assert_eq!(w.len(), 2, "{w:#?}");
        assert!(
            w[0].starts_with(
                "scan: section \"B\" has 89 items from 100 media files: 11 (11 %) short"
            ),
            "{}",
            w[0]
        );
        assert!(
            w[1].starts_with("scan: section \"C\" has 0 items from 100 media files"),
            "{}",
            w[1]
        );
    }
}
