//! Analysis and background tasks (Sonic, loudness, media analysis/photo thumbnails, deep analysis,
//! markers, chapter thumbnails, BIF): which run when (plex.md §3), the child process named
//! `Plex Media Scanner` that burns the CPU (§5), and what each writes to the DB and `Media/`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, params};
use sha2::Digest;

use crate::db::unix_now;
use crate::faults::Phase;
use crate::scanner::{self, ScannerArgs};
use crate::state::{ActivityGuard, State};
use crate::task::{ALL, Task};

/// May this task run at all now? Behaviour pref not `never`; Sonic also needs a claimed server
/// with Plex Pass (plexapi gates Sonic on `subscriptionActive`, §5).
pub fn allowed(st: &State, task: Task) -> bool {
    let p = st.prefs();
    if let Some(b) = task.behavior_pref()
        && p.get(b).as_deref() == Some("never")
    {
        return false;
    }
    if task == Task::Sonic {
        return p.attr("PlexOnlineToken").is_some() && st.opts.plex_pass;
    }
    true
}

/// Tasks that run right after a scan: behaviour `asap` (§3.2 "when media is added"), plus the
/// scheduled/butler ones when the maintenance window covers the current UTC hour.
pub fn after_scan(st: &State) -> Vec<Task> {
    let in_window = butler_window_open(st);
    let p = st.prefs();
    ALL.into_iter()
        .filter(|t| {
            let behavior = t.behavior_pref().and_then(|b| p.get(b));
            match behavior.as_deref() {
                Some("asap") => true,
                Some("scheduled") => in_window,
                Some(_) => false,
                None => in_window && t.butler_pref().map(|b| p.get_bool(b)).unwrap_or(false),
            }
        })
        .collect()
}

pub fn butler_window_open(st: &State) -> bool {
    let p = st.prefs();
    let start: i64 = p
        .get("ButlerStartHour")
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let end: i64 = p
        .get("ButlerEndHour")
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let hour = unix_now().rem_euclid(86_400) / 3600;
    if start <= end {
        hour >= start && hour < end
    } else {
        hour >= start || hour < end
    }
}

/// One unit of work handed to the child.
#[derive(Debug, Clone)]
struct Item {
    meta: i64,
    media: i64,
    part: i64,
    parent: Option<i64>,
    file: String,
    hash: String,
    mtype: i64,
}

fn select_items(c: &Connection, task: Task, section: i64) -> anyhow::Result<Vec<Item>> {
    let (types, not_done) = match task {
        Task::Sonic => (
            "10",
            "(md.extra_data IS NULL OR md.extra_data NOT LIKE '%ms:musicAnalysisVersion%')",
        ),
        Task::Loudness => (
            "10",
            "NOT EXISTS (SELECT 1 FROM media_streams s WHERE s.media_part_id=mp.id AND s.stream_type_id=2 \
             AND s.extra_data LIKE '%ld:gain%')",
        ),
        Task::MediaAnalysis => ("1,4,10,13", "mi.media_analysis_version = 0"),
        Task::IntroMarkers => (
            "4",
            "NOT EXISTS (SELECT 1 FROM taggings t WHERE t.metadata_item_id=md.id AND t.text='intro')",
        ),
        Task::CreditsMarkers => (
            "1,4",
            "NOT EXISTS (SELECT 1 FROM taggings t WHERE t.metadata_item_id=md.id AND t.text='credits')",
        ),
        Task::AdMarkers => (
            "1,4",
            "NOT EXISTS (SELECT 1 FROM taggings t WHERE t.metadata_item_id=md.id AND t.text='commercial')",
        ),
        Task::DeepAnalysis | Task::VoiceActivity | Task::ChapterThumbs | Task::Bif => ("1,4", ""),
    };
    let part_key = part_key(task)
        .map(|(k, _)| format!("json_extract(COALESCE(mp.extra_data,'{{}}'), '$.\"{k}\"') IS NULL"));
    let cond = part_key.unwrap_or_else(|| not_done.to_string());
    let sql = format!(
        "SELECT md.id, mi.id, mp.id, md.parent_id, mp.file, mp.hash, md.metadata_type FROM metadata_items md \
         JOIN media_items mi ON mi.metadata_item_id = md.id JOIN media_parts mp ON mp.media_item_id = mi.id \
         WHERE md.library_section_id = ?1 AND md.deleted_at IS NULL AND mp.deleted_at IS NULL \
         AND md.metadata_type IN ({types}) AND {cond} ORDER BY md.id"
    );
    let mut q = c.prepare(&sql)?;
    let rows = q.query_map([section], |r| {
        Ok(Item {
            meta: r.get(0)?,
            media: r.get(1)?,
            part: r.get(2)?,
            parent: r.get(3)?,
            file: r.get(4)?,
            hash: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
            mtype: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Tasks recorded as a JSON key in `media_parts.extra_data` (key, value). Key names other than
/// `deepAnalysisVersion` and `indexes` are invented (README, divergences).
fn part_key(task: Task) -> Option<(&'static str, &'static str)> {
    match task {
        Task::DeepAnalysis => Some(("deepAnalysisVersion", "2")),
        Task::VoiceActivity => Some(("pv:vadVersion", "1")),
        Task::ChapterThumbs => Some(("pv:chapterThumbsVersion", "1")),
        Task::Bif => Some(("indexes", "sd")),
        _ => None,
    }
}

/// How a task run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Done(u64),
    Cancelled,
    Stopped,
}

/// Run one task over one section: children do the work, this process writes the results.
pub fn run(
    st: &State,
    c: &mut Connection,
    task: Task,
    section: i64,
    act: &ActivityGuard<'_>,
    items_done: &mut u64,
) -> anyhow::Result<Outcome> {
    let items = select_items(c, task, section)?;
    if items.is_empty() {
        return Ok(Outcome::Done(0));
    }
    let total = items.len() as u64;
    st.log(&format!(
        "Analysis: {} on section {section}: {total} items, {} workers",
        task.name(),
        worker_threads(st)
    ));
    let fault = st.faults.armed(Phase::Analysis, &st.dd.config);
    let stall_after = match fault {
        Some((false, n)) => Some(n.saturating_sub(*items_done)),
        _ => None,
    };
    let mut child = spawn_scanner(st, task, stall_after)?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let feed: Vec<String> = items
        .iter()
        .map(|i| format!("{}\t{}\n", i.part, i.file))
        .collect();
    std::thread::spawn(move || {
        for line in feed {
            if stdin.write_all(line.as_bytes()).is_err() {
                break;
            }
        }
    });
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let by_part: std::collections::HashMap<i64, &Item> =
        items.iter().map(|i| (i.part, i)).collect();
    let mut pending: Vec<(&Item, String)> = Vec::new();
    let mut done = 0u64;
    let mut last_flush = Instant::now();
    let outcome = loop {
        let msg = rx.recv_timeout(Duration::from_millis(200));
        let finished = matches!(msg, Err(mpsc::RecvTimeoutError::Disconnected));
        if let Ok(line) = msg {
            let mut f = line.splitn(3, '\t');
            if let (Some("ok"), Some(part), Some(digest)) = (f.next(), f.next(), f.next())
                && let Some(item) = part.parse().ok().and_then(|p: i64| by_part.get(&p))
            {
                pending.push((item, digest.to_string()));
            }
        }
        let crash_now = matches!(fault, Some((true, n)) if *items_done + pending.len() as u64 >= n);
        if !pending.is_empty()
            && (finished
                || crash_now
                || pending.len() >= 500
                || last_flush.elapsed() > Duration::from_millis(300))
        {
            write_results(st, c, task, &pending)?;
            done += pending.len() as u64;
            *items_done += pending.len() as u64;
            pending.clear();
            last_flush = Instant::now();
            act.progress(done, total);
            if stall_after.is_some_and(|n| done >= n) {
                crate::faults::mark_fired(&st.dd.config, false, Phase::Analysis);
            }
        }
        if crash_now {
            st.fire_fault(true, Phase::Analysis);
        }
        if finished {
            break Outcome::Done(done);
        }
        if act.cancelled() {
            break if st.stopping() {
                Outcome::Stopped
            } else {
                Outcome::Cancelled
            };
        }
    };
    if outcome != Outcome::Done(done) || stall_after.is_some() && done < total {
        let _ = child.kill();
    }
    let _ = child.wait();
    st.log(&format!(
        "Analysis: {} on section {section}: {outcome:?}",
        task.name()
    ));
    Ok(outcome)
}

/// The throttle that applies to a task (`--analysis-rate`, `--thumb-rate`), none for the others.
fn rate(task: Task, st: &State) -> Option<f64> {
    match task {
        Task::Sonic | Task::Loudness => st.opts.analysis_rate,
        Task::MediaAnalysis => st.opts.thumb_rate,
        _ => None,
    }
}

fn spawn_scanner(st: &State, task: Task, stall_after: Option<u64>) -> anyhow::Result<Child> {
    let mut args: Vec<String> = vec![
        "--task".into(),
        task.name().into(),
        "--cost-ms".into(),
        st.opts.analysis_cost.as_millis().to_string(),
        "--threads".into(),
        worker_threads(st).to_string(),
    ];
    if let Some(r) = rate(task, st) {
        args.extend(["--rate".into(), r.to_string()]);
    }
    if let Some(n) = stall_after {
        args.extend(["--stall-after".into(), n.to_string()]);
    }
    if task == Task::Sonic {
        // The flag cloud-bursting matches with `pgrep -f 'server-action sonic'` (§3.4, [S]).
        args.extend(["--server-action".into(), "sonic".into()]);
    }
    scanner::spawn(&args)
}

fn num(d: &str, i: usize, scale: f64, offset: f64) -> String {
    let v = u8::from_str_radix(d.get(i * 2..i * 2 + 2).unwrap_or("80"), 16).unwrap_or(128) as f64;
    format!("{:.2}", offset + v / 255.0 * scale)
}

fn write_results(
    st: &State,
    c: &mut Connection,
    task: Task,
    done: &[(&Item, String)],
) -> anyhow::Result<()> {
    let now = unix_now();
    let tx = c.transaction()?;
    let marker_tag = if matches!(
        task,
        Task::IntroMarkers | Task::CreditsMarkers | Task::AdMarkers
    ) {
        let id: Option<i64> = tx
            .query_row("SELECT id FROM tags WHERE tag_type=12 LIMIT 1", [], |r| {
                r.get(0)
            })
            .ok();
        Some(match id {
            Some(id) => id,
            None => {
                tx.execute("INSERT INTO tags(tag, tag_type, created_at, updated_at) VALUES ('', 12, ?1, ?1)", [crate::db::datetime(now)])?;
                tx.last_insert_rowid()
            }
        })
    } else {
        None
    };
    for (item, d) in done {
        match task {
            Task::Sonic => {
                tx.prepare_cached(
                    "UPDATE metadata_items SET extra_data = json_set(CASE WHEN json_valid(extra_data) THEN extra_data \
                     ELSE '{}' END, '$.\"ms:musicAnalysisVersion\"', '1'), updated_at=? WHERE id=?",
                )?
                .execute(params![now, item.meta])?;
            }
            Task::Loudness => {
                tx.prepare_cached(
                    "UPDATE media_streams SET extra_data = json_set(CASE WHEN json_valid(extra_data) THEN extra_data \
                     ELSE '{}' END, '$.\"ld:gain\"', ?1, '$.\"ld:loudness\"', ?2, '$.\"ld:peak\"', ?3, '$.\"ld:lra\"', ?4, \
                     '$.\"ld:startRamp\"', ?5, '$.\"ld:endRamp\"', ?6) WHERE media_part_id=?7 AND stream_type_id=2",
                )?
                .execute(params![
                    num(d, 0, 12.0, -14.0),
                    num(d, 1, 12.0, -20.0),
                    num(d, 2, 0.9, 0.1),
                    num(d, 3, 10.0, 1.0),
                    num(d, 4, 3.0, 0.0),
                    num(d, 5, 3.0, 0.0),
                    item.part
                ])?;
                if let Some(album) = item.parent {
                    tx.prepare_cached(
                        "UPDATE metadata_items SET extra_data = json_set(CASE WHEN json_valid(extra_data) THEN extra_data \
                         ELSE '{}' END, '$.\"ld:loudnessAnalysisVersion\"', '1') WHERE id=?",
                    )?
                    .execute([album])?;
                }
            }
            Task::MediaAnalysis => {
                // Versions as in the real fixture: photos 5, tracks 4, video 6.
                let v = match item.mtype {
                    13 => 5,
                    10 => 4,
                    _ => 6,
                };
                if item.mtype == 13 {
                    write_media_file(
                        st,
                        &item.hash,
                        "Thumbnails/thumb1.jpg",
                        &crate::genlib::jpeg_bytes(d.as_bytes()),
                    );
                }
                tx.prepare_cached(
                    "UPDATE media_items SET media_analysis_version=?, updated_at=? WHERE id=?",
                )?
                .execute(params![v, now, item.media])?;
            }
            Task::IntroMarkers | Task::CreditsMarkers | Task::AdMarkers => {
                let (text, start, end) = match task {
                    Task::IntroMarkers => ("intro", 6_932, 43_172),
                    Task::CreditsMarkers => ("credits", 2_300_000, 2_400_000),
                    _ => ("commercial", 600_000, 630_000),
                };
                tx.prepare_cached(
                    "INSERT INTO taggings(metadata_item_id, tag_id, \"index\", text, time_offset, end_time_offset, \
                     created_at, extra_data) VALUES (?,?,0,?,?,?,?,'{\"pv:version\":\"5\"}')",
                )?
                .execute(params![item.meta, marker_tag, text, start, end, crate::db::datetime(now)])?;
            }
            Task::DeepAnalysis | Task::VoiceActivity | Task::ChapterThumbs | Task::Bif => {
                let (k, v) = part_key(task).expect("part key");
                match task {
                    Task::ChapterThumbs => write_media_file(
                        st,
                        &item.hash,
                        "Chapters/chapter1.jpg",
                        &crate::genlib::jpeg_bytes(d.as_bytes()),
                    ),
                    Task::Bif => {
                        write_media_file(st, &item.hash, "Indexes/index-sd.bif", d.as_bytes())
                    }
                    _ => {}
                }
                tx.prepare_cached(&format!(
                    "UPDATE media_parts SET extra_data = json_set(CASE WHEN json_valid(extra_data) THEN extra_data \
                     ELSE '{{}}' END, '$.\"{k}\"', ?1) WHERE id=?2"
                ))?
                .execute(params![v, item.part])?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// `Media/localhost/<h>/<hash rest>.bundle/Contents/<rel>`, the layout of the real data folder.
pub fn media_bundle(st: &State, hash: &str) -> PathBuf {
    let h = if hash.len() >= 2 {
        hash.to_string()
    } else {
        format!("{hash:0>2}")
    };
    st.dd
        .media()
        .join(&h[..1])
        .join(format!("{}.bundle", &h[1..]))
        .join("Contents")
}

fn write_media_file(st: &State, hash: &str, rel: &str, bytes: &[u8]) {
    let p = media_bundle(st, hash).join(rel);
    if let Some(d) = p.parent() {
        let _ = std::fs::create_dir_all(d);
    }
    let _ = std::fs::write(p, bytes);
}

/// The name of each analysis worker thread in the scanner child (`/proc/PID/task/*/comm`, at most
/// 15 bytes), so a test or an operator can count the workers running.
pub const WORKER_THREAD: &str = "analysis-worker";

/// How many items the scanner child analyses at once: `LongRunningJobThreads` ("how many threads
/// can be used for long-running jobs, such as Sonic Analysis (Default is half the total
/// threads)", plex.md §3), where 0, the default, means half this machine's cores (at least one).
pub fn worker_threads(st: &State) -> u32 {
    let set = st
        .prefs()
        .get("LongRunningJobThreads")
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(0);
    if set > 0 {
        set
    } else {
        default_worker_threads()
    }
}

/// Half the machine's cores, at least one: Plex's default for `LongRunningJobThreads`.
pub fn default_worker_threads() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    (cores / 2).max(1)
}

/// The analysis mode of the child: `--threads` workers each read `part\tfile` lines, hash the
/// whole file plus `cost_ms` of extra hashing, and print `ok\tpart\tdigest`. Exits when its parent
/// dies (its parent id changes).
pub fn scanner_main(a: &ScannerArgs) -> anyhow::Result<()> {
    let started = std::sync::atomic::AtomicU64::new(0);
    let finished = std::sync::atomic::AtomicU64::new(0);
    let t0 = Instant::now();
    let parent = std::os::unix::process::parent_id();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..a.threads.max(1))
            .map(|_| {
                std::thread::Builder::new()
                    .name(WORKER_THREAD.into())
                    .spawn_scoped(s, || analysis_worker(a, parent, t0, &started, &finished))
            })
            .collect::<Result<_, _>>()?;
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("an analysis worker panicked"))??;
        }
        Ok(())
    })
}

/// One worker of the child: takes the next line of stdin until there is none (or the parent is
/// gone). `started` counts items taken (for `--stall-after`), `finished` items done (for
/// `--rate`), over all workers.
fn analysis_worker(
    a: &ScannerArgs,
    parent: u32,
    t0: Instant,
    started: &std::sync::atomic::AtomicU64,
    finished: &std::sync::atomic::AtomicU64,
) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering;
    let orphaned = || std::os::unix::process::parent_id() != parent;
    let mut line = String::new();
    loop {
        line.clear();
        // `Stdin::read_line` takes the stdin lock for the whole line, so workers never share one.
        if std::io::stdin().read_line(&mut line)? == 0 {
            return Ok(());
        }
        let Some((part, file)) = line.trim_end_matches('\n').split_once('\t') else {
            continue;
        };
        let n = started.fetch_add(1, Ordering::SeqCst);
        if a.stall_after.is_some_and(|s| n >= s) {
            while !orphaned() {
                std::thread::sleep(Duration::from_millis(100));
            }
            return Ok(());
        }
        let mut h = sha2::Sha256::new();
        let res = std::fs::File::open(file).and_then(|mut f| {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let k = f.read(&mut buf)?;
                if k == 0 {
                    break Ok(());
                }
                h.update(&buf[..k]);
            }
        });
        let burn = Instant::now();
        let mut block = [0u8; 4096];
        while burn.elapsed() < Duration::from_millis(a.cost_ms) {
            for _ in 0..16 {
                let d = sha2::Sha256::digest(block);
                block[..32].copy_from_slice(&d);
            }
            if orphaned() {
                return Ok(());
            }
        }
        h.update(&block[..32]);
        let status = if res.is_ok() { "ok" } else { "err" };
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{status}\t{part}\t{}", hex::encode(h.finalize()))
            .and_then(|_| out.flush())
            .is_err()
        {
            return Ok(());
        }
        drop(out);
        let done = finished.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(r) = a.rate {
            let due = Duration::from_secs_f64(done as f64 / r.max(0.001));
            if due > t0.elapsed() {
                std::thread::sleep(due - t0.elapsed());
            }
        }
        if orphaned() {
            return Ok(());
        }
    }
}

/// The sections (among `only`, or all when empty) whose type the task applies to.
pub fn sections_for(c: &Connection, task: Task, only: &[i64]) -> anyhow::Result<Vec<i64>> {
    let types: Vec<String> = task.section_types().iter().map(i64::to_string).collect();
    let mut q = c.prepare(&format!(
        "SELECT id FROM library_sections WHERE section_type IN ({}) ORDER BY id",
        types.join(",")
    ))?;
    let ids: Vec<i64> = q.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    Ok(ids
        .into_iter()
        .filter(|i| only.is_empty() || only.contains(i))
        .collect())
}
