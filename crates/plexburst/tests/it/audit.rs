//! The secrets audit's and the exposure check's tools, used inside existing end-to-end runs: a
//! sampler that looks at the target again and again while the run goes on (command lines,
//! listening sockets, file modes), and the search of every sink for planted secrets.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// What one look at a target prints: every process's command line (one argument a line), then
/// `===SS` and the listening TCP sockets with their processes, then `===MODE` and the mode of
/// `file` (`%a`), if it exists.
pub fn probe_script(file: &str) -> String {
    format!(
        "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' '\\n'\n\
         echo ===SS; ss -ltnpH\n\
         echo ===MODE; stat -c %a {} 2>/dev/null; true\n",
        plexburst::remote::quote(file)
    )
}

/// A background thread that runs `probe` until `finish`, keeping every answer.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<String>>,
}

impl Sampler {
    pub fn start(mut probe: impl FnMut() -> Option<String> + Send + 'static) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Some(s) = probe() {
                    seen.push(s);
                }
                // The sampling interval: often enough to see every phase, light on 2 cores.
                std::thread::sleep(std::time::Duration::from_millis(250));
            }
            seen
        });
        Sampler { stop, handle }
    }

    pub fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("the sampler thread")
    }
}

/// From the samples: the listening sockets matching one of `needles` (a process as ss shows it,
/// `(("rclone"`, or a port, `:5572 `) that are not on loopback, and how many sockets each
/// needle matched at all.
pub fn exposed(samples: &[String], needles: &[String]) -> (Vec<String>, Vec<usize>) {
    let mut open = Vec::new();
    let mut seen = vec![0; needles.len()];
    for s in samples {
        let Some((_, rest)) = s.split_once("===SS\n") else {
            continue;
        };
        let ss = rest.split("===MODE").next().unwrap_or("");
        for line in ss.lines() {
            for (i, needle) in needles.iter().enumerate() {
                if line.contains(needle.as_str()) {
                    seen[i] += 1;
                    let local = line.split_whitespace().nth(3).unwrap_or("");
                    if !(local.starts_with("127.0.0.1:") || local.starts_with("[::1]:")) {
                        open.push(line.to_string());
                    }
                }
            }
        }
    }
    (open, seen)
}

/// The modes `file` was seen with (the `===MODE` part of the samples).
pub fn modes(samples: &[String]) -> std::collections::BTreeSet<String> {
    samples
        .iter()
        .filter_map(|s| s.split_once("===MODE\n").map(|(_, m)| m.trim().to_string()))
        .filter(|m| !m.is_empty())
        .collect()
}

/// Every place one of `secrets` (name, value) shows up: in `texts` (name, text) and in the
/// files under `dirs` but `allowed` (the secret's own file).
pub fn leaks(
    secrets: &[(&str, &str)],
    texts: &[(&str, &str)],
    dirs: &[&Path],
    allowed: &[&Path],
) -> Vec<String> {
    let mut found = Vec::new();
    for (name, value) in secrets {
        assert!(value.len() >= 12, "the planted {name} is distinctive");
        for (sink, text) in texts {
            if text.contains(value) {
                found.push(format!("{name} in {sink}"));
            }
        }
        for dir in dirs {
            for hit in crate::claim::files_containing(dir, value) {
                if !allowed.iter().any(|a| Path::new(&hit) == *a) {
                    found.push(format!("{name} in {hit}"));
                }
            }
        }
    }
    found
}

/// The run's SSH host key is pinned: the instance's key is recorded at first contact, the same
/// key connects again, and any other key in its place is refused, pinned or not.
#[test]
fn a_changed_host_key_is_refused() {
    use plexburst::remote::Remote;
    use plexburst::remote::ssh::Ssh;
    let sshd = crate::sshd::Sshd::start();
    let known = sshd.dir().join("run_known_hosts");
    let instance = plexburst::state::Instance {
        address: Some("127.0.0.1".into()),
        ssh_port: sshd.port(),
        key_path: sshd.identity().display().to_string(),
        known_hosts: known.display().to_string(),
        ..Default::default()
    };
    // Each connection its own control dir, so none reuses another's master.
    let connect = |pinned: bool, n: usize| {
        let ctl = sshd.dir().join(format!("c{n}"));
        Ssh::connect(
            &plexburst::session::instance_target(&instance, pinned),
            &ctl,
        )
        .and_then(|s| s.exec(&plexburst::remote::Cmd::new("true")).map(|_| ()))
    };
    connect(false, 0).expect("first contact records the host key");
    let recorded = std::fs::read_to_string(&known).unwrap();
    let host = std::fs::read_to_string(sshd.dir().join("host_key.pub")).unwrap();
    let host_b64 = host.split_whitespace().nth(1).unwrap();
    assert!(recorded.contains(host_b64), "{recorded}");
    connect(true, 1).expect("the pinned key connects");

    // The same address answering with another key (a new machine, or someone in between).
    let other = sshd.dir().join("other_host_key");
    let made = crate::harness::run(crate::harness::command("ssh-keygen").args([
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-f",
        other.to_str().unwrap(),
    ]));
    assert!(made.status.success(), "{}", crate::harness::text(&made));
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let other_b64 = other_pub.split_whitespace().nth(1).unwrap();
    std::fs::write(&known, recorded.replace(host_b64, other_b64)).unwrap();
    for (pinned, n) in [(true, 2), (false, 3)] {
        let refused = connect(pinned, n);
        assert!(
            refused.is_err(),
            "a changed host key must be refused (pinned: {pinned})"
        );
        let why = format!("{:#}", refused.unwrap_err());
        assert!(
            why.to_lowercase().contains("host key"),
            "the refusal names the host key: {why}"
        );
    }
}
