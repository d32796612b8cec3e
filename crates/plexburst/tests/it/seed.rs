//! Seeded (delta) runs: `run --seed` with a plexburst archive or a bare DB, `[remap]`, the path
//! sample, incremental against deep scans, repair of damaged DBs, and the real 1.32 fixture.

use std::path::{Path, PathBuf};

use plexburst::remote::local::Local;

use crate::harness::*;

/// The archive the lab's last run exported.
fn archive_of(lab: &Lab) -> PathBuf {
    let dir = lab.path("export");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".tar.zst"))
        .collect();
    found.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    found.pop().expect("an exported archive")
}

/// Move the lab's data dir aside as the "home server" and point the config at `media` with
/// `extra` TOML appended; the next run starts from an empty data dir.
fn reseed(lab: &Lab, home: &str, media: &str, extra: &str) {
    std::fs::rename(lab.data_dir(), lab.path(home)).unwrap();
    std::fs::write(
        lab.config_path(),
        format!("{}\n{extra}\n", config_on(lab, media)),
    )
    .unwrap();
}

/// The lab's config with the storage and every section under `media` instead.
fn config_on(lab: &Lab, media: &str) -> String {
    let old = lab.path("media").display().to_string();
    let new = lab.path(media).display().to_string();
    lab.config_toml()
        .replace(&format!("{old}/"), &format!("{new}/"))
        .replace(&format!("\"{old}\""), &format!("\"{new}\""))
}

/// The "home server": a first run (no analysis) whose DB is copied to `name` in the lab, its data
/// dir then removed so the next run starts empty.
fn home_db(lab: &Lab, name: &str) -> PathBuf {
    let first = lab.plexburst(&["run", "--skip-analysis"]);
    assert!(first.status.success(), "{}", text(&first));
    let db = lab.path(name);
    std::fs::copy(lab.db_path(), &db).unwrap();
    std::fs::remove_dir_all(lab.data_dir()).unwrap();
    db
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn seed_record(lab: &Lab) -> serde_json::Value {
    lab.state()["seed"].clone()
}

/// A section of the seed as the run recorded it.
pub fn seeded_section(seed: &serde_json::Value, name: &str) -> serde_json::Value {
    seed["sections"]
        .as_array()
        .expect("the seed's sections")
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no seeded section {name}: {seed:#}"))
        .clone()
}

/// The DB passes stock SQLite's full `quick_check`.
fn assert_sound(db: &Path) {
    let quick = run(command("sqlite3").arg(db).arg("PRAGMA quick_check"));
    assert_eq!(stdout(&quick).trim(), "ok");
}

fn delta<'a>(seed: &'a serde_json::Value, section: &str) -> &'a serde_json::Value {
    seed["delta"]
        .as_array()
        .expect("a delta per section")
        .iter()
        .find(|d| d["name"] == section)
        .unwrap_or_else(|| panic!("no delta for {section}: {seed:#}"))
}

fn live_tracks_under(lab: &Lab, dir: &Path) -> i64 {
    lab.count(&format!(
        "SELECT count(*) FROM media_parts p JOIN media_items i ON i.id = p.media_item_id JOIN metadata_items m ON m.id = i.metadata_item_id WHERE m.metadata_type = 10 AND m.deleted_at IS NULL AND p.file LIKE '{}/%'",
        dir.display()
    ))
}

fn sh(script: &str) {
    let out = run(command("sh").arg("-c").arg(script));
    assert!(out.status.success(), "{script}: {}", text(&out));
}

/// The delta workflow end to end: a first run's archive seeds a run on a library that moved to a
/// new root (remapped), gained a track, lost one and had an album moved. The incremental scan
/// sees the new track and the removal but not the moved album (its items go to the trash, really
/// gone from their old path, so the export lets them through); Sonic counts survive; a deep scan
/// of the next seed finds the moved album.
#[test]
fn a_seeded_run_remaps_scans_incrementally_and_a_deep_scan_finds_moved_folders() {
    let lab = Lab::new(LabOpts::default());
    let first = lab.plexburst(&["run"]);
    assert!(first.status.success(), "{}", text(&first));
    let home_sonic = lab.count(
        "SELECT count(*) FROM metadata_items WHERE metadata_type=10 AND deleted_at IS NULL AND extra_data LIKE '%ms:musicAnalysisVersion%'",
    );
    assert_eq!(home_sonic, lab.counts.tracks);
    let archive = archive_of(&lab);

    // The bucket changes: a new root, one more track in a known album, one track gone, one
    // album moved to another artist.
    let m2 = lab.path("media2");
    sh(&format!(
        "cp -a {} {}",
        lab.path("media").display(),
        m2.display()
    ));
    let music = m2.join("Music");
    let mut artists: Vec<PathBuf> = std::fs::read_dir(&music)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    artists.sort();
    let albums = |a: &Path| {
        let mut v: Vec<PathBuf> = std::fs::read_dir(a)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        v.sort();
        v
    };
    // The artist with two albums keeps one and gives the other to the next artist.
    artists.sort_by_key(|a| std::cmp::Reverse(albums(a).len()));
    assert!(albums(&artists[0]).len() >= 2, "{artists:?}");
    let kept_album = albums(&artists[0])[0].clone();
    let moved_album = albums(&artists[0])[1].clone();
    let mut tracks: Vec<PathBuf> = std::fs::read_dir(&kept_album)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    tracks.sort();
    let ext = tracks[0].extension().unwrap().to_string_lossy().to_string();
    std::fs::copy(
        &tracks[0],
        kept_album.join(format!("99 - Bonus Track.{ext}")),
    )
    .unwrap();
    std::fs::remove_file(tracks.last().unwrap()).unwrap();
    let moved_tracks = std::fs::read_dir(&moved_album).unwrap().count() as i64;
    let moved_to = artists[1].join(moved_album.file_name().unwrap());
    std::fs::rename(&moved_album, &moved_to).unwrap();

    let old_root = lab.path("media").display().to_string();
    reseed(
        &lab,
        "plex-home",
        "media2",
        // A reorganised library misses more than the default 10 % of its old paths.
        &format!(
            "[remap]\n\"{old_root}\" = \"{}\"\n[seed]\nmissing_limit = 0.5\n",
            m2.display()
        ),
    );
    // The old root is gone, as a bucket reorganised in place would be.
    std::fs::remove_dir_all(lab.path("media")).unwrap();

    let plan = lab.plexburst(&["plan", "--seed", archive.to_str().unwrap()]);
    assert!(plan.status.success(), "{}", text(&plan));
    let p = text(&plan);
    assert!(p.contains("seed") && p.contains("force=0"), "{p}");

    let out = lab.plexburst(&["run", "--seed", archive.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    // Plan = run for a seeded run too: `plan --seed` prints the plan the run stored and executed.
    lab.assert_plan_is_what_ran_with(&["--seed", archive.to_str().unwrap()]);
    let seed = seed_record(&lab);
    // Seeded counts are the home server's, remapped: every location and part moved root.
    let music_seed = seeded_section(&seed, "Music");
    assert_eq!(music_seed["tracks"], lab.counts.tracks);
    assert_eq!(music_seed["sonic"], lab.counts.tracks);
    assert_eq!(
        seed["remap"]["section_locations.root_path"].as_i64(),
        Some(3),
        "{seed:#}"
    );
    let parts = lab.counts.tracks + lab.counts.movies + lab.counts.photos;
    assert_eq!(seed["remap"]["media_parts.file"].as_i64(), Some(parts));
    assert!(
        std::path::Path::new(seed["remap_backup"].as_str().unwrap()).exists(),
        "the pre-remap DB is kept"
    );
    // The sample found the removed track and the moved album missing, by their folders.
    let sample = &seed["sample"];
    assert_eq!(
        sample["missing"].as_i64(),
        Some(1 + moved_tracks),
        "{sample:#}"
    );
    // Incremental: the new track is in, the removed one and the moved album are trashed, and
    // the album under its new artist was not seen.
    assert_eq!(
        live_tracks_under(&lab, &kept_album),
        (tracks.len() as i64) - 1 + 1
    );
    assert_eq!(live_tracks_under(&lab, &moved_album), 0);
    assert_eq!(live_tracks_under(&lab, &moved_to), 0);
    let d = delta(&seed, "Music");
    assert_eq!(d["added"], 1, "{d:#}");
    assert_eq!(d["removed"].as_i64(), Some(1 + moved_tracks), "{d:#}");
    assert_eq!(d["newly_analysed"], 1, "{d:#}");
    assert_eq!(
        d["sonic"].as_i64(),
        Some(lab.counts.tracks - 1 - moved_tracks + 1)
    );
    // The data dir has its own identity, not the archive's.
    let home_prefs = std::fs::read_to_string(
        lab.path("plex-home/Library/Application Support/Plex Media Server/Preferences.xml"),
    )
    .unwrap();
    let prefs = std::fs::read_to_string(
        lab.data_dir()
            .join("Library/Application Support/Plex Media Server/Preferences.xml"),
    )
    .unwrap();
    let mid = |x: &str| {
        x.split("MachineIdentifier=\"")
            .nth(1)
            .map(|r| r.split('"').next().unwrap().to_string())
    };
    assert_ne!(mid(&home_prefs), mid(&prefs));
    let report = std::fs::read_to_string(
        lab.state_dir()
            .join("runs")
            .join(lab.state()["run_id"].as_str().unwrap())
            .join("report.md"),
    )
    .unwrap();
    assert!(
        report.contains("## Seed") && report.contains("newly analysed"),
        "{report}"
    );

    // A deep scan of the next seed finds the moved album at its new place.
    let archive2 = archive_of(&lab);
    reseed(&lab, "plex-delta", "media2", "");
    let out = lab.plexburst(&["run", "--deep-scan", "--seed", archive2.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lab.state_dir().join("plan.json")).unwrap()).unwrap();
    assert_eq!(stored["plex"]["scan_force"], true);
    assert_eq!(live_tracks_under(&lab, &moved_to), moved_tracks);
    let seed = seed_record(&lab);
    let d = delta(&seed, "Music");
    assert_eq!(d["added"].as_i64(), Some(moved_tracks), "{d:#}");
    assert_eq!(d["newly_analysed"].as_i64(), Some(moved_tracks), "{d:#}");
    assert_eq!(d["sonic"].as_i64(), Some(lab.counts.tracks));
}

/// A seed whose paths are mostly gone from the storage stops before Plex starts, naming the
/// folders and the two ways out; nothing of the seed stays in the data dir.
#[test]
fn a_seed_whose_paths_are_missing_stops_before_plex_and_leaves_the_data_dir_empty() {
    let lab = Lab::new(LabOpts::default());
    let db = home_db(&lab, "home.db");
    // All music but one file gone (the section stays valid for the preflight).
    sh(&format!(
        "cd {}/Music && find . -type f | sort | tail -n +2 | xargs -d '\\n' rm -f",
        lab.path("media").display()
    ));
    // A seed already on the target (`target:`): used where it is, never copied.
    let out = lab.plexburst(&["run", "--seed", &format!("target:{}", db.display())]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(db.exists(), "the user's own file stays");
    let t = text(&out);
    assert!(
        t.contains("sampled paths missing")
            && t.contains("[remap]")
            && t.contains("--allow-missing"),
        "{t}"
    );
    assert_eq!(lab.phase("seed")["status"], "failed");
    assert_eq!(lab.phase("start-plex")["status"], "pending");
    assert!(!lab.db_path().exists(), "the refused seed was removed");
    assert!(lab.server_pid().is_none_or(|p| !pid_alive(p)));
    assert!(seed_record(&lab).is_null());
}

/// A seed whose sections live elsewhere than the config says, without a `[remap]`: exit 2 with
/// the exact `[remap]` line to add.
#[test]
fn a_seed_with_other_folders_and_no_remap_names_the_remap_line() {
    let lab = Lab::new(LabOpts::default());
    let db = home_db(&lab, "home.db");
    std::fs::rename(lab.path("media"), lab.path("media2")).unwrap();
    reseed_config_only(&lab, "media2");
    let out = lab.plexburst(&["run", "--seed", db.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let want = format!(
        "[remap] \"{}/Music\" = \"{}/Music\"",
        lab.path("media").display(),
        lab.path("media2").display()
    );
    assert!(text(&out).contains(&want), "{}\nwanted: {want}", text(&out));
    assert!(!lab.db_path().exists());
}

fn reseed_config_only(lab: &Lab, media: &str) {
    std::fs::write(lab.config_path(), config_on(lab, media)).unwrap();
}

fn page_size(db: &Path) -> u64 {
    let out = run(command("sqlite3").arg(db).arg("PRAGMA page_size"));
    stdout(&out).trim().parse().unwrap()
}

fn root_page(db: &Path, name: &str) -> u64 {
    let out = run(command("sqlite3").arg(db).arg(format!(
        "SELECT rootpage FROM sqlite_master WHERE name='{name}'"
    )));
    stdout(&out).trim().parse().unwrap()
}

/// Damaged seeds: truncated pages and a corrupted index are found by the check, repaired with
/// `.recover` (the original kept), and the run goes on; a file that only looks like a DB cannot
/// be repaired and stops `plan` and `run` with exit 2 before anything starts.
#[test]
fn damaged_seeds_are_repaired_and_an_unrecoverable_one_stops_before_plex() {
    let lab = Lab::new(LabOpts::default());
    let good = home_db(&lab, "home.db");
    let tracks = lab.counts.tracks;

    // A corrupted index: garbage over the root page of the index on media_parts.file.
    let bad_index = lab.path("bad-index.db");
    std::fs::copy(&good, &bad_index).unwrap();
    let ps = page_size(&bad_index);
    let rp = root_page(&bad_index, "index_media_parts_on_file");
    let mut bytes = std::fs::read(&bad_index).unwrap();
    let at = ((rp - 1) * ps) as usize;
    bytes[at..at + 16].copy_from_slice(&[0xff; 16]);
    std::fs::write(&bad_index, &bytes).unwrap();

    let out = lab.plexburst(&[
        "run",
        "--skip-analysis",
        "--seed",
        bad_index.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let seed = seed_record(&lab);
    assert!(
        seed["check"]["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().starts_with("media_parts")),
        "{seed:#}"
    );
    let kept = seed["recovered_from"].as_str().expect("the original kept");
    assert!(Path::new(kept).exists());
    assert_eq!(
        lab.count(
            "SELECT count(*) FROM metadata_items WHERE metadata_type=10 AND deleted_at IS NULL"
        ),
        tracks
    );
    assert_sound(&lab.db_path());

    // Truncated: the file loses its last pages (none of the schema's, which nothing could
    // rebuild from; dbstat says which pages those are).
    std::fs::remove_dir_all(lab.data_dir()).unwrap();
    let truncated = lab.path("truncated.db");
    std::fs::copy(&good, &truncated).unwrap();
    let pages = std::fs::metadata(&truncated).unwrap().len() / ps;
    let schema_top: u64 = stdout(&run(command("sqlite3").arg(&truncated).arg(
        "SELECT max(pageno) FROM dbstat WHERE name IN ('sqlite_schema', 'sqlite_master')",
    )))
    .trim()
    .parse()
    .unwrap();
    let keep_pages = schema_top.max(pages * 8 / 10);
    assert!(
        keep_pages < pages,
        "nothing to cut: {pages} pages, schema up to {schema_top}"
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(keep_pages * ps)
        .unwrap();
    let out = lab.plexburst(&[
        "run",
        "--skip-analysis",
        "--allow-missing",
        "--seed",
        truncated.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let seed = seed_record(&lab);
    assert!(
        !seed["check"]["problems"].as_array().unwrap().is_empty(),
        "{seed:#}"
    );
    assert!(seed["recovered_from"].is_string());
    assert_sound(&lab.db_path());

    // Only the header of a DB: nothing to recover. `plan` says so on this machine.
    std::fs::remove_dir_all(lab.data_dir()).unwrap();
    let junk = lab.path("junk.db");
    let mut j = bytes[..100].to_vec();
    j.extend((0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    std::fs::write(&junk, j).unwrap();
    for cmd in ["plan", "run"] {
        let out = lab.plexburst(&[cmd, "--seed", junk.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {}", text(&out));
        assert!(text(&out).contains("cannot be repaired"), "{}", text(&out));
    }
    assert!(!lab.data_dir().exists() || !lab.db_path().exists());
    // Not a DB at all.
    let zip = lab.path("home.zip");
    std::fs::write(&zip, b"PK\x03\x04 not a plex db").unwrap();
    let out = lab.plexburst(&["plan", "--seed", zip.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("neither a plexburst archive"),
        "{}",
        text(&out)
    );
}

/// The real PMS 1.32 DB (ICU index and FTS tables) as a seed: the check reads the ICU table
/// without touching its index, the counts are the fixture's, and a remap changes exactly the rows
/// an independent count finds.
#[test]
fn the_real_library_db_is_checked_counted_and_remapped_row_for_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("library.db");
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/real-pms-1.32-library.db"
        ),
        &db,
    )
    .unwrap();
    let dbs = db.to_str().unwrap();
    let local = Local::new();
    let check = plexburst::seed::check(&local, dbs).unwrap();
    assert!(check.ok(), "{check:?}");
    assert!(
        check.read_checked >= 2,
        "metadata_items and tags have ICU objects: {check:?}"
    );
    assert!(check.quick_checked > 20, "{check:?}");

    let counts = plexburst::seed::counts(&local, dbs).unwrap();
    let by = |n: &str| counts.iter().find(|s| s.name == n).unwrap().clone();
    assert_eq!(by("Music").tracks, 9);
    assert_eq!(by("Music").locations, vec!["/data/Music".to_string()]);
    assert_eq!(by("Movies").items, 5);
    assert_eq!(by("TV Shows").items, 38);
    assert_eq!(by("Photos").items, 9);

    let q = |sql: &str| -> i64 {
        let out = run(command("sqlite3").arg("-readonly").arg(&db).arg(sql));
        stdout(&out).trim().parse().unwrap()
    };
    let want_parts = q("SELECT count(*) FROM media_parts WHERE file LIKE '/data/Music/%'");
    let want_locs = q("SELECT count(*) FROM section_locations WHERE root_path = '/data/Music'");
    let untouched = q("SELECT count(*) FROM media_parts WHERE file NOT LIKE '/data/Music/%'");
    assert!(want_parts >= 9);
    let rules = vec![
        ("/data/Music".to_string(), "/srv/media/Musique".to_string()),
        // A longer rule inside the first wins for its rows, and only its rows.
        (
            "/data/Music/System of a Down - Aerials (2002)".to_string(),
            "/srv/soad".to_string(),
        ),
    ];
    let mut rules = rules;
    rules.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
    let soad = q(
        "SELECT count(*) FROM media_parts WHERE file LIKE '/data/Music/System of a Down - Aerials (2002)/%'",
    );
    let backup = dir.path().join("before.db");
    let changed =
        plexburst::seed::remap(&local, "sqlite3", dbs, backup.to_str().unwrap(), &rules).unwrap();
    assert_eq!(changed["media_parts.file"], want_parts, "{changed:?}");
    assert_eq!(changed["section_locations.root_path"], want_locs);
    assert_eq!(
        q("SELECT count(*) FROM media_parts WHERE file LIKE '/srv/media/Musique/%'"),
        want_parts - soad
    );
    assert_eq!(
        q("SELECT count(*) FROM media_parts WHERE file LIKE '/srv/soad/%'"),
        soad
    );
    assert_eq!(
        q("SELECT count(*) FROM media_parts WHERE file LIKE '/data/Music/%'"),
        0
    );
    assert_eq!(
        q("SELECT count(*) FROM media_parts WHERE file NOT LIKE '/srv/%'"),
        untouched
    );
    // The backup is the DB as it was.
    let out = run(command("sqlite3")
        .arg(&backup)
        .arg("SELECT count(*) FROM media_parts WHERE file LIKE '/data/Music/%'"));
    assert_eq!(stdout(&out).trim().parse::<i64>().unwrap(), want_parts);
}

/// On the docker runtime the remap is written by the image's own `Plex SQLite` (a one-off
/// container on the data dir), never by the target's stock sqlite3.
#[test]
fn a_docker_seeded_run_remaps_through_the_images_plex_sqlite() {
    let image = emulator_image();
    let lab = Lab::new(LabOpts {
        docker_image: Some(image.into()),
        ..Default::default()
    });
    // The container runs the server as uid 1000: it must reach the media and its data dir.
    run(command("chmod").args(["755", lab.dir.path().to_str().unwrap()]));
    let db = home_db(&lab, "home.db");
    std::fs::rename(lab.path("media"), lab.path("media2")).unwrap();
    std::fs::write(
        lab.config_path(),
        format!(
            "{}\n[remap]\n\"{}\" = \"{}\"\n",
            config_on(&lab, "media2"),
            lab.path("media").display(),
            lab.path("media2").display()
        ),
    )
    .unwrap();
    let out = lab.plexburst(&["run", "--skip-analysis", "--seed", db.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let seed = seed_record(&lab);
    let parts = lab.counts.tracks + lab.counts.movies + lab.counts.photos;
    assert_eq!(
        seed["remap"]["media_parts.file"].as_i64(),
        Some(parts),
        "{seed:#}"
    );
    let journal = std::fs::read_to_string(lab.journal()).unwrap();
    let remap_line = journal
        .lines()
        .find(|l| l.contains("pre-remap"))
        .expect("the remap in the journal");
    assert!(
        remap_line.contains("--entrypoint")
            && remap_line.contains("Plex SQLite")
            && remap_line.contains(image),
        "{remap_line}"
    );
    assert_eq!(
        lab.count(&format!(
            "SELECT count(*) FROM media_parts WHERE file LIKE '{}/%' AND deleted_at IS NULL",
            lab.path("media2").display()
        )),
        parts
    );
}
