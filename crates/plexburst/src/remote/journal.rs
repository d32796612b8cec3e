//! The run's command journal: every command, file transfer and port forward a run makes on its
//! target, one JSON line each, secrets already masked.
//!
//! It wraps the run's `Remote`, so nothing reaches the target without a line here. The user reads
//! it (`runs/<id>/commands.jsonl`) to see exactly what plexburst did; the suite reads it to prove
//! the run issued the commands `plexburst plan` printed.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{Cmd, Forward, Output, Remote, RemoteError};

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Entry {
    /// A script run with `sh -c`, as `Cmd::log_text` shows it (secrets replaced by `***`).
    Exec {
        script: String,
        /// The names of the variables passed through the environment (their values may be secret).
        env: Vec<String>,
        /// The exit status, or `None` when the command could not run or timed out.
        status: Option<i32>,
    },
    /// The same script and environment names as the `Exec` on line `of` (0-based) of this file:
    /// the monitor repeats its probes every few seconds for hours, and a line each would make the
    /// journal grow by megabytes an hour.
    Repeat {
        of: usize,
        status: Option<i32>,
    },
    PutFile {
        path: String,
        mode: u32,
        bytes: usize,
    },
    GetFile {
        path: String,
    },
    Forward {
        port: u16,
    },
}

/// A `Remote` that appends an `Entry` to a file for everything it does.
pub struct Journaled {
    inner: Box<dyn Remote>,
    file: Mutex<Log>,
}

/// The open journal: the file, its line count, and the line of each script's first `Exec`.
struct Log {
    file: std::fs::File,
    lines: usize,
    first: HashMap<(String, Vec<String>), usize>,
}

impl Journaled {
    /// Journal `inner` into `path` (appended to: a resumed run goes on in the same file).
    pub fn open(inner: Box<dyn Remote>, path: &Path) -> anyhow::Result<Journaled> {
        use anyhow::Context;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        // 0600 like the state: the scripts are masked, but they name the user's paths and hosts.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot open the command journal {}", path.display()))?;
        // A resumed run appends: `Repeat` lines count from the end of what is there.
        let lines = std::fs::read(path)
            .map(|b| b.iter().filter(|c| **c == b'\n').count())
            .unwrap_or(0);
        Ok(Journaled {
            inner,
            file: Mutex::new(Log {
                file,
                lines,
                first: HashMap::new(),
            }),
        })
    }

    fn write(&self, e: Entry) {
        let mut log = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let e = match e {
            Entry::Exec {
                script,
                env,
                status,
            } => {
                let at = log.lines;
                match log.first.entry((script, env)) {
                    std::collections::hash_map::Entry::Occupied(o) => Entry::Repeat {
                        of: *o.get(),
                        status,
                    },
                    std::collections::hash_map::Entry::Vacant(v) => {
                        let (script, env) = v.key().clone();
                        v.insert(at);
                        Entry::Exec {
                            script,
                            env,
                            status,
                        }
                    }
                }
            }
            other => other,
        };
        // A journal that cannot be written must not stop the run it describes: warn and go on.
        let line = match serde_json::to_string(&e) {
            Ok(l) => l,
            Err(err) => return tracing::warn!("command journal: {err}"),
        };
        match writeln!(log.file, "{line}") {
            Ok(()) => log.lines += 1,
            Err(err) => tracing::warn!("command journal: {err}"),
        }
    }
}

/// Every entry of a journal file, in order.
pub fn read(path: &Path) -> anyhow::Result<Vec<Entry>> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the command journal {}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("journal line {l:?}")))
        .collect()
}

impl Remote for Journaled {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn exec(&self, cmd: &Cmd) -> Result<Output, RemoteError> {
        let out = self.inner.exec(cmd);
        self.write(Entry::Exec {
            script: cmd.log_text(),
            env: cmd.env.iter().map(|(k, _)| k.clone()).collect(),
            status: out.as_ref().ok().map(|o| o.status),
        });
        out
    }

    fn put_file(&self, path: &str, contents: &[u8], mode: u32) -> Result<(), RemoteError> {
        self.write(Entry::PutFile {
            path: path.to_string(),
            mode,
            bytes: contents.len(),
        });
        self.inner.put_file(path, contents, mode)
    }

    fn get_file(&self, path: &str) -> Result<Vec<u8>, RemoteError> {
        self.write(Entry::GetFile {
            path: path.to_string(),
        });
        self.inner.get_file(path)
    }

    fn forward(&self, remote_port: u16) -> Result<Box<dyn Forward>, RemoteError> {
        self.write(Entry::Forward { port: remote_port });
        self.inner.forward(remote_port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::local::Local;

    #[test]
    fn journal_records_every_operation_with_secrets_masked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs/r1/commands.jsonl");
        let j = Journaled::open(Box::new(Local::new()), &path).unwrap();
        let out = j
            .exec(&Cmd::new("echo s3cr3t-value >/dev/null; exit 3").secret("s3cr3t-value"))
            .unwrap();
        assert_eq!(out.status, 3);
        j.exec(&Cmd::new("true").env("PLEX_CLAIM", "claim-abcdef"))
            .unwrap();
        let f = dir.path().join("f");
        j.put_file(f.to_str().unwrap(), b"hello", 0o600).unwrap();
        j.get_file(f.to_str().unwrap()).unwrap();
        // The same script again is a short line pointing at its first one.
        j.exec(&Cmd::new("true").env("PLEX_CLAIM", "claim-abcdef"))
            .unwrap();
        let entries = read(&path).unwrap();
        assert_eq!(entries.len(), 5);
        assert_eq!(
            entries[4],
            Entry::Repeat {
                of: 1,
                status: Some(0)
            }
        );
        assert_eq!(
            entries[0],
            Entry::Exec {
                script: "echo *** >/dev/null; exit 3".into(),
                env: vec![],
                status: Some(3)
            }
        );
        assert!(matches!(&entries[1], Entry::Exec { env, .. } if env == &["PLEX_CLAIM"]));
        assert!(matches!(
            entries[2],
            Entry::PutFile {
                bytes: 5,
                mode: 0o600,
                ..
            }
        ));
        let raw = std::fs::read_to_string(&path).unwrap();
        assert!(
            !raw.contains("s3cr3t-value") && !raw.contains("claim-abcdef"),
            "{raw}"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        // Reopened (a resumed run), repeats keep counting lines from the end of the file.
        drop(j);
        let j = Journaled::open(Box::new(Local::new()), &path).unwrap();
        j.exec(&Cmd::new("true")).unwrap();
        j.exec(&Cmd::new("true")).unwrap();
        let entries = read(&path).unwrap();
        assert_eq!(
            entries[6],
            Entry::Repeat {
                of: 5,
                status: Some(0)
            }
        );
    }
}
