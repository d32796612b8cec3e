//! Pure progress maths over samples: rate, ETA, stable-for-N, stall and timeout verdicts.
//!
//! The monitor feeds one [`Observation`] per poll into a [`Tracker`] and acts on the [`Verdict`].
//! No clock and no I/O here: `elapsed` comes from the caller, so every rule is unit-tested with
//! made-up timelines.
//!
//! Rules, in the order they are checked:
//! 1. **Done** — Plex is idle (`busy == false`) and `done` has kept the same value in the last
//!    `stable_samples` observations, *and*, when the total is known, either the work is complete
//!    (`done >= total`) or the tracker has seen work happen (`busy` once, or `done` moving). The
//!    second half keeps an analysis from ending in the seconds between "start it" and Plex
//!    reporting it busy. Without a total (a scan) idle and stable is enough: a small scan can
//!    finish before the first poll, and there is nothing else to compare against.
//!    A Done phase may still have `done < total` (Plex skipped items); the caller reports that.
//!    Not **Done** while the work may not have been picked up yet: after `requested(baseline)`,
//!    an idle count still at the baseline within `start_grace` of the request is Working (Plex
//!    takes a moment to flag a refresh it was just asked for).
//!    Also **Done**: the work is complete (`done >= total`) and neither `done` nor `cpu_ticks`
//!    moved for `stall_window`, even if `busy` stays up (an unrelated activity or a leftover
//!    process must not hold a finished phase open until its timeout).
//! 2. **TimedOut** — `elapsed >= timeout`.
//! 3. **Stalled** — neither `done` nor `cpu_ticks` changed for `stall_window` while work remains:
//!    `done < total` when the total is known, `busy` when it is not. Moving CPU alone keeps a
//!    phase alive: Plex can spend minutes on one big file without a count changing. A stall is
//!    not final: progress turns it back into Working, and the caller decides when to give up.
//! 4. otherwise **Working**.

use std::collections::VecDeque;
use std::time::Duration;

/// How much history the rate looks at. Long enough to smooth Plex's bursty commits (it writes in
/// transactions of many items), short enough to follow a change of pace.
pub const RATE_WINDOW: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackerConfig {
    /// Idle observations with an unchanged count needed to call the phase done.
    pub stable_samples: u32,
    /// How long counts and CPU may stay still while work remains before the phase is stalled.
    pub stall_window: Duration,
    /// The phase's deadline, measured on `Observation::elapsed`.
    pub timeout: Duration,
    /// After `Tracker::requested`, how long an idle, unchanged count may mean "not picked up
    /// yet" rather than "done" (zero: no grace).
    pub start_grace: Duration,
}

/// One poll of a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Time since the phase started.
    pub elapsed: Duration,
    /// Items processed so far (scanned items, analysed tracks, thumbnailed photos).
    pub done: i64,
    /// Items to process, when known.
    pub total: Option<i64>,
    /// Cumulative CPU ticks of Plex's processes, when the sample could read them.
    pub cpu_ticks: Option<u64>,
    /// Plex reports work in progress (a section refreshing, an activity, a scanner process).
    pub busy: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Working,
    Done,
    Stalled,
    TimedOut,
}

#[derive(Debug, Clone)]
pub struct Tracker {
    cfg: TrackerConfig,
    /// (elapsed, done) points inside the rate window.
    window: VecDeque<(Duration, i64)>,
    last: Option<Observation>,
    /// Consecutive idle observations with the same count, including the latest.
    stable: u32,
    /// When `done` or the CPU last moved (or the first observation).
    last_progress: Duration,
    last_cpu: Option<u64>,
    saw_work: bool,
    /// The count when the work was requested (`requested`), for the start grace.
    baseline: Option<i64>,
}

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Tracker {
        Tracker {
            cfg,
            window: VecDeque::new(),
            last: None,
            stable: 0,
            last_progress: Duration::ZERO,
            last_cpu: None,
            saw_work: false,
            baseline: None,
        }
    }

    /// The work was just requested, with `baseline` done at that moment: counts move from there,
    /// and for `start_grace` an idle count still at `baseline` is not taken for done.
    pub fn requested(&mut self, baseline: i64) {
        let o = Observation {
            elapsed: Duration::ZERO,
            done: baseline,
            total: None,
            cpu_ticks: None,
            busy: false,
        };
        self.baseline = Some(baseline);
        self.last = Some(o);
        self.window.push_back((o.elapsed, o.done));
    }

    pub fn config(&self) -> &TrackerConfig {
        &self.cfg
    }

    /// Take one observation and say where the phase stands.
    pub fn observe(&mut self, o: Observation) -> Verdict {
        let prev = self.last;
        let count_moved = prev.is_some_and(|p| p.done != o.done);
        // CPU counts as moving only when two readings exist and differ; a failed read says nothing.
        let cpu_moved = match (self.last_cpu, o.cpu_ticks) {
            (Some(a), Some(b)) => a != b,
            _ => false,
        };
        if let Some(c) = o.cpu_ticks {
            self.last_cpu = Some(c);
        }
        if prev.is_none() || count_moved || cpu_moved {
            self.last_progress = o.elapsed;
        }
        if o.busy || count_moved {
            self.saw_work = true;
        }
        self.stable = if o.busy || count_moved {
            0
        } else {
            self.stable.saturating_add(1)
        };

        self.window.push_back((o.elapsed, o.done));
        // Drop points older than the window, but keep two so a slow poll still yields a rate.
        while self.window.len() > 2
            && self
                .window
                .front()
                .is_some_and(|(t, _)| o.elapsed.saturating_sub(*t) > RATE_WINDOW)
        {
            self.window.pop_front();
        }
        self.last = Some(o);

        // With a known total, "idle and stable" before any work was seen means "not started
        // yet" unless the work is already complete. Without a total there is nothing to compare
        // against (a small scan can finish before the first poll), so idle and stable is done.
        let complete = o.total.is_some_and(|t| o.done >= t);
        let plausible = complete || self.saw_work || o.total.is_none();
        let not_picked_up =
            !self.saw_work && self.baseline == Some(o.done) && o.elapsed < self.cfg.start_grace;
        if self.stable >= self.cfg.stable_samples.max(1) && plausible && !not_picked_up {
            return Verdict::Done;
        }
        let still = o.elapsed.saturating_sub(self.last_progress) >= self.cfg.stall_window;
        // Every item is done and nothing has moved for a whole stall window: a busy flag that
        // stays up (an unrelated activity, a leftover process) must not keep the phase open.
        if complete && still {
            return Verdict::Done;
        }
        if o.elapsed >= self.cfg.timeout {
            return Verdict::TimedOut;
        }
        // With a known total the count says whether work remains; without one, only `busy` can.
        let work_remains = match o.total {
            Some(t) => o.done < t,
            None => o.busy,
        };
        if work_remains && still {
            return Verdict::Stalled;
        }
        Verdict::Working
    }

    /// Items per second over the last [`RATE_WINDOW`]; `None` before two observations.
    pub fn rate_per_sec(&self) -> Option<f64> {
        let (t0, d0) = *self.window.front()?;
        let (t1, d1) = *self.window.back()?;
        let dt = t1.checked_sub(t0)?.as_secs_f64();
        if dt <= 0.0 {
            return None;
        }
        Some((d1 - d0) as f64 / dt)
    }

    /// Time left at the current rate; zero when the work is complete, `None` when the total is
    /// unknown or nothing is moving.
    pub fn eta(&self) -> Option<Duration> {
        self.eta_to(self.last?.total?)
    }

    /// Time until `done` reaches `target` at the current rate, for a total that is only an
    /// expectation (a scan's file count); zero once reached, `None` while nothing moves.
    pub fn eta_to(&self, target: i64) -> Option<Duration> {
        let o = self.last?;
        let remaining = target - o.done;
        if remaining <= 0 {
            return Some(Duration::ZERO);
        }
        let rate = self.rate_per_sec()?;
        if rate <= 0.0 {
            return None;
        }
        Duration::try_from_secs_f64(remaining as f64 / rate).ok()
    }

    /// How long neither the count nor the CPU has moved, as of the last observation.
    pub fn still_for(&self) -> Duration {
        self.last
            .map(|o| o.elapsed.saturating_sub(self.last_progress))
            .unwrap_or_default()
    }

    pub fn last(&self) -> Option<&Observation> {
        self.last.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: TrackerConfig = TrackerConfig {
        stable_samples: 3,
        stall_window: Duration::from_secs(60),
        timeout: Duration::from_secs(3600),
        start_grace: Duration::ZERO,
    };

    fn obs(secs: u64, done: i64, total: Option<i64>, cpu: Option<u64>, busy: bool) -> Observation {
        Observation {
            elapsed: Duration::from_secs(secs),
            done,
            total,
            cpu_ticks: cpu,
            busy,
        }
    }

    /// Feed (secs, done, cpu, busy) with a fixed total; return every verdict.
    fn run(
        cfg: TrackerConfig,
        total: Option<i64>,
        steps: &[(u64, i64, Option<u64>, bool)],
    ) -> Vec<Verdict> {
        let mut t = Tracker::new(cfg);
        steps
            .iter()
            .map(|&(s, d, c, b)| t.observe(obs(s, d, total, c, b)))
            .collect()
    }

    use Verdict::*;

    #[test]
    fn done_after_n_idle_samples_with_the_same_count() {
        let v = run(
            CFG,
            Some(100),
            &[
                (0, 0, Some(0), true),
                (10, 50, Some(10), true),
                (20, 100, Some(20), true),
                (30, 100, Some(21), false),
                (40, 100, Some(21), false),
                (50, 100, Some(21), false),
            ],
        );
        assert_eq!(v, vec![Working, Working, Working, Working, Working, Done]);
    }

    #[test]
    fn idle_but_count_still_rising_is_not_done() {
        // Plex's activity ended but the last transactions are still landing.
        let v = run(
            CFG,
            None,
            &[
                (0, 10, None, true),
                (10, 20, None, false),
                (20, 30, None, false),
                (30, 40, None, false),
                (40, 40, None, false),
                (50, 40, None, false),
                (60, 40, None, false),
            ],
        );
        assert_eq!(
            v,
            vec![Working, Working, Working, Working, Working, Working, Done]
        );
    }

    #[test]
    fn busy_resets_the_stable_streak() {
        let v = run(
            CFG,
            None,
            &[
                (0, 5, None, true),
                (10, 5, None, false),
                (20, 5, None, false),
                (30, 5, None, true),
                (40, 5, None, false),
                (50, 5, None, false),
                (60, 5, None, false),
            ],
        );
        assert_eq!(
            v,
            vec![Working, Working, Working, Working, Working, Working, Done]
        );
    }

    #[test]
    fn not_done_before_the_work_has_started() {
        // Analysis was just triggered: Plex is not busy yet and nothing moved.
        let v = run(
            CFG,
            Some(9),
            &[
                (0, 0, Some(5), false),
                (1, 0, Some(5), false),
                (2, 0, Some(5), false),
                (3, 0, Some(5), false),
                (4, 0, Some(6), true),
                (5, 9, Some(9), false),
                (6, 9, Some(9), false),
                (7, 9, Some(9), false),
                (8, 9, Some(9), false),
            ],
        );
        // Four idle, unchanged samples at the start are not Done: no work was seen yet.
        assert_eq!(&v[..4], &[Working; 4]);
        assert_eq!(&v[4..8], &[Working; 4]);
        assert_eq!(v[8], Done);
    }

    #[test]
    fn already_complete_work_is_done_without_seeing_it_happen() {
        // A resumed run: every track was analysed before the restart.
        let v = run(
            CFG,
            Some(9),
            &[
                (0, 9, Some(1), false),
                (10, 9, Some(1), false),
                (20, 9, Some(1), false),
            ],
        );
        assert_eq!(v, vec![Working, Working, Done]);
    }

    #[test]
    fn stall_when_count_and_cpu_stop_with_work_remaining() {
        let v = run(
            CFG,
            Some(100),
            &[
                (0, 0, Some(0), true),
                (10, 40, Some(50), true),
                (20, 40, Some(50), true),
                (69, 40, Some(50), true),
                (70, 40, Some(50), true),
                (80, 41, Some(50), true),
            ],
        );
        // Last movement at t=10; the window of 60 s is reached at t=70; a new item un-stalls it.
        assert_eq!(
            v,
            vec![Working, Working, Working, Working, Stalled, Working]
        );
    }

    #[test]
    fn cpu_moving_with_a_frozen_count_is_not_stalled() {
        let mut t = Tracker::new(CFG);
        let mut verdicts = Vec::new();
        for i in 0..30u64 {
            verdicts.push(t.observe(obs(i * 10, 7, Some(100), Some(i * 100), true)));
        }
        assert!(verdicts.iter().all(|v| *v == Working), "{verdicts:?}");
        assert_eq!(t.still_for(), Duration::ZERO);
    }

    #[test]
    fn unknown_cpu_does_not_count_as_movement() {
        let v = run(
            CFG,
            Some(10),
            &[
                (0, 1, Some(100), true),
                (30, 1, None, true),
                (60, 1, Some(100), true),
            ],
        );
        assert_eq!(v, vec![Working, Working, Stalled]);
    }

    #[test]
    fn idle_with_work_remaining_stalls_when_it_has_not_started() {
        // Nothing ever happened after the trigger: the stall window catches it.
        let v = run(
            CFG,
            Some(10),
            &[
                (0, 0, Some(3), false),
                (30, 0, Some(3), false),
                (60, 0, Some(3), false),
            ],
        );
        assert_eq!(v, vec![Working, Working, Stalled]);
    }

    #[test]
    fn unknown_total_idle_and_stable_is_done_even_if_no_work_was_seen() {
        // A scan of a small library can finish between the request and the first poll: with no
        // total to compare against, idle and stable is all there is to go on.
        let v = run(
            CFG,
            None,
            &[
                (0, 42, None, false),
                (10, 42, None, false),
                (20, 42, None, false),
                (30, 42, None, false),
            ],
        );
        // The last three observations were idle with the same count.
        assert_eq!(v, vec![Working, Working, Done, Done]);
    }

    #[test]
    fn no_stall_without_remaining_work() {
        // Unknown total and Plex idle but the count still creeping (late commits): nothing is
        // stalled, and it is not done while the count moves.
        let cfg = TrackerConfig {
            timeout: Duration::from_secs(500),
            ..CFG
        };
        let v = run(
            cfg,
            None,
            &[
                (0, 0, None, false),
                (100, 1, None, false),
                (200, 2, None, false),
                (500, 3, None, false),
            ],
        );
        assert_eq!(v, vec![Working, Working, Working, TimedOut]);
    }

    #[test]
    fn timeout_wins_over_stall_but_not_over_done() {
        let cfg = TrackerConfig {
            stable_samples: 2,
            stall_window: Duration::from_secs(10),
            timeout: Duration::from_secs(30),
            start_grace: Duration::ZERO,
        };
        let v = run(
            cfg,
            Some(5),
            &[
                (0, 1, Some(1), true),
                (20, 1, Some(1), true),
                (30, 1, Some(1), true),
            ],
        );
        assert_eq!(v, vec![Working, Stalled, TimedOut]);
        let v = run(
            cfg,
            Some(5),
            &[
                (0, 1, None, true),
                (20, 5, None, false),
                (29, 5, None, false),
                (30, 5, None, false),
            ],
        );
        assert_eq!(v, vec![Working, Working, Working, Done]);
    }

    #[test]
    fn complete_but_still_flagged_busy_is_done_after_the_stall_window() {
        // 12/12 analysed, but an activity (or a process of another server) keeps `busy` up.
        let v = run(
            CFG,
            Some(12),
            &[
                (0, 0, Some(10), true),
                (10, 12, Some(90), true),
                (40, 12, Some(90), true),
                (69, 12, Some(90), true),
                (70, 12, Some(90), true),
            ],
        );
        assert_eq!(v, vec![Working, Working, Working, Working, Done]);
    }

    #[test]
    fn incomplete_and_busy_with_frozen_count_and_cpu_is_stalled_not_done() {
        let v = run(
            CFG,
            Some(12),
            &[
                (0, 3, Some(10), true),
                (30, 11, Some(90), true),
                (90, 11, Some(90), true),
            ],
        );
        assert_eq!(v, vec![Working, Working, Stalled]);
    }

    #[test]
    fn busy_without_a_total_can_stall() {
        let v = run(
            CFG,
            None,
            &[
                (0, 3, Some(10), true),
                (30, 5, Some(20), true),
                (90, 5, Some(20), true),
            ],
        );
        assert_eq!(v, vec![Working, Working, Stalled]);
    }

    #[test]
    fn stable_samples_zero_behaves_like_one() {
        let cfg = TrackerConfig {
            stable_samples: 0,
            ..CFG
        };
        let v = run(cfg, None, &[(0, 3, None, true), (10, 3, None, false)]);
        assert_eq!(v, vec![Working, Done]);
    }

    #[test]
    fn rate_and_eta_from_the_window() {
        let mut t = Tracker::new(CFG);
        assert_eq!(t.rate_per_sec(), None);
        assert_eq!(t.eta(), None);
        t.observe(obs(0, 0, Some(1000), None, true));
        assert_eq!(t.rate_per_sec(), None);
        t.observe(obs(10, 100, Some(1000), None, true));
        assert_eq!(t.rate_per_sec(), Some(10.0));
        assert_eq!(t.eta(), Some(Duration::from_secs(90)));
        t.observe(obs(20, 300, Some(1000), None, true));
        assert_eq!(t.rate_per_sec(), Some(15.0));
        let eta = t.eta().unwrap().as_secs_f64();
        assert!((eta - 700.0 / 15.0).abs() < 1e-6, "{eta}");
    }

    #[test]
    fn rate_forgets_points_older_than_the_window() {
        let mut t = Tracker::new(CFG);
        // Fast at first (100/s), then slow (1/s) for longer than the window.
        t.observe(obs(0, 0, None, None, true));
        t.observe(obs(10, 1000, None, None, true));
        for s in (20..=400).step_by(10) {
            t.observe(obs(s, 1000 + (s as i64 - 10), None, None, true));
        }
        let r = t.rate_per_sec().unwrap();
        assert!((r - 1.0).abs() < 1e-9, "{r}");
        // Unknown total: no ETA, but one to an expected count (a scan's file count).
        assert_eq!(t.eta(), None);
        assert_eq!(t.eta_to(1500), Some(Duration::from_secs(110)));
        assert_eq!(t.eta_to(1000), Some(Duration::ZERO));
    }

    #[test]
    fn rate_with_slow_polls_keeps_two_points() {
        let mut t = Tracker::new(CFG);
        t.observe(obs(0, 0, Some(10), None, true));
        t.observe(obs(600, 6, Some(10), None, true));
        assert_eq!(t.rate_per_sec(), Some(0.01));
        assert_eq!(t.eta(), Some(Duration::from_secs(400)));
    }

    #[test]
    fn eta_is_zero_when_complete_and_none_when_frozen_or_shrinking() {
        let mut t = Tracker::new(CFG);
        t.observe(obs(0, 10, Some(10), None, false));
        assert_eq!(t.eta(), Some(Duration::ZERO));

        let mut t = Tracker::new(CFG);
        t.observe(obs(0, 5, Some(10), None, true));
        t.observe(obs(10, 5, Some(10), None, true));
        assert_eq!(t.rate_per_sec(), Some(0.0));
        assert_eq!(t.eta(), None);
        // Items went to the trash: a negative rate gives no ETA.
        t.observe(obs(20, 3, Some(10), None, true));
        assert!(t.rate_per_sec().unwrap() < 0.0);
        assert_eq!(t.eta(), None);
    }

    #[test]
    fn a_request_not_picked_up_yet_is_working_until_the_grace_ends() {
        let cfg = TrackerConfig {
            stable_samples: 2,
            start_grace: Duration::from_secs(30),
            ..CFG
        };
        let idle = |t: &mut Tracker, s: u64, d: i64| t.observe(obs(s, d, None, Some(0), false));
        // Idle at the baseline: not done inside the grace, done once it has passed.
        let mut t = Tracker::new(cfg);
        t.requested(400);
        assert_eq!(
            [10, 20, 25, 30, 40].map(|s| idle(&mut t, s, 400)),
            [Working, Working, Working, Done, Done]
        );
        // A count that moved off the baseline was picked up: idle and stable is done at once.
        let mut t = Tracker::new(cfg);
        t.requested(400);
        assert_eq!(
            [5, 10, 15].map(|s| idle(&mut t, s, 410)),
            [Working, Working, Done]
        );
        // Without `requested`, the grace does not apply.
        let mut t = Tracker::new(cfg);
        assert_eq!([5, 10].map(|s| idle(&mut t, s, 400)), [Working, Done]);
    }
}
