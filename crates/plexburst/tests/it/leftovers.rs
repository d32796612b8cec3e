//! Nothing of a run stays on a machine we do not rent, on a local and an ssh target with rclone
//! storage: after a run that failed (and its resume), a run that went through with
//! `--keep-cache`, and plexburst killed in each phase followed by `destroy`. Each time a planted
//! S3 secret is in no file under /tmp (the lab, its data and work dirs are there) and on no
//! command line, the VFS cache is gone (or kept and reported), nothing is mounted or running, and
//! Preferences.xml holds exactly the attributes it held before the first run.
//!
//! One lab serves every step in turn, so the whole matrix costs one library and one data dir.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use crate::e2e::Server;
use crate::harness::{
    LabOpts, command, descendants, pid_alive, pids_with_cmdline, run, spawn, text, wait_for,
};
use crate::rclone::RcloneLab;

/// The variable the lab's config names for the S3 secret: the only way it reaches plexburst.
const SECRET_ENV: &str = "PB_TEST_PLANTED_S3_SECRET";

/// What the cleanup that just ran should have left of the VFS cache.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cache {
    Gone,
    /// Kept, and reported with this reason.
    Kept(&'static str),
}

struct World {
    rl: RcloneLab,
    secret: String,
    /// Files under /tmp older than this were not written by this test.
    started: SystemTime,
    /// Preferences.xml's attributes before the first run.
    prefs_before: BTreeMap<String, String>,
}

impl World {
    fn new(target_toml: Option<String>) -> World {
        let started = SystemTime::now();
        let secret = format!("PLANTED-S3-SECRET-{}", uuid::Uuid::new_v4().simple());
        let rl = RcloneLab::with_endpoint(
            LabOpts {
                target_toml,
                // The first analysis stalls once (the failed run); every API call takes 50 ms, so
                // even configure and restore last long enough to be killed in.
                emulator_args: [
                    "--analysis-rate",
                    "20",
                    "--fault",
                    "stall:analysis:4",
                    "--fault",
                    "slow-api:50ms",
                ]
                .map(String::from)
                .to_vec(),
                monitor: vec!["stall_window = \"3s\"".into()],
                ..Default::default()
            },
            "export_path = \"exports/plexburst\"",
            SECRET_ENV,
            &secret,
        );
        // The user's own settings: some away from their defaults (so Preferences.xml states
        // them), autoEmptyTrash at its default (so the file has no attribute for it).
        let server = Server::start(&rl.lab);
        server.put_prefs(
            "GenerateBIFBehavior=scheduled&ScannerLowPriority=1&FSEventLibraryUpdatesEnabled=1&ButlerTaskRefreshLibraries=1",
        );
        server.stop();
        let w = World {
            rl,
            secret,
            started,
            prefs_before: BTreeMap::new(),
        };
        let prefs_before = w.prefs();
        assert_eq!(prefs_before["GenerateBIFBehavior"], "scheduled");
        assert!(!prefs_before.contains_key("autoEmptyTrash"));
        World { prefs_before, ..w }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.rl.lab.cmd(args);
        c.env(SECRET_ENV, &self.secret);
        c
    }

    fn plexburst(&self, args: &[&str]) -> Output {
        run(&mut self.cmd(args))
    }

    fn work_dir(&self) -> PathBuf {
        self.rl.lab.data_dir().join(".plexburst")
    }

    fn rclone_dir(&self) -> PathBuf {
        self.work_dir().join("rclone")
    }

    fn prefs_path(&self) -> PathBuf {
        self.rl
            .lab
            .data_dir()
            .join("Library/Application Support/Plex Media Server/Preferences.xml")
    }

    fn prefs(&self) -> BTreeMap<String, String> {
        let xml = std::fs::read_to_string(self.prefs_path()).unwrap();
        plexburst::plex::xml::attrs(&xml).unwrap()
    }

    fn current_phase(&self) -> Option<String> {
        let bytes = std::fs::read(self.rl.lab.state_dir().join("state.json")).ok()?;
        let st: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        st["current_phase"].as_str().map(String::from)
    }

    /// Every file under /tmp (and $TMPDIR) written since the test started (the lab with its
    /// data, work and state dirs is there) that holds the secret, and every process whose
    /// command line does.
    fn secret_holders(&self) -> Vec<String> {
        let mut roots = vec![PathBuf::from("/tmp")];
        if std::env::temp_dir() != roots[0] {
            roots.push(std::env::temp_dir());
        }
        let mut found: Vec<String> = roots
            .iter()
            .flat_map(|root| files_holding(self.secret.as_bytes(), root, self.started))
            .map(|p| p.display().to_string())
            .collect();
        for pid in pids_with_cmdline(&self.secret) {
            found.push(format!("the command line of pid {pid}"));
        }
        found
    }

    /// What every cleanup owes: no secret anywhere, nothing running or mounted, the settings
    /// back as they were, the cache as `cache` says, and the summary saying what stays.
    fn assert_left(&self, after: &str, out: &Output, cache: Cache) {
        let log = format!(
            "after {after}, pid file {:?}\n{}",
            self.rl.lab.server_pid(),
            text(out)
        );
        let holders = self.secret_holders();
        assert!(holders.is_empty(), "the S3 secret is in {holders:?}\n{log}");
        assert!(
            !self.rclone_dir().join("rclone.conf").exists(),
            "the rclone config is left\n{log}"
        );
        assert_eq!(self.prefs(), self.prefs_before, "Preferences.xml\n{log}");
        assert!(
            self.rl.mount_pids().is_empty(),
            "rclone still mounts\n{log}"
        );
        let findmnt = run(command("findmnt").args(["-M", &self.rl.mount_point]));
        assert!(!findmnt.status.success(), "still mounted\n{log}");
        if let Some(pid) = self.rl.lab.server_pid() {
            assert!(!pid_alive(pid), "the server (pid {pid}) runs\n{log}");
        }
        let data = self.rl.lab.data_dir().display().to_string();
        let left = pids_with_cmdline(&data);
        assert!(left.is_empty(), "processes left: {left:?}\n{log}");
        let cache_dir = self.rclone_dir().join("cache");
        let stderr = String::from_utf8_lossy(&out.stderr);
        match cache {
            Cache::Gone => assert!(!cache_dir.exists(), "the cache is left\n{log}"),
            Cache::Kept(why) => {
                assert!(cache_dir.is_dir(), "the cache is gone\n{log}");
                assert!(
                    stderr.lines().any(|l| l.contains("VFS cache")
                        && l.contains(why)
                        && l.contains(&cache_dir.display().to_string())
                        && (l.contains(" B)") || l.contains("iB)"))),
                    "the kept cache is not reported with its size\n{log}"
                );
            }
        }
        // The work dir holds only the server's log (and what the cleanup kept on purpose).
        let mut work: Vec<String> = std::fs::read_dir(self.work_dir())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        work.sort();
        let rclone: Vec<String> = std::fs::read_dir(self.rclone_dir())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        match cache {
            Cache::Gone => assert_eq!(work, ["plex.log"], "work dir\n{log}"),
            Cache::Kept(_) => assert!(
                work == ["plex.log", "rclone"] && rclone.contains(&"cache".to_string()),
                "work dir {work:?}, rclone dir {rclone:?}\n{log}"
            ),
        }
        // The run's files in the export destination: the manifest, nothing half-done.
        let run_id = self.rl.lab.state()["run_id"].as_str().unwrap().to_string();
        let scratch: Vec<String> = std::fs::read_dir(self.rl.lab.path("export"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&run_id) && !n.ends_with(".manifest.json"))
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            scratch.is_empty(),
            "export working files: {scratch:?}\n{log}"
        );
        assert!(
            stderr.contains("nothing else plexburst put on"),
            "no confirmation that nothing else remains\n{log}"
        );
        assert!(!stderr.contains("could NOT put back"), "{log}");
        let report = self
            .rl
            .lab
            .state_dir()
            .join("runs")
            .join(&run_id)
            .join("report.md");
        let report = std::fs::read_to_string(report).unwrap();
        assert!(
            report.contains("## Left on the target") && report.contains("Plex data dir"),
            "{report}"
        );
    }

    /// Start a run, SIGKILL plexburst while the state says it is in `phase`, wait until the
    /// commands it had under way are done, and return the run's output. A phase that went by
    /// between the look and the kill is retried with a new run. The library is analysed by now,
    /// so only a kill in the analysis runs one; the others skip it to save the time.
    fn kill_in(&self, phase: &str) -> Output {
        let args: &[&str] = if phase == "analyze" {
            &["run"]
        } else {
            &["run", "--skip-analysis"]
        };
        for _ in 0..3 {
            let mut child = spawn(&mut self.cmd(args));
            let pid = child.id();
            let deadline = Instant::now() + Duration::from_secs(240);
            while self.current_phase().as_deref() != Some(phase) {
                if let Ok(Some(_)) = child.try_wait() {
                    let out = child.wait_with_output().unwrap();
                    panic!("the run ended before phase {phase}:\n{}", text(&out));
                }
                assert!(Instant::now() < deadline, "phase {phase} never came");
                std::thread::sleep(Duration::from_millis(5)); // polling the state file
            }
            // Frozen, it cannot move on while we look again and take its process tree.
            run(command("kill").args(["-STOP", &pid.to_string()]));
            let caught = self.current_phase().as_deref() == Some(phase);
            let sid = session(pid).expect("the run's session");
            let tree: Vec<u32> = descendants(pid)
                .into_iter()
                .map(|(p, _)| p)
                .filter(|p| transient(*p, sid))
                .collect();
            run(command("kill").args(["-KILL", &pid.to_string()]));
            let out = child.wait_with_output().unwrap();
            // A command already started on the target goes on after plexburst dies; destroy
            // cannot know about it, so it is let finish (what it started, it left for destroy).
            wait_for(
                "the killed run's commands to end",
                Duration::from_secs(120),
                || tree.iter().all(|p| !pid_alive(*p)),
            );
            if caught {
                return out;
            }
            let d = self.plexburst(&["destroy"]);
            assert_eq!(d.status.code(), Some(0), "{}", text(&d));
        }
        panic!("three runs went through phase {phase} before they could be killed in it");
    }
}

/// A process of the killed run that ends by itself (a command under way) rather than one it
/// started to outlive it: the server, the mount and the ssh master are started in a session of
/// their own (setsid, `ssh -f`); a command under way stays in plexburst's.
fn transient(pid: u32, run_session: u32) -> bool {
    session(pid) == Some(run_session)
}

/// The session id of `pid` (field 6 of /proc/PID/stat).
fn session(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(3)?.parse().ok()
}

/// Regular files under `root` on its filesystem (not into other mounts, such as other tests'
/// FUSE mounts), modified since `since`, whose bytes contain `needle`.
fn files_holding(needle: &[u8], root: &Path, since: SystemTime) -> Vec<PathBuf> {
    let Ok(top) = std::fs::symlink_metadata(root) else {
        return Vec::new();
    };
    let since = since - Duration::from_secs(2);
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.dev() != top.dev() {
                continue;
            }
            if m.is_dir() {
                dirs.push(e.path());
            } else if m.is_file()
                && m.modified().is_ok_and(|t| t >= since)
                && std::fs::read(e.path())
                    .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            {
                found.push(e.path());
            }
        }
    }
    found
}

fn leaves_nothing_behind(target_toml: Option<String>) {
    let w = World::new(target_toml);
    let lab = &w.rl.lab;

    // A run that fails in the analysis (the stall), after configure changed the settings: Plex
    // is stopped, its settings are back in the file, the config is gone, the cache stays for
    // the resume.
    let out = w.plexburst(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("stalled"), "{}", text(&out));
    w.assert_left(
        "the failed run",
        &out,
        Cache::Kept("kept for `plexburst resume`; `plexburst destroy` removes it"),
    );
    assert!(w.rclone_dir().join("mount.log").exists(), "kept for resume");
    assert_eq!(
        lab.phase("configure")["status"],
        "pending",
        "configure again"
    );

    // The resume pushes the config again, turns the background tasks off again, and ends
    // like any run: nothing but what stays on purpose. (The short stall window goes.)
    let cfg = std::fs::read_to_string(lab.config_path()).unwrap();
    std::fs::write(
        lab.config_path(),
        cfg.replace("stall_window = \"3s\"", "stall_window = \"15s\""),
    )
    .unwrap();
    let out = w.plexburst(&["resume", "--replan"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let journal = std::fs::read_to_string(lab.journal()).unwrap();
    let conf = w.rclone_dir().join("rclone.conf").display().to_string();
    let pushes = journal
        .lines()
        .filter(|l| l.contains("\"put_file\"") && l.contains(&conf))
        .count();
    assert_eq!(pushes, 2, "pushed by prepare and again by the resume");
    w.assert_left("the resume", &out, Cache::Gone);
    let left = &lab.state()["left_on_target"];
    assert_eq!(left["by"], "teardown", "{left:#}");
    assert_eq!(left["stray"], serde_json::json!([]), "{left:#}");

    // A run that keeps its cache for the next one: the cache stays and its size is reported.
    let out = w.plexburst(&["run", "--keep-cache", "--skip-analysis"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    w.assert_left("--keep-cache", &out, Cache::Kept("kept: --keep-cache"));
    let kept = lab.state()["left_on_target"]["kept"].clone();
    let cache = kept
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["what"].as_str().unwrap().starts_with("VFS cache"))
        .unwrap_or_else(|| panic!("no cache in {kept:#}"))
        .clone();
    assert!(cache["bytes"].as_u64().unwrap() > 0, "{cache:#}");

    // plexburst killed in each phase, then destroy: everything goes, the cache the last run
    // kept with it.
    let phases = [
        "prepare",
        "start-plex",
        "configure",
        "scan",
        "analyze",
        "restore",
        "export",
        "teardown",
    ];
    for phase in phases {
        let killed = w.kill_in(phase);
        if phase == "scan" {
            // While the run is on, the config holds the secret, and the search finds it there.
            let holders = w.secret_holders();
            assert!(
                holders.iter().any(|h| h.ends_with("rclone/rclone.conf")),
                "the search for the secret does not see the live config: {holders:?}\n{}",
                text(&killed)
            );
        }
        let out = w.plexburst(&["destroy"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "destroy after a kill in {phase}:\n{}",
            text(&out)
        );
        assert_eq!(lab.state()["status"], "destroyed", "killed in {phase}");
        w.assert_left(&format!("a kill in {phase} and destroy"), &out, Cache::Gone);
    }
}

#[test]
fn local_target_keeps_nothing_secret_cached_or_changed_on_every_exit() {
    leaves_nothing_behind(None);
}

#[test]
fn ssh_target_keeps_nothing_secret_cached_or_changed_on_every_exit() {
    let sshd = crate::sshd::Sshd::start();
    leaves_nothing_behind(Some(sshd.config_toml()));
}
