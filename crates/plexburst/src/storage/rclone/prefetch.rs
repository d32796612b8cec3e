//! The prefetcher: while a music section is analysed, read whole files of the tracks not yet
//! analysed through the mount, ahead of the analyser, so they are in the VFS cache when Plex
//! opens them (rclone-and-plex-ops.md: the analysis reads every byte through the mount; without
//! this, every track start waits on the object store, one file at a time per thread).
//!
//! It is a small shell loop on the target, detached like the mount (a dropped SSH connection
//! does not stop it mid-file), that:
//! - reads the analyser's queue from the DB (`sqlite3 -readonly`): the section's tracks without
//!   the Sonic marker, in metadata id order, the order the emulator takes them in (Plex's own
//!   order is not documented: in another order the files still arrive, only less far ahead);
//! - keeps a window of bytes ahead of the analyser: the measured consumption (bytes analysed per
//!   second) times `lead` seconds plus the time its readers take to read their share of the
//!   window at the measured read rate; at least two files per reader, at most half the VFS cache
//!   and half the free disk, so what is about to be read is never what the cache evicts;
//! - reads the window's files it has not read yet with `readers` parallel `cat`s, in queue order;
//! - writes one status line per round (window, files and bytes read, failures, read and consumption
//!   rates) and the paths it could not read;
//! - stops on its stop file, when the queue is empty, or at its deadline.
//!
//! It never runs during a scan: the analyze phase starts it per section and stops it after.

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::Rclone;
use crate::remote::{Cmd, Remote, quote};

/// What the prefetcher said last (its status file).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PrefetchStatus {
    pub window_bytes: u64,
    pub files: u64,
    pub bytes: u64,
    pub failed: u64,
    /// Bytes per second the prefetcher reads, and the analyser consumes (0: not measured yet).
    pub read_bps: u64,
    pub consume_bps: u64,
    /// The paths it could not read (at most 20).
    #[serde(default)]
    pub failed_paths: Vec<String>,
    /// It stopped because the queue was empty.
    #[serde(default)]
    pub finished: bool,
    /// Bytes read and not analysed yet: what the analyser will find in the cache.
    #[serde(default)]
    pub ahead_bytes: u64,
}

/// What the prefetcher needs to know.
pub struct PrefetchJob<'a> {
    pub db: &'a str,
    pub section_id: i64,
    pub readers: u32,
    pub lead_secs: u32,
    /// Seconds it may run at most (the section's analysis timeout).
    pub max_secs: u64,
}

fn files(rc: &Rclone) -> (String, String, String, String, String) {
    let d = format!("{}/prefetch", rc.spec.dir.trim_end_matches('/'));
    (
        format!("{d}/prefetch.sh"),
        format!("{d}/pid"),
        format!("{d}/status"),
        format!("{d}/stop"),
        d,
    )
}

/// The loop, as the shell text `start` writes to the target.
pub fn script(job: &PrefetchJob, cache_dir: &str, cache_bytes: u64, dir: &str) -> String {
    let queue_sql = format!(
        "SELECT mp.file, coalesce(mp.size, 0) FROM metadata_items md \
         JOIN media_items mi ON mi.metadata_item_id = md.id JOIN media_parts mp ON mp.media_item_id = mi.id \
         WHERE md.library_section_id = {} AND md.metadata_type = 10 AND md.deleted_at IS NULL AND mp.deleted_at IS NULL \
         AND (md.extra_data IS NULL OR md.extra_data NOT LIKE '%ms:musicAnalysisVersion%') ORDER BY md.id",
        job.section_id
    );
    format!(
        r#"# plexburst prefetcher (see storage/rclone/prefetch.rs)
db={db}
dir={dir}
readers={readers}
lead={lead}
deadline=$(( $(date +%s) + {max} ))
tab=$(printf '\t')
free=$(df -P -B1 {cache} 2>/dev/null | awk 'NR==2 {{print $4}}')
wmax=$(( {cache_bytes} / 2 ))
[ -n "$free" ] && [ $(( free / 2 )) -lt "$wmax" ] && wmax=$(( free / 2 ))
: > "$dir/done"; : > "$dir/failed"
files=0; bytes=0; read_ns=0; read_bytes=0; consume=0; last_left=; last_t=; window=0
status() {{
  failed=$(wc -l < "$dir/failed")
  rbps=0; [ "$read_ns" -gt 0 ] && rbps=$(( read_bytes * 1000000000 / read_ns ))
  # Read and not analysed yet: the bytes the analyser will find in the cache.
  ahead=$(awk -F"$tab" 'NR == FNR {{ d[$0] = 1; next }} ($1 in d) {{ s += $2 }} END {{ print s + 0 }}' "$dir/done" "$dir/queue" 2>/dev/null)
  printf '%s %s %s %s %s %s %s %s\n' "$window" "$files" "$bytes" "$failed" "$rbps" "$consume" "$1" "${{ahead:-0}}" > "$dir/status.tmp"
  mv -f "$dir/status.tmp" "$dir/status"
}}
while [ ! -e "$dir/stop" ] && [ "$(date +%s)" -lt "$deadline" ]; do
  if ! sqlite3 -readonly -separator "$tab" -cmd '.timeout 5000' "$db" {sql} > "$dir/queue" 2>/dev/null; then
    sleep 1; continue
  fi
  if [ ! -s "$dir/queue" ]; then status finished; exit 0; fi
  now=$(date +%s)
  left=$(awk -F"$tab" '{{s += $2}} END {{print s + 0}}' "$dir/queue")
  avg=$(awk -F"$tab" '{{s += $2; n++}} END {{print (n ? int(s / n) : 0)}}' "$dir/queue")
  # Consumption: how fast the bytes left in the queue drop, smoothed.
  if [ -n "$last_left" ] && [ "$now" -gt "$last_t" ] && [ "$left" -le "$last_left" ]; then
    c=$(( (last_left - left) / (now - last_t) ))
    if [ "$consume" -eq 0 ]; then consume=$c; else consume=$(( (consume * 3 + c) / 4 )); fi
  fi
  if [ -z "$last_t" ] || [ "$now" -gt "$last_t" ]; then last_left=$left; last_t=$now; fi
  # Lead time, plus what reading a reader's share of the window takes at the measured rate:
  # a slow bucket needs the prefetcher to start further ahead.
  extra=0
  if [ "$read_ns" -gt 0 ] && [ "$read_bytes" -gt 0 ]; then
    extra=$(( avg * readers * 2 * (read_ns / 1000000) / read_bytes / 1000 / readers ))
  fi
  window=$(( consume * (lead + extra) ))
  wmin=$(( avg * readers * 2 ))
  [ "$window" -lt "$wmin" ] && window=$wmin
  [ "$window" -gt "$wmax" ] && window=$wmax
  # The queue's head up to the window, less what was read already.
  awk -F"$tab" -v w="$window" '{{ if (s >= w) exit; s += $2; print $1 }}' "$dir/queue" \
    | grep -vxF -f "$dir/done" > "$dir/todo" || true
  if [ -s "$dir/todo" ]; then
    t0=$(date +%s%N)
    tr '\n' '\0' < "$dir/todo" | xargs -0 -r -n 1 -P "$readers" sh -c \
      'if cat "$1" > /dev/null 2>&1; then printf "%s\n" "$1" >> "$0/done"; else printf "%s\n" "$1" >> "$0/failed"; printf "%s\n" "$1" >> "$0/done"; fi' "$dir"
    t1=$(date +%s%N)
    got=$(grep -vxF -f "$dir/failed" "$dir/todo" | while IFS= read -r f; do stat -c %s "$f" 2>/dev/null || echo 0; done | awk '{{s += $1}} END {{print s + 0}}')
    n=$(grep -vcxF -f "$dir/failed" "$dir/todo" || true)
    files=$(( files + n )); bytes=$(( bytes + got ))
    read_ns=$(( read_ns + t1 - t0 )); read_bytes=$(( read_bytes + got ))
    status running
  else
    status running
    sleep 1
  fi
done
status stopped
"#,
        db = quote(job.db),
        dir = quote(dir),
        readers = job.readers.max(1),
        lead = job.lead_secs.max(1),
        max = job.max_secs.max(1),
        cache = quote(cache_dir),
        cache_bytes = cache_bytes,
        sql = quote(&queue_sql),
    )
}

/// The status file's one line (anything after it is not the status).
pub fn parse_status(text: &str) -> Option<PrefetchStatus> {
    let f: Vec<&str> = text.lines().next()?.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(PrefetchStatus {
        window_bytes: n(0)?,
        files: n(1)?,
        bytes: n(2)?,
        failed: n(3)?,
        read_bps: n(4)?,
        consume_bps: n(5)?,
        failed_paths: Vec::new(),
        finished: f.get(6) == Some(&"finished"),
        ahead_bytes: n(7).unwrap_or(0),
    })
}

/// What `prefetch_stop` printed: the status line, then the paths it could not read.
pub fn parse_stopped(text: &str) -> PrefetchStatus {
    let mut lines = text.lines();
    let mut st = lines.next().and_then(parse_status).unwrap_or_default();
    st.failed_paths = lines
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect();
    st
}

impl Rclone {
    /// Start the prefetcher for one section, detached (a previous one is stopped first).
    pub fn prefetch_start(&self, r: &dyn Remote, job: &PrefetchJob) -> anyhow::Result<()> {
        self.prefetch_stop(r).ok();
        let (sh, pid, _, _, dir) = files(self);
        // The window stays within half the VFS cache (its maximum, or the disk share it gets).
        let cache = self.cache_max(r)?;
        let cache_bytes = crate::units::parse_size(&cache)
            .with_context(|| format!("cannot read the VFS cache size {cache:?}"))?;
        let text = script(job, &self.cache_dir(), cache_bytes, &dir);
        r.run(&Cmd::new(format!(
            "mkdir -p {} && rm -f {}/stop",
            quote(&dir),
            quote(&dir)
        )))?;
        r.put_file(&sh, text.as_bytes(), 0o600)
            .context("cannot write the prefetcher to the target")?;
        r.run(&Cmd::new(format!(
            "setsid nohup sh {} > {d}/log 2>&1 < /dev/null & echo $! > {}",
            quote(&sh),
            quote(&pid),
            d = quote(&dir)
        )))
        .context("cannot start the prefetcher")?;
        Ok(())
    }

    /// Its last status line, if it has written one.
    pub fn prefetch_status(&self, r: &dyn Remote) -> Option<PrefetchStatus> {
        let (_, _, status, _, _) = files(self);
        let out = r
            .exec(&Cmd::new(format!("cat {} 2>/dev/null", quote(&status))))
            .ok()?;
        parse_status(&out.stdout_str())
    }

    /// Stop it (its stop file, then its process group) and return what it did.
    pub fn prefetch_stop(&self, r: &dyn Remote) -> anyhow::Result<PrefetchStatus> {
        let (_, pid, status, stop, dir) = files(self);
        let out = r.run(&Cmd::new(format!(
            "[ -d {d} ] || exit 0\n: > {stop}\n\
             if p=$(cat {pid} 2>/dev/null) && [ -n \"$p\" ]; then kill -TERM -- \"-$p\" 2>/dev/null; kill -TERM \"$p\" 2>/dev/null; fi\n\
             rm -f {pid}\ncat {status} 2>/dev/null; echo; head -n 20 {d}/failed 2>/dev/null; true",
            d = quote(&dir),
            stop = quote(&stop),
            pid = quote(&pid),
            status = quote(&status),
        )))?;
        Ok(parse_stopped(&out.stdout_str()))
    }

    /// The prefetcher's files (script, lists, status), once it is stopped.
    pub fn prefetch_dir(&self) -> String {
        files(self).4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_parse() {
        let s = parse_status("1000 3 900 1 50 40 finished 700\n").unwrap();
        assert_eq!(s.ahead_bytes, 700);
        assert_eq!(
            (s.window_bytes, s.files, s.bytes, s.failed),
            (1000, 3, 900, 1)
        );
        assert_eq!((s.read_bps, s.consume_bps), (50, 40));
        assert!(s.finished);
        assert!(!parse_status("1 2 3 4 5 6 running").unwrap().finished);
        assert!(parse_status("").is_none());
        // Found by the seed_status fuzz target: a second line is not the status's tail.
        let two = parse_status("1 0 0 5 0 0\n5 2 1 11 9 9\n").unwrap();
        assert_eq!((two.finished, two.ahead_bytes), (false, 0));
    }
}
