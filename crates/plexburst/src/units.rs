//! Durations as people write them ("90s", "1h30m"): parsing, rendering, and their serde forms;
//! and sizes as people read them ("3.4 GiB").

use std::time::Duration;

/// Parse "90s", "1h", "1h30m", "500ms", "2d". A bare number is refused: the unit must be explicit.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("is empty".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("{text:?} is not a duration"));
        }
        let n: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?} is not a duration"))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let secs = match unit {
            "ms" => n / 1000.0,
            "s" | "sec" | "secs" => n,
            "m" | "min" | "mins" => n * 60.0,
            "h" | "hour" | "hours" => n * 3600.0,
            "d" | "day" | "days" => n * 86400.0,
            "" => return Err(format!("{text:?} has no unit")),
            other => return Err(format!("{text:?} has an unknown unit {other:?}")),
        };
        // A number too big for a Duration is an answer, not a panic.
        let too_long = || format!("{text:?} is too long");
        let part = Duration::try_from_secs_f64(secs).map_err(|_| too_long())?;
        total = total.checked_add(part).ok_or_else(too_long)?;
        rest = rest[unit_len..].trim_start();
    }
    Ok(total)
}

/// Render a duration the way the config writes it (exact: `parse_duration` reads it back).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A duration rounded to whole seconds, for ETAs and elapsed times shown to people.
/// Bytes in binary units with one decimal (`3.2 GiB`), bytes below 1 KiB.
pub fn format_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

pub fn format_secs(d: Duration) -> String {
    format_duration(Duration::from_secs(d.as_secs()))
}

/// Serde form of a duration as the config writes it ("90s", "1h"): the plan's JSON reads like
/// the config and round-trips exactly.
pub mod human {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// `human` for an optional duration (`null` when absent).
pub mod human_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&super::format_duration(*d)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v: Option<String> = Option::deserialize(d)?;
        v.map(|t| super::parse_duration(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Bytes in an rclone size such as "64M", "1.5G", "512k", "16Mi" or "100" (binary units, as
/// rclone reads them); `None` when it is not one.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mut u = unit.chars();
    let shift = match u.next().map(|c| c.to_ascii_lowercase()) {
        None | Some('b') => 0,
        Some('k') => 10,
        Some('m') => 20,
        Some('g') => 30,
        Some('t') => 40,
        Some('p') => 50,
        Some(_) => return None,
    };
    let rest: String = u.collect();
    if !(rest.is_empty() || (shift > 0 && matches!(rest.as_str(), "i" | "iB" | "ib" | "B" | "b"))) {
        return None;
    }
    Some((n * (1u64 << shift) as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_in_binary_units() {
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(9 * (1 << 40)), "9.0 TiB");
    }

    #[test]
    fn durations_round_trip_through_their_written_form() {
        for text in ["500ms", "90s", "10m", "1h", "36h"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d, "{text}");
        }
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("90").unwrap_err().contains("no unit"));
        assert!(parse_duration("5 fortnights").is_err());
    }

    #[test]
    fn byte_counts_read_as_people_write_them() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(3 * (1 << 30) + (1 << 29)), "3.5 GiB");
    }
}
