//! Shared harness for the end-to-end tests: the real `plexburst` binary, the emulator binary, a
//! generated library in a temp dir, a config file, and cleanup of any server left behind on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn plexburst_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_plexburst"))
}

/// `target/<profile>/plex-emulator`, built by `cargo test --workspace` next to the test binary's
/// parent dir (the test binary lives in `target/<profile>/deps/`).
pub fn emulator_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("plex-emulator");
    assert!(
        bin.exists(),
        "the emulator binary {} is missing; build it first: `cargo build -p plex-emulator` (or run `cargo test --workspace`)",
        bin.display()
    );
    bin
}

/// A free TCP port on 127.0.0.1 (bound then released; the emulator binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `cond` every 50 ms until it holds or `timeout` passes.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Counts for `Lab::count`, as the tests read Plex's DB themselves (not through plexburst).
pub const TRACKS: &str =
    "SELECT count(*) FROM metadata_items WHERE metadata_type = 10 AND deleted_at IS NULL";
pub const MOVIES: &str =
    "SELECT count(*) FROM metadata_items WHERE metadata_type = 1 AND deleted_at IS NULL";
pub const PHOTOS: &str =
    "SELECT count(*) FROM metadata_items WHERE metadata_type = 13 AND deleted_at IS NULL";

/// A thread rewriting `file` every 5 ms, as a Plex process that did not stop would, until dropped.
pub struct StrayWriter {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StrayWriter {
    pub fn start(file: PathBuf) -> StrayWriter {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut i = 0u64;
            while !flag.load(std::sync::atomic::Ordering::SeqCst) {
                i += 1;
                std::fs::write(&file, i.to_string()).unwrap();
                std::thread::sleep(Duration::from_millis(5)); // the writer's pace, not a wait
            }
        });
        StrayWriter {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for StrayWriter {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            // A writer that panicked (e.g. its directory vanished) fails the test here.
            if t.join().is_err() && !std::thread::panicking() {
                panic!("the stray writer thread panicked");
            }
        }
    }
}

/// Counts written by `plex-emulator gen-library`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct LibCounts {
    pub tracks: i64,
    pub movies: i64,
    pub photos: i64,
    #[serde(default)]
    pub episodes: i64,
}

/// How to run the server in a test.
#[derive(Debug, Clone, Default)]
pub struct LabOpts {
    /// Extra `serve` flags for the emulator (faults, rates).
    pub emulator_args: Vec<String>,
    /// `[monitor]` overrides as TOML lines.
    pub monitor: Vec<String>,
    /// `[timeouts]` overrides as TOML lines.
    pub timeouts: Vec<String>,
    /// Replace the `[target]` block (e.g. the sshd harness's).
    pub target_toml: Option<String>,
    /// Use the docker runtime with this image instead of the command runtime.
    pub docker_image: Option<String>,
    /// Also generate TV shows and add a `show` section for them.
    pub shows: bool,
    /// Extra `[plex]` lines (e.g. `plextv_url = "..."`).
    pub plex: Vec<String>,
}

/// The claim token every lab run gets (the emulator claims itself with any).
pub const CLAIM: &str = "claim-e2e-test";

/// One test's world: a generated library, a data dir, an export dir, a state dir and a config.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub counts: LibCounts,
    pub opts: LabOpts,
    pub container: String,
}

impl Lab {
    pub fn new(opts: LabOpts) -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("pb-e2e-")
            .tempdir()
            .unwrap();
        let media = dir.path().join("media");
        let shows: &[&str] = if opts.shows {
            &["--shows", "2", "--seasons", "3", "--episodes", "9"]
        } else {
            &[]
        };
        let out = run(command(emulator_bin())
            .args([
                "gen-library",
                "--out",
                media.to_str().unwrap(),
                "--artists",
                "2",
                "--albums",
                "3",
                "--tracks",
                "12",
                "--movies",
                "4",
                "--photos",
                "6",
                "--seed",
                "7",
            ])
            .args(shows));
        assert!(
            out.status.success(),
            "gen-library failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let counts: LibCounts = serde_json::from_slice(&out.stdout).expect("gen-library JSON");
        let container = format!(
            "pb-test-{}",
            &dir.path().file_name().unwrap().to_string_lossy()[7..]
        )
        .to_lowercase();
        let lab = Lab {
            dir,
            port: free_port(),
            counts,
            opts,
            container,
        };
        std::fs::write(lab.config_path(), lab.config_toml()).unwrap();
        lab
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    pub fn config_path(&self) -> PathBuf {
        self.path("plexburst.toml")
    }
    pub fn data_dir(&self) -> PathBuf {
        self.path("plex")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.path(".plexburst")
    }
    pub fn db_path(&self) -> PathBuf {
        self.data_dir().join(
            "Library/Application Support/Plex Media Server/Plug-in Support/Databases/com.plexapp.plugins.library.db",
        )
    }
    pub fn pid_file(&self) -> PathBuf {
        self.data_dir().join(".plexburst/plex.pid")
    }

    pub fn config_toml(&self) -> String {
        let media = self.path("media");
        let m = media.display();
        let emu = emulator_bin();
        let runtime = match &self.opts.docker_image {
            Some(image) => format!(
                "runtime = \"docker\"\nimage = \"{image}\"\ncontainer_name = \"{}\"\n",
                self.container
            ),
            None => {
                let mut cmd = format!(
                    "{} serve --data-dir {{data_dir}} --listen 127.0.0.1:{{port}}",
                    emu.display()
                );
                for a in &self.opts.emulator_args {
                    cmd.push(' ');
                    cmd.push_str(a);
                }
                format!("runtime = \"command\"\ncommand = \"{cmd}\"\n")
            }
        };
        let target = self
            .opts
            .target_toml
            .clone()
            .unwrap_or_else(|| "[target]\nkind = \"local\"\n".into());
        let mut monitor = vec![
            "poll_interval = \"200ms\"".to_string(),
            // Generous: on a loaded 2-core box a starved server must not read as stalled; the
            // stall tests set their own short window.
            "stall_window = \"15s\"".into(),
            "stable_samples = 3".into(),
            "log_interval = \"1s\"".into(),
        ];
        for l in &self.opts.monitor {
            let key = l.split('=').next().unwrap().trim();
            monitor.retain(|x| x.split('=').next().unwrap().trim() != key);
            monitor.push(l.clone());
        }
        format!(
            r#"{target}
[storage]
kind = "path"
path = "{m}"

[plex]
{runtime}data_dir = "{data}"
port = {port}
startup_timeout = "60s"
stop_grace = "10s"
{plex_extra}

[timeouts]
{timeouts}

[monitor]
{monitor}

[export]
destination = "{export}"

[[sections]]
name = "Music"
type = "music"
paths = ["{m}/Music"]

[[sections]]
name = "Movies"
type = "movie"
paths = ["{m}/Movies"]

[[sections]]
name = "Photos"
type = "photo"
paths = ["{m}/Photos"]
{shows}"#,
            shows = if self.opts.shows {
                format!(
                    "\n[[sections]]\nname = \"TV Shows\"\ntype = \"show\"\npaths = [\"{m}/TV Shows\"]\n"
                )
            } else {
                String::new()
            },
            data = self.data_dir().display(),
            plex_extra = self.opts.plex.join("\n"),
            port = self.port,
            timeouts = self.opts.timeouts.join("\n"),
            monitor = monitor.join("\n"),
            export = self.path("export").display(),
        )
    }

    /// `plexburst ARGS --config <lab config>` with PLEX_CLAIM set (the emulator claims itself).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = command(plexburst_bin());
        c.args(args)
            .arg("--config")
            .arg(self.config_path())
            .env("PLEX_CLAIM", CLAIM)
            // The user's own `plexburst login` and PLEX_TOKEN never reach a test run.
            .env("XDG_CONFIG_HOME", self.path("xdg"))
            .env_remove("PLEX_TOKEN")
            .env("PLEXBURST_LOG", "plexburst=info")
            .stdin(Stdio::null());
        c
    }

    pub fn plexburst(&self, args: &[&str]) -> Output {
        run(&mut self.cmd(args))
    }

    /// The current run's command journal (`runs/<run id>/commands.jsonl`).
    pub fn journal(&self) -> PathBuf {
        let run_id = self.state()["run_id"].as_str().unwrap().to_string();
        self.state_dir()
            .join("runs")
            .join(run_id)
            .join("commands.jsonl")
    }

    /// Plan = run: the plan `plexburst plan --json` prints for this config is the one the run
    /// stored, and every storage, runtime and export command in it is in the run's command
    /// journal exactly as printed (the journal is what went through the remote, secrets masked).
    pub fn assert_plan_is_what_ran(&self) {
        self.assert_plan_is_what_ran_with(&[]);
    }

    /// As `assert_plan_is_what_ran`, for a run given these `run` flags (`plan` takes the same).
    pub fn assert_plan_is_what_ran_with(&self, run_flags: &[&str]) {
        let mut args = vec!["plan", "--json"];
        args.extend_from_slice(run_flags);
        let printed = self.plexburst(&args);
        assert!(printed.status.success(), "{}", text(&printed));
        let plan: serde_json::Value = serde_json::from_slice(&printed.stdout).unwrap();
        let stored: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.state_dir().join("plan.json")).unwrap())
                .unwrap();
        assert_eq!(
            plan, stored,
            "the run stored another plan than `plan` prints"
        );
        let run_id = self.state()["run_id"].as_str().unwrap().to_string();
        let journal = self.journal();
        let raw = std::fs::read_to_string(&journal)
            .unwrap_or_else(|e| panic!("{}: {e}", journal.display()));
        // A claim token reaches the server through the environment: its name is journaled,
        // never its value. The run hands one over only when it decided the server needs it.
        assert!(
            !raw.contains(CLAIM),
            "the claim token's value is in {}",
            journal.display()
        );
        let claim = self.state()["claim"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert_eq!(
            raw.contains("\"PLEX_CLAIM\""),
            claim.starts_with("env PLEX_CLAIM"),
            "the journal {} and the state's claim decision {claim:?} disagree",
            journal.display()
        );
        let scripts: Vec<String> = raw
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["op"] == "exec")
            .map(|e| e["script"].as_str().unwrap().to_string())
            .collect();
        let issued = |what: &str, needle: &str| {
            assert!(
                scripts.iter().any(|s| s.contains(needle)),
                "{what} as planned was never issued:\n  {needle}\njournal: {}",
                journal.display()
            )
        };
        let start = plan["plex"]["start_line"].as_str().unwrap();
        match plan["plex"]["runtime"]["kind"].as_str().unwrap() {
            "docker" => issued("the docker run line", start),
            _ => issued("the server's command", &plexburst::remote::quote(start)),
        }
        if plan["storage"]["kind"] == "rclone" {
            let argv: Vec<String> = plan["storage"]["mount_argv"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| plexburst::remote::quote(a.as_str().unwrap()))
                .collect();
            let line = argv.join(" ");
            // A cache size left to the target's disk is the one word the mount fills in: the
            // issued line is the planned one with that word replaced by a size such as `51200M`.
            let placeholder =
                plexburst::remote::quote(plexburst::storage::rclone::CACHE_SIZE_AT_MOUNT);
            let mounted = match line.split_once(&placeholder) {
                None => scripts.iter().any(|s| s.contains(&line)),
                Some((before, after)) => scripts.iter().any(|s| {
                    s.split_once(before).is_some_and(|(_, rest)| {
                        let (size, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                        size.strip_suffix('M')
                            .is_some_and(|n| n.parse::<u64>().is_ok())
                            && format!(" {tail}").starts_with(after)
                    })
                }),
            };
            assert!(
                mounted,
                "the rclone mount line as planned was never issued:\n  {line}"
            );
        }
        for stage in plan["export"]["stages"].as_array().unwrap() {
            let stage = stage
                .as_str()
                .unwrap()
                .replace(plexburst::plan::RUN_ID, &run_id);
            issued("an export stage", &stage);
        }
    }

    /// The pid in the command runtime's pid file, if any.
    pub fn server_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.pid_file()).ok()?;
        text.split_whitespace().next()?.parse().ok()
    }

    /// One read-only query through the sqlite3 CLI.
    pub fn sql(&self, q: &str) -> String {
        let out = run(command("sqlite3")
            .arg("-readonly")
            // A reader can meet SQLITE_BUSY while the server checkpoints; wait instead of failing.
            .args(["-cmd", ".timeout 10000"])
            .arg(self.db_path())
            .arg(q));
        assert!(
            out.status.success(),
            "sqlite3 {q}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn count(&self, q: &str) -> i64 {
        self.sql(q)
            .parse()
            .unwrap_or_else(|_| panic!("not a number from {q}"))
    }

    pub fn state(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.state_dir().join("state.json")).unwrap())
            .unwrap()
    }
    /// One phase's record in the state file, by name (`scan`, `analyze`, `export`, ...).
    pub fn phase(&self, name: &str) -> serde_json::Value {
        let state = self.state();
        state["phases"]
            .as_array()
            .expect("the state has a phases array")
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no phase {name:?} in the state: {state:#}"))
            .clone()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Never leave a server behind, even when the test panicked.
        if let Some(pid) = self.server_pid()
            && pid_alive(pid)
        {
            let _ = run(command("kill").arg("-9").arg(format!("-{pid}")));
            let _ = run(command("kill").arg("-9").arg(pid.to_string()));
        }
        if self.opts.docker_image.is_some() {
            let _ = run(command("docker").args(["rm", "-f", &self.container]));
        }
    }
}

/// A process with this pid exists and is not a zombie.
pub fn pid_alive(pid: impl Into<i64>) -> bool {
    let pid = pid.into();
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next()
                .unwrap_or("");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// Every process below `root` in the process tree (children, their children...), as (pid, name).
pub fn descendants(root: u32) -> Vec<(u32, String)> {
    let mut parents = std::collections::HashMap::<u32, Vec<(u32, String)>>::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": the name may contain spaces, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let mut rest = stat[close + 1..].split_whitespace();
        let (Some(_state), Some(Ok(ppid))) = (rest.next(), rest.next().map(str::parse::<u32>))
        else {
            continue;
        };
        parents.entry(ppid).or_default().push((pid, comm));
    }
    let mut found = Vec::new();
    let mut queue = vec![root];
    while let Some(p) = queue.pop() {
        for (child, comm) in parents.get(&p).into_iter().flatten() {
            queue.push(*child);
            found.push((*child, comm.clone()));
        }
    }
    found
}

/// Pids of processes whose command line contains `needle`.
pub fn pids_with_cmdline(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(c) = std::fs::read(e.path().join("cmdline"))
            && String::from_utf8_lossy(&c)
                .replace('\0', " ")
                .contains(needle)
            && pid_alive(pid)
        {
            out.push(pid);
        }
    }
    out
}

/// The emulator's Docker image, which `scripts/test.sh` builds before the tests; fails with the
/// fix when it is missing.
pub fn emulator_image() -> &'static str {
    let image = "plexburst/plex-emulator:dev";
    let have = command("docker")
        .args(["image", "inspect", image])
        .output()
        .expect("running docker");
    assert!(
        have.status.success(),
        "the image {image} is missing; build it with crates/plex-emulator/docker/build-image.sh (scripts/test.sh does): {}",
        String::from_utf8_lossy(&have.stderr)
    );
    image
}

/// `Command::new`, in the one place the tests may call it (clippy forbids it elsewhere: the product
/// spawns only through `remote`; tests run real binaries on purpose).
#[allow(clippy::disallowed_methods)]
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    Command::new(program)
}

/// Run a command to completion.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Start a server that prints `listening on URL` as its first stdout line (the emulators do);
/// returns it and the URL.
pub fn spawn_listening(cmd: &mut Command) -> (Child, String) {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{cmd:?} printed {line:?} first"))
        .to_string();
    (child, url)
}

/// Start a command in the background (for the SIGINT test).
pub fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
