//! Storage benchmarks (docs/benchmarks.md "Storage"): the scan-walk of a mounted tree and the export
//! of a Plex data folder, against `rclone serve s3` on loopback, plain and behind a proxy that
//! delays each request by a few milliseconds (real object storage answers in 5–50 ms; loopback in
//! microseconds hides exactly the costs the mount settings and the export design avoid).
//!
//! Run through `scripts/bench/storage.sh`. Every process goes through plexburst's `remote::local`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "support/mod.rs"]
mod support;

use plexburst::config::StorageConfig;
use plexburst::remote::local::Local;
use plexburst::storage::rclone::{Rclone, UploadSpec, upload_stream};

struct Args {
    walk_files: usize,
    export_files: usize,
    delay_ms: u64,
    layout: PathBuf,
    only: Option<String>,
    repeat: u32,
    /// Upload cap of the bandwidth-bound export comparison ("" skips it).
    bwlimit: String,
}

fn args() -> Args {
    let mut a = Args {
        walk_files: 20_000,
        export_files: 20_000,
        delay_ms: 5,
        // Vendored with the crate, so a clean clone has it (a copy of the shared fixture).
        layout: PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/real-pms-data-folder-layout.tsv"
        )),
        only: None,
        repeat: 3,
        bwlimit: "80M".into(),
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    for pair in v.chunks(2) {
        let val = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--walk-files" => a.walk_files = val.parse().expect("a number"),
            "--export-files" => a.export_files = val.parse().expect("a number"),
            "--delay-ms" => a.delay_ms = val.parse().expect("a number"),
            "--layout" => a.layout = val.into(),
            "--only" => a.only = Some(val),
            "--repeat" => a.repeat = val.parse().expect("a number"),
            "--bwlimit" => a.bwlimit = val,
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// A media tree of `n` small files in 100-file album directories.
fn media_tree(dir: &Path, n: usize) {
    for i in 0..n {
        let d = dir.join(format!(
            "Artist {:03}/Album {:03}",
            i / 2000,
            (i / 100) % 20
        ));
        if i % 100 == 0 {
            std::fs::create_dir_all(&d).unwrap();
        }
        std::fs::write(
            d.join(format!("{:02} Track {i}.flac", i % 100)),
            format!("track {i}"),
        )
        .unwrap();
    }
}

/// A data folder of `n` files cycling through the real layout's paths and sizes; each copy gets
/// its own bundle directory. Images are random bytes (they do not compress), the rest is text.
fn data_folder(dir: &Path, layout: &Path, n: usize) -> u64 {
    let text = std::fs::read_to_string(layout).unwrap_or_else(|e| {
        panic!(
            "cannot read the data-folder layout {} ({e}); pass --layout PATH to a \
             real-pms-data-folder-layout.tsv (size<TAB>path per line)",
            layout.display()
        )
    });
    let rows: Vec<(u64, String)> = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter_map(|(s, p)| Some((s.parse().ok()?, p.to_string())))
        .collect();
    assert!(
        !rows.is_empty(),
        "the layout {} has no size<TAB>path lines",
        layout.display()
    );
    let mut seed: u64 = 0x9e3779b97f4a7c15;
    let mut total = 0;
    for i in 0..n {
        let (size, path) = &rows[i % rows.len()];
        let copy = i / rows.len();
        let path = match path.find(".bundle/") {
            Some(j) => format!("{}-{copy}{}", &path[..j], &path[j..]),
            None => format!("{path}.{copy}"),
        };
        let p = dir.join(&path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let size = (*size as usize).min(2 << 20);
        let bytes: Vec<u8> =
            if path.ends_with(".jpg") || path.ends_with(".png") || path.contains("posters") {
                (0..size)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        seed as u8
                    })
                    .collect()
            } else {
                b"<MediaContainer size=\"1\"><Directory key=\"x\"/></MediaContainer>\n"
                    .iter()
                    .cycle()
                    .take(size)
                    .copied()
                    .collect()
            };
        total += bytes.len() as u64;
        std::fs::write(p, bytes).unwrap();
    }
    total
}

fn wait_mounted(mp: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while sh(&format!("findmnt -n -o FSTYPE -M {} || true", q(mp)))
        .trim()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "mount at {mp} not ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn walk(mp: &str, expect: usize) -> f64 {
    let t = Instant::now();
    let n: usize = sh(&format!(
        "find {} -type f -printf '%T@ %s\\n' | wc -l",
        q(mp)
    ))
    .trim()
    .parse()
    .unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(n, expect, "the walk saw every file");
    secs
}

/// plexburst's rclone storage over the bench's S3 server; `tuning` is a `[tuning]` body.
fn storage(tmp: &Path, conf: &Path, mtime: &str, bucket: &str, tuning: &str) -> Rclone {
    let mp = tmp.join(format!("mnt-{mtime}/media"));
    let toml = format!(
        "kind = \"rclone\"\nremote = \"s3\"\nrclone_conf = \"{}\"\nbucket = \"{bucket}\"\nmount_point = \"{}\"\nrc_port = {}\nmtime = \"{mtime}\"\n[tuning]\n{tuning}",
        conf.display(),
        mp.display(),
        free_port()
    );
    let cfg: StorageConfig = toml::from_str(&toml).unwrap();
    let spec = plexburst::plan::storage::resolve(
        &cfg,
        "power",
        &tmp.join(format!("work-{mtime}")).display().to_string(),
    );
    match plexburst::storage::Storage::from_plan(&spec) {
        plexburst::storage::Storage::Rclone(rc) => rc,
        _ => unreachable!(),
    }
}

struct Row {
    name: String,
    loopback: f64,
    delayed: f64,
}

use support::{delay_proxy, free_port, q, serve_s3, sh, timed, user_conf};

fn main() {
    let a = args();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("s3");
    std::fs::create_dir_all(root.join("exports")).unwrap();
    let want = |what: &str| a.only.as_deref().is_none_or(|o| o == what);
    if want("walk") {
        media_tree(&root.join("media"), a.walk_files);
    }
    let data = tmp.path().join("data");
    let data_bytes = if want("export") {
        data_folder(&data, &a.layout, a.export_files)
    } else {
        0
    };
    let port = free_port();
    let server = serve_s3(&root, port);
    let proxied = delay_proxy(port, Duration::from_millis(a.delay_ms));
    let r = Local::new();
    let mut rows: Vec<Row> = Vec::new();
    let mut record = |name: &str, idx: usize, secs: f64| {
        eprintln!(
            "{name} [{}]: {secs:.2} s",
            if idx == 0 { "loopback" } else { "delayed" }
        );
        match rows.iter_mut().find(|r| r.name == name) {
            Some(row) if idx == 0 => row.loopback = secs,
            Some(row) => row.delayed = secs,
            None => rows.push(Row {
                name: name.to_string(),
                loopback: if idx == 0 { secs } else { 0.0 },
                delayed: if idx == 1 { secs } else { 0.0 },
            }),
        }
    };

    for (idx, endpoint_port) in [port, proxied].into_iter().enumerate() {
        let run = tmp.path().join(format!("run{idx}"));
        std::fs::create_dir_all(&run).unwrap();
        let conf = user_conf(&run, endpoint_port);
        if want("walk") {
            // (a) a cold mount with rclone's defaults.
            let mp = run.join("mnt-default/media").display().to_string();
            std::fs::create_dir_all(&mp).unwrap();
            let pid = sh(&format!(
                "setsid nohup rclone mount s3:media {} --config {} --read-only --cache-dir {} </dev/null >/dev/null 2>&1 & echo $!",
                q(&mp),
                q(&conf.display().to_string()),
                q(&run.join("cache-default").display().to_string())
            ));
            wait_mounted(&mp);
            record(
                "walk (a) cold mount, rclone defaults",
                idx,
                walk(&mp, a.walk_files),
            );
            sh(&format!(
                "fusermount3 -uz {}; kill {} 2>/dev/null; true",
                q(&mp),
                pid.trim()
            ));

            for mtime in ["server", "real"] {
                let rc = storage(&run, &conf, mtime, "media", "");
                rc.prepare(&r).unwrap();
                rc.mount(&r).unwrap();
                let t = Instant::now();
                rc.prewarm(&r).unwrap();
                let pre = t.elapsed().as_secs_f64();
                let w = walk(rc.mount_point(), a.walk_files);
                record(
                    &format!("walk (b) plexburst mount, {mtime} mtime: prewarm"),
                    idx,
                    pre,
                );
                record(
                    &format!("walk (b) plexburst mount, {mtime} mtime: prewarm + walk"),
                    idx,
                    pre + w,
                );
                record(
                    &format!("walk (c) second walk, cached ({mtime} mtime)"),
                    idx,
                    walk(rc.mount_point(), a.walk_files),
                );
                // (c') the same, with the kernel's dentries and inodes dropped first, so every
                // lookup and getattr goes to rclone and is answered from its VFS cache: the
                // floor of a walk the mount itself serves (what the calibration (c)
                // measured, ~10 s per 100,000 files).
                sh("sync; echo 2 > /proc/sys/vm/drop_caches");
                record(
                    &format!("walk (c') second walk, rclone-served ({mtime} mtime)"),
                    idx,
                    walk(rc.mount_point(), a.walk_files),
                );
                rc.unmount(&r).unwrap();
                sh(&format!("umount -l {} 2>/dev/null; true", q(&rc.parent())));
            }
            record(
                "walk (d) local disk",
                idx,
                walk(&root.join("media").display().to_string(), a.walk_files),
            );
        }
        if want("export") {
            let rc = storage(&run, &conf, "server", "exports", "");
            rc.prepare(&r).unwrap();
            // The export streams the entries `plan::list_command` lists, as the pipeline does.
            let list = run.join("export.files").display().to_string();
            let snapshot = run.join("export.before").display().to_string();
            sh(&plexburst::archive::list_command(
                &data.display().to_string(),
                &list,
                &snapshot,
            ));
            let spec = UploadSpec {
                src_dir: data.display().to_string(),
                list,
                object: format!("exports/stream-{idx}.tar.zst"),
                zstd_level: 3,
            };
            // The three stages of the ceiling comparison run interleaved, `repeat` rounds, best
            // of each: on a shared box the load changes from one minute to the next.
            let archive = run.join("archive.tar.zst").display().to_string();
            let data_q = q(&data.display().to_string());
            sh(&format!(
                "tar -C {data_q} -cf - Library | zstd -q -T0 -3 > {}",
                q(&archive)
            ));
            let s = rc.settings().clone();
            let flags = format!(
                "--s3-chunk-size {} --s3-upload-concurrency {}",
                s.s3_chunk_size, s.s3_upload_concurrency
            );
            let conf_q = q(&rc.conf_path());
            let (mut stream, mut tarz, mut copyto, mut rcat) =
                (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
            let mut bytes = 0;
            for round in 0..a.repeat {
                let spec = UploadSpec {
                    object: format!("exports/stream-{idx}-{round}.tar.zst"),
                    ..spec.clone()
                };
                let t = Instant::now();
                bytes = upload_stream(&rc, &r, &spec).unwrap().bytes;
                stream = stream.min(t.elapsed().as_secs_f64());
                tarz = tarz.min(timed(&format!(
                    "tar -C {data_q} -cf - Library | zstd -q -T0 -3 | cat > /dev/null"
                )));
                // The upload alone, both ways rclone offers for a finished file; the strict
                // ceiling takes the faster (rcat < file, 5-10 % faster here).
                copyto = copyto.min(timed(&format!(
                    "rclone --config {conf_q} copyto {flags} {} s3:exports/alone-{idx}-{round}.tar.zst",
                    q(&archive)
                )));
                rcat = rcat.min(timed(&format!(
                    "rclone --config {conf_q} rcat {flags} s3:exports/rcat-{idx}-{round}.tar.zst < {}",
                    q(&archive)
                )));
                // Not timed: drop this round's objects, so large sizes fit the disk.
                for name in ["stream", "alone", "rcat"] {
                    sh(&format!(
                        "rclone --config {conf_q} deletefile s3:exports/{name}-{idx}-{round}.tar.zst"
                    ));
                }
            }
            // Bandwidth-bound, on loopback only: the same streamed export and upload alone with
            // the upload capped (`tuning.upload_bwlimit`), as on a real link where the bucket's
            // CPU is not this machine's. Shows whether the stages overlap when the upload, not
            // the shared CPU, is the slowest stage.
            if idx == 0 && !a.bwlimit.is_empty() {
                let bw = &a.bwlimit;
                let capped = storage(
                    &run,
                    &conf,
                    "server",
                    "exports",
                    &format!("upload_bwlimit = \"{bw}\""),
                );
                let (mut stream, mut rcat) = (f64::MAX, f64::MAX);
                for round in 0..a.repeat {
                    let spec = UploadSpec {
                        object: format!("exports/stream-bw-{round}.tar.zst"),
                        ..spec.clone()
                    };
                    let t = Instant::now();
                    upload_stream(&capped, &r, &spec).unwrap();
                    stream = stream.min(t.elapsed().as_secs_f64());
                    rcat = rcat.min(timed(&format!(
                        "rclone --config {conf_q} rcat {flags} --bwlimit {bw} s3:exports/rcat-bw-{round}.tar.zst < {}",
                        q(&archive)
                    )));
                    for name in ["stream-bw", "rcat-bw"] {
                        sh(&format!(
                            "rclone --config {conf_q} deletefile s3:exports/{name}-{round}.tar.zst"
                        ));
                    }
                }
                record(
                    &format!("export capped at {bw}/s: plexburst streamed"),
                    idx,
                    stream,
                );
                record(
                    &format!("export capped at {bw}/s: upload alone (rcat < file)"),
                    idx,
                    rcat,
                );
            }
            std::fs::remove_file(&archive).unwrap();
            record("export: plexburst streamed (tar, zstd, rcat)", idx, stream);
            record("export ceiling part: tar, zstd -T0 -3, cat", idx, tarz);
            record(
                "export ceiling part: upload alone of the archive (copyto)",
                idx,
                copyto,
            );
            record(
                "export ceiling part: upload alone of the archive (rcat < file)",
                idx,
                rcat,
            );
            record(
                "export: rclone copy --transfers 8 of the folder",
                idx,
                timed(&format!(
                    "rclone --config {} copy --transfers 8 {} s3:exports/copy-{idx}",
                    q(&rc.conf_path()),
                    q(&data.display().to_string())
                )),
            );
            sh(&format!(
                "rclone --config {} purge s3:exports/copy-{idx}",
                q(&rc.conf_path())
            ));
            eprintln!("archive {} bytes from {data_bytes} bytes of data", bytes);
        }
    }
    sh(&format!("kill {server}"));

    println!(
        "| measurement | loopback (s) | {} ms/request proxy (s) |",
        a.delay_ms
    );
    println!("|---|---:|---:|");
    // A measurement taken in one column only (the bandwidth-capped export) shows "-" in the other.
    let cell = |v: f64| {
        if v > 0.0 {
            format!("{v:.2}")
        } else {
            "-".to_string()
        }
    };
    for row in &rows {
        println!(
            "| {} | {} | {} |",
            row.name,
            cell(row.loopback),
            cell(row.delayed)
        );
    }
    let get = |n: &str| rows.iter().find(|r| r.name == n);
    println!();
    for (col, pick) in [("loopback", 0), ("delayed", 1)] {
        let v = |n: &str| {
            get(n)
                .map(|r| if pick == 0 { r.loopback } else { r.delayed })
                .unwrap_or(f64::NAN)
        };
        if want("walk") {
            for m in ["server", "real"] {
                let b = v(&format!(
                    "walk (b) plexburst mount, {m} mtime: prewarm + walk"
                ));
                let c = v(&format!("walk (c) second walk, cached ({m} mtime)"));
                let c2 = v(&format!("walk (c') second walk, rclone-served ({m} mtime)"));
                println!(
                    "{col}: {m} mtime: (a)/(b) = {:.1}x faster (goal >= 10x); (b)/(c) = {:.2} kernel-served, {:.2} rclone-served (goal <= 2)",
                    v("walk (a) cold mount, rclone defaults") / b,
                    b / c,
                    b / c2
                );
            }
        }
        if want("export") {
            let stream = v("export: plexburst streamed (tar, zstd, rcat)");
            let tarz = v("export ceiling part: tar, zstd -T0 -3, cat");
            let copyto = v("export ceiling part: upload alone of the archive (copyto)");
            let rcat = v("export ceiling part: upload alone of the archive (rcat < file)");
            let copy = v("export: rclone copy --transfers 8 of the folder");
            println!(
                "{col}: streamed export = {:.0} % of the ceiling with the faster upload alone, {:.0} % with copyto (goal >= 85 %); {:.1}x faster than rclone copy (goal >= 20x with the delay; bound by the upload alone: {:.1}x)",
                100.0 * tarz.max(copyto.min(rcat)) / stream,
                100.0 * tarz.max(copyto) / stream,
                copy / stream,
                copy / copyto.min(rcat)
            );
            if pick == 0 && !a.bwlimit.is_empty() {
                let bw = &a.bwlimit;
                println!(
                    "{col}: capped at {bw}/s: streamed export = {:.0} % of the ceiling (tar|zstd vs the capped upload alone)",
                    100.0
                        * tarz.max(v(&format!(
                            "export capped at {bw}/s: upload alone (rcat < file)"
                        )))
                        / v(&format!("export capped at {bw}/s: plexburst streamed"))
                );
            }
        }
    }
}
