//! A real OpenSSH server on 127.0.0.1 for tests: generated host and client keys, its own config,
//! killed when dropped (also when the test panics).

use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use plexburst::remote::ssh::SshTarget;

use crate::harness::free_port;

pub struct Sshd {
    dir: tempfile::TempDir,
    port: u16,
    user: String,
    child: Child,
}

/// Test code may spawn processes directly: this is the harness's single spawn point.
#[allow(clippy::disallowed_methods)]
fn command(program: &str) -> std::process::Command {
    std::process::Command::new(program)
}

fn run(program: &str, args: &[&str]) -> String {
    let out = command(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Sshd {
    /// Start sshd on a free port of 127.0.0.1 and wait until it accepts connections.
    pub fn start() -> Sshd {
        let dir = tempfile::Builder::new()
            .prefix("pb-sshd-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        for key in ["host_key", "client_key"] {
            let path = d.join(key);
            run(
                "ssh-keygen",
                &[
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    key,
                    "-f",
                    path.to_str().unwrap(),
                ],
            );
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        let port = free_port();
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
        let host_pub: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        std::fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{port} {}\n", host_pub.join(" ")),
        )
        .unwrap();
        let config = format!(
            "ListenAddress 127.0.0.1\n\
             Port {port}\n\
             HostKey {d}/host_key\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             PidFile {d}/sshd.pid\n\
             StrictModes no\n\
             UsePAM no\n\
             PermitRootLogin yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             MaxSessions 30\n\
             MaxStartups 100\n\
             AllowTcpForwarding yes\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).unwrap();
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let child = command("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start /usr/sbin/sshd (apt-get install openssh-server)");
        let user = run("id", &["-un"]).trim().to_string();
        let mut sshd = Sshd {
            dir,
            port,
            user,
            child,
        };
        sshd.wait_ready();
        sshd
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("sshd exited with {status}: {}", self.log());
            }
            if TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on port {} within 20 s: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What sshd wrote so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn identity(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// A short directory for ssh control sockets (unix socket paths are limited to ~100 bytes).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// How plexburst reaches this server: its generated client key, host key pinned.
    pub fn target(&self) -> SshTarget {
        SshTarget {
            host: "127.0.0.1".into(),
            port: self.port,
            user: self.user.clone(),
            identity: Some(self.identity()),
            extra_options: self.extra_options(),
        }
    }

    fn extra_options(&self) -> Vec<String> {
        vec![
            format!("UserKnownHostsFile={}", self.known_hosts().display()),
            "StrictHostKeyChecking=yes".into(),
            "LogLevel=ERROR".into(),
        ]
    }

    /// A `[target]` block for plexburst.toml pointing at this server.
    pub fn config_toml(&self) -> String {
        let options: Vec<String> = self
            .extra_options()
            .iter()
            .map(|o| format!("{o:?}"))
            .collect();
        format!(
            "[target]\nkind = \"ssh\"\nhost = \"127.0.0.1\"\nport = {}\nuser = {:?}\nidentity = {:?}\nssh_options = [{}]\n",
            self.port,
            self.user,
            self.identity().display().to_string(),
            options.join(", ")
        )
    }
}

impl Sshd {
    /// Restart the server as an administrator would: the listener and every session go, a new
    /// sshd with the same config and host key listens again on the same port.
    pub fn restart(&mut self) {
        self.cut_connections();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(d.join("sshd.log"))
            .unwrap();
        self.child = command("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("restart /usr/sbin/sshd");
        self.wait_ready();
    }

    /// Drop every open connection from the server side, as a network cut or a server restart
    /// would: the per-connection sshd processes are killed, the listener stays. Clients see their
    /// connection (and ssh ControlMaster) die; commands running in those sessions are orphaned.
    /// Returns how many sshd processes were killed.
    pub fn cut_connections(&self) -> usize {
        let sessions = sshd_descendants(self.child.id());
        for pid in &sessions {
            let _ = command("kill").args(["-9", &pid.to_string()]).status();
        }
        sessions.len()
    }
}

/// Pids of the `sshd` processes below `root` (the per-connection monitors and session processes).
fn sshd_descendants(root: u32) -> Vec<u32> {
    crate::harness::descendants(root)
        .into_iter()
        .filter(|(_, comm)| comm == "sshd")
        .map(|(pid, _)| pid)
        .collect()
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Sessions outlive the listener; cut them so no client master stays connected.
        self.cut_connections();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
