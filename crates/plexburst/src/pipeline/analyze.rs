//! Phase analyze: one section at a time, enable only the analysis it needs (Sonic for music,
//! thumbnails for photos), trigger it, watch the analysed counts and CPU, then turn it off again.

use anyhow::Context;

use super::Outcome;
use crate::monitor::{self, Job};
use crate::plex::db::Sampler;
use crate::session::Ctx;

pub fn run(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    if ctx.plan.options.skip_analysis {
        return Ok(Outcome::Skipped("--skip-analysis".into()));
    }
    let todo: Vec<_> = ctx
        .state
        .sections
        .iter()
        .filter(|s| s.section_type == 8 || s.section_type == 13)
        .cloned()
        .collect();
    if todo.is_empty() {
        return Ok(Outcome::Skipped("no music or photo section".into()));
    }
    ctx.ensure_plex()?;
    let mut summary = Vec::new();
    let mut warnings = Vec::new();
    for s in todo {
        let Some(plan) = ctx.plan.section(&s.name).cloned() else {
            anyhow::bail!("internal: section {:?} is not in the plan", s.name);
        };
        if plan.analysis.is_empty() {
            continue;
        }
        let threads = match ctx.plan.plex.analysis_threads {
            Some(n) => n,
            None => crate::host::nproc(ctx.remote.as_ref())
                .context("cannot count the target's vCPUs for the analysis workers")?,
        };
        let job = Job::Analysis {
            section_id: s.id,
            section_type: s.section_type,
            name: s.name.clone(),
            threads,
        };
        // Incremental DB sampling: this full count is the base the watch goes on from.
        let mut sampler = Sampler::new(ctx.plan.plex.db_path.clone());
        let before = sampler
            .sample(ctx.remote.as_ref())
            .context("cannot read Plex's DB before the analysis")?;
        let rec = ctx.state.phase_mut("analyze");
        if rec.counts_before.is_none() {
            rec.counts_before = Some(before);
        }
        // On a mount, files never read since the scan hit ENOENT/timeouts in analysis until the
        // VFS cache knew them (rclone-and-plex-ops.md): read each file's head first.
        if ctx.storage.as_rclone().is_some() {
            let files =
                crate::plex::db::section_files(ctx.remote.as_ref(), &ctx.plan.plex.db_path, s.id)
                    .context("cannot list the section's files")?;
            let warm = ctx
                .storage
                .warm_files(ctx.remote.as_ref(), &files)
                .context("warming the section's files failed")?;
            tracing::info!(
                "{}: warmed {} files ({} missing, {} unreadable)",
                s.name,
                warm.ok,
                warm.missing.len(),
                warm.failed.len()
            );
            if !warm.missing.is_empty() || !warm.failed.is_empty() {
                warnings.push(format!(
                    "{}: {} files missing and {} unreadable on the mount before analysis",
                    s.name,
                    warm.missing.len(),
                    warm.failed.len()
                ));
            }
        }
        let prefetching = match ctx.storage.as_rclone() {
            Some(rc) if s.section_type == 8 && rc.settings().prefetch_readers > 0 => {
                rc.prefetch_start(
                    ctx.remote.as_ref(),
                    &crate::storage::rclone::PrefetchJob {
                        db: &ctx.plan.plex.db_path,
                        section_id: s.id,
                        readers: rc.settings().prefetch_readers,
                        lead_secs: rc.settings().prefetch_lead_secs,
                        max_secs: plan.timeout.as_secs(),
                    },
                )
                .context("cannot start the prefetcher")?;
                true
            }
            _ => false,
        };
        tracing::info!("{}: starting", job.label());
        job.trigger(ctx)
            .with_context(|| format!("cannot start the {}", job.label()))?;
        let watched = monitor::watch(
            ctx,
            "analyze",
            &job,
            &[s.id],
            plan.timeout,
            None,
            &mut sampler,
        );
        if let Some(rc) = ctx.storage.as_rclone().filter(|_| prefetching) {
            match rc.prefetch_stop(ctx.remote.as_ref()) {
                Ok(st) => {
                    tracing::info!(
                        "{}: prefetched {} files ({}), read at {}/s against {}/s analysed, window {}",
                        s.name,
                        st.files,
                        crate::units::format_bytes(st.bytes),
                        crate::units::format_bytes(st.read_bps),
                        crate::units::format_bytes(st.consume_bps),
                        crate::units::format_bytes(st.window_bytes)
                    );
                    if st.failed > 0 {
                        warnings.push(format!(
                            "{}: the prefetcher could not read {} files through the mount (e.g. {})",
                            s.name,
                            st.failed,
                            st.failed_paths.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
                        ));
                    }
                    ctx.state.phase_mut("analyze").prefetch = Some(st);
                }
                Err(e) => tracing::warn!("{}: cannot stop the prefetcher: {e:#}", s.name),
            }
        }
        // Whatever happened, the analysis must not keep running in the background afterwards.
        let prefs = ctx.client()?.prefs()?;
        super::configure::background_off(ctx, &prefs)
            .context("cannot turn the analysis off again")?;
        let report = match watched {
            Err(e) if e.downcast_ref::<crate::error::LimitReached>().is_some() => {
                // A cap reached: the analysed tracks so far are kept and exported.
                let why = format!(
                    "limit: {e}; the later sections are not analysed, the run exports what exists"
                );
                tracing::warn!("{why}");
                ctx.state.warnings.push(why.clone());
                summary.push(why);
                break;
            }
            other => other?,
        };
        monitor::settle(ctx, "analyze", &job, &report)?;
        let total = report.total.unwrap_or(0);
        if report.done < total {
            warnings.push(format!(
                "{}: only {}/{} done when Plex went idle",
                job.label(),
                report.done,
                total
            ));
            tracing::warn!("{}", warnings.last().expect("just pushed"));
        }
        summary.push(format!("{}: {}/{}", s.name, report.done, total));
        ctx.save()?;
    }
    let mut detail = summary.join(", ");
    if !warnings.is_empty() {
        detail.push_str(&format!("; WARNING {}", warnings.join("; ")));
    }
    Ok(Outcome::Done(Some(detail)))
}
