//! `--fault KIND[:PHASE][:ARG]` specs and `500ms`/`3s` durations, parsed once at start-up.

use std::path::Path;
use std::time::Duration;

/// Where a count-based fault fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Scan,
    Analysis,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Scan => "scan",
            Phase::Analysis => "analysis",
        }
    }
}

/// One injected failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Abort the whole process (no WAL checkpoint) after N items of the phase.
    Crash { phase: Phase, after: u64 },
    /// Stop making progress after N items of the phase; the activity stays, CPU drops to zero.
    Stall { phase: Phase, after: u64 },
    /// Delay every HTTP request by this long.
    SlowApi(Duration),
    /// Refuse TCP connections (nothing listens) for this long after start.
    Refuse(Duration),
    /// Answer section calls with "server is still starting up" for this long after start.
    Starting(Duration),
}

/// Parse `500ms`, `3s`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?}; use e.g. 500ms, 3s, 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?}; use ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn parse_phase(s: &str) -> Result<Phase, String> {
    match s {
        "scan" => Ok(Phase::Scan),
        "analysis" => Ok(Phase::Analysis),
        _ => Err(format!("unknown fault phase {s:?}; use scan or analysis")),
    }
}

impl std::str::FromStr for Fault {
    type Err = String;
    fn from_str(spec: &str) -> Result<Fault, String> {
        let parts: Vec<&str> = spec.split(':').collect();
        let count = |p: &[&str]| -> Result<(Phase, u64), String> {
            match p {
                [_, phase, n] => Ok((
                    parse_phase(phase)?,
                    n.parse()
                        .map_err(|_| format!("bad item count {n:?} in fault {spec:?}"))?,
                )),
                _ => Err(format!(
                    "fault {spec:?} needs KIND:PHASE:N, e.g. crash:scan:100"
                )),
            }
        };
        let dur = |p: &[&str]| -> Result<Duration, String> {
            match p {
                [_, d] => parse_duration(d),
                _ => Err(format!(
                    "fault {spec:?} needs KIND:DURATION, e.g. slow-api:500ms"
                )),
            }
        };
        match parts[0] {
            "crash" => count(&parts).map(|(phase, after)| Fault::Crash { phase, after }),
            "stall" => count(&parts).map(|(phase, after)| Fault::Stall { phase, after }),
            "slow-api" => dur(&parts).map(Fault::SlowApi),
            "refuse" => dur(&parts).map(Fault::Refuse),
            "starting" => dur(&parts).map(Fault::Starting),
            k => Err(format!(
                "unknown fault kind {k:?}; use crash, stall, slow-api, refuse or starting"
            )),
        }
    }
}

/// The parsed faults of one server run, with the once-per-data-dir bookkeeping of crash/stall.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    pub list: Vec<Fault>,
}

impl Faults {
    pub fn slow_api(&self) -> Option<Duration> {
        self.list.iter().find_map(|f| match f {
            Fault::SlowApi(d) => Some(*d),
            _ => None,
        })
    }
    pub fn refuse(&self) -> Option<Duration> {
        self.list.iter().find_map(|f| match f {
            Fault::Refuse(d) => Some(*d),
            _ => None,
        })
    }
    pub fn starting(&self) -> Option<Duration> {
        self.list.iter().find_map(|f| match f {
            Fault::Starting(d) => Some(*d),
            _ => None,
        })
    }

    /// The count after which a crash (true) or stall (false) fires in `phase`, unless it already
    /// fired for this data dir: a restarted server must be able to finish the job.
    pub fn armed(&self, phase: Phase, marker_dir: &Path) -> Option<(bool, u64)> {
        self.list.iter().find_map(|f| match f {
            Fault::Crash { phase: p, after }
                if *p == phase && !fired(marker_dir, "crash", phase) =>
            {
                Some((true, *after))
            }
            Fault::Stall { phase: p, after }
                if *p == phase && !fired(marker_dir, "stall", phase) =>
            {
                Some((false, *after))
            }
            _ => None,
        })
    }
}

fn marker(dir: &Path, kind: &str, phase: Phase) -> std::path::PathBuf {
    dir.join(format!(".emulator-fault-{kind}-{}-fired", phase.name()))
}

fn fired(dir: &Path, kind: &str, phase: Phase) -> bool {
    marker(dir, kind, phase).exists()
}

/// Record that a fault fired, before it fires (a crash leaves no chance afterwards).
pub fn mark_fired(dir: &Path, crash: bool, phase: Phase) {
    let kind = if crash { "crash" } else { "stall" };
    let _ = std::fs::write(marker(dir, kind, phase), b"fired\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_spec() {
        assert_eq!(
            "crash:scan:5".parse(),
            Ok(Fault::Crash {
                phase: Phase::Scan,
                after: 5
            })
        );
        assert_eq!(
            "stall:analysis:3".parse(),
            Ok(Fault::Stall {
                phase: Phase::Analysis,
                after: 3
            })
        );
        assert_eq!(
            "slow-api:500ms".parse(),
            Ok(Fault::SlowApi(Duration::from_millis(500)))
        );
        assert_eq!(
            "refuse:3s".parse(),
            Ok(Fault::Refuse(Duration::from_secs(3)))
        );
        assert_eq!(
            "starting:2".parse(),
            Ok(Fault::Starting(Duration::from_secs(2)))
        );
        assert!("crash:scan".parse::<Fault>().is_err());
        assert!("explode:1s".parse::<Fault>().is_err());
        assert!("slow-api:3parsecs".parse::<Fault>().is_err());
    }
}
