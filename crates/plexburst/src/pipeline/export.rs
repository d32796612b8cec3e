//! Phase export: stop Plex cleanly, then archive, checksum and verify its data folder.

use anyhow::Context;

use super::{Ctx, Outcome};

pub fn run(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    // Counts for the manifest, read before the stop (the DB stays readable after it, too).
    let counts = crate::plex::db::sample(ctx.remote.as_ref(), &ctx.config.plex.db_path())
        .context("cannot read Plex's DB for the manifest")?;
    ctx.plex = None;
    let rt = ctx.runtime();
    if rt.is_running(ctx.remote.as_ref())? {
        tracing::info!("stopping Plex before the export");
        rt.stop(ctx.remote.as_ref(), ctx.config.plex.stop_grace)
            .context("cannot stop Plex before the export")?;
    }
    if rt.is_running(ctx.remote.as_ref())? {
        anyhow::bail!(
            "Plex is still running after the stop; the export needs it stopped so the DB is consistent"
        );
    }
    ctx.state.plex_started = false;
    ctx.save()?;
    let rec = crate::export::export(
        ctx.remote.as_ref(),
        &crate::export::ExportJob {
            data_dir: ctx.config.plex.data_dir.clone(),
            destination: ctx.config.export.destination.clone(),
            run_id: ctx.state.run_id.clone(),
            plex_version: ctx.state.plex_version.clone(),
            counts,
        },
    )?;
    let mut detail = format!(
        "{} ({} bytes, {} entries, sha256 {})",
        rec.archive, rec.bytes, rec.files, rec.sha256
    );
    // rclone storage with `export_path`: the verified archive and its manifest go to the bucket
    // (copyto with retries), checked there by size and by sha256 read back (STORAGE).
    if let Some(rc) = ctx.storage.as_rclone()
        && let Some(prefix) = rc.config().export_path.clone()
    {
        for local in [&rec.archive, &rec.manifest] {
            let name = local.rsplit('/').next().unwrap_or(local.as_str());
            let object = format!("{}/{name}", prefix.trim_end_matches('/'));
            let up = rc
                .upload_file(ctx.remote.as_ref(), local, &object, true)
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
    ctx.state.export = Some(rec);
    Ok(Outcome::Done(Some(detail)))
}
