//! Test harness: start/stop the emulator binary, HTTP helpers, DB queries, condition polling.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_plex-emulator");

/// The one place tests build a process (clippy forbids `Command::new` elsewhere).
#[allow(clippy::disallowed_methods)] // Test code: runs the binary under test and small tools.
pub fn command(program: &str) -> Command {
    Command::new(program)
}

/// Poll `cond` until it holds or `secs` pass; panic with `what` on timeout.
pub fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {secs}s waiting for: {what}");
}

/// A media tree written by `gen-library`, with its printed counts.
pub struct Library {
    pub dir: tempfile::TempDir,
    pub counts: serde_json::Value,
}

impl Library {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

pub fn gen_library(args: &[&str]) -> Library {
    let dir = tempfile::tempdir().unwrap();
    let out = command(BIN)
        .arg("gen-library")
        .arg("--out")
        .arg(dir.path())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gen-library failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let counts = serde_json::from_slice(&out.stdout).expect("gen-library prints JSON");
    Library { dir, counts }
}

/// A running emulator. Killed (SIGKILL) on drop unless stopped.
pub struct Emu {
    pub child: Option<Child>,
    pub base: String,
    pub data: PathBuf,
    pub token: Option<String>,
    agent: ureq::Agent,
    _own: Option<tempfile::TempDir>,
}

pub struct Resp {
    pub status: u16,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl Emu {
    /// Start on a fresh data dir.
    pub fn start(args: &[&str]) -> Emu {
        let d = tempfile::tempdir().unwrap();
        let data = d.path().to_path_buf();
        let mut e = Emu::start_in(&data, args);
        e._own = Some(d);
        e
    }

    /// Start on an existing data dir (a restart).
    pub fn start_in(data: &Path, args: &[&str]) -> Emu {
        let child = Emu::spawn(data, "127.0.0.1:0", args);
        Emu::attach(child, data, 15)
    }

    pub fn spawn(data: &Path, listen: &str, args: &[&str]) -> Child {
        command(BIN)
            .arg("serve")
            .arg("--data-dir")
            .arg(data)
            .arg("--listen")
            .arg(listen)
            .args(args)
            .env_remove("PLEX_CLAIM")
            .env_remove("PLEX_EMULATOR_PLEXTV_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }

    /// Wait for the `listening on http://ADDR` line.
    pub fn attach(mut child: Child, data: &Path, secs: u64) -> Emu {
        let base = listening_url(&mut child, secs);
        Emu {
            child: Some(child),
            base,
            data: data.to_path_buf(),
            token: None,
            agent: agent(),
            _own: None,
        }
    }

    pub fn app_dir(&self) -> PathBuf {
        self.data
            .join("Library/Application Support/Plex Media Server")
    }
    pub fn db_path(&self) -> PathBuf {
        self.app_dir()
            .join("Plug-in Support/Databases/com.plexapp.plugins.library.db")
    }
    pub fn prefs_xml(&self) -> String {
        std::fs::read_to_string(self.app_dir().join("Preferences.xml")).unwrap_or_default()
    }

    /// Wait for the claim to land, then use the token for every request.
    pub fn wait_token(&mut self) -> String {
        let mut tok = None;
        wait_until(10, "PlexOnlineToken in Preferences.xml", || {
            tok = xml_attr(&self.prefs_xml(), "PlexOnlineToken");
            tok.is_some()
        });
        self.token = tok.clone();
        tok.unwrap()
    }

    pub fn req(&self, method: &str, path: &str, json: bool) -> Resp {
        let mut headers = Vec::new();
        if json {
            headers.push(("Accept", "application/json"));
        }
        if let Some(t) = &self.token {
            headers.push(("X-Plex-Token", t.as_str()));
        }
        request(
            &self.agent,
            method,
            &format!("{}{path}", self.base),
            &headers,
        )
    }

    pub fn get(&self, path: &str) -> serde_json::Value {
        let r = self.req("GET", path, true);
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.json()
    }

    pub fn ok(&self, method: &str, path: &str) {
        let r = self.req(method, path, true);
        assert_eq!(r.status, 200, "{method} {path}: {}", r.body);
    }

    pub fn set_prefs(&self, q: &str) {
        self.ok("PUT", &format!("/:/prefs?{q}"));
    }

    /// Create a section and return its id.
    pub fn add_section(&self, name: &str, kind: &str, location: &Path) -> i64 {
        let r = self.req(
            "POST",
            &format!(
                "/library/sections?name={name}&type={kind}&language=en-US&location={}",
                enc(&location.to_string_lossy())
            ),
            true,
        );
        assert_eq!(r.status, 200, "create section: {}", r.body);
        r.json()["MediaContainer"]["Directory"][0]["key"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// No queued or running job and no activity: the server is idle.
    pub fn idle(&self) -> bool {
        let acts = self.get("/activities");
        if acts["MediaContainer"]["size"].as_i64() != Some(0) {
            return false;
        }
        let secs = self.get("/library/sections");
        secs["MediaContainer"]["Directory"].as_array().cloned().unwrap_or_default().iter().all(|d| {
            let id = d["key"].as_str().unwrap();
            d["refreshing"] == false && self.get(&format!("/library/sections/{id}/timeline"))["MediaContainer"]["updateQueueSize"] == 0
        })
    }

    pub fn wait_idle(&self, secs: u64) {
        wait_until(secs, "server idle", || self.idle());
    }

    pub fn scan_all(&self) {
        self.ok("GET", "/library/sections/all/refresh");
        // The scan is queued before the call returns, so "idle" cannot be seen before it starts.
        self.wait_idle(120);
    }

    pub fn count(&self, sql: &str) -> i64 {
        query_i64(&self.db_path(), sql)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn signal(&self, sig: &str) {
        let st = command("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// SIGTERM and wait for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait_exit(30)
    }

    pub fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("emulator did not exit within {secs}s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Emu {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The agent tests use: statuses are answers, not errors.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// One HTTP request with these headers; panics only when no answer comes.
pub fn request(agent: &ureq::Agent, method: &str, url: &str, headers: &[(&str, &str)]) -> Resp {
    let mut b = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut r = agent
        .run(b.body(()).unwrap())
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    Resp {
        status: r.status().as_u16(),
        body: r.body_mut().read_to_string().unwrap_or_default(),
    }
}

/// Wait for a child's `listening on http://ADDR` line (both `serve` and `plextv` print it) and
/// return the URL.
pub fn listening_url(child: &mut Child, secs: u64) -> String {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(secs))
        .expect("no listening line");
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("bad first line {line:?}"))
        .to_string()
}

pub fn enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

pub fn xml_attr(xml: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let i = xml.find(&key)? + key.len();
    let j = xml[i..].find('"')?;
    Some(xml[i..i + j].to_string())
}

pub fn query_i64(db: &Path, sql: &str) -> i64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Processes whose argv contains "Plex Media Scanner", with their parent pid and CPU ticks.
pub fn scanner_processes() -> Vec<(u32, u32, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if !String::from_utf8_lossy(&cmd).contains("Plex Media Scanner") {
            continue;
        }
        if let Some((ppid, ticks)) = stat(pid) {
            out.push((pid, ppid, ticks));
        }
    }
    out
}

/// (ppid, utime+stime) from /proc/PID/stat.
pub fn stat(pid: u32) -> Option<(u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    if f.first() == Some(&"Z") {
        return None;
    }
    Some((
        f[1].parse().ok()?,
        f[11].parse::<u64>().ok()? + f[12].parse::<u64>().ok()?,
    ))
}
