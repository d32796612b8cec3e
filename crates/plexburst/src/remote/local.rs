//! Remote implementation for this machine: sh -c through std::process.
//!
//! This file also holds [`run_program`], the single place in plexburst that starts a process. The
//! SSH remote uses it to run the system `ssh` client, so both targets share the same timeout,
//! process-group kill and pipe-draining behaviour.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use super::{Cmd, Forward, Output, Remote, RemoteError};

/// This machine as a target: scripts run as `sh -c SCRIPT`, files are read and written directly.
#[derive(Debug, Default, Clone)]
pub struct Local;

impl Local {
    pub fn new() -> Local {
        Local
    }
}

/// A "forward" to a port that is already on this machine's loopback.
struct LocalForward(SocketAddr);

impl Forward for LocalForward {
    fn local_addr(&self) -> SocketAddr {
        self.0
    }
}

impl Remote for Local {
    fn describe(&self) -> String {
        "local".to_string()
    }

    fn exec(&self, cmd: &Cmd) -> Result<Output, RemoteError> {
        let args = vec!["-c".to_string(), cmd.script.clone()];
        let program = Program {
            program: "sh",
            args: &args,
            env: &cmd.env,
            stdin: cmd.stdin.as_deref(),
            timeout: cmd.timeout,
            log_target: "local",
            log_text: &cmd.log_text(),
        };
        run_program(&program).map_err(|e| e.into_remote("local", cmd))
    }

    fn put_file(&self, path: &str, contents: &[u8], mode: u32) -> Result<(), RemoteError> {
        tracing::debug!(target: "plexburst::remote", remote = "local", path, mode = format!("{mode:o}"), bytes = contents.len(), "put_file");
        write_atomic(Path::new(path), contents, mode)
            .map_err(|e| RemoteError::Io(format!("writing {path} on local: {e}")))
    }

    fn get_file(&self, path: &str) -> Result<Vec<u8>, RemoteError> {
        tracing::debug!(target: "plexburst::remote", remote = "local", path, "get_file");
        std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RemoteError::NotFound {
                target: "local".into(),
                path: path.to_string(),
            },
            _ => RemoteError::Io(format!("reading {path} on local: {e}")),
        })
    }

    fn forward(&self, remote_port: u16) -> Result<Box<dyn Forward>, RemoteError> {
        Ok(Box::new(LocalForward(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::LOCALHOST,
            remote_port,
        )))))
    }
}

/// Write `contents` to `path` so a reader sees either the old file or the whole new one: a temp
/// file in the same directory (created 0600, so a secret is never briefly world-readable), chmod to
/// `mode`, fsync, rename. Missing parent directories are created.
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".plexburst-tmp-")
        .tempfile_in(dir)?;
    tmp.write_all(contents)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// One process to run to completion.
pub(super) struct Program<'a> {
    pub program: &'a str,
    pub args: &'a [String],
    /// Added to the inherited environment. Values are never logged.
    pub env: &'a [(String, String)],
    pub stdin: Option<&'a [u8]>,
    pub timeout: Duration,
    /// Which remote this runs for, for the log line.
    pub log_target: &'a str,
    /// What to log for this command: already redacted by the caller.
    pub log_text: &'a str,
}

pub(super) enum RunError {
    Spawn(std::io::Error),
    Timeout(Duration),
}

impl RunError {
    pub(super) fn into_remote(self, target: &str, cmd: &Cmd) -> RemoteError {
        match self {
            RunError::Spawn(e) => {
                RemoteError::Io(format!("cannot start `{}` on {target}: {e}", cmd.summary()))
            }
            RunError::Timeout(t) => RemoteError::Timeout {
                target: target.to_string(),
                cmd: cmd.summary(),
                secs: t.as_secs(),
            },
        }
    }
}

/// How long to keep reading stdout/stderr after the process exited. A background process the
/// script started (and did not redirect) holds the pipe open forever; we must not wait for it.
const PIPE_GRACE: Duration = Duration::from_secs(3);

/// Run a program to completion: stdin written and closed, stdout and stderr drained on their own
/// threads (a chatty command cannot fill a pipe and deadlock), killed with its whole process group
/// after `timeout`. Every call is logged at debug level with the caller's redacted text.
#[allow(clippy::disallowed_methods)] // The one spawn point of plexburst: everything else calls this.
pub(super) fn run_program(p: &Program) -> Result<Output, RunError> {
    let started = Instant::now();
    let env_keys: Vec<&str> = p.env.iter().map(|(k, _)| k.as_str()).collect();
    tracing::debug!(
        target: "plexburst::remote",
        remote = p.log_target,
        cmd = p.log_text,
        env = ?env_keys,
        stdin_bytes = p.stdin.map(|s| s.len()).unwrap_or(0),
        timeout_s = p.timeout.as_secs_f64(),
        "exec"
    );
    let mut command = std::process::Command::new(p.program);
    command
        .args(p.args)
        .envs(p.env.iter().map(|(k, v)| (k, v)))
        .stdin(if p.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills the whole tree and a Ctrl-C on our terminal
        // does not hit it: the orchestrator decides how to stop.
        .process_group(0);
    let mut child = command.spawn().map_err(RunError::Spawn)?;
    let pid = child.id();

    if let (Some(bytes), Some(mut sink)) = (p.stdin, child.stdin.take()) {
        let bytes = bytes.to_vec();
        // A command that never reads its stdin makes this write fail or block until it exits;
        // either way the thread ends with the process.
        thread::spawn(move || {
            let _ = sink.write_all(&bytes);
        });
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());

    let deadline = started + p.timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(e) => return Err(RunError::Spawn(e)),
        }
        let now = Instant::now();
        if now >= deadline {
            break None;
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(25));
    };

    let Some(status) = status else {
        kill_group(pid);
        // Reap it on a thread: a process stuck in uninterruptible sleep (a hung FUSE mount) dies
        // only when the kernel lets it, and the caller must not wait for that.
        thread::spawn(move || {
            let _ = child.wait();
        });
        tracing::debug!(
            target: "plexburst::remote",
            remote = p.log_target,
            cmd = p.log_text,
            "timed out after {:?}; killed its process group",
            p.timeout
        );
        return Err(RunError::Timeout(p.timeout));
    };

    let pipes_deadline = Instant::now() + PIPE_GRACE;
    let stdout = stdout.collect(pipes_deadline, p);
    let stderr = stderr.collect(pipes_deadline, p);
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    tracing::debug!(
        target: "plexburst::remote",
        remote = p.log_target,
        cmd = p.log_text,
        status = code,
        elapsed_ms = started.elapsed().as_millis() as u64,
        stdout_bytes = stdout.len(),
        stderr_bytes = stderr.len(),
        "done"
    );
    Ok(Output {
        status: code,
        stdout,
        stderr,
    })
}

/// SIGKILL every process in the group led by `pid` (we started it with `process_group(0)`).
#[allow(unsafe_code)]
fn kill_group(pid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours. The group id is the pid
    // of a child we have not reaped yet, so it cannot have been reused by another group.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// A pipe being read to its end on a thread. Bytes land in a shared buffer so that what was read
/// can still be returned if the pipe never closes.
struct Drain {
    buf: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> Drain {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let (tx, done) = mpsc::channel();
    let sink = Arc::clone(&buf);
    thread::spawn(move || {
        if let Some(mut pipe) = pipe {
            let mut chunk = [0u8; 64 * 1024];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => sink
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        let _ = tx.send(());
    });
    Drain { buf, done }
}

impl Drain {
    fn collect(self, deadline: Instant, p: &Program) -> Vec<u8> {
        let wait = deadline.saturating_duration_since(Instant::now());
        if self.done.recv_timeout(wait).is_err() {
            tracing::warn!(
                target: "plexburst::remote",
                remote = p.log_target,
                cmd = p.log_text,
                "a process started by this command keeps its output open; returning what was read so far \
                 (redirect a background process's output to a file)"
            );
        }
        std::mem::take(&mut *self.buf.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_passes_env_and_stdin_and_reports_status() {
        let out = Local::new()
            .exec(
                &Cmd::new("printf '%s:' \"$GREETING\"; cat; exit 3")
                    .env("GREETING", "hi")
                    .stdin("there"),
            )
            .unwrap();
        assert_eq!(out.status, 3);
        assert_eq!(out.stdout_str(), "hi:there");
    }

    #[test]
    fn run_error_carries_stderr() {
        let err = Local::new()
            .run(&Cmd::new("echo boom >&2; exit 4"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("boom") && err.contains("status 4"), "{err}");
        // A long script is quoted by its first line only.
        let err = Local::new()
            .run(&Cmd::new("\necho first line\necho second line; exit 1"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("`echo first line …` on local"), "{err}");
    }

    #[test]
    fn chatty_command_does_not_deadlock() {
        // 4 MB on each pipe is far beyond a pipe buffer: it only finishes if both are drained.
        let out = Local::new()
            .exec(&Cmd::new(
                "head -c 4000000 /dev/zero; head -c 4000000 /dev/zero >&2",
            ))
            .unwrap();
        assert_eq!((out.stdout.len(), out.stderr.len()), (4_000_000, 4_000_000));
    }

    #[test]
    fn background_process_holding_the_pipe_does_not_hang_exec() {
        let started = Instant::now();
        let out = Local::new()
            .exec(&Cmd::new("sleep 8 & echo hi").timeout(Duration::from_secs(30)))
            .unwrap();
        assert_eq!(out.stdout_str(), "hi\n");
        assert!(
            started.elapsed() < Duration::from_secs(7),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn put_file_is_atomic_with_mode_and_get_file_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/secret.conf");
        let path = path.to_str().unwrap();
        let local = Local::new();
        local.put_file(path, b"old", 0o644).unwrap();
        local.put_file(path, b"token=1", 0o600).unwrap();
        assert_eq!(local.get_file(path).unwrap(), b"token=1");
        assert!(matches!(
            local.get_file(&format!("{path}.missing")),
            Err(RemoteError::NotFound { .. })
        ));
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temp file is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub")).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
