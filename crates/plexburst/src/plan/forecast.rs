//! The Sonic analysis forecast: how long the analysis of this library takes on a machine, and what
//! it costs, before one is rented. Pure arithmetic; `app` gathers the library's size and the
//! machines, and prints what this returns.
//!
//! Two bounds, the slower one wins: the CPU (every track costs `cpu_seconds_per_track`, spread
//! over the Sonic workers the machine runs at once) and the network (every byte of every track
//! comes through the instance's link once).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::format_bytes;

/// The CPU seconds one track's Sonic analysis is assumed to cost when the config gives none.
/// Unmeasured: no tracks/hour figure is published (rclone-and-plex-ops.md "Throughput" [U]).
pub const DEFAULT_CPU_SECONDS_PER_TRACK: f64 = 20.0;

/// Where the per-track cost comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SonicCost {
    pub cpu_seconds_per_track: f64,
    /// Set by `plex.sonic_cpu_seconds_per_track`; false: the unmeasured default.
    pub from_config: bool,
}

impl SonicCost {
    pub fn of(configured: Option<f64>) -> SonicCost {
        SonicCost {
            cpu_seconds_per_track: configured.unwrap_or(DEFAULT_CPU_SECONDS_PER_TRACK),
            from_config: configured.is_some(),
        }
    }

    /// `7.5 CPU s/track (plex.sonic_cpu_seconds_per_track)`, or the default's label and source,
    /// for the plan and the forecast.
    pub fn describe(&self) -> String {
        if self.from_config {
            format!(
                "{} CPU s/track (plex.sonic_cpu_seconds_per_track)",
                self.cpu_seconds_per_track
            )
        } else {
            format!(
                "{} CPU s/track, an unmeasured guess: no tracks/hour figure for Sonic analysis is published (rclone-and-plex-ops.md \"Throughput\"); calibrate it with the CPU s/track a run's report.md prints, as plex.sonic_cpu_seconds_per_track",
                self.cpu_seconds_per_track
            )
        }
    }
}

/// `3d4h`, `5h12m`, `40m`, `45s`: two units at most, rounded down; a forecast is no more precise.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (days, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) if sec > 0 && m < 10 => format!("{m}m{sec}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h{m}m"),
        (_, 0, _) => format!("{days}d"),
        _ => format!("{days}d{h}h"),
    }
}

/// What the analysis reads: the tracks of the analysed music sections and their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Library {
    pub tracks: u64,
    pub bytes: u64,
}

/// A machine the analysis could run on.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    /// `lite (DEV1-S)`, `this target`.
    pub name: String,
    pub vcpus: u32,
    /// The link the media comes through.
    pub link: Link,
    pub eur_per_hour: Option<f64>,
}

/// How the media reaches the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// From the bucket over the machine's internet link, in bits per second.
    Bps(u64),
    /// On the target's own disk: no network bound.
    LocalDisk,
    /// Through a link whose speed is not known (a mount on a host of the user's): not counted.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Cpu,
    Network,
}

impl Bound {
    pub fn as_str(self) -> &'static str {
        match self {
            Bound::Cpu => "CPU-bound",
            Bound::Network => "network-bound",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Sonic workers at once: the machine's vCPUs, or `plex.analysis_threads` when fewer.
    pub workers: u32,
    pub cpu: Duration,
    pub network: Option<Duration>,
    pub bound: Bound,
    /// The slower of the two.
    pub time: Duration,
    pub cost_eur: Option<f64>,
}

/// Sonic workers running at once: `LongRunningJobThreads` is the vCPU count unless the config sets
/// it, and more workers than cores share them.
pub fn workers(vcpus: u32, threads: Option<u32>) -> u32 {
    threads.unwrap_or(vcpus).min(vcpus).max(1)
}

/// The analysis time on `m`: the slower of the CPU bound and the network bound.
pub fn estimate(lib: Library, m: &Machine, cost: &SonicCost, threads: Option<u32>) -> Estimate {
    let workers = workers(m.vcpus, threads);
    let cpu = lib.tracks as f64 * cost.cpu_seconds_per_track / f64::from(workers);
    let network = match m.link {
        Link::Bps(b) if b > 0 => Some(lib.bytes as f64 * 8.0 / b as f64),
        _ => None,
    };
    let (bound, secs) = match network {
        Some(n) if n > cpu => (Bound::Network, n),
        _ => (Bound::Cpu, cpu),
    };
    Estimate {
        workers,
        cpu: Duration::from_secs_f64(cpu),
        network: network.map(Duration::from_secs_f64),
        bound,
        time: Duration::from_secs_f64(secs),
        cost_eur: m.eur_per_hour.map(|p| p * secs / 3600.0),
    }
}

/// The analysis time of `remaining` tracks at the estimated cost, before the run has a rate of
/// its own (the monitor's ETA until the live rate replaces it).
pub fn eta(remaining: i64, cost: &SonicCost, workers: u32) -> Duration {
    Duration::from_secs_f64(
        remaining.max(0) as f64 * cost.cpu_seconds_per_track / f64::from(workers.max(1)),
    )
}

/// One line per machine: `lite (DEV1-S): 2h3m CPU-bound (CPU 2h3m on 2 workers, network 5m at
/// 200 Mbit/s), 0.0123 EUR`.
pub fn line(m: &Machine, e: &Estimate) -> String {
    let network = match (e.network, m.link) {
        (Some(n), Link::Bps(b)) => {
            format!("network {} at {} Mbit/s", human(n), b / 1_000_000)
        }
        (_, Link::LocalDisk) => "media on the target's disk".to_string(),
        _ => "link speed unknown, network not counted".to_string(),
    };
    let cost = e
        .cost_eur
        .map(|c| format!(", {c:.4} EUR"))
        .unwrap_or_default();
    format!(
        "{}: {} {} (CPU {} on {} worker{}, {network}){cost}",
        m.name,
        human(e.time.max(Duration::from_secs(1))),
        e.bound.as_str(),
        human(e.cpu),
        e.workers,
        if e.workers == 1 { "" } else { "s" }
    )
}

/// The rented machine's caps (`target.max_lifetime`, `target.budget_eur`): a forecast past one
/// says the analysis would not finish on that machine.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub max_lifetime: Option<Duration>,
    pub budget_eur: Option<f64>,
}

impl Limits {
    /// `; over target.max_lifetime (96h)` and the like, or nothing.
    fn over(&self, e: &Estimate) -> String {
        let mut s = String::new();
        if let Some(l) = self.max_lifetime
            && e.time > l
        {
            s.push_str(&format!(
                "; over target.max_lifetime ({}): the instance deletes itself first",
                crate::units::format_duration(l)
            ));
        }
        if let (Some(b), Some(c)) = (self.budget_eur, e.cost_eur)
            && c > b
        {
            s.push_str(&format!("; over target.budget_eur ({b})"));
        }
        s
    }
}

/// The forecast block `plan` and `profiles` print: the library, the cost per track and where it
/// comes from, then one line per machine; or why there is no forecast.
pub fn render(
    lib: Result<Library, String>,
    machines: &[Machine],
    cost: &SonicCost,
    threads: Option<u32>,
    limits: Limits,
) -> String {
    let lib = match lib {
        Ok(l) => l,
        Err(why) => return format!("forecast: omitted, the library's size is unknown ({why})\n"),
    };
    let mut s = format!(
        "forecast: Sonic analysis of {} tracks, {}, at {}\n",
        lib.tracks,
        format_bytes(lib.bytes),
        cost.describe()
    );
    for m in machines {
        let e = estimate(lib, m, cost, threads);
        s.push_str(&format!("  {}{}\n", line(m, &e), limits.over(&e)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(vcpus: u32, bps: Option<u64>, price: Option<f64>) -> Machine {
        Machine {
            name: "m".into(),
            vcpus,
            link: bps.map(Link::Bps).unwrap_or(Link::LocalDisk),
            eur_per_hour: price,
        }
    }

    const COST: SonicCost = SonicCost {
        cpu_seconds_per_track: 20.0,
        from_config: true,
    };

    #[test]
    fn the_cpu_bound_spreads_the_tracks_over_the_workers() {
        let lib = Library {
            tracks: 3600,
            bytes: 1_000_000_000,
        };
        // 3600 x 20 s / 4 workers = 5 h; 1 GB at 200 Mbit/s = 40 s.
        let e = estimate(lib, &machine(4, Some(200_000_000), Some(0.5)), &COST, None);
        assert_eq!(e.workers, 4);
        assert_eq!(e.cpu, Duration::from_secs(18_000));
        assert_eq!(e.network, Some(Duration::from_secs(40)));
        assert_eq!(e.bound, Bound::Cpu);
        assert_eq!(e.time, Duration::from_secs(18_000));
        assert!((e.cost_eur.unwrap() - 2.5).abs() < 1e-9);
        // Fewer threads than cores set by the config: fewer workers.
        assert_eq!(
            estimate(lib, &machine(4, None, None), &COST, Some(2)).cpu,
            Duration::from_secs(36_000)
        );
        // More than cores: still only as many at once as there are cores.
        assert_eq!(workers(4, Some(16)), 4);
    }

    #[test]
    fn a_slow_link_makes_the_analysis_network_bound() {
        // 100 tracks x 20 s / 16 = 125 s of CPU; 5 GB at 100 Mbit/s = 400 s.
        let lib = Library {
            tracks: 100,
            bytes: 5_000_000_000,
        };
        let e = estimate(lib, &machine(16, Some(100_000_000), Some(3.6)), &COST, None);
        assert_eq!(e.bound, Bound::Network);
        assert_eq!(e.time, Duration::from_secs(400));
        assert!((e.cost_eur.unwrap() - 0.4).abs() < 1e-9);
        let l = line(&machine(16, Some(100_000_000), Some(3.6)), &e);
        assert!(l.contains("network-bound"), "{l}");
        assert!(l.contains("m: 6m40s network-bound (CPU 2m5s on 16 workers, network 6m40s at 100 Mbit/s), 0.4000 EUR"), "{l}");
        // Media on the target's disk: only the CPU bounds it, and nothing is paid.
        let local = estimate(lib, &machine(16, None, None), &COST, None);
        assert_eq!((local.bound, local.cost_eur), (Bound::Cpu, None));
    }

    #[test]
    fn the_default_cost_says_it_is_a_guess_and_how_to_calibrate() {
        let d = SonicCost::of(None);
        assert_eq!(d.cpu_seconds_per_track, DEFAULT_CPU_SECONDS_PER_TRACK);
        let text = d.describe();
        assert!(text.contains("unmeasured guess"), "{text}");
        assert!(text.contains("report.md"), "{text}");
        assert!(
            SonicCost::of(Some(7.5))
                .describe()
                .starts_with("7.5 CPU s/track (plex.")
        );
    }

    #[test]
    fn an_unknown_size_omits_the_forecast_and_says_why() {
        let out = render(
            Err("offline".into()),
            &[machine(2, None, None)],
            &COST,
            None,
            Limits::default(),
        );
        assert_eq!(
            out,
            "forecast: omitted, the library's size is unknown (offline)\n"
        );
        let out = render(
            Ok(Library {
                tracks: 0,
                bytes: 0,
            }),
            &[machine(2, None, None)],
            &COST,
            None,
            Limits::default(),
        );
        assert!(out.contains("0 tracks") && out.contains("  m: "), "{out}");
    }

    #[test]
    fn a_forecast_past_the_rented_machines_caps_says_so() {
        // 3600 tracks x 20 s / 2 = 10 h at 1 EUR/h.
        let lib = Library {
            tracks: 3600,
            bytes: 0,
        };
        let m = [machine(2, None, Some(1.0))];
        let with = |limits| render(Ok(lib), &m, &COST, None, limits);
        let within = with(Limits {
            max_lifetime: Some(Duration::from_secs(11 * 3600)),
            budget_eur: Some(10.5),
        });
        assert!(!within.contains("over target."), "{within}");
        let over = with(Limits {
            max_lifetime: Some(Duration::from_secs(4 * 3600)),
            budget_eur: Some(2.0),
        });
        assert!(
            over.contains("10h CPU-bound")
                && over.contains(
                    "; over target.max_lifetime (4h): the instance deletes itself first; over target.budget_eur (2)"
                ),
            "{over}"
        );
    }

    #[test]
    fn durations_read_in_two_units_at_most() {
        let h = |s| human(Duration::from_secs(s));
        assert_eq!(
            [
                h(45),
                h(125),
                h(2400),
                h(18_000),
                h(18_060),
                h(90_000),
                h(86_400 * 3)
            ],
            ["45s", "2m5s", "40m", "5h", "5h1m", "1d1h", "3d"]
        );
    }

    #[test]
    fn the_estimated_eta_spreads_the_remaining_tracks_over_the_workers() {
        assert_eq!(eta(10, &COST, 4), Duration::from_secs(50));
        assert_eq!(eta(-3, &COST, 0), Duration::ZERO);
    }
}
