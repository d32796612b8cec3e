//! Phase export: refuse a library Plex trashed items of during the run, stop Plex cleanly, then
//! archive, checksum and verify its data folder (on the target, or streamed to the bucket).

use anyhow::{Context, bail};

use super::Outcome;
use crate::plan::ExportMode;
use crate::plex::db::DbSample;
use crate::session::Ctx;

/// Sections whose trash (items with `deleted_at`) grew between `before` and `now`:
/// (name, before, now). A section missing from `before` (created by this run) started at 0.
pub fn trash_growth(before: &DbSample, now: &DbSample) -> Vec<(String, i64, i64)> {
    now.sections
        .iter()
        .filter_map(|c| {
            let was = before.section(c.section_id).map(|b| b.deleted).unwrap_or(0);
            (c.deleted > was).then(|| (c.name.clone(), was, c.deleted))
        })
        .collect()
}

/// Refuse the export when Plex's trash grew since the scan started, unless the user allowed it.
/// Returns a note for the phase detail when the growth was allowed.
fn trash_gate(ctx: &Ctx, now: &DbSample) -> anyhow::Result<Option<String>> {
    // The baseline is the DB as the scan phase first found it (kept across resumes).
    let Some(before) = ctx
        .state
        .phase("scan")
        .and_then(|p| p.counts_before.as_ref())
    else {
        return Ok(None);
    };
    let grown = trash_growth(before, now);
    if grown.is_empty() {
        return Ok(None);
    }
    let list = grown
        .iter()
        .map(|(name, was, is)| format!("{name}: {} items ({was} -> {is})", is - was))
        .collect::<Vec<_>>()
        .join(", ");
    if ctx.plan.export.allow_deleted {
        tracing::warn!("Plex's trash grew during the run ({list}); exporting anyway, as allowed");
        return Ok(Some(format!("trash grew during the run, allowed: {list}")));
    }
    // A delta run removes what left the bucket: a trash that grew only by files that are really
    // gone (looked up now, on a healthy storage) is that, not a glitch of the mount.
    if let Some(rec) = &ctx.state.seed {
        let present = ctx
            .remote
            .run(
                &crate::remote::Cmd::new(crate::seed::trashed_but_present_script(
                    &ctx.plan.plex.db_path,
                    rec.installed_at,
                ))
                .timeout(std::time::Duration::from_secs(3600)),
            )
            .context("cannot look up the trashed items' files")?
            .stdout_str();
        let present: Vec<&str> = present.lines().filter(|l| !l.is_empty()).collect();
        if present.is_empty() {
            tracing::info!(
                "Plex's trash grew ({list}); every trashed item's file is gone from the storage: removals of this delta run"
            );
            return Ok(Some(format!(
                "removed (files gone from the storage): {list}"
            )));
        }
        bail!(
            "refusing to export: Plex trashed {} items during this run whose files are still on the storage (e.g. {}): the mount failed them during the scan. Check the storage, then `plexburst resume` (or allow it with `plexburst resume --allow-deleted`)",
            present.len(),
            present
                .iter()
                .take(3)
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    bail!(
        "refusing to export: items went to Plex's trash during this run ({list}). A scan on a degraded or incomplete mount makes Plex mark every item it cannot read as deleted, so exporting now would ship a damaged library. Check the storage and the files; if the deletions are real, allow them with `export.allow_deleted = true` in the config or `plexburst resume --allow-deleted` (`plexburst run --allow-deleted` for a new run)"
    )
}

pub fn run(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    // Counts for the manifest, read before the stop (the DB stays readable after it, too).
    let counts = crate::plex::db::sample(ctx.remote.as_ref(), &ctx.plan.plex.db_path)
        .context("cannot read Plex's DB for the manifest")?;
    // Before anything is stopped or archived: a refused export leaves the run resumable as is.
    let allowed = trash_gate(ctx, &counts)?;
    if let Some(rec) = ctx.state.seed.clone() {
        let delta = crate::seed::delta(ctx.remote.as_ref(), &ctx.plan.plex.db_path, &rec.sections)?;
        for d in &delta {
            tracing::info!(
                "{}: {} added, {} removed, {} newly Sonic-analysed ({} -> {} items)",
                d.name,
                d.added,
                d.removed,
                d.newly_analysed,
                d.seeded_items,
                d.items
            );
        }
        if let Some(r) = ctx.state.seed.as_mut() {
            r.delta = delta;
        }
        ctx.save()?;
    }
    ctx.stop_plex("the export needs it stopped so the DB is consistent")
        .context("stopping Plex before the export")?;
    ctx.save()?;
    let job = crate::export::ExportJob {
        data_dir: ctx.plan.export.data_dir.clone(),
        destination: ctx.plan.export.destination.clone(),
        run_id: ctx.state.run_id.clone(),
        plex_version: ctx.state.plex_version.clone(),
        counts,
    };
    let upload = match &ctx.plan.export.mode {
        ExportMode::Local => None,
        ExportMode::Staged { .. } | ExportMode::Streamed { .. } => ctx
            .storage
            .as_rclone()
            .and_then(|rc| rc.spec().export_path.clone().map(|p| (rc, p))),
    };
    let streamed = matches!(ctx.plan.export.mode, ExportMode::Streamed { .. });
    let (rec, mut detail) = match upload {
        // rclone storage with `export_path`, by default: streamed to the bucket, nothing staged
        // on the target's disk, then read back and verified there.
        Some((rc, prefix)) if streamed => {
            let rec = crate::export::export_streamed(ctx.remote.as_ref(), &job, rc, &prefix)?;
            let detail = format!(
                "streamed to {} ({} bytes, {} entries, sha256 {}, read back and verified)",
                rec.archive, rec.bytes, rec.files, rec.sha256
            );
            (rec, detail)
        }
        // `export.staged = true`: the verified archive is written on the target, then it and its
        // manifest are copied with rclone's retries and checked by size and sha256 read back.
        staged => {
            let rec = crate::export::export(ctx.remote.as_ref(), &job)?;
            let mut detail = format!(
                "{} ({} bytes, {} entries, sha256 {})",
                rec.archive, rec.bytes, rec.files, rec.sha256
            );
            if let Some((rc, prefix)) = staged {
                for local in [&rec.archive, &rec.manifest] {
                    let name = local.rsplit('/').next().unwrap_or(local.as_str());
                    let object = format!("{}/{name}", prefix.trim_end_matches('/'));
                    let up = rc
                        .upload_file(
                            ctx.remote.as_ref(),
                            local,
                            &object,
                            (local == &rec.archive).then_some(rec.sha256.as_str()),
                        )
                        .with_context(|| format!("uploading the export to {object}"))?;
                    tracing::info!(
                        "uploaded {} ({} bytes, sha256 verified in the bucket)",
                        up.object,
                        up.bytes
                    );
                    if local == &rec.archive {
                        detail.push_str(&format!("; uploaded to {}", up.object));
                    }
                }
            }
            (rec, detail)
        }
    };
    if let Some(note) = allowed {
        detail.push_str(&format!("; {note}"));
    }
    ctx.state.export = Some(rec);
    Ok(Outcome::Done(Some(detail)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plex::db::SectionCounts;

    fn sample(v: &[(i64, &str, i64)]) -> DbSample {
        DbSample {
            sections: v
                .iter()
                .map(|&(id, name, deleted)| SectionCounts {
                    section_id: id,
                    name: name.into(),
                    deleted,
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn trash_growth_names_only_sections_whose_trash_grew() {
        let before = sample(&[(1, "Music", 2), (2, "Movies", 5)]);
        // Movies' trash shrank (emptied), Music's grew, Photos is new in this run.
        let now = sample(&[(1, "Music", 7), (2, "Movies", 0), (3, "Photos", 4)]);
        assert_eq!(
            trash_growth(&before, &now),
            vec![("Music".into(), 2, 7), ("Photos".into(), 0, 4)]
        );
        assert!(trash_growth(&now, &now).is_empty());
    }
}
