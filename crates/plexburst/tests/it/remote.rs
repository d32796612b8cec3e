//! The process chokepoint against real components: a real sshd on loopback, real processes,
//! a real container. Covers exec/files/forwards, redaction, timeouts, reconnects, /proc CPU
//! sampling and both Plex runtimes.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plexburst::host;
use plexburst::remote::local::Local;
use plexburst::remote::ssh::Ssh;
use plexburst::remote::{Cmd, Remote, RemoteError};
use plexburst::runtime::{CommandSpec, DockerSpec, Runtime, Volume};

use crate::harness::{free_port, pid_alive, wait_for};
use crate::sshd::Sshd;

fn connect(sshd: &Sshd) -> Ssh {
    Ssh::connect(&sshd.target(), sshd.dir())
        .unwrap_or_else(|e| panic!("ssh connect failed: {e}\nsshd log:\n{}", sshd.log()))
}

/// A tiny HTTP server on 127.0.0.1 answering every request with `body`.
fn http_server(body: &'static str) -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                s,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// GET / over plain TCP (no proxy settings can interfere); the response body.
fn http_get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    match resp.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => {
            Ok(body.to_string())
        }
        _ => Err(std::io::Error::other(format!("bad response: {resp:?}"))),
    }
}

/// Everything logged at debug level on this thread while `f` runs.
fn capture_log<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink(Arc::new(Mutex::new(Vec::new())));
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let value = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&sink.0.lock().unwrap()).into_owned();
    (value, text)
}

/// Kills test processes even when an assertion fails (a busy loop must not outlive its test).
struct KillOnDrop(Vec<String>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Local::new().exec(&Cmd::new(format!(
            "kill -9 {} 2>/dev/null",
            self.0.join(" ")
        )));
    }
}

/// Stops a Command runtime's server even when an assertion fails.
struct StopOnDrop<'a>(&'a Runtime);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.stop(&Local::new(), Duration::from_secs(1));
    }
}

#[test]
fn ssh_runs_commands_moves_files_and_forwards_ports() {
    let sshd = Sshd::start();
    let ssh = connect(&sshd);

    let out = ssh
        .exec(
            &Cmd::new("printf '%s|' \"$ONE\" \"$TWO\"; cat; echo err >&2; exit 7")
                .env("ONE", "it's \"quoted\"\nacross lines")
                .env("TWO", "$HOME `x`")
                .stdin("from stdin"),
        )
        .unwrap();
    assert_eq!(out.status, 7);
    assert_eq!(
        out.stdout_str(),
        "it's \"quoted\"\nacross lines|$HOME `x`|from stdin"
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    let err = ssh
        .run(&Cmd::new("echo 'disk full' >&2; exit 3"))
        .unwrap_err();
    assert!(
        matches!(&err, RemoteError::Failed { status: 3, stderr, .. } if stderr == "disk full"),
        "{err}"
    );

    // Every byte value survives the round trip, and the mode is set.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new dir/rclone.conf");
    let path = path.to_str().unwrap();
    let bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    ssh.put_file(path, &bytes, 0o600).unwrap();
    assert_eq!(ssh.get_file(path).unwrap(), bytes);
    let mode = ssh
        .run(&Cmd::new(format!("stat -c %a '{path}'")))
        .unwrap()
        .stdout_str();
    assert_eq!(mode.trim(), "600");
    assert!(matches!(
        ssh.get_file("/plexburst/no/such/file"),
        Err(RemoteError::NotFound { .. })
    ));
    // A file that exists but cannot be read is a failure, not "missing".
    assert!(matches!(
        ssh.get_file(dir.path().to_str().unwrap()),
        Err(RemoteError::Failed { .. })
    ));

    // A port on the target's loopback, reached through the forward; gone once it is dropped.
    let remote_port = http_server("hello through ssh");
    let fwd = ssh.forward(remote_port).unwrap();
    let addr = fwd.local_addr();
    assert_ne!(addr.port(), remote_port);
    assert_eq!(http_get(addr).unwrap(), "hello through ssh");
    drop(fwd);
    wait_for(
        "the cancelled forward to close",
        Duration::from_secs(10),
        || http_get(addr).is_err(),
    );

    // Local's forward is the port itself.
    let local_fwd = Local::new().forward(remote_port).unwrap();
    assert_eq!(
        http_get(local_fwd.local_addr()).unwrap(),
        "hello through ssh"
    );
}

#[test]
fn secrets_stay_out_of_logs_errors_and_command_lines() {
    let sshd = Sshd::start();
    let ssh = connect(&sshd);
    let token = "claim-SECRETVALUE-1234";
    let extra = "s3-KEY-abcdef";
    let remotes: Vec<Box<dyn Remote>> = vec![Box::new(Local::new()), Box::new(ssh)];
    for r in &remotes {
        // The script lists every command line on the machine while it runs (this covers the
        // local ssh client, sshd's session and the remote shells), then fails quoting its secret.
        let script = format!(
            "for f in /proc/[0-9]*/cmdline; do tr '\\000' ' ' < \"$f\" 2>/dev/null; echo; done > /dev/shm/pb-argv-$$; \
             printf '%s' \"$PLEX_CLAIM\"; cat /dev/shm/pb-argv-$$ >&2; rm -f /dev/shm/pb-argv-$$; \
             echo \"failed with $PLEX_CLAIM and {extra}\" >&2; exit 1"
        );
        let cmd = Cmd::new(script).env("PLEX_CLAIM", token).secret(extra);
        let (result, log) = capture_log(|| (r.exec(&cmd), r.run(&cmd)));
        let (out, err) = result;
        let out = out.unwrap();
        assert_eq!(
            out.stdout_str(),
            token,
            "{}: the env reached the script",
            r.describe()
        );
        let argv = String::from_utf8_lossy(&out.stderr);
        assert!(
            argv.contains("/proc/"),
            "{}: the argv listing ran",
            r.describe()
        );
        assert!(
            !argv
                .lines()
                .any(|l| l.contains(token) && !l.starts_with("failed with")),
            "{}: a command line carried the secret:\n{argv}",
            r.describe()
        );
        let err = err.unwrap_err().to_string();
        assert!(
            err.contains("failed with *** and ***"),
            "{}: {err}",
            r.describe()
        );
        assert!(!err.contains(token) && !err.contains(extra), "{err}");
        assert!(
            log.contains("exec"),
            "{}: commands are logged:\n{log}",
            r.describe()
        );
        assert!(log.contains("PLEX_CLAIM"), "env names are logged:\n{log}");
        assert!(
            !log.contains(token) && !log.contains(extra),
            "{}: the log leaked a secret:\n{log}",
            r.describe()
        );
    }
}

#[test]
fn timeout_kills_the_whole_process_tree() {
    let sshd = Sshd::start();
    let ssh = connect(&sshd);
    let remotes: Vec<Box<dyn Remote>> = vec![Box::new(Local::new()), Box::new(ssh)];
    for r in &remotes {
        // The tree must exist before the timeout fires, but the clock starts when the command is
        // spawned: on a loaded machine (or over ssh) the shell may not even have started its
        // child within 1 s. Such a run proves nothing either way, so it is repeated with a longer
        // timeout; each attempt has its own pid file, since a remote shell the timeout beat
        // may still write one late.
        let mut tree = None;
        for secs in [1, 4, 16] {
            let dir = tempfile::tempdir().unwrap();
            let pid_file = dir.path().join("child.pid");
            let started = Instant::now();
            let err = r
                .exec(
                    &Cmd::new(format!(
                        "sleep 300 & echo $! > '{f}.tmp' && mv '{f}.tmp' '{f}'; sleep 301",
                        f = pid_file.display()
                    ))
                    .timeout(Duration::from_secs(secs)),
                )
                .unwrap_err();
            let took = started.elapsed();
            assert!(
                matches!(err, RemoteError::Timeout { secs: s, .. } if s == secs),
                "{}: {err}",
                r.describe()
            );
            assert!(
                took < Duration::from_secs(secs + 10),
                "{}: a {secs} s timeout returned after {took:?}",
                r.describe()
            );
            // Written whole (renamed into place) or not at all.
            if let Ok(text) = std::fs::read_to_string(&pid_file) {
                tree = Some((secs, text.trim().parse::<u32>().unwrap(), dir));
                break;
            }
            eprintln!(
                "{}: the {secs} s timeout fired before the shell started its child; again with a longer one",
                r.describe()
            );
        }
        let (secs, pid, _dir) = tree.unwrap_or_else(|| {
            panic!(
                "{}: the command never started its child within 16 s",
                r.describe()
            )
        });
        // Over ssh the target's own `timeout` kills the tree 2 s after ours fires.
        wait_for(
            &format!("{}: the background child {pid} to die", r.describe()),
            Duration::from_secs(secs + 30),
            || !pid_alive(pid),
        );
    }
}

#[test]
fn ssh_reconnects_after_the_connection_is_cut() {
    let sshd = Sshd::start();
    let ssh = connect(&sshd);
    let local = Local::new();
    let remote_port = http_server("still here");
    let fwd = ssh.forward(remote_port).unwrap();
    assert_eq!(http_get(fwd.local_addr()).unwrap(), "still here");

    // Cut between two commands: the next one reconnects and runs (it never started before).
    let old = ssh.master_pid().expect("master running");
    local.run(&Cmd::new(format!("kill -9 {old}"))).unwrap();
    wait_for("the master to die", Duration::from_secs(10), || {
        !pid_alive(old)
    });
    let out = ssh.run(&Cmd::new("echo alive")).unwrap();
    assert_eq!(out.stdout_str(), "alive\n");
    let new = ssh.master_pid().expect("a new master");
    assert_ne!(new, old);
    // The forward opened before the cut works again on the new master.
    assert_eq!(http_get(fwd.local_addr()).unwrap(), "still here");

    // Cut while a command runs: it may have done its work, so it is not re-sent; the caller
    // gets a transport error, and the command after it succeeds.
    let ssh = Arc::new(ssh);
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("started");
    let running = {
        let ssh = Arc::clone(&ssh);
        let script = format!("echo started > '{}'; sleep 20", flag.display());
        std::thread::spawn(move || ssh.exec(&Cmd::new(script)))
    };
    wait_for("the long command to start", Duration::from_secs(10), || {
        flag.exists()
    });
    local.run(&Cmd::new(format!("kill -9 {new}"))).unwrap();
    let err = running.join().unwrap().unwrap_err();
    assert!(matches!(err, RemoteError::Transport { .. }), "{err}");
    assert!(err.to_string().contains("may have partly run"), "{err}");
    assert_eq!(
        ssh.run(&Cmd::new("echo again")).unwrap().stdout_str(),
        "again\n"
    );
}

/// Starts `sh FILE ARGS...` detached in its own session (so its whole tree can be killed as a
/// process group) and returns its pid.
fn spawn_tree(local: &Local, script: &std::path::Path, args: &str) -> u32 {
    local
        .run(&Cmd::new(format!(
            "setsid nohup sh '{}' {args} >/dev/null 2>&1 & echo $!",
            script.display()
        )))
        .unwrap()
        .stdout_str()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn cpu_sample_counts_only_the_servers_process_tree() {
    let sshd = Sshd::start();
    let ssh = connect(&sshd);
    let local = Local::new();
    let dir = tempfile::tempdir().unwrap();
    // A process named like Plex's scanner, to check `scanner_running`.
    let scanner = dir.path().join("Plex Media Scanner");
    std::fs::copy("/bin/sleep", &scanner).unwrap();
    // Our "server": a busy child, one level further down a scanner grandchild (each writes its
    // pid to a file so the test can end it alone), and a sleeping child that keeps it alive. The
    // scanner's path is built inside the scripts: an argument naming it would put "Plex Media
    // Scanner" in the parents' command lines too. The sleeps last an hour so that none ends on its
    // own however slowly a loaded machine runs this test (the trees are killed on drop).
    let ours = dir.path().join("ours.sh");
    std::fs::write(
        &ours,
        "while :; do :; done &\necho $! > \"$1\"\n\
         sh \"$(dirname \"$0\")/inner.sh\" \"$2\" &\nsleep 3600 &\nwait\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("inner.sh"),
        "\"$(dirname \"$0\")/Plex Media Scanner\" 3600 &\necho $! > \"$1\"\nwait\n",
    )
    .unwrap();
    let busy_pid = dir.path().join("busy.pid");
    let scanner_pid = dir.path().join("scanner.pid");
    // An idle "server" with one sleeping child.
    let idle = dir.path().join("idle.sh");
    std::fs::write(&idle, "sleep 3600 &\nwait\n").unwrap();
    // Another Plex on the same host: a busy "Plex Media Server" and its own scanner, which match
    // every pattern a Plex process could be looked up by, but are not in our trees.
    let theirs = dir.path().join("theirs.sh");
    std::fs::write(
        &theirs,
        "sh -c 'while :; do :; done' 'Plex Media Server' &\n\
         \"$(dirname \"$0\")/Plex Media Scanner\" 3600 &\nwait\n",
    )
    .unwrap();
    let ours = spawn_tree(
        &local,
        &ours,
        &format!("'{}' '{}'", busy_pid.display(), scanner_pid.display()),
    );
    // `kill -9 -PGID`: the session leader's pid names the whole tree's process group.
    let _kill_ours = KillOnDrop(vec![format!("-{ours}")]);
    let idle = spawn_tree(&local, &idle, "");
    let _kill_idle = KillOnDrop(vec![format!("-{idle}")]);
    let theirs = spawn_tree(&local, &theirs, "");
    let _kill_theirs = KillOnDrop(vec![format!("-{theirs}")]);

    wait_for("every tree to be complete", Duration::from_secs(60), || {
        let full = |pid, n| host::cpu_sample(&ssh, pid).is_ok_and(|s| s.processes == n);
        let written =
            |f: &std::path::Path| std::fs::read_to_string(f).is_ok_and(|t| t.ends_with('\n'));
        full(ours, 5)
            && full(idle, 2)
            && full(theirs, 3)
            && written(&busy_pid)
            && written(&scanner_pid)
    });
    let first = host::cpu_sample(&ssh, ours).unwrap();
    assert!(first.scanner_running, "{first:?}");
    let idle_first = host::cpu_sample(&ssh, idle).unwrap();
    // The other server's scanner runs, but not in this tree.
    assert!(!idle_first.scanner_running, "{idle_first:?}");
    let theirs_first = host::cpu_sample(&ssh, theirs).unwrap();
    assert!(theirs_first.scanner_running, "{theirs_first:?}");

    let mut last = first;
    let mut theirs_last = theirs_first;
    wait_for(
        "both busy trees to burn 0.5 s of CPU",
        Duration::from_secs(120),
        || {
            last = host::cpu_sample(&ssh, ours).unwrap();
            theirs_last = host::cpu_sample(&ssh, theirs).unwrap();
            last.total_ticks >= first.total_ticks + 50
                && theirs_last.total_ticks >= theirs_first.total_ticks + 50
        },
    );
    assert_eq!(last.processes, 5, "{last:?}");
    // Two busy loops ran the whole time, and the idle tree was charged none of it.
    let idle_last = host::cpu_sample(&ssh, idle).unwrap();
    assert!(
        idle_last.total_ticks < idle_first.total_ticks + 5,
        "the idle tree went from {idle_first:?} to {idle_last:?} while other processes burnt CPU"
    );
    assert_eq!(idle_last.processes, 2);

    // The busy child ends and is reaped inside the tree: its ticks move to its parent's
    // children's fields and stay in the total, which never goes backwards.
    let read_pid = |f: &std::path::Path| std::fs::read_to_string(f).unwrap().trim().to_string();
    local
        .run(&Cmd::new(format!("kill -9 {}", read_pid(&busy_pid))))
        .unwrap();
    wait_for(
        "the busy child to be reaped",
        Duration::from_secs(60),
        || {
            let s = host::cpu_sample(&ssh, ours).unwrap();
            assert!(s.total_ticks >= last.total_ticks, "{s:?} after {last:?}");
            s.processes == 4
        },
    );
    local
        .run(&Cmd::new(format!("kill {}", read_pid(&scanner_pid))))
        .unwrap();
    wait_for("the scanner to go", Duration::from_secs(60), || {
        let s = host::cpu_sample(&ssh, ours).unwrap();
        assert!(s.total_ticks >= last.total_ticks, "{s:?} after {last:?}");
        !s.scanner_running && s.processes == 2
    });

    // A server that is gone is an error, never a zero sample.
    local.run(&Cmd::new(format!("kill -9 -{ours}"))).unwrap();
    wait_for("the tree to go", Duration::from_secs(60), || {
        host::cpu_sample(&local, ours).is_err()
    });
    let err = host::cpu_sample(&ssh, ours).unwrap_err();
    assert!(err.to_string().contains("not running"), "{err:#}");

    assert_eq!(
        host::missing_tools(&ssh, &["sh", "awk", "pb-no-such-tool"]).unwrap(),
        vec!["pb-no-such-tool".to_string()]
    );
    assert!(host::free_disk_bytes(&ssh, "/").unwrap() > 0);
    assert!(host::nproc(&ssh).unwrap() >= 1);
}

fn command_spec(dir: &std::path::Path, port: u16) -> CommandSpec {
    CommandSpec {
        // Traps TERM like a server shutting down cleanly; the claim arrives in its environment.
        command:
            "echo \"starting with claim $PLEX_CLAIM in $MODE\"; trap 'echo stopping; exit 0' TERM; \
                  while :; do sleep 1; done"
                .into(),
        env: vec![("MODE".into(), "test-mode".into())],
        secret_env: vec!["PLEX_CLAIM".into()],
        port,
        pid_file: dir.join("run/plex.pid").display().to_string(),
        log_file: dir.join("log/plex.log").display().to_string(),
    }
}

/// The secrets a start gets: the claim token under its variable name.
fn claim(token: &str) -> Vec<(String, String)> {
    vec![("PLEX_CLAIM".to_string(), token.to_string())]
}

#[test]
fn command_runtime_starts_stops_and_ignores_a_stale_pid_file() {
    let sshd = Sshd::start();
    let ssh = connect(&sshd);
    let dir = tempfile::tempdir().unwrap();
    let spec = command_spec(dir.path(), 32400);
    let rt = Runtime::Command(spec.clone());
    assert_eq!(rt.port(), 32400);
    assert!(!rt.is_running(&ssh).unwrap());

    let _cleanup = StopOnDrop(&rt);
    let (_, log) = capture_log(|| rt.start(&ssh, &claim("claim-TOPSECRET-9876")).unwrap());
    assert!(!log.contains("TOPSECRET"), "{log}");
    // Plain settings stay readable in the log; only secrets are masked.
    assert!(log.contains("export MODE=test-mode"), "{log}");
    assert!(rt.is_running(&ssh).unwrap());
    let pid: u32 = std::fs::read_to_string(&spec.pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(pid));
    assert_eq!(rt.root_pid(&ssh).unwrap(), Some(pid));
    let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&argv).contains("TOPSECRET"));

    // Idempotent: a second start leaves the same process running.
    rt.start(&ssh, &claim("claim-TOPSECRET-9876")).unwrap();
    assert_eq!(
        std::fs::read_to_string(&spec.pid_file).unwrap().trim(),
        pid.to_string()
    );
    wait_for("the start line in the log", Duration::from_secs(10), || {
        rt.log_tail(&ssh, 5)
            .unwrap()
            .contains("starting with claim claim-TOPSECRET-9876 in test-mode")
    });

    rt.stop(&ssh, Duration::from_secs(10)).unwrap();
    assert!(!pid_alive(pid));
    assert!(!rt.is_running(&ssh).unwrap());
    assert_eq!(rt.root_pid(&ssh).unwrap(), None);
    assert!(rt.log_tail(&ssh, 5).unwrap().contains("stopping"));
    // Stopping again is fine.
    rt.stop(&ssh, Duration::from_secs(1)).unwrap();

    // A pid file naming some other live process (pid reuse) is not "running", and stop must
    // not kill that process.
    std::fs::write(&spec.pid_file, format!("{}\n", std::process::id())).unwrap();
    std::fs::write(format!("{}.start", spec.pid_file), "1\n").unwrap();
    assert!(!rt.is_running(&ssh).unwrap());
    assert_eq!(rt.root_pid(&ssh).unwrap(), None);
    rt.stop(&ssh, Duration::from_secs(1)).unwrap();
    assert!(pid_alive(std::process::id()));
}

#[test]
fn command_runtime_kills_a_server_that_ignores_sigterm() {
    let local = Local::new();
    let dir = tempfile::tempdir().unwrap();
    let mut spec = command_spec(dir.path(), 32400);
    let child_pid = dir.path().join("child.pid");
    spec.command = format!(
        "trap '' TERM; sleep 1000 & echo $! > '{}'; wait",
        child_pid.display()
    );
    let rt = Runtime::Command(spec.clone());
    let _cleanup = StopOnDrop(&rt);
    rt.start(&local, &claim("claim-TOPSECRET-9876")).unwrap();
    assert!(rt.is_running(&local).unwrap());
    let pid: u32 = std::fs::read_to_string(&spec.pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let started = Instant::now();
    rt.stop(&local, Duration::from_secs(1)).unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(!pid_alive(pid));
    // The child in the same process group went too.
    let child: u32 = std::fs::read_to_string(&child_pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        !pid_alive(child),
        "the server's child {child} was left behind"
    );
}

/// A tiny local image: busybox's httpd serving one page on 32400. No registry needed.
fn build_busybox_image(local: &Local) -> String {
    let tag = "plexburst-test/busybox-httpd:dev".to_string();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/busybox", dir.path().join("busybox"))
        .expect("/bin/busybox (apt-get install -y busybox-static)");
    std::fs::create_dir(dir.path().join("www")).unwrap();
    std::fs::write(dir.path().join("www/index.html"), "served by the container").unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\n\
         ENTRYPOINT [\"/bin/busybox\"]\nCMD [\"sh\", \"-c\", \"echo httpd starting; exec /bin/busybox httpd -f -p 32400 -h /www\"]\n",
    )
    .unwrap();
    local
        .run(
            &Cmd::new(format!(
                "docker build -q -t {tag} '{}'",
                dir.path().display()
            ))
            .timeout(Duration::from_secs(300)),
        )
        .expect("docker build (is dockerd running?)");
    tag
}

#[test]
fn docker_runtime_runs_a_container_on_loopback_only() {
    let local = Local::new();
    let image = build_busybox_image(&local);
    let sshd = Sshd::start();
    let ssh = connect(&sshd);
    // The same lifecycle on this machine and through ssh (where the claim travels in the
    // command's stdin header to the docker client's environment).
    docker_lifecycle(&local, &image, "local");
    docker_lifecycle(&ssh, &image, "ssh");
}

/// Removes the test container even when an assertion fails.
struct RemoveContainer<'a>(&'a dyn Remote, String);

impl Drop for RemoveContainer<'_> {
    fn drop(&mut self) {
        let _ = self.0.exec(&Cmd::new(format!(
            "docker rm -f {} >/dev/null 2>&1",
            self.1
        )));
    }
}

fn docker_lifecycle(r: &dyn Remote, image: &str, label: &str) {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let name = format!("plexburst-test-{}-{label}", std::process::id());
    let spec = DockerSpec {
        name: name.clone(),
        image: image.to_string(),
        env: vec![("TZ".into(), "UTC".into())],
        secret_env: vec!["PLEX_CLAIM".into()],
        volumes: vec![Volume {
            host: data.path().display().to_string(),
            container: "/config".into(),
            options: "rw".into(),
        }],
        port,
        extra_args: vec![],
    };
    let args = spec.run_args().join(" ");
    assert!(
        args.contains(&format!("-p 127.0.0.1:{port}:32400")),
        "{args}"
    );
    assert!(
        args.contains("-e PLEX_CLAIM ") && !args.contains("DOCKERSECRET"),
        "{args}"
    );
    let rt = Runtime::Docker(spec);
    let _ = r.exec(&Cmd::new(format!("docker rm -f {name}")));
    let _cleanup = RemoveContainer(r, name.clone());

    assert_eq!(rt.root_pid(r).unwrap(), None, "{label}: no container yet");
    let (_, log) = capture_log(|| rt.start(r, &claim("claim-DOCKERSECRET-42")).unwrap());
    assert!(!log.contains("DOCKERSECRET"), "{label}: {log}");
    assert!(rt.is_running(r).unwrap());
    // The container's init as this host sees it: the process tree the CPU sample measures.
    let root = rt
        .root_pid(r)
        .unwrap()
        .expect("a running container has a pid");
    let cmdline = std::fs::read(format!("/proc/{root}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("busybox"),
        "{label}: pid {root} is {:?}",
        String::from_utf8_lossy(&cmdline)
    );
    assert!(host::cpu_sample(r, root).unwrap().processes >= 1);
    let fwd = r.forward(rt.port()).unwrap();
    wait_for("the container's httpd", Duration::from_secs(20), || {
        http_get(fwd.local_addr()).is_ok_and(|b| b == "served by the container")
    });
    let env = r
        .run(&Cmd::new(format!("docker exec {name} /bin/busybox env")))
        .unwrap()
        .stdout_str();
    assert!(
        env.contains("PLEX_CLAIM=claim-DOCKERSECRET-42") && env.contains("TZ=UTC"),
        "{label}: {env}"
    );
    let bindings = r
        .run(&Cmd::new(format!(
            "docker inspect -f '{{{{json .HostConfig.PortBindings}}}}' {name}"
        )))
        .unwrap()
        .stdout_str();
    assert!(bindings.contains("\"HostIp\":\"127.0.0.1\""), "{bindings}");
    let logs = rt.log_tail(r, 20).unwrap();
    assert!(logs.contains("httpd starting"), "{label}: {logs}");

    // Idempotent start; a container stopped behind our back is recreated.
    rt.start(r, &claim("claim-DOCKERSECRET-42")).unwrap();
    r.run(&Cmd::new(format!("docker stop -t 1 {name}")))
        .unwrap();
    assert!(!rt.is_running(r).unwrap());
    assert_eq!(
        rt.root_pid(r).unwrap(),
        None,
        "{label}: a stopped container"
    );
    rt.start(r, &claim("claim-DOCKERSECRET-42")).unwrap();
    assert!(rt.is_running(r).unwrap());

    rt.stop(r, Duration::from_secs(2)).unwrap();
    assert!(!rt.is_running(r).unwrap());
    let gone = r.exec(&Cmd::new(format!("docker inspect {name}"))).unwrap();
    assert_ne!(gone.status, 0, "the container was removed");
    rt.stop(r, Duration::from_secs(1)).unwrap();
}

#[test]
fn sshd_harness_describes_itself_as_a_target_block() {
    let sshd = Sshd::start();
    let doc: toml::Table = sshd.config_toml().parse().unwrap();
    let target = doc["target"].as_table().unwrap();
    assert_eq!(target["kind"].as_str(), Some("ssh"));
    assert_eq!(target["port"].as_integer(), Some(i64::from(sshd.port())));
    assert_eq!(target["user"].as_str(), Some(sshd.target().user.as_str()));
    // The block is enough to log in: connect with exactly what it names.
    let t = plexburst::remote::ssh::SshTarget {
        host: target["host"].as_str().unwrap().into(),
        port: sshd.port(),
        user: target["user"].as_str().unwrap().into(),
        identity: Some(target["identity"].as_str().unwrap().into()),
        extra_options: target["ssh_options"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect(),
    };
    let ssh = Ssh::connect(&t, sshd.dir()).unwrap();
    assert_eq!(ssh.run(&Cmd::new("echo ok")).unwrap().stdout_str(), "ok\n");

    // A second connect (a `resume` after a crash) reuses the master that is still running,
    // also when the state directory is too long for a unix socket path.
    let master = ssh.master_pid().expect("master");
    let again = Ssh::connect(&t, sshd.dir()).unwrap();
    assert_eq!(again.master_pid(), Some(master));
    let long = sshd
        .dir()
        .join("a-state-directory-with-a-name-long-enough-to-break-unix-sockets/ssh");
    let first = Ssh::connect(&t, &long).unwrap();
    assert!(first.control_path().as_os_str().len() < 100);
    let second = Ssh::connect(&t, &long).unwrap();
    assert_eq!(second.control_path(), first.control_path());
    assert_eq!(second.master_pid(), first.master_pid());
    drop((first, second));
    // Dropping one closes the shared master; the other reconnects on its next command.
    drop(again);
    assert_eq!(ssh.run(&Cmd::new("echo ok")).unwrap().stdout_str(), "ok\n");
}

#[test]
fn ssh_reconnects_after_the_server_cuts_the_connection() {
    let sshd = Sshd::start();
    let ssh = connect(&sshd);
    let remote_port = http_server("after the cut");
    let fwd = ssh.forward(remote_port).unwrap();
    let before = ssh.master_pid().expect("master");
    assert!(sshd.cut_connections() > 0);
    wait_for(
        "the master to notice the cut",
        Duration::from_secs(15),
        || !pid_alive(before),
    );
    // The next monitor-style command reconnects by itself, and the forward comes back.
    let sample = host::cpu_sample(&ssh, std::process::id()).unwrap();
    assert!(sample.processes >= 1, "{sample:?}");
    assert_ne!(ssh.master_pid(), Some(before));
    assert_eq!(http_get(fwd.local_addr()).unwrap(), "after the cut");
}

#[test]
fn ssh_connect_errors_say_why() {
    let sshd = Sshd::start();
    let mut wrong_key = sshd.target();
    let other = tempfile::tempdir().unwrap();
    let key = other.path().join("k");
    Local::new()
        .run(&Cmd::new(format!(
            "ssh-keygen -q -t ed25519 -N '' -f '{}'",
            key.display()
        )))
        .unwrap();
    wrong_key.identity = Some(key);
    let err = Ssh::connect(&wrong_key, other.path())
        .err()
        .expect("refused");
    assert!(
        matches!(&err, RemoteError::Transport { detail, .. } if detail.contains("Permission denied")),
        "{err}"
    );

    let mut closed_port = sshd.target();
    closed_port.port = free_port();
    let err = Ssh::connect(&closed_port, other.path())
        .err()
        .expect("refused");
    assert!(
        matches!(&err, RemoteError::Transport { detail, .. } if detail.contains("Connection refused")),
        "{err}"
    );
}

#[test]
fn ssh_serves_concurrent_callers_through_one_master() {
    let sshd = Sshd::start();
    let ssh = Arc::new(connect(&sshd));
    let workers: Vec<_> = (0..6)
        .map(|i| {
            let ssh = Arc::clone(&ssh);
            std::thread::spawn(move || {
                for j in 0..4 {
                    let out = ssh
                        .run(
                            &Cmd::new("cat; echo \" $N\"")
                                .env("N", format!("{i}-{j}"))
                                .stdin(format!("w{i}")),
                        )
                        .unwrap();
                    assert_eq!(out.stdout_str(), format!("w{i} {i}-{j}\n"));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
}
