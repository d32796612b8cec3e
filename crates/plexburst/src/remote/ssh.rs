//! Remote implementation over the system ssh client with a ControlMaster socket.
//!
//! One master connection (`ssh -M -f -N`) is started per target; every command, file transfer
//! and port forward then goes through its control socket, so a command costs no new handshake.
//!
//! How a command travels: the ssh command line carries only a fixed wrapper
//! (`sh -c 'printf MARKER >&2; eval "$(dd bs=1 count=N)"'`). The first N bytes of the session's
//! stdin are a small script that exports the command's environment and `exec`s the real script
//! (under `timeout`, when the target has it, so a timed-out command's whole process tree dies on
//! the target too); the command's own stdin follows. Environment values (tokens) therefore never
//! appear on any command line, here or on the target.
//!
//! Reconnecting: when ssh exits with 255 and `ssh -O check` says the master is gone, a new master
//! is started (and the active port forwards are re-opened). What can be known about the command
//! decides whether it is retried:
//! - the wrapper's MARKER never came back: the remote shell never started, so the command did not
//!   run; it is retried once on the new master.
//! - the MARKER came back: the command started and may have done part or all of its work; it is
//!   NOT retried, the caller gets `RemoteError::Transport` and decides (a monitor sample can simply
//!   be taken again). The next call uses the new master.
//!
//! The marker is best effort in one direction only: a marker lost in flight when the connection
//! drops makes a started command look unstarted. The window is the time between the remote shell
//! starting and its first write reaching us, before it has read its script from stdin.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::local::{Program, RunError, run_program};
use super::{Cmd, Forward, Output, Remote, RemoteError, quote, redact};

/// An existing host reached with the system ssh client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshTarget {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub identity: Option<PathBuf>,
    /// Extra `-o K=V` options, e.g. `UserKnownHostsFile=/path` for tests.
    pub extra_options: Vec<String>,
}

impl SshTarget {
    /// What any ssh to this target carries after its own options: identity, port, the extra
    /// options and `user@host`. The master uses it, and `plexburst ssh` prints it for a shell.
    pub fn login_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(id) = &self.identity {
            args.push("-i".into());
            args.push(id.display().to_string());
            args.push("-o".into());
            args.push("IdentitiesOnly=yes".into());
        }
        args.push("-p".into());
        args.push(self.port.to_string());
        for o in &self.extra_options {
            args.push("-o".into());
            args.push(o.clone());
        }
        args.push(format!("{}@{}", self.user, self.host));
        args
    }
}

/// Printed to stderr by the remote wrapper before anything else; stripped from the output.
const MARKER: &str = "plexburst:remote-started";

/// The last line of the script header: a comment, so evaluating it is a no-op, and its presence
/// proves the whole header arrived.
const HEADER_END: &str = "# plexburst:end-of-header";

/// Unix socket paths are limited to 108 bytes on Linux; ssh also appends a random suffix while
/// binding, so keep well under it.
const MAX_SOCKET_PATH: usize = 90;

/// How long starting the master may take (ConnectTimeout is 10 s; authentication comes on top).
const MASTER_TIMEOUT: Duration = Duration::from_secs(45);
const CONTROL_TIMEOUT: Duration = Duration::from_secs(15);

/// A target reached over ssh through a ControlMaster socket. Dropping it closes the master.
pub struct Ssh {
    target: SshTarget,
    ctl: PathBuf,
    /// Serializes reconnects: concurrent callers that see a dead master start only one new one.
    reconnect_lock: Mutex<()>,
    /// `-L` specs of the forwards currently open, re-opened on a new master.
    forwards: Arc<Mutex<Vec<String>>>,
}

impl Ssh {
    /// Start the master connection. `control_dir` holds its socket (created 0700 if missing).
    pub fn connect(t: &SshTarget, control_dir: &Path) -> Result<Ssh, RemoteError> {
        let io = |e: std::io::Error| {
            RemoteError::Io(format!("control directory {}: {e}", control_dir.display()))
        };
        if !control_dir.exists() {
            std::fs::create_dir_all(control_dir).map_err(io)?;
            restrict(control_dir).map_err(io)?;
        }
        // One socket per destination, so a master left by an interrupted run (ControlPersist
        // keeps it alive) is found and reused by `resume`/`destroy` instead of orphaned.
        let digest = Sha256::digest(format!("{}@{}:{}", t.user, t.host, t.port));
        let name = format!("ssh-{}.sock", &hex::encode(digest)[..12]);
        let mut ctl = control_dir.join(&name);
        if ctl.as_os_str().len() > MAX_SOCKET_PATH {
            // Too long for a unix socket: use a short per-user directory instead, with a name
            // that also depends on `control_dir`, so it is as stable (reusable) as the long one.
            let dir = short_socket_dir().map_err(io)?;
            let digest = Sha256::digest(format!(
                "{}@{}:{} {}",
                t.user,
                t.host,
                t.port,
                control_dir.display()
            ));
            ctl = dir.join(format!("ssh-{}.sock", &hex::encode(digest)[..12]));
            tracing::debug!(
                target: "plexburst::remote",
                "control dir {} is too long for a unix socket; using {}",
                control_dir.display(),
                ctl.display()
            );
        }
        let ssh = Ssh {
            target: t.clone(),
            ctl,
            reconnect_lock: Mutex::new(()),
            forwards: Arc::new(Mutex::new(Vec::new())),
        };
        if ssh.master_alive() {
            tracing::debug!(target: "plexburst::remote", remote = %ssh.describe(), "reusing the running ssh master");
        } else {
            ssh.start_master()?;
        }
        Ok(ssh)
    }

    /// The control socket's path.
    pub fn control_path(&self) -> &Path {
        &self.ctl
    }

    /// The pid of the master ssh process on this machine, if it is running (`ssh -O check`).
    pub fn master_pid(&self) -> Option<u32> {
        let out = self.control("check", &[]).ok()?;
        if out.status != 0 {
            return None;
        }
        let text = String::from_utf8_lossy(&out.stderr);
        let start = text.find("pid=")? + 4;
        let digits: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    }

    fn master_alive(&self) -> bool {
        matches!(self.control("check", &[]), Ok(out) if out.status == 0)
    }

    fn start_master(&self) -> Result<(), RemoteError> {
        // A dead master leaves its socket behind; a new master refuses to bind over it and would
        // silently run without multiplexing.
        let _ = std::fs::remove_file(&self.ctl);
        let mut args: Vec<String> = ["-M", "-f", "-N", "-S"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(self.ctl.display().to_string());
        for o in [
            "ControlPersist=yes",
            "BatchMode=yes",
            "ServerAliveInterval=15",
            "ServerAliveCountMax=3",
            "ConnectTimeout=10",
        ] {
            args.push("-o".into());
            args.push(o.into());
        }
        args.extend(self.target.login_args());
        let log_text = format!("ssh {}", args.join(" "));
        let out = run_program(&Program {
            program: "ssh",
            args: &args,
            env: &[],
            stdin: None,
            timeout: MASTER_TIMEOUT,
            log_target: &self.describe(),
            log_text: &log_text,
        })
        .map_err(|e| match e {
            RunError::Spawn(e) => {
                RemoteError::Io(format!("cannot run ssh: {e}; install openssh-client"))
            }
            RunError::Timeout(_) => RemoteError::Transport {
                target: self.describe(),
                detail: format!("no connection within {} s", MASTER_TIMEOUT.as_secs()),
            },
        })?;
        if out.status != 0 {
            return Err(RemoteError::Transport {
                target: self.describe(),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        if !self.master_alive() {
            return Err(RemoteError::Transport {
                target: self.describe(),
                detail: format!(
                    "ssh connected but its control socket {} does not answer",
                    self.ctl.display()
                ),
            });
        }
        Ok(())
    }

    /// Start a new master unless another caller already did.
    fn reconnect(&self) -> Result<(), RemoteError> {
        let _guard = self
            .reconnect_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if self.master_alive() {
            return Ok(());
        }
        tracing::warn!(target: "plexburst::remote", remote = %self.describe(), "ssh connection lost; reconnecting");
        self.start_master()?;
        let specs = self
            .forwards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for spec in specs {
            match self.control("forward", &["-L", &spec]) {
                Ok(out) if out.status == 0 => {}
                Ok(out) => tracing::warn!(
                    target: "plexburst::remote",
                    "could not re-open port forward {spec}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
                Err(e) => {
                    tracing::warn!(target: "plexburst::remote", "could not re-open port forward {spec}: {e}")
                }
            }
        }
        Ok(())
    }

    /// `ssh -S ctl -O OP [extra] none`: talk to the master.
    fn control(&self, op: &str, extra: &[&str]) -> Result<Output, RemoteError> {
        control(&self.ctl, &self.describe(), op, extra)
    }

    fn client_args(&self) -> Vec<String> {
        vec![
            "-S".into(),
            self.ctl.display().to_string(),
            // Never become a master or fall back to a direct connection: the host name `none`
            // below cannot resolve, so without the master a command fails fast with 255.
            "-o".into(),
            "ControlMaster=no".into(),
            "-o".into(),
            "BatchMode=yes".into(),
        ]
    }

    /// One attempt: did the remote shell start (the marker came back), and what came out.
    fn exec_once(&self, cmd: &Cmd) -> Result<(bool, Output), RemoteError> {
        let mut header = String::new();
        for (k, v) in &cmd.env {
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(RemoteError::Io(format!(
                    "environment variable name {k:?} is not a valid shell name"
                )));
            }
            header.push_str(&format!("export {k}={}\n", quote(v)));
        }
        // The remote timeout is a little longer than ours, so the local one decides and reports;
        // the remote one makes sure the command's process tree does not outlive it on the target.
        let secs = cmd.timeout.as_secs() + 2;
        let script = quote(&cmd.script);
        header.push_str(&format!(
            "if command -v timeout >/dev/null 2>&1; then exec timeout -s KILL {secs} sh -c {script}; \
             else exec sh -c {script}; fi\n{HEADER_END}"
        ));
        // An unreadable header must fail loudly: `eval ""` would succeed having run nothing.
        let wrapper = format!(
            "printf '%s\\n' {MARKER} >&2; h=$(dd bs=1 count={} 2>/dev/null); \
             case \"$h\" in *'{HEADER_END}') eval \"$h\" ;; \
             *) echo 'plexburst: could not read the command from stdin (is dd installed?)' >&2; exit 254 ;; esac",
            header.len()
        );
        let mut args = self.client_args();
        args.extend([
            "-T".into(),
            "none".into(),
            "--".into(),
            format!("sh -c {}", quote(&wrapper)),
        ]);
        let mut stdin = header.into_bytes();
        if let Some(s) = &cmd.stdin {
            stdin.extend_from_slice(s);
        }
        let describe = self.describe();
        let mut out = run_program(&Program {
            program: "ssh",
            args: &args,
            env: &[],
            stdin: Some(&stdin),
            timeout: cmd.timeout,
            log_target: &describe,
            log_text: &cmd.log_text(),
        })
        .map_err(|e| e.into_remote(&describe, cmd))?;
        let started = strip_marker(&mut out.stderr);
        Ok((started, out))
    }
}

/// Make a directory we created private (0700) after checking it is ours and not a symlink. ssh
/// creates the control socket itself 0600; this keeps others from even listing it.
fn restrict(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(dir)?;
    let me = std::fs::metadata("/proc/self")?.uid();
    if !meta.is_dir() || meta.uid() != me {
        return Err(std::io::Error::other(format!(
            "{} is not a directory owned by uid {me}",
            dir.display()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// `/tmp/plexburst-ssh-UID`, private to this user.
fn short_socket_dir() -> std::io::Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self")?.uid();
    let dir = PathBuf::from(format!("/tmp/plexburst-ssh-{me}"));
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    restrict(&dir)?;
    Ok(dir)
}

/// Remove the first marker line from stderr; true if it was there.
fn strip_marker(stderr: &mut Vec<u8>) -> bool {
    let needle = format!("{MARKER}\n");
    let needle = needle.as_bytes();
    match stderr.windows(needle.len()).position(|w| w == needle) {
        Some(at) => {
            stderr.drain(at..at + needle.len());
            true
        }
        None => false,
    }
}

fn control(ctl: &Path, describe: &str, op: &str, extra: &[&str]) -> Result<Output, RemoteError> {
    let mut args: Vec<String> = vec![
        "-S".into(),
        ctl.display().to_string(),
        "-o".into(),
        "ControlMaster=no".into(),
        "-O".into(),
        op.into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("none".into());
    let log_text = format!("ssh {}", args.join(" "));
    run_program(&Program {
        program: "ssh",
        args: &args,
        env: &[],
        stdin: None,
        timeout: CONTROL_TIMEOUT,
        log_target: describe,
        log_text: &log_text,
    })
    .map_err(|e| match e {
        RunError::Spawn(e) => {
            RemoteError::Io(format!("cannot run ssh: {e}; install openssh-client"))
        }
        RunError::Timeout(t) => RemoteError::Timeout {
            target: describe.to_string(),
            cmd: log_text.clone(),
            secs: t.as_secs(),
        },
    })
}

impl Remote for Ssh {
    fn describe(&self) -> String {
        format!(
            "ssh {}@{}:{}",
            self.target.user, self.target.host, self.target.port
        )
    }

    fn exec(&self, cmd: &Cmd) -> Result<Output, RemoteError> {
        let (started, out) = self.exec_once(cmd)?;
        if out.status != 255 || self.master_alive() {
            // Either a normal exit, or the command itself exited 255 over a healthy connection.
            return Ok(out);
        }
        let detail = redact(
            String::from_utf8_lossy(&out.stderr).trim(),
            &cmd.redactions(),
        );
        self.reconnect()?;
        if started {
            return Err(RemoteError::Transport {
                target: self.describe(),
                detail: format!(
                    "the connection dropped while `{}` was running (it may have partly run; \
                     reconnected for the next command): {detail}",
                    cmd.summary()
                ),
            });
        }
        // The remote shell never started, so the command cannot have run: safe to send again.
        let (_, out) = self.exec_once(cmd)?;
        if out.status == 255 && !self.master_alive() {
            return Err(RemoteError::Transport {
                target: self.describe(),
                detail: redact(
                    String::from_utf8_lossy(&out.stderr).trim(),
                    &cmd.redactions(),
                ),
            });
        }
        Ok(out)
    }

    fn put_file(&self, path: &str, contents: &[u8], mode: u32) -> Result<(), RemoteError> {
        // mktemp creates the temp file 0600, so a secret is never readable by others, even
        // before the chmod; the rename makes the new contents appear all at once.
        let script = format!(
            "set -e\n\
             p={p}\n\
             d=$(dirname -- \"$p\")\n\
             mkdir -p -- \"$d\"\n\
             t=$(mktemp \"$d/.plexburst-tmp-XXXXXX\")\n\
             trap 'rm -f -- \"$t\"' EXIT\n\
             cat > \"$t\"\n\
             chmod {mode:o} \"$t\"\n\
             mv -f -- \"$t\" \"$p\"\n\
             trap - EXIT\n",
            p = quote(path)
        );
        self.run(
            &Cmd::new(script)
                .stdin(contents)
                .timeout(Duration::from_secs(300)),
        )
        .map(|_| ())
    }

    fn get_file(&self, path: &str) -> Result<Vec<u8>, RemoteError> {
        // Exit 3 says "no such file" apart from any other failure of cat (a permission, an I/O
        // error), so both remotes report a missing file the same way.
        let script = format!("f={}; [ -e \"$f\" ] || exit 3; cat -- \"$f\"", quote(path));
        let out = self.exec(&Cmd::new(script).timeout(Duration::from_secs(300)))?;
        match out.status {
            0 => Ok(out.stdout),
            3 => Err(RemoteError::NotFound {
                target: self.describe(),
                path: path.to_string(),
            }),
            status => Err(RemoteError::Failed {
                target: self.describe(),
                cmd: format!("cat -- {}", quote(path)),
                status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            }),
        }
    }

    fn forward(&self, remote_port: u16) -> Result<Box<dyn Forward>, RemoteError> {
        let mut last = String::new();
        for attempt in 0..4 {
            if attempt > 0 && !self.master_alive() {
                self.reconnect()?;
            }
            // Another process may take the port between our probe and ssh's bind; then try again.
            let local_port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .map_err(|e| RemoteError::Io(format!("no free local port: {e}")))?
                .port();
            let spec = format!("127.0.0.1:{local_port}:127.0.0.1:{remote_port}");
            let out = self.control("forward", &["-L", &spec])?;
            if out.status == 0 {
                self.forwards
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(spec.clone());
                return Ok(Box::new(SshForward {
                    ctl: self.ctl.clone(),
                    describe: self.describe(),
                    spec,
                    addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, local_port)),
                    registry: Arc::clone(&self.forwards),
                }));
            }
            last = String::from_utf8_lossy(&out.stderr).trim().to_string();
        }
        Err(RemoteError::Transport {
            target: self.describe(),
            detail: format!("cannot forward a local port to 127.0.0.1:{remote_port}: {last}"),
        })
    }
}

impl Drop for Ssh {
    fn drop(&mut self) {
        let _ = self.control("exit", &[]);
    }
}

/// A `-L` forward through the master; cancelled when dropped.
struct SshForward {
    ctl: PathBuf,
    describe: String,
    spec: String,
    addr: SocketAddr,
    registry: Arc<Mutex<Vec<String>>>,
}

impl Forward for SshForward {
    fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for SshForward {
    fn drop(&mut self) {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|s| s != &self.spec);
        // Fails harmlessly when the master is already gone (the forward went with it).
        let _ = control(&self.ctl, &self.describe, "cancel", &["-L", &self.spec]);
    }
}
