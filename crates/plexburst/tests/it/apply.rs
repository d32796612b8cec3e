//! `plexburst apply`: a real archive from a real run installed into a second emulator data dir
//! (the "home"), locally and over the loopback sshd; identity kept, new counts served, the backup
//! restored by `--rollback`; refused archives change nothing; killed at every step, then run again
//! or rolled back, the home is always whole.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use plexburst::apply::{
    ABORT_ENV, KILL_POINTS, KILLED_STATUS, PUSHED_KILL_POINT, ROLLBACK_KILL_POINTS,
};

use crate::harness::{
    Lab, LabOpts, TRACKS, command, emulator_bin, free_port, pid_alive, plexburst_bin, run, text,
    wait_for,
};

const SONIC: &str = "SELECT count(*) FROM metadata_items WHERE metadata_type = 10 AND deleted_at IS NULL \
     AND instr(extra_data, 'musicAnalysisVersion') > 0";
const SECTIONS: &str = "SELECT count(*) FROM library_sections";

/// What a data dir holds, read with sqlite3 (not through plexburst): sections, tracks, Sonic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counts {
    sections: i64,
    tracks: i64,
    sonic: i64,
}

fn counts(lab: &Lab) -> Counts {
    Counts {
        sections: lab.count(SECTIONS),
        tracks: lab.count(TRACKS),
        sonic: lab.count(SONIC),
    }
}

fn prefs_path(data: &Path) -> PathBuf {
    data.join("Library/Application Support/Plex Media Server/Preferences.xml")
}

fn attr(data: &Path, name: &str) -> String {
    let xml = std::fs::read_to_string(prefs_path(data)).unwrap();
    plexburst::plex::xml::attr(&xml, name)
        .expect("Preferences.xml parses")
        .unwrap_or_default()
}

/// The home Plex: the emulator on a data dir, run by a service script with the contract `apply`
/// documents (`CMD stop` returns once it is gone, `CMD start` once it is launched, both succeed
/// when already so). Stopped when dropped. The claim claims the home the first time only (the
/// emulator ignores it once the prefs hold a token, as pms-docker does).
struct HomeService {
    script: PathBuf,
    pid_file: PathBuf,
    port: u16,
}

impl HomeService {
    fn new(lab: &Lab) -> HomeService {
        let port = free_port();
        let script = lab.path("home-plex.sh");
        let pid_file = lab.path("home-plex.pid");
        let body = format!(
            r#"#!/bin/sh
# The home Plex for the apply tests: start | stop.
pidf='{pidf}'
alive() {{ [ -f "$pidf" ] && grep -q '^State:[[:space:]]*[^ZX]' "/proc/$(cat "$pidf")/status" 2>/dev/null; }}
case "$1" in
start)
  alive && exit 0
  setsid '{emu}' serve --data-dir '{data}' --listen 127.0.0.1:{port} --claim home-claim >> '{log}' 2>&1 < /dev/null &
  echo $! > "$pidf" ;;
stop)
  if alive; then
    kill -TERM "$(cat "$pidf")"
    while alive; do sleep 0.05; done
  fi
  rm -f "$pidf" ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
"#,
            pidf = pid_file.display(),
            emu = emulator_bin().display(),
            data = lab.data_dir().display(),
            log = lab.path("home-plex.log").display(),
        );
        std::fs::write(&script, body).unwrap();
        let s = HomeService {
            script,
            pid_file,
            port,
        };
        s.ctl("start");
        s.wait_up();
        s
    }

    fn ctl(&self, verb: &str) {
        let out = run(command("sh").arg(&self.script).arg(verb));
        assert!(out.status.success(), "{verb}: {}", text(&out));
    }

    fn service_flag(&self) -> String {
        format!("command:sh {}", self.script.display())
    }

    fn pid(&self) -> Option<i64> {
        std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()
            .filter(|p| pid_alive(*p))
    }

    fn wait_up(&self) {
        let url = format!("http://127.0.0.1:{}/identity", self.port);
        wait_for("the home Plex", Duration::from_secs(30), || {
            ureq::get(&url).call().is_ok()
        });
    }

    /// `machineIdentifier` from `/identity`, and the section titles served with `token`.
    fn served(&self, token: &str) -> (String, Vec<String>) {
        let base = format!("http://127.0.0.1:{}", self.port);
        let id: serde_json::Value = ureq::get(&format!("{base}/identity"))
            .header("Accept", "application/json")
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        let sections: serde_json::Value = ureq::get(&format!("{base}/library/sections"))
            .header("Accept", "application/json")
            .header("X-Plex-Token", token)
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap();
        let titles = sections["MediaContainer"]["Directory"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|d| d["title"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        (
            id["MediaContainer"]["machineIdentifier"]
                .as_str()
                .unwrap()
                .to_string(),
            titles,
        )
    }
}

impl Drop for HomeService {
    fn drop(&mut self) {
        let _ = run(command("sh").arg(&self.script).arg("stop"));
    }
}

/// A run's archive and manifest (all three sections, every track Sonic-analysed) and the home:
/// another lab run on Music only without analysis, so its counts differ, with its own identity.
struct World {
    // Dropped first: its script lives in the home lab's dir, which goes with `home`.
    svc: HomeService,
    src: Lab,
    home: Lab,
    archive: PathBuf,
    old: Counts,
    new: Counts,
    home_machine: String,
    home_processed: String,
    home_token: String,
}

fn world() -> World {
    let src = Lab::new(LabOpts::default());
    let out = src.plexburst(&["run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let archive = PathBuf::from(src.state()["export"]["archive"].as_str().unwrap());
    let new = counts(&src);
    let home = Lab::new(LabOpts::default());
    let out = home.plexburst(&["run", "--only-section", "Music", "--skip-analysis"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let old = counts(&home);
    assert_ne!(old, new, "the home must start with other counts");
    assert_eq!(new.sonic, src.counts.tracks);
    // The home server's user owns its data dir; as root, make it someone else than this process,
    // so the ownership apply gives the installed data is seen.
    if run(command("id").arg("-u")).stdout == b"0\n" {
        let out = run(command("chown").arg("4242:4242").arg(home.data_dir()));
        assert!(out.status.success(), "{}", text(&out));
    }
    let svc = HomeService::new(&home);
    let d = home.data_dir();
    wait_for("the home's claim", Duration::from_secs(30), || {
        !attr(&d, "PlexOnlineToken").is_empty()
    });
    let w = World {
        home_machine: attr(&d, "MachineIdentifier"),
        home_processed: attr(&d, "ProcessedMachineIdentifier"),
        home_token: attr(&d, "PlexOnlineToken"),
        src,
        home,
        svc,
        archive,
        old,
        new,
    };
    assert!(!w.home_token.is_empty(), "the home was not claimed");
    assert_ne!(
        w.home_machine,
        attr(&w.src.data_dir(), "MachineIdentifier"),
        "the archive must carry another identity"
    );
    w
}

impl World {
    fn apply(&self, extra: &[&str]) -> Output {
        self.apply_with(&self.home.data_dir().display().to_string(), extra, &[])
    }

    fn apply_with(&self, to: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
        std::fs::create_dir_all(self.home.path("tmp")).unwrap();
        let mut c = command(plexburst_bin());
        c.arg("apply")
            .args(["--to", to])
            .args(["--service", &self.svc.service_flag()])
            .args(["--plex-port", &self.svc.port.to_string()])
            .args(["--timeout", "60s"])
            .args(extra)
            // `apply` reads no config: one that does not exist must not matter.
            .args(["--config", "/nonexistent/plexburst.toml"])
            .env("PLEXBURST_LOG", "plexburst=info")
            .env_remove(ABORT_ENV)
            // A killed apply leaves its ssh scratch dir; keep it inside the lab.
            .env("TMPDIR", self.home.path("tmp"))
            .stdin(std::process::Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        run(&mut c)
    }

    fn archive(&self) -> &str {
        self.archive.to_str().unwrap()
    }

    /// The home is whole and on `want`: its DB opens with those counts, its prefs parse with its
    /// own identity, and the server started from it serves them.
    fn assert_home(&self, want: Counts, what: &str) {
        assert_eq!(counts(&self.home), want, "{what}: the home DB");
        let d = self.home.data_dir();
        assert_eq!(attr(&d, "MachineIdentifier"), self.home_machine, "{what}");
        assert_eq!(attr(&d, "PlexOnlineToken"), self.home_token, "{what}");
        self.svc.wait_up();
        let (machine, titles) = self.svc.served(&self.home_token);
        assert_eq!(machine, self.home_processed, "{what}: identity served");
        assert_eq!(titles.len() as i64, want.sections, "{what}: {titles:?}");
    }

    fn journal_dir(&self) -> PathBuf {
        self.home.data_dir().join(".plexburst-apply")
    }

    fn backups(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.journal_dir().join("backups"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    }
}

fn ok(out: &Output) {
    assert_eq!(out.status.code(), Some(0), "{}", text(out));
}

/// Install, keep the identity, serve the new counts, do nothing the second time, roll back.
fn round_trip(w: &World, to: &str, extra: &[&str]) {
    w.assert_home(w.old, "before");
    let pid = w.svc.pid().expect("the home Plex runs");

    let dry = w.apply_with(to, &[&[w.archive(), "--dry-run"], extra].concat(), &[]);
    ok(&dry);
    let said = String::from_utf8_lossy(&dry.stdout);
    for step in [
        "archive verified",
        "stop the home Plex: sh ",
        "back up to",
        "install the archive's",
        "keep the home's identity",
        "start the home Plex",
        "check through the API",
    ] {
        assert!(said.contains(step), "dry run lacks {step:?}:\n{said}");
    }
    assert!(!w.journal_dir().exists(), "the dry run wrote the journal");
    assert_eq!(
        w.svc.pid(),
        Some(pid),
        "the dry run restarted the home Plex"
    );
    w.assert_home(w.old, "after the dry run");

    let out = w.apply_with(to, &[&[w.archive()], extra].concat(), &[]);
    ok(&out);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("counts match the manifest"), "{said}");
    w.assert_home(w.new, "after apply");
    assert_eq!(w.backups().len(), 1);
    let backup = &w.backups()[0];
    for kept in ["Preferences.xml", "Databases"] {
        assert!(backup.join(kept).exists(), "{kept} not in the backup");
    }
    // The installed data belongs to the data dir's owner.
    {
        use std::os::unix::fs::MetadataExt;
        let pms = w
            .home
            .data_dir()
            .join("Library/Application Support/Plex Media Server");
        let owner = std::fs::metadata(w.home.data_dir()).unwrap().uid();
        for p in [w.home.db_path(), pms.join("Metadata"), pms.join("Media")] {
            assert_eq!(
                std::fs::metadata(&p).unwrap().uid(),
                owner,
                "{} not given to the data dir's owner",
                p.display()
            );
        }
    }
    // Nothing of the archive's copy is left but the backup.
    for left in ["staging", "incoming"] {
        let d = w.journal_dir().join(left);
        let n = std::fs::read_dir(&d).map(|d| d.count()).unwrap_or(0);
        assert_eq!(n, 0, "{} is not empty", d.display());
    }
    // No secret in what apply prints.
    let all = said.to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!all.contains(&w.home_token), "the home token was printed");

    let pid = w.svc.pid().expect("the home Plex runs after apply");
    let again = w.apply_with(to, &[&[w.archive()], extra].concat(), &[]);
    ok(&again);
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("already installed"),
        "{}",
        text(&again)
    );
    assert_eq!(w.svc.pid(), Some(pid), "a second apply restarted Plex");
    w.assert_home(w.new, "after the second apply");

    let back = w.apply_with(to, &[&["--rollback"], extra].concat(), &[]);
    ok(&back);
    w.assert_home(w.old, "after --rollback");
    assert!(w.backups().is_empty(), "the used backup is left");
    let none = w.apply_with(to, &[&["--rollback"], extra].concat(), &[]);
    assert_eq!(none.status.code(), Some(2), "{}", text(&none));
}

#[test]
fn apply_locally_keeps_the_identity_serves_the_new_counts_and_rolls_back() {
    let w = world();
    let to = w.home.data_dir().display().to_string();
    round_trip(&w, &to, &[]);

    // --take-identity: the server becomes the archive's, and the rollback makes it the home again.
    let (home, theirs) = (w.home.data_dir(), w.src.data_dir());
    ok(&w.apply(&[w.archive(), "--take-identity"]));
    for a in [
        "MachineIdentifier",
        "PlexOnlineToken",
        "AnonymousMachineIdentifier",
    ] {
        assert_eq!(attr(&home, a), attr(&theirs, a), "{a} not taken");
    }
    w.svc.wait_up();
    let (machine, titles) = w.svc.served(&attr(&theirs, "PlexOnlineToken"));
    assert_eq!(machine, attr(&theirs, "ProcessedMachineIdentifier"));
    assert_eq!(titles.len() as i64, w.new.sections);
    ok(&w.apply(&["--rollback"]));
    w.assert_home(w.old, "after rolling back --take-identity");
}

#[test]
fn apply_over_ssh_keeps_the_identity_serves_the_new_counts_and_rolls_back() {
    let sshd = crate::sshd::Sshd::start();
    let w = world();
    let t = sshd.target();
    let to = format!(
        "ssh://{}@127.0.0.1:{}{}",
        t.user,
        t.port,
        w.home.data_dir().display()
    );
    let mut extra = vec![
        "--ssh-identity".to_string(),
        sshd.identity().display().to_string(),
    ];
    for o in &t.extra_options {
        extra.push("--ssh-option".into());
        extra.push(o.clone());
    }
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    round_trip(&w, &to, &extra);

    // Killed once the archive is on the home host: nothing changed there, and the next apply
    // uses that copy instead of sending it again.
    let pid = w.svc.pid().unwrap();
    let cut = w.apply_with(
        &to,
        &[&[w.archive()], &extra[..]].concat(),
        &[(ABORT_ENV, PUSHED_KILL_POINT)],
    );
    assert_eq!(cut.status.code(), Some(KILLED_STATUS), "{}", text(&cut));
    assert_eq!(w.svc.pid(), Some(pid), "the home Plex was stopped");
    assert!(!w.journal_dir().join("journal.json").exists());
    w.assert_home(w.old, "killed after the copy");
    let out = w.apply_with(&to, &[&[w.archive()], &extra[..]].concat(), &[]);
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the archive is already at"),
        "{}",
        text(&out)
    );
    w.assert_home(w.new, "applied after the kill");
    ok(&w.apply_with(&to, &[&["--rollback"], &extra[..]].concat(), &[]));
    w.assert_home(w.old, "rolled back");
}

/// An archive rebuilt with `edit` (a shell command run in its extracted tree), its manifest
/// carrying the new sha256 and size but the original entry count.
fn rebuilt(w: &World, name: &str, edit: &str) -> PathBuf {
    let dir = w.home.path(name);
    let tree = dir.join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let archive = dir.join("run.tar.zst");
    let out = run(command("sh").arg("-c").arg(format!(
        "set -e; cd '{t}'; zstd -dcq '{a}' | tar -xf -; {edit}; find Library | LC_ALL=C sort > ../list; tar --no-recursion -T ../list -cf - | zstd -q -o '{o}'",
        t = tree.display(),
        a = w.archive(),
        o = archive.display()
    )));
    assert!(out.status.success(), "{}", text(&out));
    let sha = run(command("sha256sum").arg(&archive));
    let sha = String::from_utf8_lossy(&sha.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let mut m = manifest(w);
    m["sha256"] = sha.into();
    m["bytes"] = std::fs::metadata(&archive).unwrap().len().into();
    std::fs::write(
        dir.join("run.manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
    archive
}

fn manifest(w: &World) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(w.src.state()["export"]["manifest"].as_str().unwrap()).unwrap(),
    )
    .unwrap()
}

#[test]
fn an_archive_that_does_not_match_its_manifest_is_refused_before_anything_stops() {
    let w = world();
    let pid = w.svc.pid().unwrap();
    let refused = |archive: &str, manifest: &Path, why: &str| {
        let out = w.apply(&[archive, "--manifest", manifest.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{why}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{why}: {err}");
        assert_eq!(w.svc.pid(), Some(pid), "{why}: the home Plex was stopped");
        assert!(!w.journal_dir().exists(), "{why}: the home was touched");
    };
    let mut m = manifest(&w);
    m["sha256"] = "0".repeat(64).into();
    let wrong = w.home.path("wrong-sha.json");
    std::fs::write(&wrong, serde_json::to_vec(&m).unwrap()).unwrap();
    refused(w.archive(), &wrong, "sha256");

    let extra = rebuilt(
        &w,
        "extra",
        "echo x > 'Library/Application Support/Plex Media Server/stray'",
    );
    refused(
        extra.to_str().unwrap(),
        &extra.with_file_name("run.manifest.json"),
        "entries",
    );
    let missing = rebuilt(
        &w,
        "missing",
        "rm -rf 'Library/Application Support/Plex Media Server/Metadata'",
    );
    refused(
        missing.to_str().unwrap(),
        &missing.with_file_name("run.manifest.json"),
        "entries",
    );
    w.assert_home(w.old, "after the refusals");
}

#[test]
fn counts_the_home_does_not_serve_roll_it_back_to_the_backup() {
    let w = world();
    let mut m = manifest(&w);
    let music = m["sections"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|s| s["name"] == "Music")
        .unwrap();
    music["items"] = (music["items"].as_i64().unwrap() + 1).into();
    let lying = w.home.path("lying.manifest.json");
    std::fs::write(&lying, serde_json::to_vec(&m).unwrap()).unwrap();
    let out = w.apply(&[w.archive(), "--manifest", lying.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rolled back"), "{err}");
    assert!(err.contains("Music"), "{err}");
    w.assert_home(w.old, "after the failed check");
    assert!(w.backups().is_empty());
}

#[test]
fn apply_killed_at_every_step_then_run_again_or_rolled_back_leaves_the_home_whole() {
    let w = world();
    for (i, point) in KILL_POINTS.iter().enumerate() {
        let out = w.apply_with(
            &w.home.data_dir().display().to_string(),
            &[w.archive()],
            &[(ABORT_ENV, point)],
        );
        assert_eq!(
            out.status.code(),
            Some(KILLED_STATUS),
            "not killed at {point}: {}",
            text(&out)
        );
        if i % 2 == 0 {
            ok(&w.apply(&[w.archive()]));
            w.assert_home(w.new, &format!("killed at {point}, run again"));
            ok(&w.apply(&["--rollback"]));
            w.assert_home(w.old, &format!("killed at {point}, run again, rolled back"));
        } else {
            ok(&w.apply(&["--rollback"]));
            w.assert_home(w.old, &format!("killed at {point}, rolled back"));
        }
        assert!(!w.journal_dir().join("journal.json").exists());
    }
    for point in ROLLBACK_KILL_POINTS {
        ok(&w.apply(&[w.archive()]));
        let out = w.apply_with(
            &w.home.data_dir().display().to_string(),
            &["--rollback"],
            &[(ABORT_ENV, point)],
        );
        assert_eq!(
            out.status.code(),
            Some(KILLED_STATUS),
            "not killed at {point}: {}",
            text(&out)
        );
        // An unfinished rollback is finished, never mixed with another apply.
        let other = w.apply(&[w.archive()]);
        assert_eq!(other.status.code(), Some(2), "{}", text(&other));
        ok(&w.apply(&["--rollback"]));
        w.assert_home(
            w.old,
            &format!("rollback killed at {point}, rolled back again"),
        );
    }
}

#[test]
fn bad_apply_flags_exit_2_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "x.tar.zst",
                "--to",
                "ssh://home/srv",
                "--service",
                "docker:plex",
            ],
            "--to",
        ),
        (
            &["x.tar.zst", "--to", &d, "--service", "upstart:plex"],
            "--service",
        ),
        (&["x.tar.zst", "--to", &d], "--service"),
        (&["--to", &d, "--service", "docker:plex"], "ARCHIVE"),
        (
            &[
                "x.tar.zst",
                "--rollback",
                "--to",
                &d,
                "--service",
                "docker:plex",
            ],
            "--rollback",
        ),
        (
            &[
                "/nonexistent.tar.zst",
                "--to",
                &d,
                "--service",
                "docker:plex",
            ],
            "ARCHIVE",
        ),
    ];
    for (args, flag) in cases {
        let out = run(command(plexburst_bin())
            .arg("apply")
            .args(*args)
            .args(["--config", "/nonexistent/plexburst.toml"]));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{args:?}: {err}");
    }
    // An archive that is not what its manifest says is refused before the home is looked at
    // (this one is not even a data dir, and the service command would fail).
    let fake = dir.path().join("run.tar.zst");
    std::fs::write(&fake, b"not an archive").unwrap();
    std::fs::write(
        dir.path().join("run.manifest.json"),
        format!(
            r#"{{"manifest_version":1,"run_id":"r","created_at":"","plexburst_version":"","plex_version":null,"archive":"","sha256":"{}","bytes":14,"entries":1,"excluded":[],"sections":[]}}"#,
            "0".repeat(64)
        ),
    )
    .unwrap();
    let out = run(command(plexburst_bin()).args([
        "apply",
        fake.to_str().unwrap(),
        "--to",
        &d,
        "--service",
        "command:false",
    ]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not match its manifest"),
        "{}",
        text(&out)
    );
}
