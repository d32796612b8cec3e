//! End-to-end runs of the real `plexburst` binary against the emulator: local target with the
//! command runtime, the same over a real sshd, the docker runtime with the emulator's image, and
//! the faults (crash, stall, timeout, missing sqlite3, SIGINT + resume, no Plex Pass).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::harness::{
    Lab, LabOpts, MOVIES, PHOTOS, StrayWriter, TRACKS, command, emulator_bin, pid_alive,
    pids_with_cmdline, run, text, wait_for,
};

/// Both `extra_data` formats carry the key `musicAnalysisVersion` (JSON `ms:`, or URL-encoded `ms%3A`).
const SONIC: &str = "SELECT count(*) FROM metadata_items WHERE metadata_type = 10 AND deleted_at IS NULL \
     AND instr(extra_data, 'musicAnalysisVersion') > 0";

/// A server started by the test itself (to read prefs before and after a run).
pub struct Server {
    child: std::process::Child,
    base: String,
    token: String,
}

impl Server {
    pub fn start(lab: &Lab) -> Server {
        let port = crate::harness::free_port();
        let mut cmd = command(emulator_bin());
        cmd.args(["serve", "--data-dir"])
            .arg(lab.data_dir())
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--claim",
                crate::harness::CLAIM,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let child = crate::harness::spawn(&mut cmd);
        let base = format!("http://127.0.0.1:{port}");
        let prefs = lab
            .data_dir()
            .join("Library/Application Support/Plex Media Server/Preferences.xml");
        let mut token = String::new();
        wait_for("the emulator's token", Duration::from_secs(30), || {
            let xml = std::fs::read_to_string(&prefs).unwrap_or_default();
            match xml
                .split("PlexOnlineToken=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
            {
                Some(t) if !t.is_empty() => {
                    token = t.to_string();
                    true
                }
                _ => false,
            }
        });
        wait_for("the emulator's API", Duration::from_secs(30), || {
            ureq::get(&format!("{base}/identity")).call().is_ok()
        });
        Server { child, base, token }
    }

    /// `GET /:/prefs` as id -> value.
    fn prefs(&self) -> std::collections::BTreeMap<String, String> {
        let body: serde_json::Value = ureq::get(&format!("{}/:/prefs", self.base))
            .header("Accept", "application/json")
            .header("X-Plex-Token", &self.token)
            .call()
            .expect("GET /:/prefs")
            .body_mut()
            .read_json()
            .expect("prefs JSON");
        body["MediaContainer"]["Setting"]
            .as_array()
            .expect("Setting[]")
            .iter()
            .map(|s| {
                let v = match &s["value"] {
                    serde_json::Value::String(x) => x.clone(),
                    other => other.to_string(),
                };
                (s["id"].as_str().unwrap().to_string(), v)
            })
            .collect()
    }

    pub fn put_prefs(&self, q: &str) {
        ureq::put(&format!("{}/:/prefs?{q}", self.base))
            .header("X-Plex-Token", &self.token)
            .send_empty()
            .expect("PUT /:/prefs");
    }

    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        run(command("kill").args(["-TERM", &pid]));
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("the emulator did not stop on SIGTERM within 20 s");
    }
}

/// Everything a finished run must show: DB counts equal to what gen-library wrote, every track
/// Sonic-analysed, a verified archive, a report, and no server left running.
fn assert_complete_run(lab: &Lab, out: &std::process::Output) {
    assert_eq!(out.status.code(), Some(0), "{}", text(out));
    lab.assert_plan_is_what_ran();
    assert_eq!(lab.count(TRACKS), lab.counts.tracks, "tracks in the DB");
    assert_eq!(lab.count(MOVIES), lab.counts.movies, "movies in the DB");
    assert_eq!(lab.count(PHOTOS), lab.counts.photos, "photos in the DB");
    assert_eq!(
        lab.count(SONIC),
        lab.counts.tracks,
        "every track Sonic-analysed"
    );

    let state = lab.state();
    assert_eq!(state["status"], "done", "{state:#}");
    let archive = state["export"]["archive"]
        .as_str()
        .expect("export in the state")
        .to_string();
    assert!(Path::new(&archive).exists(), "archive {archive} missing");
    let zt = run(command("zstd").args(["-t", "-q", &archive]));
    assert!(zt.status.success(), "zstd -t: {}", text(&zt));
    let sha = run(command("sha256sum").arg(&archive));
    let sha = String::from_utf8_lossy(&sha.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(state["export"]["sha256"], sha.as_str(), "checksum recorded");
    let listing = run(command("sh")
        .arg("-c")
        .arg(format!("zstd -dc '{archive}' | tar -tf -")));
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.contains("Databases/com.plexapp.plugins.library.db\n"),
        "DB in the archive"
    );
    assert!(
        listing.contains("Preferences.xml\n"),
        "prefs in the archive"
    );
    assert!(
        !listing.contains("Plex Media Server/Logs/"),
        "logs excluded from the archive"
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(state["export"]["manifest"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["sha256"], sha.as_str());
    let music = manifest["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "Music")
        .expect("Music in manifest");
    assert_eq!(music["tracks"], lab.counts.tracks);

    let report = lab
        .state_dir()
        .join("runs")
        .join(state["run_id"].as_str().unwrap());
    let rj: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("report.json")).unwrap()).unwrap();
    assert_eq!(rj["status"], "done");
    assert!(
        std::fs::read_to_string(report.join("report.md"))
            .unwrap()
            .contains("## Export")
    );

    // No secret anywhere plexburst writes: not the claim token, not the server's own token.
    let xml = std::fs::read_to_string(
        lab.data_dir()
            .join("Library/Application Support/Plex Media Server/Preferences.xml"),
    )
    .unwrap();
    let token = xml
        .split("PlexOnlineToken=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("");
    assert!(!token.is_empty(), "the server was not claimed");
    let mut written =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    for f in [
        lab.state_dir().join("state.json"),
        report.join("report.json"),
        report.join("report.md"),
    ] {
        written.push_str(&std::fs::read_to_string(f).unwrap());
    }
    written
        .push_str(&std::fs::read_to_string(state["export"]["manifest"].as_str().unwrap()).unwrap());
    assert!(
        !written.contains(crate::harness::CLAIM),
        "the claim token leaked"
    );
    assert!(!written.contains(token), "the server token leaked");

    assert_no_server(lab);
}

fn assert_no_server(lab: &Lab) {
    if let Some(pid) = lab.server_pid() {
        assert!(!pid_alive(pid), "the server (pid {pid}) is still running");
    }
    let left = pids_with_cmdline(&lab.data_dir().display().to_string());
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

/// Prefs as the user had them (one of them changed from its default), to prove restore puts them back.
fn seed_prefs(lab: &Lab) -> std::collections::BTreeMap<String, String> {
    let s = Server::start(lab);
    s.put_prefs(
        "ButlerTaskDeepMediaAnalysis=true&autoEmptyTrash=true&MusicAnalysisBehavior=scheduled&LongRunningJobThreads=7",
    );
    let before = s.prefs();
    s.stop();
    before
}

fn prefs_now(lab: &Lab) -> std::collections::BTreeMap<String, String> {
    let s = Server::start(lab);
    let p = s.prefs();
    s.stop();
    p
}

fn assert_prefs_restored(
    before: &std::collections::BTreeMap<String, String>,
    after: &std::collections::BTreeMap<String, String>,
) {
    let diff: Vec<String> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}: before {v:?}, after {:?}", after.get(k)))
        .collect();
    assert!(diff.is_empty(), "prefs not restored:\n{}", diff.join("\n"));
}

/// The emulator's own log: plexburst set `LongRunningJobThreads` to this machine's vCPU count
/// before the Sonic analysis, and the analysis ran with that many workers.
fn assert_sonic_ran_on_every_vcpu(lab: &Lab) {
    let vcpus = std::thread::available_parallelism().unwrap().get();
    let log = std::fs::read_to_string(
        lab.data_dir()
            .join("Library/Application Support/Plex Media Server/Logs/Plex Media Server.log"),
    )
    .unwrap();
    let set = format!("LongRunningJobThreads={vcpus}");
    assert!(
        log.lines()
            .any(|l| l.contains("Prefs set:") && l.contains(&set)),
        "no `{set}` in the emulator's log:\n{log}"
    );
    let sonic: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Analysis: sonic on section") && l.contains("items,"))
        .collect();
    assert!(!sonic.is_empty(), "no Sonic analysis in the log:\n{log}");
    for l in sonic {
        assert!(l.ends_with(&format!(", {vcpus} workers")), "{l}");
    }
}

#[test]
fn local_run_scans_analyses_restores_and_exports() {
    let lab = Lab::new(LabOpts::default());
    let before = seed_prefs(&lab);
    assert_eq!(before["LongRunningJobThreads"], "7");
    let out = lab.plexburst(&["run"]);
    assert_complete_run(&lab, &out);
    assert_sonic_ran_on_every_vcpu(&lab);
    // Before the analysis has a rate of its own, its ETA is the plan's estimate and says so:
    // the tracks left x 20 CPU s over this machine's vCPUs (LongRunningJobThreads).
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr
        .lines()
        .find(|l| l.contains("Sonic analysis of Music: ") && l.contains(" tracks, "))
        .unwrap_or_else(|| panic!("no Sonic progress line: {stderr}"));
    let tracks = lab.counts.tracks;
    let vcpus = std::thread::available_parallelism().unwrap().get() as i64;
    let done: i64 = first
        .split("Sonic analysis of Music: ")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{first}"));
    let eta = Duration::from_secs(((tracks - done) * 20 / vcpus) as u64);
    assert!(
        first.contains(&format!(
            "{done}/{tracks} tracks, ? /s, ETA {} (estimated at 20 CPU s/track)",
            plexburst::units::format_secs(eta)
        )),
        "{first}"
    );
    assert_prefs_restored(&before, &prefs_now(&lab));
    let status = lab.plexburst(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["status"], "done");
}

#[test]
fn ssh_run_scans_analyses_restores_and_exports() {
    let sshd = crate::sshd::Sshd::start();
    let lab = Lab::new(LabOpts {
        target_toml: Some(sshd.config_toml()),
        ..Default::default()
    });
    let before = seed_prefs(&lab);
    let out = lab.plexburst(&["run"]);
    assert_complete_run(&lab, &out);
    assert_prefs_restored(&before, &prefs_now(&lab));
}

#[test]
fn docker_run_with_the_emulator_image() {
    let image = crate::harness::emulator_image();
    let lab = Lab::new(LabOpts {
        docker_image: Some(image.into()),
        ..Default::default()
    });
    // The container runs the server as uid 1000: it must reach the media and its data dir.
    run(command("chmod").args(["755", lab.dir.path().to_str().unwrap()]));
    let out = lab.plexburst(&["run"]);
    assert_complete_run(&lab, &out);
    let ps =
        run(command("docker").args(["ps", "-q", "--filter", &format!("name={}", lab.container)]));
    assert!(
        String::from_utf8_lossy(&ps.stdout).trim().is_empty(),
        "the container is still running"
    );
}

#[test]
fn crash_mid_scan_restarts_plex_and_completes() {
    let lab = Lab::new(LabOpts {
        emulator_args: vec![
            "--scan-rate".into(),
            "40".into(),
            "--fault".into(),
            "crash:scan:8".into(),
        ],
        ..Default::default()
    });
    let out = lab.plexburst(&["run"]);
    assert_complete_run(&lab, &out);
    let scan = lab.phase("scan");
    assert!(
        scan["restarts"].as_u64().unwrap() >= 1,
        "no restart recorded: {scan:#}"
    );
}

#[test]
fn stalled_scan_is_detected_within_the_stall_window_and_reported() {
    let lab = Lab::new(LabOpts {
        emulator_args: vec![
            "--scan-rate".into(),
            "40".into(),
            "--fault".into(),
            "stall:scan:5".into(),
        ],
        monitor: vec!["stall_window = \"3s\"".into()],
        ..Default::default()
    });
    let t = Instant::now();
    let out = lab.plexburst(&["run", "--skip-analysis"]);
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("scan stalled"), "{}", text(&out));
    assert!(
        took < Duration::from_secs(40),
        "the stall took {took:?} to detect"
    );
    let st = lab.state();
    let scan = lab.phase("scan");
    assert_eq!(scan["stalls"], 1, "{scan:#}");
    let report = std::fs::read_to_string(
        lab.state_dir()
            .join("runs")
            .join(st["run_id"].as_str().unwrap())
            .join("report.md"),
    )
    .unwrap();
    assert!(report.contains("stalled"), "{report}");
    assert_no_server(&lab);
}

#[test]
fn slow_scan_times_out() {
    let lab = Lab::new(LabOpts {
        emulator_args: vec!["--scan-rate".into(), "2".into()],
        timeouts: vec!["scan = \"2s\"".into()],
        ..Default::default()
    });
    let out = lab.plexburst(&["run", "--skip-analysis"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("scan timed out"),
        "{}",
        text(&out)
    );
    let scan = lab.phase("scan");
    assert_eq!(scan["timeouts"], 1);
    assert_no_server(&lab);
}

#[test]
fn missing_sqlite3_is_a_clear_error_not_zero_items() {
    let lab = Lab::new(LabOpts::default());
    // A PATH with every usual tool but sqlite3.
    let bin = lab.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for dir in ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name();
            if name == "sqlite3" || bin.join(&name).exists() {
                continue;
            }
            let _ = std::os::unix::fs::symlink(e.path(), bin.join(&name));
        }
    }
    let out = run(lab.cmd(&["run"]).env("PATH", &bin));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sqlite3 missing") && stderr.contains("apt-get install sqlite3"),
        "{}",
        text(&out)
    );
    assert!(!stderr.contains("0 items"), "{}", text(&out));
    assert_eq!(
        lab.phase("start-plex")["status"],
        "pending",
        "Plex must not start without sqlite3"
    );
    assert_no_server(&lab);
}

#[test]
fn sigint_mid_scan_then_resume_completes() {
    let lab = Lab::new(LabOpts {
        emulator_args: vec!["--scan-rate".into(), "4".into()],
        ..Default::default()
    });
    let child = crate::harness::spawn(&mut lab.cmd(&["run"]));
    wait_for_scan_under_way(&lab);
    // While it runs: a second run is refused by the state lock, and status reads the live state.
    let second = lab.plexburst(&["run"]);
    assert_eq!(second.status.code(), Some(1), "{}", text(&second));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another plexburst process"),
        "{}",
        text(&second)
    );
    let status = lab.plexburst(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(status["status"], "running");
    assert_eq!(status["current_phase"], "scan");
    assert_eq!(status["process_alive"], true);
    run(command("kill").args(["-INT", &child.id().to_string()]));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("plexburst resume"),
        "{}",
        text(&out)
    );
    assert_eq!(lab.state()["status"], "interrupted");
    assert_no_server(&lab);

    let out = lab.plexburst(&["resume"]);
    assert_complete_run(&lab, &out);
}

#[test]
fn analysis_without_plex_pass_fails_before_the_scan() {
    let lab = Lab::new(LabOpts {
        emulator_args: vec!["--plex-pass".into(), "false".into()],
        ..Default::default()
    });
    let out = lab.plexburst(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Plex Pass"),
        "{}",
        text(&out)
    );
    assert_eq!(
        lab.phase("scan")["status"],
        "pending",
        "the scan must not start"
    );
    assert_no_server(&lab);
}

/// Poll the state file until the scan phase runs and the DB shows its first items.
fn wait_for_scan_under_way(lab: &Lab) {
    wait_for("the scan to be under way", Duration::from_secs(60), || {
        let Ok(bytes) = std::fs::read(lab.state_dir().join("state.json")) else {
            return false;
        };
        let Ok(st) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return false;
        };
        st["current_phase"] == "scan"
            && st["last_sample"]["sections"]
                .as_array()
                .is_some_and(|s| s.iter().any(|c| c["items"].as_i64() > Some(0)))
    });
}

#[test]
fn ssh_connection_cut_mid_monitor_reconnects_and_completes() {
    let sshd = crate::sshd::Sshd::start();
    let lab = Lab::new(LabOpts {
        target_toml: Some(sshd.config_toml()),
        emulator_args: vec!["--scan-rate".into(), "4".into()],
        ..Default::default()
    });
    let child = crate::harness::spawn(&mut lab.cmd(&["run"]));
    wait_for_scan_under_way(&lab);
    let cut = sshd.cut_connections();
    assert!(cut > 0, "no ssh connection to cut");
    let out = child.wait_with_output().unwrap();
    assert_complete_run(&lab, &out);
}

#[test]
fn refused_connections_and_a_slow_start_are_waited_out() {
    let lab = Lab::new(LabOpts {
        emulator_args: [
            "--fault",
            "refuse:2s",
            "--fault",
            "starting:3s",
            "--fault",
            "slow-api:20ms",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    });
    let out = lab.plexburst(&["run"]);
    assert_complete_run(&lab, &out);
}

#[test]
fn unknown_only_section_is_bad_input_and_starts_nothing() {
    let lab = Lab::new(LabOpts::default());
    let out = lab.plexburst(&["run", "--only-section", "Nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--only-section \"Nope\""),
        "{}",
        text(&out)
    );
    assert!(!lab.state_dir().exists(), "nothing may start on bad input");
}

#[test]
fn only_section_scans_and_analyses_just_that_section() {
    let lab = Lab::new(LabOpts::default());
    let out = lab.plexburst(&["run", "--only-section", "Music"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(lab.count(SONIC), lab.counts.tracks);
    assert_eq!(
        lab.count("SELECT count(*) FROM library_sections"),
        1,
        "only Music is created"
    );
    assert_no_server(&lab);
}

#[test]
fn crash_mid_analysis_restarts_plex_and_completes() {
    let lab = Lab::new(LabOpts {
        emulator_args: ["--analysis-rate", "20", "--fault", "crash:analysis:5"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    let out = lab.plexburst(&["run"]);
    assert_complete_run(&lab, &out);
    let analyze = lab.phase("analyze");
    assert!(
        analyze["restarts"].as_u64().unwrap() >= 1,
        "no restart recorded: {analyze:#}"
    );
    assert_report_html_draws_the_run(&lab);
}

/// `report.html` beside `report.md`: self-contained, drawn from one sample line per poll of the
/// scan and the analysis, the restart marked, and a page Chromium renders with ink in several
/// colours; report.md gives the measured CPU seconds per track to calibrate the forecast with.
fn assert_report_html_draws_the_run(lab: &Lab) {
    let state = lab.state();
    let dir = lab
        .state_dir()
        .join("runs")
        .join(state["run_id"].as_str().unwrap());
    let samples: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("samples.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for phase in ["scan", "analyze"] {
        let n = samples.iter().filter(|s| s["phase"] == phase).count() as u64;
        assert!(n >= 2, "{n} sample lines of {phase}");
        assert_eq!(
            n,
            lab.phase(phase)["samples"],
            "one line per sample of {phase}"
        );
    }
    let restarts = samples
        .iter()
        .filter(|s| s["phase"] == "analyze")
        .flat_map(|s| s["events"].as_array().cloned().unwrap_or_default())
        .filter(|e| e == "restart")
        .count() as u64;
    assert_eq!(
        restarts,
        lab.phase("analyze")["restarts"],
        "restarts on the timeline"
    );
    assert!(
        samples
            .iter()
            .any(|s| s["cpu_cores"].as_f64().is_some_and(|c| c > 0.0)),
        "Plex's CPU on the timeline"
    );
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("<svg"), "{html}");
    assert!(
        html.contains("<title>restart</title>"),
        "the restart is marked"
    );
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "report.html fetches nothing: {html}"
    );
    assert!(!html.contains("<script"), "report.html needs no script");
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        md.contains("CPU seconds per track on this machine")
            && md.contains("set plex.sonic_cpu_seconds_per_track = "),
        "{md}"
    );
    let shot = crate::picture::render(&dir.join("report.html"), &lab.path("report.png"), 900, 1600);
    assert_eq!((shot.width, shot.height), (900, 1600));
    assert!(
        shot.inked > 0.02 && shot.colours >= 8,
        "report.html rendered nearly blank: {shot:?}"
    );
    // The same check on an empty page fails, so the one above can.
    std::fs::write(
        lab.path("blank.html"),
        "<!DOCTYPE html><html><body></body></html>",
    )
    .unwrap();
    let blank = crate::picture::render(&lab.path("blank.html"), &lab.path("blank.png"), 900, 1600);
    assert!(
        blank.inked < 0.001 && blank.colours <= 2,
        "an empty page is blank: {blank:?}"
    );
}

#[test]
fn stalled_analysis_is_detected_and_reported() {
    let lab = Lab::new(LabOpts {
        emulator_args: ["--analysis-rate", "20", "--fault", "stall:analysis:4"]
            .map(String::from)
            .to_vec(),
        monitor: vec!["stall_window = \"3s\"".into()],
        ..Default::default()
    });
    let out = lab.plexburst(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Sonic analysis of Music stalled"),
        "{}",
        text(&out)
    );
    let analyze = lab.phase("analyze");
    assert_eq!(analyze["stalls"], 1, "{analyze:#}");
    // The stall ends the analysis' timeline, and report.html marks it.
    let timeline = crate::rclone::timeline(&lab);
    let last = timeline.iter().rfind(|s| s["phase"] == "analyze").unwrap();
    assert_eq!(last["events"], serde_json::json!(["stalled"]), "{last}");
    let html = std::fs::read_to_string(
        lab.state_dir()
            .join("runs")
            .join(lab.state()["run_id"].as_str().unwrap())
            .join("report.html"),
    )
    .unwrap();
    assert!(html.contains("<title>stalled</title>"), "{html}");
    assert_eq!(
        lab.phase("restore")["status"],
        "pending",
        "restore waits for a resume"
    );
    assert_no_server(&lab);
}

#[test]
fn keep_leaves_plex_running_until_destroy() {
    let lab = Lab::new(LabOpts::default());
    let out = lab.plexburst(&["run", "--keep", "--skip-analysis"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let pid = lab.server_pid().expect("a pid file");
    assert!(pid_alive(pid), "--keep must leave Plex running");
    let logs = lab.plexburst(&["logs", "-n", "5"]);
    assert!(logs.status.success(), "{}", text(&logs));
    let out = lab.plexburst(&["destroy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_no_server(&lab);
}

/// Preferences.xml's attributes in the lab's data dir.
fn prefs_file(lab: &Lab) -> std::collections::BTreeMap<String, String> {
    let xml = std::fs::read_to_string(
        lab.data_dir()
            .join("Library/Application Support/Plex Media Server/Preferences.xml"),
    )
    .unwrap();
    plexburst::plex::xml::attrs(&xml).unwrap()
}

#[test]
fn failed_run_with_keep_leaves_plex_up_with_the_users_settings() {
    let lab = Lab::new(LabOpts {
        emulator_args: ["--analysis-rate", "20", "--fault", "stall:analysis:4"]
            .map(String::from)
            .to_vec(),
        monitor: vec!["stall_window = \"3s\"".into()],
        ..Default::default()
    });
    let s = Server::start(&lab);
    s.put_prefs("GenerateBIFBehavior=scheduled&ScannerLowPriority=1");
    s.stop();
    let before = prefs_file(&lab);
    let out = lab.plexburst(&["run", "--keep"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("stalled"), "{}", text(&out));
    // Plex stays up as asked, with the user's settings back (the emulator writes the file on
    // every change); a resume would turn the background tasks off again first.
    let pid = lab.server_pid().expect("a pid file");
    assert!(pid_alive(pid), "--keep must leave Plex running");
    assert_eq!(prefs_file(&lab), before, "{}", text(&out));
    assert_eq!(lab.phase("configure")["status"], "pending");
    let out = lab.plexburst(&["destroy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_no_server(&lab);
    assert_eq!(prefs_file(&lab), before);
}

#[test]
fn unreadable_db_mid_scan_fails_after_k_samples_never_reads_zero() {
    let lab = Lab::new(LabOpts {
        emulator_args: vec!["--scan-rate".into(), "4".into()],
        monitor: vec!["max_failed_samples = 4".into()],
        ..Default::default()
    });
    let child = crate::harness::spawn(&mut lab.cmd(&["run"]));
    wait_for_scan_under_way(&lab);
    // The server keeps its open handles; every new reader finds no DB at the path.
    let dbs = lab.db_path().parent().unwrap().to_path_buf();
    std::fs::rename(&dbs, dbs.with_extension("moved")).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("4 samples in a row failed"),
        "{}",
        text(&out)
    );
    assert!(
        stderr.contains("does not exist"),
        "the DB error must be shown: {}",
        text(&out)
    );
    let scan = lab.phase("scan");
    assert!(scan["failed_samples"].as_u64().unwrap() >= 4, "{scan:#}");
    assert_eq!(scan["status"], "failed");
    assert_no_server(&lab);
}

#[test]
fn destroy_stops_what_a_killed_run_left() {
    let lab = Lab::new(LabOpts {
        emulator_args: vec!["--scan-rate".into(), "4".into()],
        ..Default::default()
    });
    let mut child = crate::harness::spawn(&mut lab.cmd(&["run"]));
    wait_for_scan_under_way(&lab);
    // plexburst dies without any chance to clean up; its server keeps running.
    child.kill().unwrap();
    child.wait().unwrap();
    let pid = lab.server_pid().expect("a pid file");
    assert!(
        pid_alive(pid),
        "the server should outlive a killed plexburst"
    );
    let status = lab.plexburst(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status JSON");
    assert_eq!(status["status"], "running");
    assert_eq!(
        status["process_alive"], false,
        "a dead run must show as such"
    );
    let journal = lab.journal();
    let before = std::fs::read_to_string(&journal).unwrap();
    let out = lab.plexburst(&["destroy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(lab.state()["status"], "destroyed");
    assert_no_server(&lab);
    // What destroy did to the run's target is in the run's journal: the stop of the server.
    let after = std::fs::read_to_string(&journal).unwrap();
    let added = after
        .strip_prefix(before.as_str())
        .expect("the journal is appended to");
    assert!(
        added.contains("kill -TERM"),
        "destroy's commands are not journaled:\n{added}"
    );
}

#[test]
fn sigterm_mid_scan_stops_cleanly_and_keeps_the_state() {
    let lab = Lab::new(LabOpts {
        emulator_args: vec!["--scan-rate".into(), "4".into()],
        ..Default::default()
    });
    let child = crate::harness::spawn(&mut lab.cmd(&["run", "--skip-analysis"]));
    wait_for_scan_under_way(&lab);
    run(command("kill").args(["-TERM", &child.id().to_string()]));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("plexburst resume") && stderr.contains("plexburst destroy"),
        "{}",
        text(&out)
    );
    let st = lab.state();
    assert_eq!(st["status"], "interrupted");
    let scan = lab.phase("scan");
    assert_eq!(scan["status"], "interrupted");
    assert_no_server(&lab);
}

#[test]
fn show_section_is_created_and_its_episodes_counted() {
    let lab = Lab::new(LabOpts {
        shows: true,
        ..Default::default()
    });
    assert!(lab.counts.episodes > 0, "gen-library wrote no episodes");
    let out = lab.plexburst(&["run", "--skip-analysis"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        lab.count(
            "SELECT count(*) FROM metadata_items WHERE metadata_type = 4 AND deleted_at IS NULL"
        ),
        lab.counts.episodes
    );
    assert_eq!(
        lab.sql("SELECT agent || '|' || scanner FROM library_sections WHERE section_type = 2"),
        "tv.plex.agents.series|Plex TV Series"
    );
    let scan = lab.phase("scan");
    let shows = scan["counts_after"]["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "TV Shows")
        .unwrap();
    assert_eq!(shows["items"], lab.counts.episodes);
    assert_no_server(&lab);
}

#[test]
fn export_refuses_a_data_folder_that_changes_while_archived() {
    let lab = Lab::new(LabOpts::default());
    let lib = lab.data_dir().join("Library");
    std::fs::create_dir_all(&lib).unwrap();
    // A stray writer in the data folder (as a Plex process that did not stop would be).
    let writer = StrayWriter::start(lib.join("writer.txt"));
    let out = lab.plexburst(&["run", "--skip-analysis"]);
    drop(writer);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the data folder changed while it was archived"),
        "{}",
        text(&out)
    );
    assert!(
        stderr.contains("Library/writer.txt"),
        "the change must be named: {}",
        text(&out)
    );
    let left: Vec<_> = std::fs::read_dir(lab.path("export"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "temporary export files left: {left:?}");

    std::fs::remove_file(lib.join("writer.txt")).unwrap();
    let out = lab.plexburst(&["resume"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(Path::new(lab.state()["export"]["archive"].as_str().unwrap()).exists());
    assert_no_server(&lab);
}

#[test]
fn resume_refuses_a_config_that_now_plans_another_run_and_names_the_fields() {
    let lab = Lab::new(LabOpts {
        emulator_args: vec!["--plex-pass".into(), "false".into()],
        ..Default::default()
    });
    let out = lab.plexburst(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stored = std::fs::read(lab.state_dir().join("plan.json")).unwrap();
    let journal_len = || {
        let id = lab.state()["run_id"].as_str().unwrap().to_string();
        std::fs::read_to_string(lab.state_dir().join(format!("runs/{id}/commands.jsonl")))
            .unwrap()
            .lines()
            .count()
    };
    let before = journal_len();
    // The user edits the config between the failure and the resume.
    let cfg = std::fs::read_to_string(lab.config_path()).unwrap();
    let edited = cfg.replace("stable_samples = ", "stable_samples = 1");
    assert_ne!(edited, cfg, "the lab config sets monitor.stable_samples");
    std::fs::write(lab.config_path(), edited).unwrap();

    let out = lab.plexburst(&["resume"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("monitor.stable_samples: "), "{err}");
    assert!(err.contains("--replan"), "{err}");
    // Nothing ran on the target, and the stored plan is untouched.
    assert_eq!(journal_len(), before, "resume ran commands before refusing");
    assert_eq!(
        std::fs::read(lab.state_dir().join("plan.json")).unwrap(),
        stored
    );

    // With --replan the new plan is taken (and stored); this server still lacks Plex Pass.
    let out = lab.plexburst(&["resume", "--replan"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(journal_len() > before, "resume --replan ran nothing");
    let now: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lab.state_dir().join("plan.json")).unwrap()).unwrap();
    let old: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    assert_ne!(now["monitor"], old["monitor"]);
    assert_no_server(&lab);
}
