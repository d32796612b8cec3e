//! The fault matrix (issue 12): the real binary end to end against the emulators and the loopback
//! sshd / S3 / FUSE harness, one row per fault. Rows are data (fault, phase, how it is injected,
//! what is expected); the checks are shared: how the run ended, what it left running or mounted
//! (or billed at Scaleway), and how many library items the DB lost. The table is printed and
//! written to `target/reliability/` (JSON and markdown), from which `scripts/reliability-doc.sh`
//! makes `docs/reliability.md`.

use std::process::{Child, Output};
use std::time::{Duration, Instant};

use crate::harness::{Lab, LabOpts, MOVIES, PHOTOS, TRACKS, command, pids_with_cmdline, run};
use crate::rclone::RcloneLab;
use crate::scaleway::{ScwEmu, scaleway_lab, scw_env};

/// What follows a SIGKILL (a signal that the run cannot answer).
#[derive(Clone, Copy, Debug)]
enum Then {
    /// Nothing: the run must stop by itself (SIGINT, SIGTERM).
    Nothing,
    /// `plexburst resume` must finish the job.
    Resume,
    /// `plexburst destroy` must stop what the run left.
    Destroy,
}

/// How a row ends when the product handles the fault.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Completed,
    /// Stopped with a clear message; a signal that lands in the last step may let it complete.
    Stopped,
}

#[derive(Clone, Debug)]
enum Inject {
    Signal(&'static str, Then),
    /// A plex-emulator `--fault` with the rate flags that make the phase last.
    Plex(&'static [&'static str]),
    SshCut,
    SshdRestart,
    MountKill,
    BucketDown(Duration),
    DiskFull,
    StateDeleted,
    StateCorrupted,
    TwoRuns,
    ScwApiErrors,
    ScwOutOfStock,
}

#[derive(Clone, Debug)]
struct Row {
    fault: String,
    phase: &'static str,
    inject: Inject,
    expect: Expect,
}

/// What a row saw: its outcome, a detail (the message), what was left, what was lost.
#[derive(Debug, serde::Serialize)]
struct Observed {
    fault: String,
    phase: String,
    expected: String,
    observed: String,
    message: String,
    resources_left: Vec<String>,
    items_lost: i64,
    secs: f64,
    pass: bool,
}

/// A row that ran to an end: the final command's output and whether an extra check of the row
/// failed (a `Some` is the failure, e.g. "the faults never fired").
struct Ended {
    out: Output,
    problem: Option<String>,
    /// Said before the output's last line (e.g. the refused second run).
    note: Option<String>,
    /// The output is `destroy`'s: its success is the run stopped cleanly, not completed.
    destroyed: bool,
}

/// The local phases, in order (a rented instance adds `provision`, see scaleway.rs).
const PHASES: [&str; 9] = [
    "prepare",
    "preflight",
    "start-plex",
    "configure",
    "scan",
    "analyze",
    "restore",
    "export",
    "teardown",
];

fn rows() -> Vec<Row> {
    let row = |fault: &str, phase: &'static str, inject: Inject, expect: Expect| Row {
        fault: fault.to_string(),
        phase,
        inject,
        expect,
    };
    // The long ones first: they start while the short ones fill the other workers.
    let mut rows = vec![
        row(
            "bucket unreachable for a minute",
            "scan",
            Inject::BucketDown(Duration::from_secs(60)),
            Expect::Completed,
        ),
        row(
            "Scaleway 429/5xx on 20 % of calls",
            "all",
            Inject::ScwApiErrors,
            Expect::Completed,
        ),
        row(
            "out_of_stock at power-on",
            "provision",
            Inject::ScwOutOfStock,
            Expect::Completed,
        ),
        row(
            "rclone mount killed",
            "scan",
            Inject::MountKill,
            Expect::Completed,
        ),
        row(
            "rclone mount killed",
            "analyze",
            Inject::MountKill,
            Expect::Completed,
        ),
        row(
            "SSH connection killed",
            "scan",
            Inject::SshCut,
            Expect::Completed,
        ),
        row(
            "sshd restarted",
            "scan",
            Inject::SshdRestart,
            Expect::Completed,
        ),
        row(
            "Plex crashed",
            "scan",
            Inject::Plex(&["--scan-rate", "40", "--fault", "crash:scan:8"]),
            Expect::Completed,
        ),
        row(
            "Plex crashed",
            "analyze",
            Inject::Plex(&["--analysis-rate", "20", "--fault", "crash:analysis:5"]),
            Expect::Completed,
        ),
        row(
            "Plex stalled",
            "scan",
            Inject::Plex(&["--scan-rate", "40", "--fault", "stall:scan:5"]),
            Expect::Stopped,
        ),
        row(
            "Plex stalled",
            "analyze",
            Inject::Plex(&["--analysis-rate", "20", "--fault", "stall:analysis:4"]),
            Expect::Stopped,
        ),
        row(
            "target disk full",
            "export",
            Inject::DiskFull,
            Expect::Stopped,
        ),
        row(
            "state file deleted between runs",
            "between runs",
            Inject::StateDeleted,
            Expect::Completed,
        ),
        row(
            "state file corrupted between runs",
            "between runs",
            Inject::StateCorrupted,
            Expect::Stopped,
        ),
        row(
            "two `plexburst run` on one state dir",
            "scan",
            Inject::TwoRuns,
            Expect::Completed,
        ),
    ];
    for (sig, then, expect) in [
        ("INT", Then::Nothing, Expect::Stopped),
        ("TERM", Then::Nothing, Expect::Stopped),
        ("KILL", Then::Resume, Expect::Completed),
        ("KILL", Then::Destroy, Expect::Stopped),
    ] {
        for phase in PHASES {
            let fault = match then {
                Then::Nothing => format!("SIG{sig}"),
                Then::Resume => format!("SIG{sig}, then resume"),
                Then::Destroy => format!("SIG{sig}, then destroy"),
            };
            rows.push(row(&fault, phase, Inject::Signal(sig, then), expect));
        }
    }
    rows
}

/// Rows run at once: enough to overlap the rows' waits, few enough for a 2-core CI box.
const WORKERS: usize = 3;

#[test]
fn fault_matrix() {
    // PLEXBURST_MATRIX_ONLY=text runs the rows whose fault or phase contains it (figures are then
    // not written: they describe the whole matrix only).
    let only = std::env::var("PLEXBURST_MATRIX_ONLY").ok();
    let rows: Vec<Row> = rows()
        .into_iter()
        .filter(|r| {
            only.as_ref()
                .is_none_or(|o| r.fault.contains(o.as_str()) || r.phase.contains(o.as_str()))
        })
        .collect();
    let started = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::<(usize, Observed)>::new());
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(row) = rows.get(i) else { break };
                    let t = Instant::now();
                    let obs =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_row(row)))
                            .unwrap_or_else(|e| {
                                let msg = e
                                    .downcast_ref::<String>()
                                    .cloned()
                                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                                    .unwrap_or_default();
                                observed(row, "harness failure", &msg, vec![], 0)
                            });
                    let obs = Observed {
                        secs: t.elapsed().as_secs_f64(),
                        ..obs
                    };
                    eprintln!(
                        "matrix: {} in {}: {} ({:.0} s)",
                        obs.fault, obs.phase, obs.observed, obs.secs
                    );
                    results.lock().unwrap().push((i, obs));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    let results: Vec<Observed> = results.into_iter().map(|(_, o)| o).collect();
    let wall = started.elapsed().as_secs_f64();

    let mut table = String::from(
        "| fault | phase | expected | observed | resources left | items lost | message |\n|---|---|---|---|---|---|---|\n",
    );
    for o in &results {
        table.push_str(&format!(
            "| {} | {} | {} | {}{} | {} | {} | {} |\n",
            o.fault,
            o.phase,
            o.expected,
            o.observed,
            if o.pass { "" } else { " **FAIL**" },
            if o.resources_left.is_empty() {
                "0".to_string()
            } else {
                format!(
                    "{}: {}",
                    o.resources_left.len(),
                    o.resources_left.join(", ")
                )
            },
            o.items_lost,
            o.message.replace('|', "\\|").replace('\n', " "),
        ));
    }
    let passed = results.iter().filter(|o| o.pass).count();
    let summary = format!(
        "{} rows, {passed} as expected with nothing left and nothing lost; {WORKERS} rows at a time, {wall:.0} s wall time",
        results.len()
    );
    println!("{table}\n{summary}");
    if only.is_none() {
        write_figures("matrix.md", &format!("{table}\n{summary}\n"));
        write_figures(
            "matrix.json",
            &serde_json::to_string_pretty(&serde_json::json!({
                "rows": results,
                "passed": passed,
                "wall_secs": wall,
                "workers": WORKERS,
            }))
            .unwrap(),
        );
    }
    let failed: Vec<String> = results
        .iter()
        .filter(|o| !o.pass)
        .map(|o| format!("{} in {}: {} ({})", o.fault, o.phase, o.observed, o.message))
        .collect();
    assert!(
        failed.is_empty(),
        "rows that failed:\n{}",
        failed.join("\n")
    );
}

/// Write `name` under `target/reliability/` (next to the profile dirs), for the doc generator.
pub fn write_figures(name: &str, text: &str) {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/it-<hash>
    let target = exe.ancestors().nth(3).unwrap().join("reliability");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join(name), text).unwrap();
}

fn observed(row: &Row, outcome: &str, message: &str, left: Vec<String>, lost: i64) -> Observed {
    let ok = match row.expect {
        Expect::Completed => outcome == "completed",
        Expect::Stopped => outcome == "stopped cleanly" || outcome == "completed",
    };
    Observed {
        fault: row.fault.clone(),
        phase: row.phase.to_string(),
        expected: match row.expect {
            Expect::Completed => "completed".into(),
            Expect::Stopped => "stopped cleanly with a clear message (or completed)".into(),
        },
        observed: outcome.to_string(),
        message: shorten(message),
        pass: ok && left.is_empty() && lost == 0,
        resources_left: left,
        items_lost: lost,
        secs: 0.0,
    }
}

/// A message for the table: its start (what failed) and its end (the cause), at most ~320 chars.
fn shorten(message: &str) -> String {
    let chars: Vec<char> = message.chars().collect();
    if chars.len() <= 320 {
        return message.to_string();
    }
    let head: String = chars[..160].iter().collect();
    let tail: String = chars[chars.len() - 160..].iter().collect();
    format!("{head} … {tail}")
}

/// The world a row runs in: a local lab, one over the sshd harness, one on an rclone mount, or a
/// rented instance from the Scaleway emulator.
enum World {
    Local(Lab),
    Ssh(Lab, crate::sshd::Sshd),
    Rclone(RcloneLab),
    Scaleway(RcloneLab, ScwEmu),
}

impl World {
    fn lab(&self) -> &Lab {
        match self {
            World::Local(l) | World::Ssh(l, _) => l,
            World::Rclone(r) | World::Scaleway(r, _) => &r.lab,
        }
    }
    fn cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = self.lab().cmd(args);
        if let World::Scaleway(_, emu) = self {
            scw_env(emu, &mut c);
        }
        c
    }
    fn plexburst(&self, args: &[&str]) -> Output {
        run(&mut self.cmd(args))
    }
    fn spawn(&self, args: &[&str]) -> Child {
        crate::harness::spawn(&mut self.cmd(args))
    }
}

fn world(row: &Row) -> World {
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match &row.inject {
        Inject::Signal(..) => {
            // Each HTTP call takes 100 ms so that the short phases last long enough to be caught;
            // the scan and the analysis are slow only when they are the phase signalled.
            let scan = if row.phase == "scan" { "10" } else { "100" };
            World::Local(Lab::new(LabOpts {
                emulator_args: args(&[
                    "--scan-rate",
                    scan,
                    "--analysis-rate",
                    "8",
                    "--fault",
                    "slow-api:100ms",
                ]),
                ..Default::default()
            }))
        }
        Inject::Plex(a) => World::Local(Lab::new(LabOpts {
            emulator_args: args(a),
            monitor: vec!["stall_window = \"3s\"".into()],
            ..Default::default()
        })),
        Inject::SshCut | Inject::SshdRestart => {
            let sshd = crate::sshd::Sshd::start();
            let lab = Lab::new(LabOpts {
                target_toml: Some(sshd.config_toml()),
                emulator_args: args(&["--scan-rate", "6", "--analysis-rate", "40"]),
                ..Default::default()
            });
            World::Ssh(lab, sshd)
        }
        Inject::MountKill | Inject::BucketDown(_) => {
            let rates: &[&str] = match (&row.inject, row.phase) {
                // 82 files at 1 a second: the scan outlasts the minute the bucket is away.
                (Inject::BucketDown(_), _) => &["--scan-rate", "1", "--analysis-rate", "40"],
                (_, "scan") => &["--scan-rate", "4", "--analysis-rate", "40"],
                _ => &["--scan-rate", "40", "--analysis-rate", "6"],
            };
            World::Rclone(RcloneLab::new(
                LabOpts {
                    emulator_args: args(rates),
                    // The emulator's rate sleeps after each section's batch (12 s for Music at
                    // 1 a second) with no CPU: that is pacing, not a stall.
                    monitor: vec!["stall_window = \"30s\"".into()],
                    ..Default::default()
                },
                "",
            ))
        }
        Inject::ScwApiErrors | Inject::ScwOutOfStock => {
            let faults: &[&str] = if matches!(row.inject, Inject::ScwApiErrors) {
                &["rate-limit:0.1", "server-error:0.1"]
            } else {
                &["out-of-stock:DEV1-S"]
            };
            let emu = ScwEmu::start(faults);
            let rl = scaleway_lab(&emu, LabOpts::default());
            if matches!(row.inject, Inject::ScwOutOfStock) {
                let toml = std::fs::read_to_string(rl.lab.config_path())
                    .unwrap()
                    .replace(
                        "profile = \"lite\"\n",
                        "profile = \"lite\"\nfallback_types = [\"DEV1-M\"]\n",
                    );
                std::fs::write(rl.lab.config_path(), toml).unwrap();
            }
            World::Scaleway(rl, emu)
        }
        Inject::DiskFull | Inject::StateDeleted | Inject::StateCorrupted | Inject::TwoRuns => {
            World::Local(Lab::new(LabOpts {
                emulator_args: args(&["--scan-rate", "6"]),
                ..Default::default()
            }))
        }
    }
}

fn run_row(row: &Row) -> Observed {
    let mut w = world(row);
    let ended = inject(row, &mut w);
    let Some(ended) = ended else {
        return observed(
            row,
            "not run",
            "the phase went by in under the poll interval three times",
            leftovers(&w),
            0,
        );
    };
    let (mut outcome, mut message) = outcome(&ended.out);
    if ended.destroyed && outcome == "completed" {
        outcome = "stopped cleanly".into();
    }
    let had_problem = ended.problem.is_some();
    if let Some(p) = ended.problem.clone() {
        outcome = "check failed".into();
        message = p;
    } else if let Some(n) = ended.note {
        message = format!("{n}; {message}");
    }
    if had_problem
        || !matches!(outcome.as_str(), "completed" | "stopped cleanly")
        || (row.expect == Expect::Completed && outcome != "completed")
    {
        eprintln!(
            "matrix: {} in {}: the last command said:\n{}",
            row.fault,
            row.phase,
            crate::harness::text(&ended.out)
        );
    }
    let completed = outcome == "completed";
    let lost = items_lost(w.lab(), completed);
    observed(row, &outcome, &message, leftovers(&w), lost)
}

/// "completed" (exit 0), "stopped cleanly" (exit 1, 2 or 130 with a last stderr line that says
/// why, no panic), or "failed" with what was seen.
fn outcome(out: &Output) -> (String, String) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string();
    let panicked = stderr.contains("panicked");
    match out.status.code() {
        Some(0) if !panicked => ("completed".into(), last),
        Some(1 | 2 | 130) if !panicked && !last.is_empty() => ("stopped cleanly".into(), last),
        code => (
            "failed".into(),
            format!(
                "exit {code:?}: {}",
                stderr
                    .chars()
                    .rev()
                    .take(400)
                    .collect::<String>()
                    .chars()
                    .rev()
                    .collect::<String>()
            ),
        ),
    }
}

/// Processes still running with the lab's directory in their command line (servers, mounts,
/// ssh masters, plexburst itself; not the S3 fixture), mounts under it, and for a rented
/// instance what Scaleway still bills and the instance containers.
fn leftovers(w: &World) -> Vec<String> {
    let lab = w.lab();
    let dir = lab.dir.path().display().to_string();
    let mut left: Vec<String> = pids_with_cmdline(&dir)
        .into_iter()
        .filter_map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            // The fixture serving the bucket is the test's, not the run's.
            (!cmd.contains(" serve s3 ")).then(|| {
                let words: Vec<&str> = cmd.split_whitespace().take(2).collect();
                format!("process {pid} ({})", words.join(" "))
            })
        })
        .collect();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for l in mounts.lines() {
        if let Some(point) = l.split(' ').nth(1)
            && point.starts_with(&dir)
        {
            left.push(format!("mount {point}"));
        }
    }
    if let World::Scaleway(_, emu) = w {
        let n = emu.left();
        if n > 0 {
            left.push(format!("{n} Scaleway resources"));
        }
        for c in emu.containers() {
            left.push(format!("container {c}"));
        }
    }
    left
}

/// Items the DB marks deleted, plus (for a completed run) library items it does not hold. A DB
/// that went with its rented instance is read through the run's manifest (its per-section counts).
fn items_lost(lab: &Lab, completed: bool) -> i64 {
    let want = [
        (TRACKS, 8, lab.counts.tracks),
        (MOVIES, 1, lab.counts.movies),
        (PHOTOS, 13, lab.counts.photos),
    ];
    if lab.db_path().exists() {
        let deleted = lab.count("SELECT count(*) FROM metadata_items WHERE deleted_at IS NOT NULL");
        let missing: i64 = if completed {
            want.iter().map(|(q, _, n)| (n - lab.count(q)).max(0)).sum()
        } else {
            0
        };
        return deleted + missing;
    }
    if !completed {
        return 0;
    }
    let Some(manifest) = manifest(lab) else {
        // Completed with neither a DB nor a manifest: nothing of the library can be shown kept.
        return want.iter().map(|(_, _, n)| n).sum();
    };
    let sections = manifest["sections"].as_array().cloned().unwrap_or_default();
    let of_type = |t: i64, key: &str| -> i64 {
        sections
            .iter()
            .filter(|s| s["section_type"] == t)
            .map(|s| s[key].as_i64().unwrap_or(0))
            .sum()
    };
    want.iter()
        .map(|(_, t, n)| (n - of_type(*t, "items")).max(0) + of_type(*t, "deleted"))
        .sum()
}

/// The run's manifest: a local file, or an object of the lab's S3 fixture (`remote:bucket/key`,
/// the fixture serves the lab directory).
fn manifest(lab: &Lab) -> Option<serde_json::Value> {
    let state = lab.state();
    let at = state["export"]["manifest"].as_str()?.to_string();
    let path = match at.split_once(':') {
        Some((_, key)) if !at.starts_with('/') => lab.path(key),
        _ => std::path::PathBuf::from(&at),
    };
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn ended(out: Output) -> Option<Ended> {
    Some(Ended {
        out,
        problem: None,
        note: None,
        destroyed: false,
    })
}

fn inject(row: &Row, w: &mut World) -> Option<Ended> {
    match &row.inject {
        Inject::Signal(sig, then) => signal_in(w, row.phase, sig, *then),
        Inject::Plex(_) => ended(w.plexburst(&["run"])),
        Inject::SshCut => {
            let child = w.spawn(&["run"]);
            wait_for_phase(w.lab(), "scan", true);
            let World::Ssh(_, sshd) = &w else {
                unreachable!()
            };
            let cut = sshd.cut_connections();
            let out = child.wait_with_output().unwrap();
            Some(Ended {
                out,
                problem: (cut == 0).then(|| "no ssh connection to cut".to_string()),
                note: Some(format!("{cut} sshd processes killed")),
                destroyed: false,
            })
        }
        Inject::SshdRestart => {
            let child = w.spawn(&["run"]);
            wait_for_phase(w.lab(), "scan", true);
            let World::Ssh(_, sshd) = w else {
                unreachable!()
            };
            sshd.restart();
            ended(child.wait_with_output().unwrap())
        }
        Inject::MountKill => {
            let child = w.spawn(&["run"]);
            wait_for_phase(w.lab(), row.phase, true);
            let World::Rclone(rl) = &w else {
                unreachable!()
            };
            let pids = rl.mount_pids();
            for p in &pids {
                run(command("kill").args(["-9", &p.to_string()]));
            }
            let out = child.wait_with_output().unwrap();
            let guard = String::from_utf8_lossy(&out.stderr)
                .matches("the storage is degraded")
                .count();
            Some(Ended {
                out,
                problem: (pids.len() != 1)
                    .then(|| format!("expected one rclone mount, found {pids:?}")),
                note: Some(format!(
                    "rclone mount killed; the storage guard intervened {guard} times"
                )),
                destroyed: false,
            })
        }
        Inject::BucketDown(d) => {
            let child = w.spawn(&["run"]);
            wait_for_phase(w.lab(), "scan", true);
            let World::Rclone(rl) = w else { unreachable!() };
            rl.s3.stop();
            let back = Instant::now() + *d;
            // The outage lasts its minute unless the run gives up first.
            let mut child = child;
            while Instant::now() < back && child.try_wait().unwrap().is_none() {
                std::thread::sleep(Duration::from_millis(200)); // polling the run while the bucket is away
            }
            rl.s3.restart();
            let out = child.wait_with_output().unwrap();
            let guard = String::from_utf8_lossy(&out.stderr)
                .matches("the storage is degraded")
                .count();
            Some(Ended {
                out,
                problem: None,
                note: Some(format!("the storage guard intervened {guard} times")),
                destroyed: false,
            })
        }
        Inject::DiskFull => {
            let lab = w.lab();
            let export = lab.path("export");
            std::fs::create_dir_all(&export).unwrap();
            let m = run(command("mount")
                .args(["-t", "tmpfs", "-o", "size=64k", "pb-full"])
                .arg(&export));
            assert!(
                m.status.success(),
                "mount tmpfs: {}",
                crate::harness::text(&m)
            );
            let out = lab.plexburst(&["run", "--skip-analysis"]);
            run(command("umount").arg(&export));
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            Some(Ended {
                problem: (out.status.code() != Some(0)
                    && !stderr.to_lowercase().contains("no space"))
                .then(|| format!("the error does not say the disk is full: {stderr}")),
                out,
                note: None,
                destroyed: false,
            })
        }
        Inject::StateDeleted | Inject::StateCorrupted => {
            let lab = w.lab();
            let child = w.spawn(&["run"]);
            wait_for_phase(lab, "scan", true);
            run(command("kill").args(["-TERM", &child.id().to_string()]));
            let first = child.wait_with_output().unwrap();
            let state = lab.state_dir().join("state.json");
            if matches!(row.inject, Inject::StateDeleted) {
                std::fs::remove_file(&state).unwrap();
            } else {
                std::fs::write(&state, "{\"version\": 1, \"run_id\": ").unwrap();
            }
            let resume = w.plexburst(&["resume"]);
            let (r_outcome, r_msg) = outcome(&resume);
            let mut problem = (first.status.code() != Some(130)).then(|| {
                format!(
                    "the first run did not stop on SIGTERM: {}",
                    crate::harness::text(&first)
                )
            });
            if r_outcome != "stopped cleanly" {
                problem.get_or_insert(format!("resume: {r_outcome}: {r_msg}"));
            }
            if r_outcome == "stopped cleanly"
                && matches!(row.inject, Inject::StateCorrupted)
                && !r_msg.contains("move it aside")
            {
                problem.get_or_insert(format!("resume does not say the fix: {r_msg}"));
            }
            let again = w.plexburst(&["run"]);
            Some(Ended {
                out: again,
                problem,
                note: Some(format!("resume: {r_msg}; run again")),
                destroyed: false,
            })
        }
        Inject::TwoRuns => {
            let lab = w.lab();
            let child = w.spawn(&["run"]);
            wait_for_phase(lab, "scan", true);
            let second = w.plexburst(&["run"]);
            let (o2, m2) = outcome(&second);
            let out = child.wait_with_output().unwrap();
            Some(Ended {
                out,
                problem: (o2 != "stopped cleanly" || !m2.contains("another plexburst process"))
                    .then(|| format!("the second run was not refused: {o2}: {m2}")),
                note: Some(format!("second run: {m2}")),
                destroyed: false,
            })
        }
        Inject::ScwApiErrors | Inject::ScwOutOfStock => {
            let out = w.plexburst(&["run", "--skip-analysis"]);
            let World::Scaleway(_, emu) = &w else {
                unreachable!()
            };
            let problem = if matches!(row.inject, Inject::ScwApiErrors) {
                scw_api_errors_check(emu)
            } else {
                let stderr = String::from_utf8_lossy(&out.stderr);
                (!(stderr.contains("DEV1-S in fr-par-1 is out of stock at power-on")
                    && stderr.contains("DEV1-M in fr-par-1")))
                .then(|| "no fallback from DEV1-S to DEV1-M was reported".to_string())
            };
            Some(Ended {
                out,
                problem,
                note: None,
                destroyed: false,
            })
        }
    }
}

/// The API faults fired, and exactly one server was created in spite of the retries.
fn scw_api_errors_check(emu: &ScwEmu) -> Option<String> {
    let requests: serde_json::Value = serde_json::from_str(
        &ureq::get(&format!("{}/_emulator/requests", emu.url))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap(),
    )
    .unwrap();
    let all = requests["requests"].as_array().cloned().unwrap_or_default();
    let failed = all
        .iter()
        .filter(|r| r["status"].as_u64().is_some_and(|s| s == 429 || s >= 500))
        .count();
    let creates = all
        .iter()
        .filter(|r| {
            r["method"] == "POST"
                && r["path"].as_str().is_some_and(|p| p.ends_with("/servers"))
                && r["status"] == 201
        })
        .count();
    if failed == 0 {
        Some("no 429/5xx was served".into())
    } else if creates != 1 {
        Some(format!("{creates} servers were created"))
    } else {
        None
    }
}

/// The current phase in the lab's state file, if it reads.
fn current_phase(lab: &Lab) -> Option<String> {
    let b = std::fs::read(lab.state_dir().join("state.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&b).ok()?;
    v["current_phase"].as_str().map(String::from)
}

/// Poll the state file until `phase` runs (and, with `items`, the DB shows its first items).
fn wait_for_phase(lab: &Lab, phase: &str, items: bool) {
    crate::harness::wait_for(
        &format!("phase {phase} under way"),
        Duration::from_secs(120),
        || {
            let Ok(bytes) = std::fs::read(lab.state_dir().join("state.json")) else {
                return false;
            };
            let Ok(st) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
                return false;
            };
            st["current_phase"] == phase
                && (!items
                    || phase != "scan"
                    || st["last_sample"]["sections"]
                        .as_array()
                        .is_some_and(|s| s.iter().any(|c| c["items"].as_i64() > Some(0))))
        },
    );
}

/// Start a run and signal plexburst while the state says it is in `phase` (frozen with SIGSTOP
/// between the look and the signal, so it cannot move on); then what `then` says. `None` when
/// three runs went through the phase before it could be caught.
fn signal_in(w: &World, phase: &str, signal: &str, then: Then) -> Option<Ended> {
    let lab = w.lab();
    for _ in 0..3 {
        let _ = std::fs::remove_dir_all(lab.state_dir());
        let mut child = if phase == "analyze" {
            w.spawn(&["run"])
        } else {
            w.spawn(&["run", "--skip-analysis"])
        };
        let pid = child.id().to_string();
        let deadline = Instant::now() + Duration::from_secs(120);
        while current_phase(lab).as_deref() != Some(phase) {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            assert!(Instant::now() < deadline, "phase {phase} never came");
            std::thread::sleep(Duration::from_millis(2)); // polling the state file
        }
        run(command("kill").args(["-STOP", &pid]));
        let caught = current_phase(lab).as_deref() == Some(phase);
        if caught {
            run(command("kill").args([&format!("-{signal}"), &pid]));
        }
        run(command("kill").args(["-CONT", &pid]));
        let out = child.wait_with_output().unwrap();
        if !caught {
            // Went by: let it finish, clean what it left and try again.
            w.plexburst(&["destroy"]);
            continue;
        }
        return match then {
            Then::Nothing => ended(out),
            Then::Resume => Some(Ended {
                out: w.plexburst(&["resume"]),
                problem: None,
                note: Some("resume".into()),
                destroyed: false,
            }),
            Then::Destroy => Some(Ended {
                out: w.plexburst(&["destroy"]),
                problem: None,
                note: Some("destroy".into()),
                destroyed: true,
            }),
        };
    }
    None
}
