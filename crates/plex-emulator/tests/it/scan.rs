//! Scans: hierarchy rows, absolute part paths, progress and `refreshing`, rescan
//! update/add/soft-delete, unreadable files, trash, path scans, cancel, concurrent readers.

use std::path::{Path, PathBuf};

use crate::harness::*;

const LIVE: &str = "deleted_at IS NULL";

fn tracks(e: &Emu) -> i64 {
    e.count(&format!(
        "SELECT count(*) FROM metadata_items WHERE metadata_type=10 AND {LIVE}"
    ))
}

fn deleted_tracks(e: &Emu) -> i64 {
    e.count("SELECT count(*) FROM metadata_items WHERE metadata_type=10 AND deleted_at IS NOT NULL")
}

fn mkfifo(p: &Path) {
    assert!(command("mkfifo").arg(p).status().unwrap().success());
}

fn album_dirs(lib: &Library) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for a in std::fs::read_dir(lib.path("Music")).unwrap().flatten() {
        for b in std::fs::read_dir(a.path()).unwrap().flatten() {
            out.push(b.path());
        }
    }
    out.sort();
    out
}

#[test]
fn scan_builds_every_kind_with_media_rows_and_absolute_paths() {
    let lib = gen_library(&[
        "--artists",
        "2",
        "--albums",
        "3",
        "--tracks",
        "9",
        "--movies",
        "2",
        "--shows",
        "2",
        "--seasons",
        "3",
        "--episodes",
        "7",
        "--photos",
        "4",
    ]);
    let e = Emu::start(&[]);
    let m = e.add_section("Music", "artist", &lib.path("Music"));
    let mv = e.add_section("Movies", "movie", &lib.path("Movies"));
    let tv = e.add_section("TV", "show", &lib.path("TV Shows"));
    let ph = e.add_section("Photos", "photo", &lib.path("Photos"));
    e.scan_all();
    let n = |sec: i64, t: i64| {
        e.count(&format!("SELECT count(*) FROM metadata_items WHERE library_section_id={sec} AND metadata_type={t} AND {LIVE}"))
    };
    assert_eq!((n(m, 8), n(m, 9), n(m, 10)), (2, 3, 9));
    assert_eq!(n(mv, 1), 2);
    assert_eq!((n(tv, 2), n(tv, 3), n(tv, 4)), (2, 3, 7));
    assert_eq!(n(ph, 13), 4);
    // Every leaf has a media item and a part whose file is the absolute path of a real file.
    let c = rusqlite::Connection::open(e.db_path()).unwrap();
    let mut q = c
        .prepare("SELECT mp.file FROM metadata_items md JOIN media_items mi ON mi.metadata_item_id=md.id JOIN media_parts mp ON mp.media_item_id=mi.id WHERE md.metadata_type IN (1,4,10,13)")
        .unwrap();
    let files: Vec<String> = q
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(files.len(), 9 + 2 + 7 + 4);
    for f in &files {
        assert!(Path::new(f).is_absolute() && Path::new(f).is_file(), "{f}");
    }
    // Track -> album -> artist, and a directories row per folder.
    assert_eq!(
        e.count("SELECT count(*) FROM metadata_items t JOIN metadata_items al ON al.id=t.parent_id JOIN metadata_items ar ON ar.id=al.parent_id WHERE t.metadata_type=10 AND al.metadata_type=9 AND ar.metadata_type=8"),
        9
    );
    assert!(
        e.count(&format!(
            "SELECT count(*) FROM directories WHERE library_section_id={m}"
        )) >= 1 + 2 + 3
    );
    assert_eq!(
        e.count("SELECT count(*) FROM media_parts WHERE directory_id IS NULL"),
        0
    );
    // The API pages with X-Plex-Container-Size and reports totalSize.
    let page = e.get(&format!(
        "/library/sections/{m}/all?type=10&X-Plex-Container-Start=0&X-Plex-Container-Size=4"
    ));
    assert_eq!(page["MediaContainer"]["totalSize"], 9);
    assert_eq!(page["MediaContainer"]["size"], 4);
    assert!(
        page["MediaContainer"]["Track"][0]["Media"][0]["Part"][0]["file"]
            .as_str()
            .unwrap()
            .ends_with(".flac")
    );
    let sec = e.get(&format!("/library/sections/{m}"));
    assert!(
        sec["MediaContainer"]["Directory"][0]["scannedAt"]
            .as_i64()
            .unwrap()
            > 0
    );
}

#[test]
fn scan_reports_progress_and_refreshing_and_db_stays_readable() {
    let lib = gen_library(&["--tracks", "150", "--albums", "10"]);
    let e = Emu::start(&["--scan-rate", "100"]);
    let m = e.add_section("Music", "artist", &lib.path("Music"));
    e.ok("GET", &format!("/library/sections/{m}/refresh"));
    let mut seen_progress = Vec::new();
    let mut refreshing_seen = false;
    let mut counts = Vec::new();
    let mut scanner_seen = false;
    let server = e.pid();
    wait_until(30, "scan finishes", || {
        scanner_seen |= scanner_processes()
            .iter()
            .any(|(_, ppid, _)| *ppid == server);
        let acts = e.get("/activities");
        if let Some(a) = acts["MediaContainer"]["Activity"]
            .as_array()
            .and_then(|a| a.first().cloned())
        {
            assert_eq!(a["type"], "library.update.section");
            assert_eq!(a["Context"]["librarySectionID"], m.to_string().as_str());
            seen_progress.push(a["progress"].as_i64().unwrap());
        }
        refreshing_seen |= e.get(&format!("/library/sections/{m}"))["MediaContainer"]["Directory"]
            [0]["refreshing"]
            == true;
        // A second connection reads while the scan writes (WAL).
        counts.push(tracks(&e));
        e.idle() && tracks(&e) == 150
    });
    assert!(refreshing_seen);
    assert!(scanner_seen, "files are read by a Plex Media Scanner child");
    assert!(
        seen_progress.windows(2).all(|w| w[0] <= w[1]),
        "{seen_progress:?}"
    );
    assert!(
        seen_progress.iter().any(|p| *p > 0 && *p < 100),
        "{seen_progress:?}"
    );
    assert!(
        counts.iter().any(|c| *c > 0 && *c < 150),
        "no intermediate count visible: {counts:?}"
    );
    assert_eq!(
        e.get(&format!("/library/sections/{m}"))["MediaContainer"]["Directory"][0]["refreshing"],
        false
    );
}

#[test]
fn rescan_updates_adds_and_soft_deletes_and_trash_follows_auto_empty_trash() {
    let lib = gen_library(&["--tracks", "12", "--albums", "3", "--artists", "1"]);
    let e = Emu::start(&[]);
    e.set_prefs("autoEmptyTrash=0");
    let m = e.add_section("Music", "artist", &lib.path("Music"));
    e.scan_all();
    assert_eq!(tracks(&e), 12);
    let albums = album_dirs(&lib);
    let files: Vec<PathBuf> = std::fs::read_dir(&albums[0])
        .unwrap()
        .flatten()
        .map(|d| d.path())
        .collect();
    // Update: grow a file. Add: a new file. Delete: remove one.
    let grown = &files[0];
    let mut data = std::fs::read(grown).unwrap();
    data.extend_from_slice(&[0u8; 1000]);
    std::fs::write(grown, &data).unwrap();
    std::fs::copy(&files[1], albums[0].join("99 - Brand New.flac")).unwrap();
    std::fs::remove_file(&files[2]).unwrap();
    e.scan_all();
    assert_eq!(tracks(&e), 12);
    assert_eq!(deleted_tracks(&e), 1);
    let gsize = e.count(&format!(
        "SELECT size FROM media_parts WHERE file='{}'",
        grown.display().to_string().replace('\'', "''")
    ));
    assert_eq!(gsize, data.len() as i64);
    assert_eq!(
        e.count(&format!(
            "SELECT count(*) FROM media_parts WHERE file LIKE '%Brand New.flac' AND {LIVE}"
        )),
        1
    );
    assert_eq!(
        e.count("SELECT count(*) FROM media_parts WHERE deleted_at IS NOT NULL"),
        1
    );
    assert_eq!(
        e.count("SELECT count(*) FROM media_items WHERE deleted_at IS NOT NULL"),
        1
    );
    // A file that comes back is restored, not duplicated.
    std::fs::write(&files[2], std::fs::read(&files[1]).unwrap()).unwrap();
    e.scan_all();
    assert_eq!((tracks(&e), deleted_tracks(&e)), (13, 0));
    // Empty trash on demand removes the rows of deleted items only.
    std::fs::remove_file(&files[2]).unwrap();
    e.scan_all();
    assert_eq!(deleted_tracks(&e), 1);
    e.ok("PUT", &format!("/library/sections/{m}/emptyTrash"));
    wait_until(10, "trash emptied", || deleted_tracks(&e) == 0);
    assert_eq!(tracks(&e), 12);
    // With autoEmptyTrash on, a scan empties the trash itself.
    e.set_prefs("autoEmptyTrash=1");
    std::fs::remove_file(&files[3]).unwrap();
    e.scan_all();
    assert_eq!((tracks(&e), deleted_tracks(&e)), (11, 0));
    assert_eq!(
        e.count("SELECT count(*) FROM media_parts WHERE deleted_at IS NOT NULL"),
        0
    );
}

#[test]
fn directory_that_lists_but_cannot_be_read_marks_its_items_deleted() {
    let lib = gen_library(&["--tracks", "12", "--albums", "3", "--artists", "1"]);
    let e = Emu::start(&[]);
    e.set_prefs("autoEmptyTrash=0");
    e.add_section("Music", "artist", &lib.path("Music"));
    e.scan_all();
    // As root, chmod cannot stop a read; a FIFO with the same name lists like the file but
    // delivers no bytes, as a FUSE mount whose backend is gone lists from its dir cache.
    let album = &album_dirs(&lib)[1];
    let names: Vec<PathBuf> = std::fs::read_dir(album)
        .unwrap()
        .flatten()
        .map(|d| d.path())
        .collect();
    for p in &names {
        std::fs::remove_file(p).unwrap();
        mkfifo(p);
    }
    e.scan_all();
    assert_eq!(deleted_tracks(&e), names.len() as i64);
    assert_eq!(tracks(&e), 12 - names.len() as i64);
    // The album itself has no live track left, so it is in the trash too.
    assert_eq!(
        e.count(
            "SELECT count(*) FROM metadata_items WHERE metadata_type=9 AND deleted_at IS NOT NULL"
        ),
        1
    );
}

#[test]
fn unreadable_knob_simulates_a_degraded_mount() {
    let lib = gen_library(&["--tracks", "8", "--albums", "2", "--artists", "1"]);
    let mut e = Emu::start(&[]);
    e.set_prefs("autoEmptyTrash=0");
    e.add_section("Music", "artist", &lib.path("Music"));
    e.scan_all();
    assert!(e.stop().success());
    let album = album_dirs(&lib)[0].clone();
    let e = Emu::start_in(&e.data, &["--unreadable", album.to_str().unwrap()]);
    e.scan_all();
    assert_eq!((tracks(&e), deleted_tracks(&e)), (4, 4));
}

#[test]
fn path_scan_only_touches_that_path() {
    let lib = gen_library(&["--tracks", "8", "--albums", "2", "--artists", "1"]);
    let e = Emu::start(&[]);
    e.set_prefs("autoEmptyTrash=0");
    let m = e.add_section("Music", "artist", &lib.path("Music"));
    e.scan_all();
    let albums = album_dirs(&lib);
    let first: Vec<PathBuf> = std::fs::read_dir(&albums[0])
        .unwrap()
        .flatten()
        .map(|d| d.path())
        .collect();
    let second: Vec<PathBuf> = std::fs::read_dir(&albums[1])
        .unwrap()
        .flatten()
        .map(|d| d.path())
        .collect();
    std::fs::remove_file(&first[0]).unwrap();
    std::fs::remove_file(&second[0]).unwrap();
    e.ok(
        "GET",
        &format!(
            "/library/sections/{m}/refresh?path={}",
            enc(albums[1].to_str().unwrap())
        ),
    );
    e.wait_idle(30);
    assert_eq!(deleted_tracks(&e), 1);
    let gone = e.count(&format!(
        "SELECT count(*) FROM media_parts WHERE deleted_at IS NOT NULL AND file='{}'",
        second[0].display().to_string().replace('\'', "''")
    ));
    assert_eq!(gone, 1);
}

#[test]
fn refresh_can_be_cancelled() {
    let lib = gen_library(&["--tracks", "400", "--albums", "20"]);
    let e = Emu::start(&["--scan-rate", "50"]);
    let m = e.add_section("Music", "artist", &lib.path("Music"));
    e.ok("POST", &format!("/library/sections/{m}/refresh?force=1"));
    wait_until(20, "some tracks scanned", || tracks(&e) > 0);
    e.ok("DELETE", "/library/sections/all/refresh");
    e.wait_idle(10);
    let n = tracks(&e);
    assert!(n > 0 && n < 400, "{n}");
    // Cancelling through the activity works too.
    e.ok("GET", &format!("/library/sections/{m}/refresh"));
    let mut uuid = None;
    wait_until(10, "scan activity", || {
        uuid = e.get("/activities")["MediaContainer"]["Activity"][0]["uuid"]
            .as_str()
            .map(str::to_string);
        uuid.is_some()
    });
    e.ok("DELETE", &format!("/activities/{}", uuid.unwrap()));
    e.wait_idle(10);
    assert!(tracks(&e) < 400);
}

#[test]
fn tricky_names_and_a_5000_file_directory_scan_completely() {
    let lib = gen_library(&["--tracks", "5", "--photos", "3", "--tricky-names"]);
    let e = Emu::start(&[]);
    e.add_section("Music", "artist", &lib.path("Music"));
    e.add_section("Photos", "photo", &lib.path("Photos"));
    e.scan_all();
    assert_eq!(tracks(&e), lib.counts["tracks"].as_i64().unwrap());
    assert_eq!(
        e.count(&format!(
            "SELECT count(*) FROM metadata_items WHERE metadata_type=13 AND {LIVE}"
        )),
        lib.counts["photos"].as_i64().unwrap()
    );
    assert_eq!(
        e.count("SELECT count(*) FROM metadata_items WHERE metadata_type=8 AND title='Sigur Rós'"),
        1
    );
    assert_eq!(
        e.count(
            "SELECT count(*) FROM metadata_items WHERE metadata_type=8 AND title='Guns N'' Roses'"
        ),
        1
    );
    assert_eq!(
        e.count("SELECT count(*) FROM media_parts WHERE file LIKE '%\"Quoted\"%'"),
        3
    );
    // Names survive the XML rendering too.
    let xml = e.req("GET", "/library/sections/1/all?type=8", false).body;
    assert!(
        xml.contains("Guns N&apos; Roses") && xml.contains("The &quot;Quoted&quot; Band"),
        "{xml}"
    );
}

#[test]
fn a_root_that_cannot_be_listed_keeps_its_items_but_an_empty_root_trashes_them() {
    let lib = gen_library(&["--tracks", "6"]);
    let e = Emu::start(&[]);
    e.set_prefs("autoEmptyTrash=0");
    e.add_section("Music", "artist", &lib.path("Music"));
    e.scan_all();
    // Mount point gone: the location is unavailable and nothing is deleted.
    std::fs::rename(lib.path("Music"), lib.path("Music.away")).unwrap();
    e.scan_all();
    assert_eq!((tracks(&e), deleted_tracks(&e)), (6, 0));
    assert_eq!(e.count("SELECT available FROM section_locations"), 0);
    // An empty directory where the mount was (a mount that died under its mount point) lists
    // fine, so every item goes to the trash.
    std::fs::create_dir(lib.path("Music")).unwrap();
    e.scan_all();
    assert_eq!((tracks(&e), deleted_tracks(&e)), (0, 6));
    assert_eq!(e.count("SELECT available FROM section_locations"), 1);
}

#[test]
fn repeated_refreshes_coalesce_into_one_queued_scan() {
    let lib = gen_library(&["--tracks", "100"]);
    let e = Emu::start(&["--scan-rate", "100"]);
    let m = e.add_section("Music", "artist", &lib.path("Music"));
    for _ in 0..4 {
        e.ok("GET", &format!("/library/sections/{m}/refresh"));
    }
    let q = e.get(&format!("/library/sections/{m}/timeline"))["MediaContainer"]["updateQueueSize"]
        .as_i64()
        .unwrap();
    assert!(
        (1..=2).contains(&q),
        "one running and at most one waiting, got {q}"
    );
    e.wait_idle(30);
    assert_eq!(tracks(&e), 100);
}
