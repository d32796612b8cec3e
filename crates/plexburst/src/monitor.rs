//! Samples (DB counts, activities, CPU) -> progress lines/bars and phase verdicts.
//!
//! Every poll takes one sample: per-section counts from Plex's DB (`plex::db::sample`), the
//! sections' `refreshing` flags and `/activities` from the API, and the CPU of the process tree of
//! the server we started (`Runtime::root_pid`; never other Plex-like processes). A
//! sample is a value or an error: a failed one is shown and counted, never read as zero, and
//! `monitor.max_failed_samples` failures in a row fail the phase. When Plex itself is gone
//! (crashed mid-phase) it is restarted and the work re-requested.
//!
//! Every sample is also one line of `runs/<run-id>/samples.jsonl` (counts, rate, CPU, bytes read
//! from the bucket, cost, and the restarts, remounts and stalls since the line before), which
//! `report.html` draws. Until a Sonic analysis has a rate of its own, its ETA and cost forecast
//! come from the plan's estimated CPU cost per track; the live rate replaces them once known.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::plex::api::{Activity, Section};
use crate::plex::db::{DbError, DbSample, Sampler};
use crate::progress::{Observation, Tracker, TrackerConfig, Verdict};
use crate::session::Ctx;
use crate::units::format_secs;

/// Restarts of a crashed Plex within one phase before giving up.
pub const MAX_RESTARTS: u32 = 3;

/// What a phase waits for.
#[derive(Debug, Clone)]
pub enum Job {
    /// The global scan of every section (`force` as requested). `files`: the media files the
    /// preflight counted in the watched sections: the bar's total and the ETA's target, never a
    /// done condition (Plex may rightly make fewer items than files).
    Scan { force: bool, files: Option<i64> },
    /// Analysis of one section: Sonic for music (8), thumbnails for photos (13).
    Analysis {
        section_id: i64,
        section_type: i64,
        name: String,
        /// Sonic workers (`LongRunningJobThreads`) for a music section.
        threads: u32,
    },
}

impl Job {
    pub fn label(&self) -> String {
        match self {
            Job::Scan { .. } => "scan".into(),
            Job::Analysis {
                name,
                section_type: 8,
                ..
            } => format!("Sonic analysis of {name}"),
            Job::Analysis {
                name,
                section_type: 13,
                ..
            } => format!("thumbnails of {name}"),
            Job::Analysis { name, .. } => format!("analysis of {name}"),
        }
    }

    fn unit(&self) -> &'static str {
        match self {
            Job::Scan { .. } => "items",
            Job::Analysis {
                section_type: 8, ..
            } => "tracks",
            Job::Analysis {
                section_type: 13, ..
            } => "photos",
            Job::Analysis { .. } => "items",
        }
    }

    /// Ask Plex to do the work (again, after a restart).
    pub fn trigger(&self, ctx: &Ctx) -> anyhow::Result<()> {
        let client = ctx.client()?;
        match self {
            Job::Scan { force, .. } => {
                ctx.retry_starting(|| client.refresh_all(*force))?;
            }
            Job::Analysis {
                section_id,
                section_type,
                threads,
                ..
            } => {
                let prefs = client.prefs()?;
                let on = crate::plex::prefs::analysis_for(*section_type, *threads, &prefs);
                if !on.is_empty() {
                    client.set_prefs(&on)?;
                }
                match crate::plex::prefs::butler_task_for(*section_type) {
                    Some(task) => client.start_butler_task(task)?,
                    None => ctx.retry_starting(|| client.analyze_section(*section_id))?,
                }
            }
        }
        Ok(())
    }

    /// (done, total, busy) from one sample.
    fn measure(&self, s: &Sample, watched: &[i64]) -> (i64, Option<i64>, bool) {
        let counts =
            s.db.sections
                .iter()
                .filter(|c| watched.contains(&c.section_id));
        match self {
            Job::Scan { .. } => {
                let done = counts.map(|c| c.items).sum();
                let busy = s.sections.iter().any(|x| x.refreshing)
                    || s.activities.iter().any(|a| a.kind.starts_with("library."));
                (done, None, busy)
            }
            Job::Analysis { section_type, .. } => {
                let (mut done, mut total) = (0, 0);
                for c in counts {
                    if *section_type == 13 {
                        done += c.thumbnailed;
                        total += c.photos;
                    } else {
                        done += c.sonic_analyzed;
                        total += c.tracks;
                    }
                }
                // A scanner process that outlives the work (idle, waiting for more) is not busy
                // once every item is done; an activity always is.
                let busy = !s.activities.is_empty() || (s.scanner_running && done < total);
                (done, Some(total), busy)
            }
        }
    }
}

/// What makes Plex look busy, for the progress line (so a stall says what is hanging).
fn busy_why(s: &Sample) -> String {
    let mut why: Vec<String> = s
        .sections
        .iter()
        .filter(|x| x.refreshing)
        .map(|x| format!("{} refreshing", x.title))
        .collect();
    why.extend(
        s.activities
            .iter()
            .map(|a| format!("activity {} {}%", a.kind, a.progress)),
    );
    if s.scanner_running {
        why.push("scanner process".into());
    }
    if why.is_empty() {
        " (idle)".into()
    } else {
        format!(" ({})", why.join(", "))
    }
}

/// One poll's worth of facts.
pub struct Sample {
    pub db: DbSample,
    pub sections: Vec<Section>,
    pub activities: Vec<Activity>,
    pub cpu_ticks: Option<u64>,
    pub scanner_running: bool,
}

/// Take one sample. Any failed part fails the whole sample, the CPU included: a server whose
/// process cannot be found is an error, never zero CPU. `plex_pid` caches the server's root pid
/// (`Runtime::root_pid`); it is looked up when `None` and cleared when the CPU read fails, so a
/// restarted server is found again.
pub fn take_sample(
    ctx: &Ctx,
    sampler: &mut Sampler,
    plex_pid: &mut Option<u32>,
) -> anyhow::Result<Sample> {
    let db = sampler.sample(ctx.remote.as_ref())?;
    let client = ctx.client()?;
    let sections = client.sections()?;
    let activities = client.activities()?;
    let root = match *plex_pid {
        Some(pid) => pid,
        None => ctx
            .runtime()
            .root_pid(ctx.remote.as_ref())?
            .context("the Plex server's process is not running, so its CPU cannot be read")?,
    };
    let cpu = crate::host::cpu_sample(ctx.remote.as_ref(), root);
    *plex_pid = cpu.is_ok().then_some(root);
    let cpu = cpu?;
    Ok(Sample {
        db,
        sections,
        activities,
        cpu_ticks: Some(cpu.total_ticks),
        scanner_running: cpu.scanner_running,
    })
}

/// Share of one core below which Plex's CPU is noise (answering our own polls), not work.
pub const CPU_NOISE_CORES: f64 = 0.2;
/// Clock ticks per second of /proc/*/stat (USER_HZ).
const TICKS_PER_SEC: f64 = 100.0;

/// Turns raw CPU ticks into a counter that only moves while Plex uses more than
/// [`CPU_NOISE_CORES`]: otherwise the CPU our own polling costs the server would hide every stall.
#[derive(Debug, Default)]
pub struct CpuFilter {
    last: Option<(Instant, u64)>,
    effective: u64,
}

impl CpuFilter {
    pub fn feed(&mut self, ticks: Option<u64>) -> Option<u64> {
        self.feed_at(Instant::now(), ticks)
    }

    pub fn feed_at(&mut self, now: Instant, ticks: Option<u64>) -> Option<u64> {
        let t = ticks?;
        if let Some((t0, k0)) = self.last {
            let dt = now.saturating_duration_since(t0).as_secs_f64();
            let d = t.saturating_sub(k0);
            if dt > 0.0 && d as f64 / TICKS_PER_SEC / dt >= CPU_NOISE_CORES {
                self.effective += d;
            }
        }
        self.last = Some((now, t));
        Some(self.effective)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_below_the_noise_floor_does_not_move_the_counter() {
        let mut f = CpuFilter::default();
        let t0 = Instant::now();
        assert_eq!(f.feed_at(t0, Some(1000)), Some(0));
        // 1 tick in 200 ms = 5% of a core: noise.
        assert_eq!(
            f.feed_at(t0 + Duration::from_millis(200), Some(1001)),
            Some(0)
        );
        // 20 ticks in 200 ms = one full core: work.
        assert_eq!(
            f.feed_at(t0 + Duration::from_millis(400), Some(1021)),
            Some(20)
        );
        // An unreadable sample stays unknown, never zero.
        assert_eq!(f.feed_at(t0 + Duration::from_millis(600), None), None);
    }
}

/// How a watch ended.
#[derive(Debug, Clone)]
pub struct WatchReport {
    pub verdict: Verdict,
    pub done: i64,
    pub total: Option<i64>,
    pub last: Option<DbSample>,
    pub rate_per_sec: Option<f64>,
    pub elapsed: Duration,
    pub still_for: Duration,
}

fn fmt_eta(d: Option<Duration>) -> String {
    match d {
        Some(d) => format_secs(d),
        None => "?".into(),
    }
}

/// Poll until the job is done, stalled or timed out. Failed samples, restarts and samples are
/// counted into the phase's record in the state. `sampler` is the phase's: it took the "before"
/// counts, so the watch's samples go on incrementally from there instead of counting again.
pub fn watch(
    ctx: &mut Ctx,
    phase: &str,
    job: &Job,
    watched: &[i64],
    timeout: Duration,
    initial: Option<i64>,
    sampler: &mut Sampler,
) -> anyhow::Result<WatchReport> {
    let mcfg = ctx.plan.monitor.clone();
    let phase_start = Instant::now();
    let new_tracker = |remaining: Duration| {
        let mut t = Tracker::new(TrackerConfig {
            stable_samples: mcfg.stable_samples,
            stall_window: mcfg.stall_window,
            timeout: remaining,
            // A scan request Plex has not picked up yet looks idle: give it a few polls.
            start_grace: mcfg.stall_window.min(mcfg.poll_interval * 10),
        });
        if let (Job::Scan { .. }, Some(i)) = (job, initial) {
            t.requested(i);
        }
        t
    };
    let mut tracker = new_tracker(timeout);
    let mut tracker_start = Instant::now();
    let mut consecutive_failures = 0u32;
    let mut restarts = 0u32;
    let mut last_log: Option<Instant> = None;
    let mut last_save = Instant::now();
    let bar = std::io::stderr().is_terminal().then(|| {
        let b = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} {prefix} [{bar:30}] {pos}/{len} {msg}",
        ) {
            b.set_style(style.progress_chars("=> "));
        }
        b.set_prefix(job.label());
        b
    });
    let mut first = true;
    let mut cpu_filter = CpuFilter::default();
    // The server's root pid, for the CPU of its process tree: looked up on the first sample and
    // again after anything that may have restarted it.
    let mut plex_pid: Option<u32> = None;
    // The storage guard runs every few polls: a health probe costs a handful of remote commands.
    let health_every =
        (mcfg.poll_interval * 10).clamp(Duration::from_secs(2), Duration::from_secs(30));
    let mut last_health = Instant::now();
    let mut remounts = 0u32;
    let timeline = crate::report::samples::path(ctx.store.dir(), &ctx.state.run_id);
    // Restarts, remounts and failed samples since the last line, written with the next one.
    let mut events: Vec<String> = Vec::new();
    let mut bucket_bytes: Option<u64> = None;
    // The bucket's byte count is read on the first poll and then with each health probe.
    let mut bytes_due = true;
    // The last raw CPU reading and count, for the CPU in cores and the Sonic cost per track.
    let mut last_cpu: Option<(Instant, u64, i64)> = None;
    let sonic = matches!(
        job,
        Job::Analysis {
            section_type: 8,
            ..
        }
    );
    loop {
        if !first {
            ctx.pause(mcfg.poll_interval)?;
        }
        first = false;
        ctx.check_interrupt()?;
        if last_health.elapsed() >= health_every {
            last_health = Instant::now();
            bytes_due = true;
            if guard_storage(ctx, phase, job, &mut remounts)? {
                events.push("remount".into());
                plex_pid = None;
                let remaining = timeout.saturating_sub(phase_start.elapsed());
                tracker = new_tracker(remaining);
                tracker_start = Instant::now();
                ctx.save()?;
                continue;
            }
        }
        if bytes_due {
            bucket_bytes = read_bucket_bytes(ctx);
            bytes_due = false;
        }
        let sample = match take_sample(ctx, sampler, &mut plex_pid) {
            Ok(s) => {
                consecutive_failures = 0;
                s
            }
            Err(e) => {
                ctx.state.phase_mut(phase).failed_samples += 1;
                if matches!(
                    e.downcast_ref::<DbError>(),
                    Some(DbError::MissingSqlite { .. })
                ) {
                    return Err(e);
                }
                // Plex gone mid-phase: restart it and ask for the work again.
                let running = ctx.runtime().is_running(ctx.remote.as_ref());
                if let Ok(false) = running {
                    restarts += 1;
                    ctx.state.phase_mut(phase).restarts += 1;
                    if restarts > MAX_RESTARTS {
                        bail!(
                            "Plex stopped {restarts} times during the {phase}; giving up. Last error: {e:#}"
                        );
                    }
                    tracing::warn!(
                        "{phase}: Plex is not running ({e:#}); restarting it ({restarts}/{MAX_RESTARTS})"
                    );
                    events.push("restart".into());
                    ctx.plex = None;
                    plex_pid = None;
                    last_cpu = None;
                    ctx.ensure_plex()?;
                    job.trigger(ctx)?;
                    let remaining = timeout.saturating_sub(phase_start.elapsed());
                    tracker = new_tracker(remaining);
                    tracker_start = Instant::now();
                    consecutive_failures = 0;
                    ctx.save()?;
                    continue;
                }
                consecutive_failures += 1;
                events.push("sample failed".into());
                tracing::warn!(
                    "{phase}: sample failed ({consecutive_failures}/{} in a row): {e:#}",
                    mcfg.max_failed_samples
                );
                if consecutive_failures >= mcfg.max_failed_samples {
                    bail!(
                        "{phase}: {consecutive_failures} samples in a row failed, so progress is unknown; last error: {e:#}"
                    );
                }
                continue;
            }
        };
        ctx.state.phase_mut(phase).samples += 1;
        let (done, total, busy) = job.measure(&sample, watched);
        let verdict = tracker.observe(Observation {
            elapsed: tracker_start.elapsed(),
            done,
            total,
            cpu_ticks: cpu_filter.feed(sample.cpu_ticks),
            busy,
        });
        let now = Instant::now();
        let cpu_cores = match (last_cpu, sample.cpu_ticks) {
            (Some((t0, k0, d0)), Some(k)) if k >= k0 => {
                let secs = (k - k0) as f64 / TICKS_PER_SEC;
                if sonic {
                    let rec = ctx.state.phase_mut(phase);
                    rec.sonic_cpu_secs += secs;
                    rec.sonic_tracks += (done - d0).max(0);
                }
                let dt = now.saturating_duration_since(t0).as_secs_f64();
                (dt > 0.0).then(|| secs / dt)
            }
            _ => None,
        };
        last_cpu = sample.cpu_ticks.map(|k| (now, k, done));
        let rate = tracker.rate_per_sec();
        let (shown_total, mut eta) = match (total, job) {
            (None, Job::Scan { files: Some(f), .. }) => (Some(*f), tracker.eta_to(*f)),
            _ => (total, tracker.eta()),
        };
        // No rate of its own yet: the plan's estimated cost per track stands in.
        let mut eta_estimated = false;
        if let (None, Some(t), Job::Analysis { threads, .. }) = (eta, total, job)
            && sonic
            && rate.is_none()
        {
            eta = Some(crate::plan::forecast::eta(
                t - done,
                &ctx.plan.plex.sonic_cost,
                *threads,
            ));
            eta_estimated = true;
        }
        ctx.state.progress = Some(crate::state::Progress {
            phase: phase.to_string(),
            label: job.label(),
            unit: job.unit().to_string(),
            done,
            total: shown_total,
            rate_per_sec: rate,
            eta_secs: eta.map(|e| e.as_secs_f64()),
            eta_estimated,
            at: crate::state::now(),
        });
        let cost = ctx
            .cost_now()
            .map(|c| {
                let price: f64 = ctx
                    .state
                    .rented
                    .iter()
                    .filter(|r| r.ended_at.is_none())
                    .map(|r| r.hourly_price)
                    .sum();
                // The forecast: what is spent plus the rest of this phase at the current rate.
                let more = eta.map(|e| price * e.as_secs_f64() / 3600.0);
                format!(
                    ", {c:.4} EUR so far{}",
                    more.map(|m| format!(" (+{m:.4} for the rest of this phase)"))
                        .unwrap_or_default()
                )
            })
            .unwrap_or_default();
        let eta_text = if eta_estimated {
            format!(
                "{} (estimated at {} CPU s/track)",
                fmt_eta(eta),
                ctx.plan.plex.sonic_cost.cpu_seconds_per_track
            )
        } else {
            fmt_eta(eta)
        };
        let line = format!(
            "{}: {done}{} {}, {} /s, ETA {eta_text}{cost}{}",
            job.label(),
            shown_total.map(|t| format!("/{t}")).unwrap_or_default(),
            job.unit(),
            rate.map(|r| format!("{r:.1}"))
                .unwrap_or_else(|| "?".into()),
            busy_why(&sample)
        );
        match verdict {
            Verdict::Stalled => events.push("stalled".into()),
            Verdict::TimedOut => events.push("timed out".into()),
            Verdict::Working | Verdict::Done => {}
        }
        let point = crate::report::samples::SampleLine {
            at: crate::state::now(),
            phase: phase.to_string(),
            label: job.label(),
            unit: job.unit().to_string(),
            done,
            total: shown_total,
            rate,
            cpu_cores,
            bucket_bytes: bucket_bytes.take(),
            // The prefetcher runs beside a music section's analysis on a mount.
            prefetch_bytes: if sonic {
                ctx.storage
                    .as_rclone()
                    .filter(|rc| rc.settings().prefetch_readers > 0)
                    .and_then(|rc| rc.prefetch_status(ctx.remote.as_ref()))
                    .map(|st| st.ahead_bytes)
            } else {
                None
            },
            cost_eur: ctx.cost_now(),
            events: std::mem::take(&mut events),
        };
        // The picture is an extra: a line that cannot be written costs the run nothing.
        if let Err(e) = crate::report::samples::append(&timeline, &point) {
            tracing::warn!("{e:#}");
        }
        match &bar {
            Some(b) => {
                b.set_length(shown_total.unwrap_or(done).max(done) as u64);
                b.set_position(done.max(0) as u64);
                b.set_message(format!(
                    "{} /s ETA {eta_text}",
                    rate.map(|r| format!("{r:.1}"))
                        .unwrap_or_else(|| "?".into()),
                ));
            }
            None => {
                if last_log.is_none_or(|t| t.elapsed() >= mcfg.log_interval) {
                    tracing::info!("{line}");
                    last_log = Some(Instant::now());
                }
            }
        }
        ctx.state.last_sample = Some(sample.db.clone());
        if let Some(why) = ctx.limit_reached() {
            ctx.save()?;
            return Err(crate::error::LimitReached(format!(
                "{}: stopped at {done}{} {}: {why}",
                job.label(),
                shown_total.map(|t| format!("/{t}")).unwrap_or_default(),
                job.unit()
            ))
            .into());
        }
        if last_save.elapsed() >= Duration::from_secs(2) {
            ctx.save()?;
            last_save = Instant::now();
        }
        // A phase that ends while the storage is degraded ended on unreadable files (a scan on a
        // dead mount finishes fast and short): remount and ask for the work again instead.
        if verdict != Verdict::Working && guard_storage(ctx, phase, job, &mut remounts)? {
            events.push("remount".into());
            last_health = Instant::now();
            let remaining = timeout.saturating_sub(phase_start.elapsed());
            tracker = new_tracker(remaining);
            tracker_start = Instant::now();
            ctx.save()?;
            continue;
        }
        if verdict != Verdict::Working {
            if let Some(b) = &bar {
                b.finish_with_message(format!("{verdict:?}"));
            }
            if bar.is_some() || verdict != Verdict::Done {
                tracing::info!("{line}");
            }
            return Ok(WatchReport {
                verdict,
                done,
                total,
                last: Some(sample.db),
                rate_per_sec: rate,
                elapsed: phase_start.elapsed(),
                still_for: tracker.still_for(),
            });
        }
    }
}

/// The bucket bytes the mount has read, for the timeline; a failed read is a gap in the picture,
/// never a failed phase.
fn read_bucket_bytes(ctx: &Ctx) -> Option<u64> {
    match ctx.storage.bytes_read(ctx.remote.as_ref()) {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!("reading rclone's core/stats: {e:#}");
            None
        }
    }
}

/// The mount-health guard (STORAGE): on a degraded storage, cancel a running scan before Plex
/// reads the dead mount as "files gone", remount, and ask for the work again. Returns whether it
/// intervened.
fn guard_storage(
    ctx: &mut Ctx,
    phase: &str,
    job: &Job,
    remounts: &mut u32,
) -> anyhow::Result<bool> {
    let why = match ctx.storage.health(ctx.remote.as_ref())? {
        crate::storage::Health::Healthy => return Ok(false),
        crate::storage::Health::Degraded(why) => why,
    };
    *remounts += 1;
    if *remounts > MAX_RESTARTS {
        bail!("{phase}: the storage degraded {remounts} times; giving up. Last: {why}");
    }
    tracing::warn!(
        "{phase}: the storage is degraded ({why}); cancelling and remounting ({remounts}/{MAX_RESTARTS})"
    );
    if matches!(job, Job::Scan { .. })
        && let Ok(client) = ctx.client()
        && let Err(e) = client.cancel_refresh_all()
    {
        tracing::warn!("{phase}: cancelling the scan failed: {e}");
    }
    ctx.storage.recover(ctx.remote.as_ref())?;
    ctx.ensure_plex()?;
    job.trigger(ctx)?;
    Ok(true)
}

/// Turn a stall or timeout into an error (recorded in the phase), or pass a done report through.
pub fn settle(ctx: &mut Ctx, phase: &str, job: &Job, r: &WatchReport) -> anyhow::Result<()> {
    let rec = ctx.state.phase_mut(phase);
    rec.rate_per_sec = r.rate_per_sec.or(rec.rate_per_sec);
    if r.last.is_some() {
        rec.counts_after = r.last.clone();
    }
    let progress = format!(
        "{}{} {}",
        r.done,
        r.total.map(|t| format!("/{t}")).unwrap_or_default(),
        job.unit()
    );
    match r.verdict {
        Verdict::Done | Verdict::Working => Ok(()),
        Verdict::Stalled => {
            rec.stalls += 1;
            bail!(
                "{} stalled: no progress and no CPU for {} while work remains ({progress}); look at the server with `plexburst logs`",
                job.label(),
                format_secs(r.still_for.max(Duration::from_secs(1)))
            )
        }
        Verdict::TimedOut => {
            rec.timeouts += 1;
            bail!(
                "{} timed out after {} ({progress}); raise the timeout in the config if the library is that big",
                job.label(),
                format_secs(r.elapsed.max(Duration::from_secs(1)))
            )
        }
    }
}
