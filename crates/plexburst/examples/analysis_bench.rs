//! Sonic analysis over the rclone mount, with and without the prefetcher, against the same
//! section on local disk (docs/benchmarks.md "Analysis over the mount"), measured side by side in
//! one run. The bucket is `rclone serve s3` on loopback behind a proxy that delays every request
//! (object storage answers in 5–50 ms) and caps the bandwidth (the instance's link); the tracks
//! are the size of real FLAC files; the emulator burns the same CPU per track in every mode.
//!
//! Each mode: a fresh emulator and data dir, the section created and scanned, then (over the
//! mount) a fresh mount with an empty VFS cache and the analyze phase's 64 KiB warm, then the
//! analysis timed from `POST /butler/MusicAnalysis` to every track analysed.
//!
//! Run through `scripts/bench/analysis.sh`. Needs root (FUSE), rclone, sqlite3, curl.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use plexburst::config::StorageConfig;
use plexburst::remote::local::Local;
use plexburst::storage::Storage;
use plexburst::storage::rclone::PrefetchJob;
use support::{capped_proxy, free_port, q, serve_s3_at, sh, user_conf};

struct Args {
    tracks: usize,
    min_mb: u64,
    max_mb: u64,
    cost: String,
    threads: u32,
    delay_ms: u64,
    bw: u64,
    readers: u32,
}

fn args() -> Args {
    let mut a = Args {
        tracks: 60,
        min_mb: 20,
        max_mb: 60,
        cost: "3s".into(),
        threads: 1,
        delay_ms: 5,
        bw: 50 << 20,
        readers: 4,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for pair in v.chunks(2) {
        let val = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--tracks" => a.tracks = val.parse().expect("a number"),
            "--min-mb" => a.min_mb = val.parse().expect("a number"),
            "--max-mb" => a.max_mb = val.parse().expect("a number"),
            "--cost" => a.cost = val,
            "--threads" => a.threads = val.parse().expect("a number"),
            "--delay-ms" => a.delay_ms = val.parse().expect("a number"),
            "--bw" => a.bw = plexburst::units::parse_size(&val).expect("a size such as 50M"),
            "--readers" => a.readers = val.parse().expect("a number"),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// `n` tracks of min..max MB of incompressible bytes, 10 to an album.
fn library(music: &Path, a: &Args) -> u64 {
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut total = 0;
    for i in 0..a.tracks {
        let d = music.join(format!("Artist {:02}/Album {:02} (2001)", i / 30, i / 10));
        std::fs::create_dir_all(&d).unwrap();
        let mb = a.min_mb + next() % (a.max_mb - a.min_mb + 1);
        let len = (mb << 20) as usize;
        let mut bytes = Vec::with_capacity(len);
        while bytes.len() < len {
            bytes.extend_from_slice(&next().to_le_bytes());
        }
        bytes.truncate(len);
        std::fs::write(
            d.join(format!("{:02} - Track {i}.flac", i % 10 + 1)),
            &bytes,
        )
        .unwrap();
        total += len as u64;
    }
    total
}

struct Emulator {
    pid: String,
    base: String,
    token: String,
    db: PathBuf,
}

fn emulator(bin: &Path, data: &Path, cost: &str) -> Emulator {
    let port = free_port();
    std::fs::create_dir_all(data).unwrap();
    let pid = sh(&format!(
        "setsid nohup {} serve --data-dir {} --listen 127.0.0.1:{port} --claim bench --claim-delay 100ms --analysis-cost {cost} </dev/null >{}/out 2>&1 & echo $!",
        q(&bin.display().to_string()),
        q(&data.display().to_string()),
        q(&data.display().to_string()),
    ));
    let prefs = data.join("Library/Application Support/Plex Media Server/Preferences.xml");
    let deadline = Instant::now() + Duration::from_secs(60);
    let token = loop {
        let text = std::fs::read_to_string(&prefs).unwrap_or_default();
        if let Some(t) = text.split("PlexOnlineToken=\"").nth(1) {
            break t.split('"').next().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the emulator did not claim itself"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    Emulator {
        pid: pid.trim().to_string(),
        base: format!("http://127.0.0.1:{port}"),
        token,
        db: data.join("Library/Application Support/Plex Media Server/Plug-in Support/Databases/com.plexapp.plugins.library.db"),
    }
}

impl Emulator {
    fn call(&self, method: &str, path: &str) -> String {
        sh(&format!(
            "curl -fsS -X {method} -H {} -H 'Accept: application/json' {}",
            q(&format!("X-Plex-Token: {}", self.token)),
            q(&format!("{}{path}", self.base))
        ))
    }
    fn count(&self, sql: &str) -> usize {
        sh(&format!(
            "sqlite3 -readonly -cmd '.timeout 5000' {} {} 2>/dev/null || echo 0",
            q(&self.db.display().to_string()),
            q(sql)
        ))
        .trim()
        .parse()
        .unwrap_or(0)
    }
    fn wait(&self, what: &str, sql: &str, want: usize) {
        let deadline = Instant::now() + Duration::from_secs(3600);
        while self.count(sql) != want {
            assert!(Instant::now() < deadline, "{what} did not finish");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        sh(&format!("kill {} 2>/dev/null; true", self.pid));
    }
}

const TRACKS: &str = "SELECT count(*) FROM metadata_items WHERE metadata_type = 10";
const ANALYSED: &str = "SELECT count(*) FROM metadata_items WHERE metadata_type = 10 AND extra_data LIKE '%ms:musicAnalysisVersion%'";

/// A fresh plexburst rclone storage over the bench's S3 (an empty VFS cache each time).
fn storage(dir: &Path, conf: &Path, readers: u32) -> Storage {
    let mp = dir.join("mnt/media");
    let toml = format!(
        "kind = \"rclone\"\nremote = \"s3\"\nrclone_conf = \"{}\"\nbucket = \"media\"\nmount_point = \"{}\"\nrc_port = {}\n[tuning]\nprefetch_readers = {readers}\n",
        conf.display(),
        mp.display(),
        free_port()
    );
    let cfg: StorageConfig = toml::from_str(&toml).unwrap();
    let spec =
        plexburst::plan::storage::resolve(&cfg, "power", &dir.join("work").display().to_string());
    Storage::from_plan(&spec)
}

/// One mode: seconds of analysis, and the prefetcher's last word when it ran.
fn measure(
    a: &Args,
    emu_bin: &Path,
    dir: &Path,
    music: &str,
    mount: Option<&Storage>,
    prefetch: bool,
) -> (f64, Option<plexburst::storage::rclone::PrefetchStatus>) {
    let r = Local::new();
    let e = emulator(emu_bin, &dir.join("plex"), &a.cost);
    e.call(
        "PUT",
        &format!(
            "/:/prefs?ButlerStartHour=0&ButlerEndHour=0&LongRunningJobThreads={}",
            a.threads
        ),
    );
    let loc = sh(&format!(
        "python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' {}",
        q(music)
    ));
    e.call(
        "POST",
        &format!(
            "/library/sections?name=Music&type=artist&agent=tv.plex.agents.music&scanner=Plex%20Music&language=en-US&location={}",
            loc.trim()
        ),
    );
    e.call("GET", "/library/sections/all/refresh?force=1");
    e.wait("the scan", TRACKS, a.tracks);
    let files: Vec<String> = sh(&format!(
        "sqlite3 -readonly {} 'SELECT file FROM media_parts'",
        q(&e.db.display().to_string())
    ))
    .lines()
    .map(String::from)
    .collect();
    if let Some(st) = mount {
        // What the analyze phase does first on a mount: the 64 KiB heads.
        st.warm_files(&r, &files).unwrap();
        if prefetch {
            st.as_rclone()
                .unwrap()
                .prefetch_start(
                    &r,
                    &PrefetchJob {
                        db: &e.db.display().to_string(),
                        section_id: 1,
                        readers: a.readers,
                        lead_secs: 30,
                        max_secs: 3600,
                    },
                )
                .unwrap();
        }
    }
    let t = Instant::now();
    e.call("POST", "/butler/MusicAnalysis");
    e.wait("the analysis", ANALYSED, a.tracks);
    let secs = t.elapsed().as_secs_f64();
    let st = match mount {
        Some(st) if prefetch => Some(st.as_rclone().unwrap().prefetch_stop(&r).unwrap()),
        _ => None,
    };
    (secs, st)
}

fn main() {
    let a = args();
    let emu_bin = PathBuf::from(std::env::var("EMULATOR").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/release/plex-emulator"
        )
        .into()
    }));
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("s3");
    let music = root.join("media/Music");
    let bytes = library(&music, &a);
    let port = free_port();
    // The S3 server stands for the object store, another machine: lowest priority here.
    let server = serve_s3_at(&root, port, 19);
    let proxied = capped_proxy(port, Duration::from_millis(a.delay_ms), Some(a.bw));
    let conf = user_conf(tmp.path(), proxied);
    let r = Local::new();
    eprintln!(
        "{} tracks, {:.1} GiB ({}-{} MB each), --analysis-cost {} per track, {} analysis worker(s), bucket behind {} ms per request and {} MiB/s; load average at start: {}",
        a.tracks,
        bytes as f64 / (1u64 << 30) as f64,
        a.min_mb,
        a.max_mb,
        a.cost,
        a.threads,
        a.delay_ms,
        a.bw >> 20,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let mut rows: Vec<(String, f64, String)> = Vec::new();
    for mode in ["local disk", "mount, no prefetcher", "mount, prefetcher"] {
        let dir = tmp.path().join(mode.replace([' ', ','], "-"));
        std::fs::create_dir_all(&dir).unwrap();
        let (secs, st) = if mode == "local disk" {
            measure(
                &a,
                &emu_bin,
                &dir,
                &music.display().to_string(),
                None,
                false,
            )
        } else {
            let st = storage(&dir, &conf, a.readers);
            st.prepare(&r).unwrap();
            st.mount(&r).unwrap();
            let mp = format!("{}/Music", st.media_root());
            let got = measure(&a, &emu_bin, &dir, &mp, Some(&st), !mode.contains("no "));
            st.unmount(&r).unwrap();
            let parent = st.as_rclone().unwrap().parent();
            sh(&format!("umount -l {} 2>/dev/null; true", q(&parent)));
            got
        };
        let note = st
            .map(|s| {
                format!(
                    "prefetched {} files, read {:.0} MiB/s, consumed {:.0} MiB/s, window {:.0} MiB, {} failed",
                    s.files,
                    s.read_bps as f64 / (1 << 20) as f64,
                    s.consume_bps as f64 / (1 << 20) as f64,
                    s.window_bytes as f64 / (1 << 20) as f64,
                    s.failed
                )
            })
            .unwrap_or_default();
        eprintln!("{mode}: {secs:.1} s {note}");
        rows.push((mode.to_string(), secs, note));
    }
    sh(&format!("kill {server} 2>/dev/null; true"));
    let local = rows[0].1;
    println!("| mode | analysis time | vs local disk | |\n|---|---|---|---|");
    for (mode, secs, note) in &rows {
        println!(
            "| {mode} | {secs:.1} s | **{:.2}x** | {note} |",
            secs / local
        );
    }
    println!(
        "\nload average at end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
