//! The one chokepoint for every process plexburst starts: on this machine or on an SSH host.
//!
//! Every command is a shell script run by `sh -c` on the target, so local and SSH targets behave
//! identically. Secrets are never put on a command line: pass them through `stdin` or `env`, and
//! list them in `secrets` so the log line and any error text redact them.

pub mod journal;
pub mod local;
pub mod ssh;

use std::time::Duration;

/// What to run on the target.
#[derive(Debug, Clone)]
pub struct Cmd {
    /// A POSIX shell script, run as `sh -c SCRIPT` on the target.
    pub script: String,
    /// Bytes fed to the script's standard input (closed after writing).
    pub stdin: Option<Vec<u8>>,
    /// Extra environment for the script. Values may be secrets: they never reach a log.
    pub env: Vec<(String, String)>,
    /// Kill the command (and report `RemoteError::Timeout`) after this long.
    pub timeout: Duration,
    /// Strings that must be replaced by `***` wherever this command is logged or quoted in an error.
    pub secrets: Vec<String>,
}

impl Cmd {
    /// A script with a 60 s timeout, no stdin, no extra env.
    pub fn new(script: impl Into<String>) -> Self {
        Cmd {
            script: script.into(),
            stdin: None,
            env: Vec::new(),
            timeout: Duration::from_secs(60),
            secrets: Vec::new(),
        }
    }
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
    pub fn secret(mut self, s: impl Into<String>) -> Self {
        let s = s.into();
        if !s.is_empty() {
            self.secrets.push(s);
        }
        self
    }
    /// Every string to hide when this command is logged or quoted: `secrets` and the values of
    /// `env` (any of them may be a token). Env values shorter than 4 characters are left out:
    /// they cannot be secrets, and replacing every `1` in an error message would garble it.
    pub fn redactions(&self) -> Vec<String> {
        let mut all = self.secrets.clone();
        all.extend(
            self.env
                .iter()
                .filter(|(_, v)| v.len() >= 4)
                .map(|(_, v)| v.clone()),
        );
        all
    }
    /// The script as it may appear in a log line: redacted.
    pub fn log_text(&self) -> String {
        redact(&self.script, &self.redactions())
    }
    /// The script as quoted in an error: redacted, its first non-empty line, at most 160
    /// characters (the whole script is in the debug log).
    pub fn summary(&self) -> String {
        let text = self.log_text();
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let first = lines.next().unwrap_or_default();
        let mut out: String = first.chars().take(160).collect();
        if out.len() < first.len() || lines.next().is_some() {
            out.push_str(" …");
        }
        out
    }
}

/// A finished command. `status` is the exit code (a signal death is reported as 128 + signal).
#[derive(Debug, Clone)]
pub struct Output {
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Callers branch on these: a transport failure is retried after a reconnect, a failed command is not.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("cannot reach {target}: {detail}")]
    Transport { target: String, detail: String },
    #[error("`{cmd}` on {target} exited with status {status}: {stderr}")]
    Failed {
        target: String,
        cmd: String,
        status: i32,
        stderr: String,
    },
    #[error("`{cmd}` on {target} did not finish within {secs} s")]
    Timeout {
        target: String,
        cmd: String,
        secs: u64,
    },
    /// `get_file` of a path that does not exist on the target (both remotes say it this way).
    #[error("{path} does not exist on {target}")]
    NotFound { target: String, path: String },
    #[error("{0}")]
    Io(String),
}

/// A port on the target's loopback made reachable from this machine.
pub trait Forward: Send {
    /// `127.0.0.1:PORT` on this machine.
    fn local_addr(&self) -> std::net::SocketAddr;
}

/// A host we can run commands on. Implementations: `local` (this machine) and `ssh`.
pub trait Remote: Send + Sync {
    /// A human name for logs and errors, e.g. `local` or `ssh plex@10.0.0.5:22`.
    fn describe(&self) -> String;
    /// Run a command and return its output whatever its exit status (the caller decides).
    fn exec(&self, cmd: &Cmd) -> Result<Output, RemoteError>;
    /// Write a file on the target atomically with the given mode (e.g. 0o600 for credentials).
    fn put_file(&self, path: &str, contents: &[u8], mode: u32) -> Result<(), RemoteError>;
    /// Read a whole file from the target; a missing file is `RemoteError::NotFound`.
    fn get_file(&self, path: &str) -> Result<Vec<u8>, RemoteError>;
    /// Make `127.0.0.1:remote_port` on the target reachable from this machine.
    fn forward(&self, remote_port: u16) -> Result<Box<dyn Forward>, RemoteError>;

    /// Run a command and turn a non-zero exit into `RemoteError::Failed` carrying its stderr.
    fn run(&self, cmd: &Cmd) -> Result<Output, RemoteError> {
        let out = self.exec(cmd)?;
        if out.status != 0 {
            return Err(RemoteError::Failed {
                target: self.describe(),
                cmd: cmd.summary(),
                status: out.status,
                stderr: redact(
                    String::from_utf8_lossy(&out.stderr).trim(),
                    &cmd.redactions(),
                ),
            });
        }
        Ok(out)
    }
}

/// The target of a run whose machine does not exist yet (a cloud instance before `provision`):
/// every call fails, saying so. The provision phase replaces it with the real connection.
pub struct Pending(pub String);

impl Remote for Pending {
    fn describe(&self) -> String {
        self.0.clone()
    }
    fn exec(&self, _: &Cmd) -> Result<Output, RemoteError> {
        Err(self.not_yet())
    }
    fn put_file(&self, _: &str, _: &[u8], _: u32) -> Result<(), RemoteError> {
        Err(self.not_yet())
    }
    fn get_file(&self, _: &str) -> Result<Vec<u8>, RemoteError> {
        Err(self.not_yet())
    }
    fn forward(&self, _: u16) -> Result<Box<dyn Forward>, RemoteError> {
        Err(self.not_yet())
    }
}

impl Pending {
    fn not_yet(&self) -> RemoteError {
        RemoteError::Transport {
            target: self.0.clone(),
            detail: "the instance is not provisioned (yet, or any more)".into(),
        }
    }
}

/// Replace every secret in `text` with `***`.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s.as_str(), "***");
    }
    out
}

/// Quote one word for `sh`: the one shell-quoting helper every script builder uses.
pub fn quote(s: &str) -> String {
    shell_escape::unix::escape(s.into()).into_owned()
}
