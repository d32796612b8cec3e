//! Injected faults: the `--fault SPEC` syntax, and the set in force (set at start, changed at
//! run time by `POST/DELETE /_emulator/faults`) with its counters and seeded random rolls.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::clock::parse_duration;

/// One fault. `TYPE` is a commercial type (`DEV1-S`), `ZONE` a zone (`fr-par-2`).
#[derive(Debug, Clone, PartialEq)]
pub enum FaultSpec {
    /// `rate-limit:P` — a fraction P of API calls answer 429 `too_many_requests`.
    RateLimit(f64),
    /// `server-error:P` — a fraction P of API calls answer 500.
    ServerError(f64),
    /// `transient:N` — the next N server actions answer 409 `transient_state`.
    Transient(u32),
    /// `out-of-stock:TYPE[@ZONE]` — poweron of that type answers 412 `out_of_stock`.
    OutOfStock { ty: String, zone: Option<String> },
    /// `quota:TYPE[=N]` — at most N servers of that type per project (default 0); creating one
    /// more answers 403 `quotas_exceeded`.
    Quota { ty: String, max: u64 },
    /// `shortage:TYPE[@ZONE]` — availability says `shortage` for that type.
    Shortage { ty: String, zone: Option<String> },
    /// `slow-boot:DURATION` — poweron takes this long instead of `--boot-delay`.
    SlowBoot(Duration),
    /// `end-of-service:TYPE` — the type reports `end_of_service: true` (servers and products).
    EndOfService(String),
    /// `slow-detach:DURATION` — an SBS volume stays `detaching` this long (Appendix A).
    SlowDetach(Duration),
}

fn fraction(s: &str) -> Result<f64, String> {
    let p: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a fraction; use e.g. 0.25"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{s:?} is not between 0 and 1"))
    }
}

fn type_at_zone(s: &str) -> Result<(String, Option<String>), String> {
    let (ty, zone) = match s.split_once('@') {
        Some((t, z)) => (t, Some(z.to_string())),
        None => (s, None),
    };
    if ty.is_empty() {
        return Err("a commercial type is required, e.g. DEV1-S".into());
    }
    Ok((ty.to_ascii_uppercase(), zone))
}

impl FromStr for FaultSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, arg) = s.split_once(':').ok_or_else(|| {
            format!("fault {s:?} has no argument; use KIND:ARG, e.g. rate-limit:0.5")
        })?;
        Ok(match kind {
            "rate-limit" => FaultSpec::RateLimit(fraction(arg)?),
            "server-error" => FaultSpec::ServerError(fraction(arg)?),
            "transient" => FaultSpec::Transient(
                arg.parse()
                    .map_err(|_| format!("transient:{arg}: N must be a whole number"))?,
            ),
            "out-of-stock" => {
                let (ty, zone) = type_at_zone(arg)?;
                FaultSpec::OutOfStock { ty, zone }
            }
            "shortage" => {
                let (ty, zone) = type_at_zone(arg)?;
                FaultSpec::Shortage { ty, zone }
            }
            "quota" => {
                let (ty, max) = match arg.split_once('=') {
                    Some((t, n)) => (
                        t,
                        n.parse()
                            .map_err(|_| format!("quota:{arg}: N must be a whole number"))?,
                    ),
                    None => (arg, 0),
                };
                FaultSpec::Quota {
                    ty: type_at_zone(ty)?.0,
                    max,
                }
            }
            "slow-boot" => FaultSpec::SlowBoot(parse_duration(arg)?),
            "slow-detach" => FaultSpec::SlowDetach(parse_duration(arg)?),
            "end-of-service" => FaultSpec::EndOfService(type_at_zone(arg)?.0),
            _ => {
                return Err(format!(
                    "unknown fault {kind:?}; use rate-limit, server-error, transient, \
                     out-of-stock, quota, shortage, slow-boot, slow-detach or end-of-service"
                ));
            }
        })
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |z: &Option<String>| z.as_ref().map(|z| format!("@{z}")).unwrap_or_default();
        match self {
            FaultSpec::RateLimit(p) => write!(f, "rate-limit:{p}"),
            FaultSpec::ServerError(p) => write!(f, "server-error:{p}"),
            FaultSpec::Transient(n) => write!(f, "transient:{n}"),
            FaultSpec::OutOfStock { ty, zone } => write!(f, "out-of-stock:{ty}{}", at(zone)),
            FaultSpec::Quota { ty, max } => write!(f, "quota:{ty}={max}"),
            FaultSpec::Shortage { ty, zone } => write!(f, "shortage:{ty}{}", at(zone)),
            FaultSpec::SlowBoot(d) => write!(f, "slow-boot:{}ms", d.as_millis()),
            FaultSpec::SlowDetach(d) => write!(f, "slow-detach:{}ms", d.as_millis()),
            FaultSpec::EndOfService(ty) => write!(f, "end-of-service:{ty}"),
        }
    }
}

fn zone_matches(want: &Option<String>, zone: &str) -> bool {
    want.as_deref().is_none_or(|z| z == zone)
}

/// The faults in force. Fractions are rolled with a seeded generator (`--seed`), so a run
/// with a seed refuses the same calls every time.
#[derive(Debug, Clone)]
pub struct Faults {
    specs: Vec<FaultSpec>,
    rng: u64,
}

impl Faults {
    pub fn new(specs: Vec<FaultSpec>, seed: u64) -> Self {
        Faults { specs, rng: seed }
    }

    pub fn specs(&self) -> &[FaultSpec] {
        &self.specs
    }

    pub fn add(&mut self, spec: FaultSpec) {
        self.specs.push(spec);
    }

    pub fn clear(&mut self) {
        self.specs.clear();
    }

    /// splitmix64: a uniform number in [0, 1).
    fn roll(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn rolled(&mut self, p: f64) -> bool {
        p > 0.0 && self.roll() < p
    }

    pub fn rate_limited(&mut self) -> bool {
        let p = self.specs.iter().find_map(|s| match s {
            FaultSpec::RateLimit(p) => Some(*p),
            _ => None,
        });
        p.is_some_and(|p| self.rolled(p))
    }

    pub fn server_error(&mut self) -> bool {
        let p = self.specs.iter().find_map(|s| match s {
            FaultSpec::ServerError(p) => Some(*p),
            _ => None,
        });
        p.is_some_and(|p| self.rolled(p))
    }

    /// Use up one `transient:N`; true when this action must answer 409.
    pub fn take_transient(&mut self) -> bool {
        for s in &mut self.specs {
            if let FaultSpec::Transient(n) = s
                && *n > 0
            {
                *n -= 1;
                return true;
            }
        }
        false
    }

    pub fn out_of_stock(&self, ty: &str, zone: &str) -> bool {
        self.specs.iter().any(|s| {
            matches!(s, FaultSpec::OutOfStock { ty: t, zone: z } if t == ty && zone_matches(z, zone))
        })
    }

    pub fn shortage(&self, ty: &str, zone: &str) -> bool {
        self.specs.iter().any(|s| {
            matches!(s, FaultSpec::Shortage { ty: t, zone: z } if t == ty && zone_matches(z, zone))
        })
    }

    pub fn quota(&self, ty: &str) -> Option<u64> {
        self.specs.iter().find_map(|s| match s {
            FaultSpec::Quota { ty: t, max } if t == ty => Some(*max),
            _ => None,
        })
    }

    pub fn end_of_service(&self, ty: &str) -> bool {
        self.specs
            .iter()
            .any(|s| matches!(s, FaultSpec::EndOfService(t) if t == ty))
    }

    pub fn boot_delay(&self, default: Duration) -> Duration {
        self.specs
            .iter()
            .find_map(|s| match s {
                FaultSpec::SlowBoot(d) => Some(*d),
                _ => None,
            })
            .unwrap_or(default)
    }

    pub fn detach_delay(&self, default: Duration) -> Duration {
        self.specs
            .iter()
            .find_map(|s| match s {
                FaultSpec::SlowDetach(d) => Some(*d),
                _ => None,
            })
            .unwrap_or(default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        for s in [
            "rate-limit:0.5",
            "server-error:1",
            "transient:3",
            "out-of-stock:DEV1-S",
            "out-of-stock:GP1-XS@fr-par-2",
            "quota:DEV1-M=2",
            "shortage:PRO2-S@nl-ams-1",
            "end-of-service:DEV1-L",
        ] {
            let f: FaultSpec = s.parse().unwrap();
            assert_eq!(f.to_string(), s);
        }
        assert_eq!(
            "quota:dev1-s".parse::<FaultSpec>().unwrap(),
            FaultSpec::Quota {
                ty: "DEV1-S".into(),
                max: 0
            }
        );
        assert_eq!(
            "slow-boot:2s".parse::<FaultSpec>().unwrap(),
            FaultSpec::SlowBoot(Duration::from_secs(2))
        );
        assert!("rate-limit:2".parse::<FaultSpec>().is_err());
        assert!("explode:1".parse::<FaultSpec>().is_err());
        assert!("transient".parse::<FaultSpec>().is_err());
    }

    #[test]
    fn transient_counts_down() {
        let mut f = Faults::new(vec![FaultSpec::Transient(2)], 1);
        assert!(f.take_transient());
        assert!(f.take_transient());
        assert!(!f.take_transient());
    }

    #[test]
    fn rolls_follow_the_fraction_and_the_seed() {
        let mut f = Faults::new(vec![FaultSpec::RateLimit(0.25)], 7);
        let hits = (0..4000).filter(|_| f.rate_limited()).count();
        assert!((800..1200).contains(&hits), "{hits} of 4000");
        let mut a = Faults::new(vec![FaultSpec::ServerError(0.5)], 42);
        let mut b = Faults::new(vec![FaultSpec::ServerError(0.5)], 42);
        let ra: Vec<bool> = (0..50).map(|_| a.server_error()).collect();
        let rb: Vec<bool> = (0..50).map(|_| b.server_error()).collect();
        assert_eq!(ra, rb);
        let mut never = Faults::new(vec![FaultSpec::RateLimit(0.0)], 1);
        assert!((0..100).all(|_| !never.rate_limited()));
    }

    #[test]
    fn zone_scoped_faults_match_only_their_zone() {
        let f = Faults::new(vec!["out-of-stock:DEV1-S@fr-par-2".parse().unwrap()], 1);
        assert!(f.out_of_stock("DEV1-S", "fr-par-2"));
        assert!(!f.out_of_stock("DEV1-S", "fr-par-1"));
        assert!(!f.out_of_stock("DEV1-M", "fr-par-2"));
    }
}
