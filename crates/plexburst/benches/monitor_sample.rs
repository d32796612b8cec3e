//! Benchmark (not a timed test): one monitor DB sample on a 1,000,000-track library while a writer
//! changes the DB the way Plex does, beside a bare `SELECT count(*)` through the same path.
//!
//! Run: `cargo bench -p plexburst --bench monitor_sample` (add `-- --tracks N --samples N` to
//! change the size). The library is built once from the real PMS 1.32 schema (the vendored
//! fixture, with its ICU triggers and index dropped because stock SQLite cannot run them) and
//! cached under Cargo's target tmp dir; every run works on a fresh copy.
//!
//! Both sides go through `remote::local::Local` and the system `sqlite3 -readonly`, exactly as the
//! monitor does on a target: process start, query and JSON parse are all inside the timings.
//! Two writer scenarios, each in its own thread with its own connection, both stamping every row
//! they touch with the next `changed_at` as Plex does:
//! - scan: batches of 100 new tracks (metadata_items + media_items + media_parts) every 50 ms;
//! - analysis: batches of 5 tracks marked Sonic-analysed every 20 ms (about 250 tracks/s).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use plexburst::plex::db::{SampleKind, Sampler, sqlite_script};
use plexburst::remote::local::Local;
use plexburst::remote::{Cmd, Remote};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/real-pms-1.32-library.db"
);

struct Args {
    tracks: i64,
    samples: usize,
    pace: Duration,
}

fn args() -> Args {
    let mut a = Args {
        tracks: 1_000_000,
        samples: 60,
        pace: Duration::from_millis(100),
    };
    let v: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < v.len() {
        match v[i].as_str() {
            "--tracks" => {
                a.tracks = v[i + 1].parse().expect("--tracks N");
                i += 1;
            }
            "--samples" => {
                a.samples = v[i + 1].parse().expect("--samples N");
                i += 1;
            }
            // `cargo bench` passes `--bench`; ignore it and anything else.
            _ => {}
        }
        i += 1;
    }
    a
}

fn main() {
    let args = args();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("monitor-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let pristine = dir.join(format!("library-{}.db", args.tracks));
    if !pristine.exists() {
        let t = Instant::now();
        build_library(&pristine, args.tracks);
        eprintln!(
            "built {} ({} MB) in {:.1} s",
            pristine.display(),
            std::fs::metadata(&pristine).unwrap().len() >> 20,
            t.elapsed().as_secs_f64()
        );
    }
    let db = dir.join("run.db");
    for ext in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
    }
    std::fs::copy(&pristine, &db).unwrap();
    let db_str = db.to_str().unwrap().to_string();
    let local = Local::new();

    println!(
        "sqlite3 {}",
        local
            .run(&Cmd::new("sqlite3 --version"))
            .unwrap()
            .stdout_str()
            .split_whitespace()
            .next()
            .unwrap_or("?")
    );
    // The machine is shared: say how busy it was, since both columns scale with it.
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load().trim());
    println!(
        "library: {} tracks, DB {} MB",
        args.tracks,
        std::fs::metadata(&db).unwrap().len() >> 20
    );

    // The cost of a full (exact, from scratch) sample: the first sample of a run, and every sample
    // taken while the DB is quiet.
    let full: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            plexburst::plex::db::sample(&local, &db_str).unwrap();
            t.elapsed()
        })
        .collect();
    println!("| full sample (quiet DB) | {} |", stats(&full));

    for scenario in [Scenario::Scan, Scenario::Analysis] {
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(AtomicU64::new(0));
        let writer = {
            let (stop, writes, db) = (stop.clone(), writes.clone(), db.clone());
            std::thread::spawn(move || write_like_plex(&db, scenario, &stop, &writes))
        };
        // Let the writer get going before the first sample.
        while writes.load(Ordering::Relaxed) < 3 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut sampler = Sampler::new(&db_str);
        sampler.sample(&local).unwrap();
        let mut monitor = Vec::new();
        let mut kinds = (0, 0);
        let mut bare = Vec::new();
        let bare_cmd = Cmd::new(sqlite_script(
            &db_str,
            "SELECT count(*) FROM metadata_items;",
            "-list",
        ));
        let mut last = None;
        for _ in 0..args.samples {
            std::thread::sleep(args.pace);
            let t = Instant::now();
            let s = sampler.sample(&local).unwrap();
            monitor.push(t.elapsed());
            match sampler.last_kind() {
                Some(SampleKind::Incremental) => kinds.0 += 1,
                _ => kinds.1 += 1,
            }
            last = Some(s);
            let t = Instant::now();
            let out = local.run(&bare_cmd).unwrap();
            bare.push(t.elapsed());
            assert!(out.stdout_str().trim().parse::<i64>().unwrap() > args.tracks);
        }
        stop.store(true, Ordering::Relaxed);
        let batches = writer.join().unwrap();
        // The writer has stopped. Within three samples the sampler sees the DB quiet and takes a
        // full count, which it compares with its incremental state; a difference would make it
        // stop trusting changed_at (asserted below).
        for _ in 0..3 {
            sampler.sample(&local).unwrap();
            if sampler.last_kind() == Some(SampleKind::Full) {
                break;
            }
        }
        assert_eq!(sampler.last_kind(), Some(SampleKind::Full));
        assert!(
            sampler.trusts_changed_at(),
            "incremental counts drifted from the exact ones"
        );
        let music = last.unwrap().section(5).cloned().unwrap();
        let m = median(&monitor);
        let b = median(&bare);
        println!(
            "| {:?}: monitor sample | {} | {} incremental, {} full |",
            scenario,
            stats(&monitor),
            kinds.0,
            kinds.1
        );
        println!(
            "| {:?}: bare count(*) | {} | ratio of medians {:.1}x |",
            scenario,
            stats(&bare),
            m.as_secs_f64() / b.as_secs_f64()
        );
        println!(
            "  writer: {batches} transactions; last sample saw {} tracks, {} Sonic-analysed; checked equal to a full count",
            music.tracks, music.sonic_analyzed
        );
    }
    println!("load average at end: {}", load().trim());
}

#[derive(Debug, Clone, Copy)]
enum Scenario {
    Scan,
    Analysis,
}

/// Write until told to stop; return the number of transactions.
fn write_like_plex(db: &Path, scenario: Scenario, stop: &AtomicBool, writes: &AtomicU64) -> u64 {
    let mut c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c.execute_batch("PRAGMA synchronous = NORMAL;").unwrap();
    let mut stamp: i64 = c
        .query_row("SELECT max(changed_at) FROM metadata_items", [], |r| {
            r.get(0)
        })
        .unwrap();
    let mut next_track: i64 = c
        .query_row(
            "SELECT min(id) FROM metadata_items WHERE metadata_type = 10 AND instr(extra_data, 'ms:') = 0",
            [],
            |r| r.get::<_, Option<i64>>(0),
        )
        .unwrap()
        .unwrap_or(1);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let tx = c.transaction().unwrap();
        match scenario {
            Scenario::Scan => {
                for _ in 0..100 {
                    stamp += 1;
                    tx.execute(
                        "INSERT INTO metadata_items(library_section_id, parent_id, metadata_type, guid,
                           title, title_sort, added_at, created_at, updated_at, changed_at, extra_data)
                         VALUES (5, 20, 10, 'plex://track/new', 'New track', 'New track', 1, 1, 1, ?1,
                           '{\"ma:audioProfile\":\"lc\"}')",
                        [stamp],
                    )
                    .unwrap();
                    let mid = tx.last_insert_rowid();
                    tx.execute(
                        "INSERT INTO media_items(library_section_id, metadata_item_id, type_id, size,
                           container, created_at, updated_at) VALUES (5, ?1, 10, 1000, 'flac', 1, 1)",
                        [mid],
                    )
                    .unwrap();
                    let iid = tx.last_insert_rowid();
                    tx.execute(
                        "INSERT INTO media_parts(media_item_id, file, size, created_at, updated_at)
                         VALUES (?1, '/data/Music/New/new.flac', 1000, 1, 1)",
                        [iid],
                    )
                    .unwrap();
                }
            }
            Scenario::Analysis => {
                let mut done = 0;
                while done < 5 {
                    stamp += 1;
                    done += tx
                        .execute(
                            "UPDATE metadata_items SET changed_at = ?1,
                               extra_data = '{\"ma:audioProfile\":\"lc\",\"ms:musicAnalysisVersion\":\"1\"}'
                             WHERE id = ?2 AND metadata_type = 10",
                            [stamp, next_track],
                        )
                        .unwrap();
                    next_track += 1;
                }
            }
        }
        tx.commit().unwrap();
        n += 1;
        writes.store(n, Ordering::Relaxed);
        std::thread::sleep(match scenario {
            Scenario::Scan => Duration::from_millis(50),
            Scenario::Analysis => Duration::from_millis(20),
        });
    }
    n
}

/// The real 1.32 schema with `tracks` tracks in its music section (id 5), 10 per album, 10 albums
/// per artist, each with a media item and a part, and changed_at stamps in id order.
fn build_library(path: &Path, tracks: i64) {
    let tmp = path.with_extension("building");
    std::fs::copy(FIXTURE, &tmp).unwrap();
    let c = rusqlite::Connection::open(&tmp).unwrap();
    let icu: Vec<(String, String)> = c
        .prepare(
            "SELECT type, name FROM sqlite_master WHERE tbl_name = 'metadata_items'
               AND (type = 'trigger' OR name = 'index_title_sort_icu')",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (kind, name) in icu {
        c.execute_batch(&format!("DROP {kind} \"{name}\";"))
            .unwrap();
    }
    let albums = (tracks / 10).max(1);
    let artists = (albums / 10).max(1);
    c.execute_batch(&format!(
        "PRAGMA synchronous = OFF;
         BEGIN;
         CREATE TEMP TABLE n(i INTEGER PRIMARY KEY);
         WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < {tracks})
           INSERT INTO n SELECT i FROM r;
         INSERT INTO metadata_items(library_section_id, metadata_type, guid, title, title_sort,
             added_at, created_at, updated_at, extra_data)
           SELECT 5, 8, 'plex://artist/' || i, 'Artist ' || i, 'Artist ' || i, 1700000000, 1700000000,
             1700000000, '{{\"pv:artBlurHash\":\"' || hex(randomblob(8)) || '\"}}'
           FROM n WHERE i <= {artists};
         INSERT INTO metadata_items(library_section_id, metadata_type, guid, title, title_sort,
             added_at, created_at, updated_at, extra_data)
           SELECT 5, 9, 'plex://album/' || i, 'Album ' || i, 'Album ' || i, 1700000000, 1700000000,
             1700000000, '{{\"ld:loudnessAnalysisVersion\":\"1\"}}'
           FROM n WHERE i <= {albums};
         INSERT INTO metadata_items(library_section_id, metadata_type, guid, media_item_count, title,
             title_sort, \"index\", duration, added_at, created_at, updated_at, extra_data)
           SELECT 5, 10, 'plex://track/' || hex(randomblob(12)), 1, 'Track title number ' || i,
             'Track title number ' || i, 1 + i % 10, 200000 + i % 60000, 1700000000 + i,
             1700000000 + i, 1700000000 + i,
             '{{\"ma:audioProfile\":\"lc\",\"ma:container\":\"flac\",\"ma:samplingRate\":\"44100\",\"pv:instanceRatingKey\":\"' || hex(randomblob(10)) || '\"}}'
           FROM n;
         UPDATE metadata_items SET changed_at = id + 10000 WHERE id > (SELECT max(id) - {tracks} - {albums} - {artists} FROM metadata_items);
         INSERT INTO media_items(library_section_id, section_location_id, metadata_item_id, type_id,
             size, duration, bitrate, container, audio_codec, created_at, updated_at,
             media_analysis_version)
           SELECT 5, 4, id, 10, 30000000, duration, 900, 'flac', 'flac', 1, 1, 4
           FROM metadata_items WHERE metadata_type = 10 AND library_section_id = 5 AND id > 1000;
         INSERT INTO media_parts(media_item_id, directory_id, hash, file, size, duration, created_at,
             updated_at)
           SELECT mi.id, 1, hex(randomblob(20)),
             '/data/Music/Artist ' || (mi.metadata_item_id % {artists}) || '/Album/' || mi.metadata_item_id || ' - Track title.flac',
             30000000, mi.duration, 1, 1
           FROM media_items mi WHERE mi.id > (SELECT max(id) - {tracks} FROM media_items);
         COMMIT;
         PRAGMA wal_checkpoint(TRUNCATE);"
    ))
    .unwrap();
    drop(c);
    for ext in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{ext}", tmp.display()));
    }
    std::fs::rename(&tmp, path).unwrap();
}

fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s[s.len() / 2]
}

fn stats(v: &[Duration]) -> String {
    let mut s = v.to_vec();
    s.sort();
    let p95 = s[((s.len() as f64 * 0.95).ceil() as usize).saturating_sub(1)];
    format!(
        "median {:.1} ms, p95 {:.1} ms (n={})",
        median(v).as_secs_f64() * 1e3,
        p95.as_secs_f64() * 1e3,
        v.len()
    )
}
