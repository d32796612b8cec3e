//! Analysis: Sonic/loudness/thumbnails when asked or `asap`, gated by prefs, claim and Plex Pass;
//! the `Plex Media Scanner` child burns CPU and dies with the server; background tasks left on run.

use crate::harness::*;

/// Keep scheduled tasks out of the way: an empty butler window (start == end).
const NO_WINDOW: &str = "ButlerStartHour=0&ButlerEndHour=0";

fn sonic(e: &Emu) -> i64 {
    e.count("SELECT count(*) FROM metadata_items WHERE metadata_type=10 AND deleted_at IS NULL AND json_extract(extra_data, '$.\"ms:musicAnalysisVersion\"')='1'")
}

fn claimed(args: &[&str]) -> Emu {
    let mut a = vec!["--claim", "claim-test", "--claim-delay", "100ms"];
    a.extend_from_slice(args);
    let mut e = Emu::start(&a);
    e.wait_token();
    e.set_prefs(NO_WINDOW);
    e
}

#[test]
fn sonic_runs_on_demand_in_a_scanner_child_that_burns_cpu() {
    let lib = gen_library(&["--tracks", "40", "--albums", "4"]);
    let e = claimed(&["--analysis-rate", "25", "--analysis-cost", "30ms"]);
    let m = e.add_section("Music", "artist", &lib.path("Music"));
    e.scan_all();
    assert_eq!(
        sonic(&e),
        0,
        "analysis must not run unasked while MusicAnalysisBehavior=scheduled"
    );
    e.ok("POST", "/butler/MusicAnalysis");
    let server = e.pid();
    let mut first: Option<(u32, u64)> = None;
    wait_until(
        20,
        "a Plex Media Scanner child of the server using CPU",
        || {
            let Some((pid, _, ticks)) = scanner_processes()
                .into_iter()
                .find(|(_, ppid, _)| *ppid == server)
            else {
                return false;
            };
            match first {
                None => {
                    first = Some((pid, ticks));
                    false
                }
                Some((p, t)) => p == pid && ticks > t,
            }
        },
    );
    let acts = e.get("/activities");
    assert_eq!(
        acts["MediaContainer"]["Activity"][0]["type"],
        "media.generate.music.analysis"
    );
    wait_until(30, "every track analysed", || sonic(&e) == 40);
    let api = e.get(&format!(
        "/library/sections/{m}/all?type=10&musicAnalysisVersion=1&X-Plex-Container-Size=0"
    ));
    assert_eq!(api["MediaContainer"]["totalSize"], 40);
    e.wait_idle(10);
    assert!(
        scanner_processes()
            .iter()
            .all(|(_, ppid, _)| *ppid != server),
        "child must exit when done"
    );
}

#[test]
fn sonic_needs_a_claimed_plex_pass_server_and_a_behaviour_other_than_never() {
    let lib = gen_library(&["--tracks", "5"]);
    let cases: [(Emu, &str); 3] = [
        (Emu::start(&[]), "unclaimed"),
        (claimed(&["--plex-pass", "false"]), "no Plex Pass"),
        (claimed(&[]), "MusicAnalysisBehavior=never"),
    ];
    for (e, why) in &cases {
        e.set_prefs(NO_WINDOW);
        if why.starts_with("Music") {
            e.set_prefs("MusicAnalysisBehavior=never");
        }
        e.add_section("Music", "artist", &lib.path("Music"));
        e.scan_all();
        e.ok("POST", "/butler/MusicAnalysis");
        e.ok("PUT", "/library/sections/1/analyze");
        e.wait_idle(30);
        assert_eq!(sonic(e), 0, "{why}");
    }
    // Control: the same steps on a claimed Plex Pass server do analyse.
    let e = claimed(&[]);
    e.add_section("Music", "artist", &lib.path("Music"));
    e.scan_all();
    e.ok("PUT", "/library/sections/1/analyze");
    wait_until(30, "analysed", || sonic(&e) == 5);
}

#[test]
fn asap_behaviours_analyse_right_after_a_scan() {
    let lib = gen_library(&["--tracks", "10", "--albums", "2"]);
    let e = claimed(&[]);
    e.set_prefs("MusicAnalysisBehavior=asap&LoudnessAnalysisBehavior=asap");
    e.add_section("Music", "artist", &lib.path("Music"));
    e.ok("GET", "/library/sections/all/refresh");
    wait_until(60, "sonic and loudness after the scan", || {
        sonic(&e) == 10 && e.count("SELECT count(*) FROM media_streams WHERE stream_type_id=2 AND extra_data LIKE '%\"ld:gain\"%'") == 10
    });
    assert_eq!(
        e.count("SELECT count(*) FROM metadata_items WHERE metadata_type=9 AND json_extract(extra_data, '$.\"ld:loudnessAnalysisVersion\"')='1'"),
        2
    );
}

#[test]
fn photo_analysis_writes_thumbnails_and_analysis_version() {
    let lib = gen_library(&["--photos", "6"]);
    let e = Emu::start(&["--thumb-rate", "50"]);
    e.set_prefs(NO_WINDOW);
    let p = e.add_section("Photos", "photo", &lib.path("Photos"));
    e.scan_all();
    let thumbed = || e.count("SELECT count(*) FROM media_items WHERE media_analysis_version > 0");
    assert_eq!(thumbed(), 0);
    e.ok("PUT", &format!("/library/sections/{p}/analyze"));
    wait_until(30, "photos thumbnailed", || thumbed() == 6);
    assert_eq!(
        e.count("SELECT min(media_analysis_version) FROM media_items"),
        5
    );
    let thumbs = crate::genlib::walk(&e.app_dir().join("Media/localhost"))
        .into_iter()
        .filter(|f| f.ends_with("Contents/Thumbnails/thumb1.jpg"))
        .count();
    assert_eq!(thumbs, 6);
}

#[test]
fn background_tasks_left_on_run_after_a_scan_and_disabling_them_is_observable() {
    let lib = gen_library(&[
        "--shows",
        "2",
        "--seasons",
        "2",
        "--episodes",
        "6",
        "--movies",
        "2",
    ]);
    let e = Emu::start(&["--analysis-cost", "150ms"]);
    e.set_prefs(NO_WINDOW);
    e.add_section("TV", "show", &lib.path("TV Shows"));
    e.add_section("Movies", "movie", &lib.path("Movies"));
    e.ok("GET", "/library/sections/all/refresh");
    let mut kinds = std::collections::BTreeSet::new();
    wait_until(60, "marker tasks ran", || {
        if let Some(a) = e.get("/activities")["MediaContainer"]["Activity"].as_array() {
            kinds.extend(a.iter().map(|x| x["type"].as_str().unwrap().to_string()));
        }
        e.idle() && e.count("SELECT count(*) FROM taggings WHERE text='credits'") == 8
    });
    assert!(kinds.contains("media.generate.intros"), "{kinds:?}");
    assert!(kinds.contains("media.generate.credits"), "{kinds:?}");
    assert_eq!(
        e.count("SELECT count(*) FROM taggings WHERE text='intro'"),
        6
    );
    // Disabled, they no longer touch new media.
    e.set_prefs("GenerateIntroMarkerBehavior=never&GenerateCreditsMarkerBehavior=never");
    let ep = crate::genlib::walk(&lib.path("TV Shows"))
        .into_iter()
        .next()
        .unwrap();
    std::fs::copy(&ep, ep.with_file_name("Extra - S01E77.mkv")).unwrap();
    e.scan_all();
    assert_eq!(
        e.count("SELECT count(*) FROM metadata_items WHERE metadata_type=4 AND deleted_at IS NULL"),
        7
    );
    assert_eq!(
        e.count("SELECT count(*) FROM taggings WHERE text='intro'"),
        6
    );
    assert_eq!(
        e.count("SELECT count(*) FROM taggings WHERE text='credits'"),
        8
    );
}

#[test]
fn scheduled_tasks_run_after_a_scan_inside_the_butler_window() {
    let lib = gen_library(&["--movies", "3"]);
    let e = Emu::start(&[]);
    let hour = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600
        % 24;
    e.set_prefs(&format!(
        "ButlerStartHour={hour}&ButlerEndHour={}",
        (hour + 1) % 24
    ));
    e.add_section("Movies", "movie", &lib.path("Movies"));
    e.ok("GET", "/library/sections/all/refresh");
    // Chapter thumbnails (scheduled by default) and deep analysis (ButlerTaskDeepMediaAnalysis on).
    wait_until(60, "scheduled tasks done", || {
        e.idle()
            && e.count("SELECT count(*) FROM media_parts WHERE json_extract(extra_data, '$.\"pv:chapterThumbsVersion\"')='1'") == 3
            && e.count("SELECT count(*) FROM media_parts WHERE json_extract(extra_data, '$.deepAnalysisVersion')='2'") == 3
    });
    let chapters = crate::genlib::walk(&e.app_dir().join("Media/localhost"))
        .into_iter()
        .filter(|f| f.ends_with("chapter1.jpg"))
        .count();
    assert_eq!(chapters, 3);
}

#[test]
fn killing_the_server_kills_its_scanner_child() {
    let lib = gen_library(&["--tracks", "30"]);
    let mut e = claimed(&["--analysis-rate", "2"]);
    e.add_section("Music", "artist", &lib.path("Music"));
    e.scan_all();
    e.ok("POST", "/butler/MusicAnalysis");
    let server = e.pid();
    let mut child = 0;
    wait_until(20, "scanner child", || {
        child = scanner_processes()
            .into_iter()
            .find(|(_, p, _)| *p == server)
            .map(|x| x.0)
            .unwrap_or(0);
        child != 0
    });
    e.signal("KILL");
    e.wait_exit(10);
    wait_until(10, "the orphaned scanner exits", || stat(child).is_none());
}

#[test]
fn cancelling_an_analysis_kills_the_child_and_keeps_what_was_done() {
    let lib = gen_library(&["--tracks", "60"]);
    let e = claimed(&["--analysis-rate", "10"]);
    e.add_section("Music", "artist", &lib.path("Music"));
    e.scan_all();
    e.ok("POST", "/butler/MusicAnalysis");
    let server = e.pid();
    let mut child = 0;
    wait_until(20, "scanner child and first results", || {
        child = scanner_processes()
            .into_iter()
            .find(|(_, p, _)| *p == server)
            .map(|x| x.0)
            .unwrap_or(0);
        child != 0 && sonic(&e) > 0
    });
    let timeline = e.get("/library/sections/1/timeline");
    assert_eq!(timeline["MediaContainer"]["updateQueueSize"], 1);
    let uuid = e.get("/activities")["MediaContainer"]["Activity"][0]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    e.ok("DELETE", &format!("/activities/{uuid}"));
    wait_until(10, "child killed", || stat(child).is_none());
    e.wait_idle(10);
    let done = sonic(&e);
    assert!(done > 0 && done < 60, "{done}");
    // A new run continues with the rest; stopping it through the butler works too.
    e.ok("POST", "/butler/MusicAnalysis");
    wait_until(20, "second run under way", || sonic(&e) > done);
    e.ok("DELETE", "/butler/MusicAnalysis");
    e.wait_idle(10);
    assert!(sonic(&e) < 60);
}

/// plexburst's incremental sampler finds changed rows by `changed_at`; real Plex gives every write
/// the next value of one database-wide stamp (the real fixture: distinct, increasing per row).
#[test]
fn every_scanned_or_analysed_row_gets_a_fresh_change_stamp() {
    let lib = gen_library(&["--tracks", "12", "--albums", "3"]);
    let e = claimed(&["--analysis-cost", "0ms"]);
    e.add_section("Music", "artist", &lib.path("Music"));
    e.scan_all();
    let rows = e.count("SELECT count(*) FROM metadata_items");
    assert!(rows >= 12 + 3, "scan wrote {rows} rows");
    assert_eq!(
        e.count("SELECT count(DISTINCT changed_at) FROM metadata_items WHERE changed_at > 0"),
        rows,
        "every row needs its own non-zero stamp"
    );
    let before = e.count("SELECT max(changed_at) FROM metadata_items");
    e.set_prefs("MusicAnalysisBehavior=scheduled");
    e.ok("POST", "/butler/MusicAnalysis");
    wait_until(30, "every track analysed", || sonic(&e) == 12);
    assert_eq!(
        e.count(&format!(
            "SELECT count(*) FROM metadata_items WHERE metadata_type=10 AND changed_at > {before}"
        )),
        12,
        "each analysed track must be stamped above the pre-analysis maximum"
    );
}

/// The analysis worker threads (`/proc/PID/task/*/comm` = `analysis-worker`) of the server's
/// scanner child, if it has one.
fn scanner_workers(server: u32) -> Option<usize> {
    let (pid, _, _) = scanner_processes()
        .into_iter()
        .find(|(_, ppid, _)| *ppid == server)?;
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    Some(
        tasks
            .flatten()
            .filter(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.trim_end() == "analysis-worker")
            })
            .count(),
    )
}

/// Start Sonic on 40 tracks and wait for the scanner child to show `workers` workers at work.
fn sonic_with_workers(threads_pref: Option<&str>, workers: usize) {
    let lib = gen_library(&["--tracks", "40", "--albums", "4"]);
    let e = claimed(&["--analysis-cost", "150ms"]);
    if let Some(v) = threads_pref {
        e.set_prefs(&format!("LongRunningJobThreads={v}"));
    }
    e.add_section("Music", "artist", &lib.path("Music"));
    e.scan_all();
    e.ok("POST", "/butler/MusicAnalysis");
    let server = e.pid();
    wait_until(
        20,
        &format!("a scanner child with {workers} analysis workers"),
        || scanner_workers(server) == Some(workers),
    );
    wait_until(60, "every track analysed", || sonic(&e) == 40);
}

#[test]
fn long_running_job_threads_sets_how_many_items_are_analysed_at_once() {
    sonic_with_workers(Some("3"), 3);
}

#[test]
fn long_running_job_threads_zero_means_half_the_cores() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    sonic_with_workers(None, (cores / 2).max(1));
}
