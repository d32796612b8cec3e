//! The harness: a stand-in booted through the real hook, reached over real SSH with a generated key,
//! and halted on drop even when a test panics.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

/// The zone the tests pretend to boot in; the hook only records it as a label.
pub const ZONE: &str = "fr-par-2";

/// The one place tests build a process (clippy forbids `Command::new` elsewhere).
#[allow(clippy::disallowed_methods)] // Test code: runs the hook, ssh, ssh-keygen and docker.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    Command::new(program)
}

pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"))
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Builds the image once per test binary; the script's own lock and cache make this cheap when
/// scripts/test.sh already built it.
pub fn ensure_image() {
    static BUILT: OnceLock<Result<String, String>> = OnceLock::new();
    if let Err(e) =
        BUILT.get_or_init(|| instance_standin::ensure_image().map_err(|e| format!("{e:#}")))
    {
        panic!("the instance image could not be built: {e}");
    }
}

/// A Scaleway-like server id (a UUID's shape) whose first 8 hex digits, which the hook puts in the
/// hostname, differ between the tests of one run.
pub fn server_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:08x}-{:04x}-4000-8000-{:012x}",
        (nanos as u32) ^ n.rotate_left(24),
        std::process::id() & 0xffff,
        nanos as u64 & 0xffff_ffff_ffff
    )
}

/// A port nobody listens on right now (the kernel picks it; it is released before use).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Everything one server needs on this side: its id and port, the user-data directory the
/// emulator would hand the hook, the hook's state directory, an SSH key and known_hosts.
pub struct Server {
    pub id: String,
    pub port: u16,
    pub dir: TempDir,
    pub public_key: String,
}

impl Server {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("instance-standin-")
            .tempdir()
            .expect("temp dir");
        let key = dir.path().join("id_ed25519");
        let out = output(
            command("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "standin-test", "-f"])
                .arg(&key),
        );
        assert!(out.status.success(), "ssh-keygen: {}", text(&out.stderr));
        let public_key = std::fs::read_to_string(key.with_extension("pub"))
            .expect("public key")
            .trim()
            .to_owned();
        std::fs::create_dir(dir.path().join("user-data")).expect("user-data dir");
        Server {
            id: server_id(),
            port: free_port(),
            dir,
            public_key,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The hostname the hook gives the instance (as Scaleway's `scw-` names).
    pub fn hostname(&self) -> String {
        format!("scw-{}", &self.id[..8])
    }

    /// Sets a user-data key, as `PATCH .../user_data/{key}` would.
    pub fn set_user_data(&self, key: &str, value: &str) {
        std::fs::write(self.dir.path().join("user-data").join(key), value)
            .expect("write user data");
    }

    /// `hook.sh ACTION SERVER_ID ZONE [USERDATA_DIR]` with the environment the emulator passes on.
    pub fn hook_command(&self, action: &str) -> Command {
        let mut cmd = command(instance_standin::hook());
        cmd.arg(action).arg(&self.id).arg(ZONE);
        if action == "boot" {
            cmd.arg(self.dir.path().join("user-data"));
        }
        cmd.env("PB_INSTANCE_SSH_PORT", self.port.to_string())
            .env("PB_INSTANCE_STATE_DIR", self.state_dir());
        cmd
    }

    pub fn hook(&self, action: &str, env: &[(&str, &str)]) -> Output {
        let mut cmd = self.hook_command(action);
        for (k, v) in env {
            cmd.env(k, v);
        }
        output(&mut cmd)
    }

    /// Boots through the hook and panics with its output when it fails.
    pub fn boot(self, env: &[(&str, &str)]) -> Instance {
        ensure_image();
        let started = Instant::now();
        let out = self.hook("boot", env);
        let instance = Instance { server: self };
        assert!(
            out.status.success(),
            "hook boot failed ({}):\n{}",
            out.status,
            text(&out.stderr)
        );
        eprintln!("hook boot returned after {:?}", started.elapsed());
        instance
    }
}

/// A booted stand-in; dropping it halts it.
pub struct Instance {
    pub server: Server,
}

impl Instance {
    /// Runs `script` as root through real ssh (the remote shell interprets it).
    pub fn ssh(&self, script: &str) -> Output {
        let dir = self.server.dir.path();
        output(
            command("ssh")
                .args(["-F", "/dev/null", "-i"])
                .arg(dir.join("id_ed25519"))
                .args(["-p", &self.server.port.to_string()])
                .args(["-o", "StrictHostKeyChecking=accept-new"])
                .arg("-o")
                .arg(format!(
                    "UserKnownHostsFile={}",
                    dir.join("known_hosts").display()
                ))
                .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
                .args(["-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"])
                .args(["root@127.0.0.1", "--", script]),
        )
    }

    /// `ssh` that must succeed; returns stdout.
    pub fn ssh_ok(&self, script: &str) -> String {
        let out = self.ssh(script);
        assert!(
            out.status.success(),
            "ssh `{script}` failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Halts through the hook and checks that the container and its seed directory are gone.
    pub fn halt(self) {
        let out = self.server.hook("halt", &[]);
        assert!(out.status.success(), "hook halt: {}", text(&out.stderr));
        assert_gone(&self.server);
        // Dropping halts again: halt must be idempotent, and that second call checks it.
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let out = self.server.hook("halt", &[]);
        if !std::thread::panicking() {
            assert!(
                out.status.success(),
                "second hook halt: {}",
                text(&out.stderr)
            );
        }
    }
}

pub fn assert_gone(server: &Server) {
    let left = instance_standin::containers(Some(&server.id)).expect("docker ps");
    assert!(
        left.is_empty(),
        "containers left for {}: {left:?}",
        server.id
    );
    let seed = server.state_dir().join(&server.id);
    assert!(!seed.exists(), "seed dir left: {}", seed.display());
}
