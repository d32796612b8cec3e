//! What a person at a terminal sees, through a real pseudo-terminal (`script`, util-linux): log
//! lines as `HH:MM:SS message` (level only when not INFO) while the run's log file keeps full
//! timestamps, and `status --watch` redrawing its block in place instead of appending.

use std::time::Duration;

use crate::harness::{Lab, LabOpts, plexburst_bin, run, spawn, text, wait_for};

/// `script -qfec CMD /dev/null`: CMD on a pty, its output (with `\r\n` line ends) on stdout.
fn on_a_pty(lab: &Lab, args: &str) -> std::process::Command {
    let line = format!(
        "{} {args} --config {}",
        plexburst_bin().display(),
        lab.config_path().display()
    );
    let mut c = crate::harness::command("script");
    c.args(["-qfec", &line, "/dev/null"])
        .env("XDG_CONFIG_HOME", lab.path("xdg"))
        .env_remove("PLEX_TOKEN")
        .env_remove("PLEX_CLAIM")
        .env("PLEXBURST_LOG", "plexburst=info")
        .env("TERM", "xterm")
        .env("COLUMNS", "200");
    c
}

fn is_short_line(l: &str, message: &str) -> bool {
    let b = l.as_bytes();
    l.len() > 9
        && b[2] == b':'
        && b[5] == b':'
        && b[..8].iter().filter(|c| c.is_ascii_digit()).count() == 6
        && l[8..] == format!(" {message}")
}

#[test]
fn on_a_terminal_logs_are_short_and_status_watch_redraws_in_place() {
    // 22 files at 3 files/s: the scan lasts long enough to watch.
    let lab = Lab::new(LabOpts {
        emulator_args: vec!["--scan-rate".into(), "3".into()],
        ..Default::default()
    });
    let job = spawn(&mut on_a_pty(&lab, "run --skip-analysis"));
    wait_for("the scan to start", Duration::from_secs(60), || {
        std::fs::read(lab.state_dir().join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|s| s["current_phase"] == "scan")
    });
    let watch = run(&mut on_a_pty(&lab, "status --watch"));
    let out = job.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let shown = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let lines: Vec<&str> = shown.lines().collect();
    for message in ["phase preflight: started", "phase scan: started"] {
        assert!(
            lines.iter().any(|l| is_short_line(l, message)),
            "no `HH:MM:SS {message}` line on the terminal: {shown}"
        );
    }
    assert!(
        !shown.contains(" INFO "),
        "the level shows only when it is not INFO: {shown}"
    );
    let run_dir = lab.journal().parent().unwrap().to_path_buf();
    let log = std::fs::read_to_string(run_dir.join("plexburst.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("Z  INFO phase scan: started") && l.starts_with("20")),
        "the run's log keeps full timestamps: {log}"
    );

    assert!(watch.status.success(), "{}", text(&watch));
    let screen = String::from_utf8_lossy(&watch.stdout);
    let redraws = screen.matches("F\x1b[J").count();
    assert!(
        redraws >= 1,
        "status --watch redraws in place (cursor up, clear): {screen:?}"
    );
    let run_id = lab.state()["run_id"].as_str().unwrap().to_string();
    let blocks = screen.matches(&format!("run {run_id} on ")).count();
    assert_eq!(
        blocks,
        redraws + 1,
        "one block per refresh, each drawn over the last: {screen:?}"
    );
    let last = screen.rsplit("F\x1b[J").next().unwrap();
    assert!(
        last.contains(": Done"),
        "the last block shows the end: {last}"
    );
    assert!(
        last.contains("scan") && last.contains("s  "),
        "phases with their times: {last}"
    );
}

#[test]
fn status_watch_without_a_terminal_appends_blocks() {
    let lab = Lab::new(LabOpts {
        emulator_args: vec!["--scan-rate".into(), "3".into()],
        ..Default::default()
    });
    let job = spawn(&mut lab.cmd(&["run", "--skip-analysis"]));
    wait_for("the scan to start", Duration::from_secs(60), || {
        std::fs::read(lab.state_dir().join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|s| s["current_phase"] == "scan")
    });
    let watch = lab.plexburst(&["status", "--watch"]);
    let out = job.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let printed = String::from_utf8_lossy(&watch.stdout);
    assert!(
        !printed.contains('\x1b'),
        "no escape codes into a pipe: {printed}"
    );
    assert!(
        printed.matches("\nrun ").count() >= 1,
        "a second block appended after the first: {printed}"
    );
    assert!(
        printed.contains("scan: ") && printed.contains("/22 items"),
        "the watched phase's count against its total: {printed}"
    );
}
