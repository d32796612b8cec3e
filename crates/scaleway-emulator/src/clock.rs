//! The emulated clock (wall time plus an offset that `POST /_emulator/clock/advance` moves), the
//! API's timestamp format, and the duration syntax of the flags and fault specs.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// Wall-clock time shifted by `offset_secs`. Only expiries (API keys) and the timestamps the
/// API reports read it; boot and stop delays are real time.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct Clock {
    pub offset_secs: i64,
}

impl Clock {
    pub fn now(&self) -> Timestamp {
        Timestamp::now()
            .checked_add(SignedDuration::from_secs(self.offset_secs))
            .unwrap_or_else(|_| Timestamp::now())
    }

    pub fn advance(&mut self, secs: i64) {
        self.offset_secs = self.offset_secs.saturating_add(secs);
    }
}

/// `2025-11-04T10:18:39.714572+00:00`, the shape of every Instance API timestamp (scaleway.md
/// §2.0); the Block and IAM APIs use the same in the recordings.
pub fn fmt(ts: Timestamp) -> String {
    format!("{}+00:00", ts.strftime("%Y-%m-%dT%H:%M:%S%.6f"))
}

/// An RFC 3339 timestamp as clients send it (`expires_at`): `Z` or an offset, any precision.
pub fn parse(s: &str) -> Result<Timestamp, String> {
    s.parse::<Timestamp>()
        .map_err(|e| format!("{s:?} is not an RFC 3339 timestamp: {e}"))
}

/// `500ms`, `3s`, `2m`, `1h` or a bare number of seconds.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_have_microseconds_and_a_utc_offset() {
        let ts: Timestamp = "2025-11-04T10:18:39.714572Z".parse().unwrap();
        assert_eq!(fmt(ts), "2025-11-04T10:18:39.714572+00:00");
        let whole: Timestamp = "2025-11-04T10:18:39Z".parse().unwrap();
        assert_eq!(fmt(whole), "2025-11-04T10:18:39.000000+00:00");
    }

    #[test]
    fn parse_accepts_what_python_isoformat_writes() {
        assert!(parse("2026-01-01T00:00:00+00:00").is_ok());
        assert!(parse("2026-01-01T00:00:00.123456+02:00").is_ok());
        assert!(parse("2026-01-01T00:00:00Z").is_ok());
        assert!(parse("tomorrow").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("2d").is_err());
    }

    #[test]
    fn advancing_moves_now() {
        let mut c = Clock::default();
        let before = c.now();
        c.advance(3600);
        assert!(c.now().as_second() - before.as_second() >= 3599);
    }
}
