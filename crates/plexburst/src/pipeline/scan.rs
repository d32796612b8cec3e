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
    let job = Job::Scan { force };
    job.trigger(ctx).context("cannot start the scan")?;
    tracing::info!("scan requested (force={})", u8::from(force));
    let report = monitor::watch(
        ctx,
        "scan",
        &job,
        &watched,
        ctx.plan.monitor.scan_timeout,
        Some(initial),
        &mut sampler,
    )?;
    monitor::settle(ctx, "scan", &job, &report)?;
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
