//! The run's time series: `runs/<run-id>/samples.jsonl`, one JSON line per monitor poll. The
//! monitor appends it; `report.html` draws it.
//!
//! One line per poll keeps it small (a few hundred bytes a line: a day at 10 s polls is a few
//! MB) and lets a run that was killed keep every line it wrote.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One poll of a watched phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SampleLine {
    /// UTC, RFC 3339 with milliseconds.
    pub at: String,
    pub phase: String,
    /// What is watched: `scan`, `Sonic analysis of Music`.
    pub label: String,
    /// `items`, `tracks`, `photos`.
    pub unit: String,
    pub done: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<i64>,
    /// Items per second over the progress window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Plex's CPU since the previous poll, in cores (1.0: one core busy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<f64>,
    /// Bytes rclone has read from the bucket since the mount started (`core/stats`), when
    /// measured at this poll.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_bytes: Option<u64>,
    /// Bytes read ahead of the analyser and not yet consumed (the prefetch window), when a
    /// prefetcher runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefetch_bytes: Option<u64>,
    /// What the rented machines cost so far (none when nothing is rented).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_eur: Option<f64>,
    /// What happened since the previous line: `restart`, `remount`, `stalled`, `timed out`,
    /// `sample failed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
}

/// `runs/<run-id>/samples.jsonl` of the run in `state_dir`.
pub fn path(state_dir: &Path, run_id: &str) -> PathBuf {
    state_dir.join("runs").join(run_id).join("samples.jsonl")
}

/// Append one line (the file and its directory are created on the first).
pub fn append(file: &Path, line: &SampleLine) -> anyhow::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut text = serde_json::to_string(line)?;
    text.push('\n');
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("cannot append to {}", file.display()))
}

/// Every line of the file; a missing file is no samples, a torn last line (a killed run) is
/// skipped.
pub fn read(file: &Path) -> anyhow::Result<Vec<SampleLine>> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", file.display())),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let f = path(dir.path(), "r1");
        assert!(read(&f).unwrap().is_empty());
        let a = SampleLine {
            at: "2026-11-27T10:00:00Z".into(),
            phase: "scan".into(),
            done: 3,
            events: vec!["restart".into()],
            ..Default::default()
        };
        append(&f, &a).unwrap();
        append(&f, &a).unwrap();
        // A run killed mid-write leaves half a line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&f)
            .unwrap()
            .write_all(b"{\"at\":\"2026")
            .unwrap();
        assert_eq!(read(&f).unwrap(), vec![a.clone(), a]);
    }
}
