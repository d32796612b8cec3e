//! Test harness: start and stop the emulator binary, HTTP helpers with `X-Auth-Token`, the
//! Scaleway calls tests repeat (resolve an image, create, act, wait), condition polling.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_scaleway-emulator");
pub const TOKEN: &str = "11111111-1111-4111-8111-111111111111";
pub const PROJECT: &str = "5ca1e000-0000-4000-8000-000000000001";
pub const ORG: &str = "5ca1e000-0000-4000-8000-000000000000";
pub const ZONE: &str = "fr-par-1";

/// The one place tests build a process (clippy forbids `Command::new` elsewhere).
#[allow(clippy::disallowed_methods)] // Test code: runs the binary under test, python3, kill.
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
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {secs}s waiting for: {what}");
}

pub struct Resp {
    pub status: u16,
    pub body: String,
    pub content_type: String,
    pub total: Option<usize>,
    pub location: Option<String>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}), HTTP {}: {:?}", self.status, self.body))
    }

    /// Panics unless the status is `want`; returns the JSON body (null when empty).
    pub fn expect(&self, want: u16) -> Value {
        assert_eq!(self.status, want, "HTTP {}: {}", self.status, self.body);
        if self.body.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// The flags every test wants unless it gives its own: fast transitions.
const FAST: [(&str, &str); 3] = [
    ("--boot-delay", "100ms"),
    ("--stop-delay", "100ms"),
    ("--detach-delay", "100ms"),
];

/// A running emulator binary, stopped (SIGTERM, then SIGKILL) on drop.
pub struct Emu {
    pub child: Option<Child>,
    pub base: String,
    pub token: String,
    agent: ureq::Agent,
}

impl Emu {
    pub fn start(args: &[&str]) -> Emu {
        Emu::start_with_env(args, &[])
    }

    /// Start with extra environment variables (the instance hook inherits them).
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Emu {
        let mut all: Vec<String> = vec!["serve".into(), "--listen".into(), "127.0.0.1:0".into()];
        for (flag, value) in FAST {
            if !args.contains(&flag) {
                all.extend([flag.to_string(), value.to_string()]);
            }
        }
        all.extend(args.iter().map(|a| a.to_string()));
        let mut child = command(BIN)
            .args(&all)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let base = listening_url(&mut child, 15);
        Emu {
            child: Some(child),
            base,
            token: TOKEN.to_string(),
            agent: agent(),
        }
    }

    /// Any request; `token` None sends no `X-Auth-Token`.
    pub fn raw(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Resp {
        let url = format!("{}{path}", self.base);
        let mut b = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = token {
            b = b.header("X-Auth-Token", t);
        }
        let (ctype, bytes) = body.unwrap_or(("application/json", vec![]));
        if !bytes.is_empty() || method != "GET" {
            b = b.header("Content-Type", ctype);
        }
        let mut r = self
            .agent
            .run(b.body(bytes).unwrap())
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header("content-type").unwrap_or_default();
        let total = header("x-total-count").and_then(|v| v.parse().ok());
        let location = header("location");
        Resp {
            status: r.status().as_u16(),
            body: r.body_mut().read_to_string().unwrap_or_default(),
            content_type,
            total,
            location,
        }
    }

    /// A JSON call with this emulator's token.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> Resp {
        self.call_as(&self.token, method, path, body)
    }

    pub fn call_as(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> Resp {
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        self.raw(Some(token), method, path, body)
    }

    pub fn get(&self, path: &str) -> Value {
        self.call("GET", path, None).expect(200)
    }

    pub fn resources(&self) -> Value {
        self.get("/_emulator/resources")
    }

    pub fn requests(&self) -> Vec<Value> {
        self.get("/_emulator/requests")["requests"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub fn hook_calls(&self) -> Vec<Value> {
        self.get("/_emulator/hooks")["calls"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The image ID of `label` for `type` (instance_local / instance_sbs) in `zone`, as clients
    /// resolve it through the Marketplace (scaleway.md §2.8).
    pub fn image(&self, zone: &str, label: &str, kind: &str) -> String {
        let v = self.get(&format!(
            "/marketplace/v2/local-images?image_label={label}&zone={zone}&type={kind}"
        ));
        v["local_images"][0]["id"].as_str().unwrap().to_string()
    }

    /// POST a server from `ubuntu_noble` (local image unless `extra` says sbs); `extra` is merged
    /// into the body. Returns the `server` object.
    pub fn create_server(&self, zone: &str, ctype: &str, extra: Value) -> Value {
        let sbs = extra["volumes"]["0"]["volume_type"] == "sbs_volume";
        let kind = if sbs {
            "instance_sbs"
        } else {
            "instance_local"
        };
        let mut body = json!({
            "commercial_type": ctype,
            "image": self.image(zone, "ubuntu_noble", kind),
            "project": PROJECT,
        });
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            body[k] = v;
        }
        let r = self.call(
            "POST",
            &format!("/instance/v1/zones/{zone}/servers"),
            Some(body),
        );
        r.expect(201)["server"].clone()
    }

    pub fn server(&self, zone: &str, id: &str) -> Resp {
        self.call(
            "GET",
            &format!("/instance/v1/zones/{zone}/servers/{id}"),
            None,
        )
    }

    /// The server's state, None once it is gone (404).
    pub fn state(&self, zone: &str, id: &str) -> Option<String> {
        let r = self.server(zone, id);
        if r.status == 404 {
            return None;
        }
        Some(
            r.expect(200)["server"]["state"]
                .as_str()
                .unwrap()
                .to_string(),
        )
    }

    pub fn wait_state(&self, zone: &str, id: &str, want: Option<&str>, secs: u64) {
        wait_until(secs, &format!("server {id} to be {want:?}"), || {
            self.state(zone, id).as_deref() == want
        });
    }

    pub fn action(&self, zone: &str, id: &str, action: &str) -> Resp {
        self.call(
            "POST",
            &format!("/instance/v1/zones/{zone}/servers/{id}/action"),
            Some(json!({ "action": action })),
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL and reap: a crash, as far as the state file is concerned.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let st = command("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(st.success());
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("emulator did not exit within 20s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Emu {
    /// SIGTERM, so the emulator removes its temp dir, then SIGKILL if it lingers.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = command("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Wait for the child's `listening on http://ADDR` line and return the URL.
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
