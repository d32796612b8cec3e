//! Faults: crash and stall during scan and analysis, slow API, refused connections, start-up window.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use crate::harness::*;

fn tracks(e: &Emu) -> i64 {
    e.count("SELECT count(*) FROM metadata_items WHERE metadata_type=10 AND deleted_at IS NULL")
}

fn sonic(e: &Emu) -> i64 {
    e.count("SELECT count(*) FROM metadata_items WHERE extra_data LIKE '%ms:musicAnalysisVersion%'")
}

/// Assert a value does not move for `ms` (the observable meaning of a stall).
fn holds_still<T: PartialEq + std::fmt::Debug>(ms: u64, mut f: impl FnMut() -> T) -> T {
    let first = f();
    let end = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < end {
        assert_eq!(f(), first, "value moved during a stall");
        std::thread::sleep(Duration::from_millis(100));
    }
    first
}

#[test]
fn crash_during_scan_aborts_without_checkpoint_and_fires_once() {
    let lib = gen_library(&["--tracks", "30"]);
    let mut e = Emu::start(&["--fault", "crash:scan:10"]);
    e.add_section("Music", "artist", &lib.path("Music"));
    e.ok("GET", "/library/sections/all/refresh");
    let st = e.wait_exit(30);
    assert_eq!(st.signal(), Some(libc::SIGABRT), "{st:?}");
    let wal = e.db_path().with_extension("db-wal");
    assert!(
        std::fs::metadata(&wal)
            .map(|m| m.len() > 0)
            .unwrap_or(false),
        "WAL must be left behind"
    );
    assert_eq!(tracks(&e), 10);
    let e2 = Emu::start_in(&e.data, &["--fault", "crash:scan:10"]);
    e2.scan_all();
    assert_eq!(tracks(&e2), 30);
}

#[test]
fn stall_during_scan_keeps_the_activity_and_stops_progress() {
    let lib = gen_library(&["--tracks", "30"]);
    let mut e = Emu::start(&["--fault", "stall:scan:7"]);
    let m = e.add_section("Music", "artist", &lib.path("Music"));
    e.ok("GET", "/library/sections/all/refresh");
    wait_until(20, "7 tracks then the stall", || tracks(&e) == 7);
    let (n, progress, refreshing) = holds_still(1500, || {
        let a = e.get("/activities");
        (tracks(&e), a["MediaContainer"]["Activity"][0]["progress"].clone(), e.get(&format!("/library/sections/{m}"))["MediaContainer"]["Directory"][0]["refreshing"].clone())
    });
    assert_eq!(n, 7);
    assert!(progress.is_i64(), "activity must stay");
    assert_eq!(refreshing, true);
    assert!(
        e.stop().success(),
        "SIGTERM still stops a stalled server cleanly"
    );
}

#[test]
fn crash_during_analysis_aborts_and_a_restart_completes() {
    let lib = gen_library(&["--tracks", "20"]);
    let mut e = Emu::start(&[
        "--claim",
        "c",
        "--claim-delay",
        "100ms",
        "--fault",
        "crash:analysis:5",
    ]);
    e.wait_token();
    e.set_prefs("ButlerStartHour=0&ButlerEndHour=0");
    e.add_section("Music", "artist", &lib.path("Music"));
    e.scan_all();
    e.ok("POST", "/butler/MusicAnalysis");
    let st = e.wait_exit(30);
    assert_eq!(st.signal(), Some(libc::SIGABRT));
    assert_eq!(sonic(&e), 5);
    let mut e2 = Emu::start_in(&e.data, &["--fault", "crash:analysis:5"]);
    e2.token = e.token.clone();
    e2.ok("POST", "/butler/MusicAnalysis");
    wait_until(30, "analysis completes after restart", || sonic(&e2) == 20);
}

#[test]
fn stall_during_analysis_keeps_the_activity_and_the_child_stops_burning_cpu() {
    let lib = gen_library(&["--tracks", "20"]);
    let mut e = Emu::start(&[
        "--claim",
        "c",
        "--claim-delay",
        "100ms",
        "--analysis-cost",
        "30ms",
        "--fault",
        "stall:analysis:4",
    ]);
    e.wait_token();
    e.set_prefs("ButlerStartHour=0&ButlerEndHour=0");
    e.add_section("Music", "artist", &lib.path("Music"));
    e.scan_all();
    e.ok("POST", "/butler/MusicAnalysis");
    wait_until(20, "4 analysed then the stall", || sonic(&e) == 4);
    let server = e.pid();
    let child = scanner_processes()
        .into_iter()
        .find(|(_, p, _)| *p == server)
        .expect("scanner child stays")
        .0;
    let ticks = || {
        stat(child)
            .map(|s| s.1)
            .expect("the stalled child is alive")
    };
    let before = ticks();
    let (n, kind) = holds_still(1500, || {
        let a = e.get("/activities");
        (
            sonic(&e),
            a["MediaContainer"]["Activity"][0]["type"].clone(),
        )
    });
    assert_eq!(n, 4);
    assert_eq!(kind, "media.generate.music.analysis");
    // A stalled child only wakes to check its parent (every 100 ms): at most a stray clock tick
    // lands on it (one tick moved in one CI run), where a burning one takes ~150 in 1.5 s.
    let burnt = ticks() - before;
    assert!(burnt <= 2, "the stalled child burnt {burnt} ticks in 1.5 s");
    assert!(e.stop().success());
    wait_until(10, "scanner child gone", || stat(child).is_none());
}

#[test]
fn slow_api_delays_every_request() {
    let e = Emu::start(&["--fault", "slow-api:400ms"]);
    let t = Instant::now();
    e.get("/identity");
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn refuse_keeps_the_port_closed_for_a_while() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let child = Emu::spawn(
        d.path(),
        &format!("127.0.0.1:{port}"),
        &["--fault", "refuse:1500ms"],
    );
    // Once the server is up and inside the refuse window (its log says so), the port is closed:
    // a refusal before that point would prove nothing.
    let log = d
        .path()
        .join("Library/Application Support/Plex Media Server/Logs/Plex Media Server.log");
    wait_until(15, "the refuse window to begin", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Refusing connections for 1500 ms"))
    });
    let err = std::net::TcpStream::connect(("127.0.0.1", port)).expect_err("must be refused");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let e = Emu::attach(child, d.path(), 15);
    assert!(t.elapsed() >= Duration::from_millis(1500));
    e.get("/identity");
}

#[test]
fn starting_window_refuses_section_calls_and_shows_start_state() {
    for args in [["--fault", "starting:2s"], ["--startup-delay", "2s"]] {
        let e = Emu::start(&args);
        let r = e.req("GET", "/library/sections", true);
        assert_eq!(r.status, 503);
        assert!(r.body.contains("server is still starting up"), "{}", r.body);
        assert_eq!(
            e.req(
                "POST",
                "/library/sections?name=M&type=artist&location=/tmp",
                true
            )
            .status,
            503
        );
        assert_eq!(
            e.get("/")["MediaContainer"]["startState"],
            "startingPlugins"
        );
        assert_eq!(e.req("GET", "/identity", true).status, 200);
        wait_until(10, "start-up window over", || {
            e.get("/")["MediaContainer"].get("startState").is_none()
        });
        assert_eq!(e.req("GET", "/library/sections", true).status, 200);
    }
}
