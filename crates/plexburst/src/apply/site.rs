//! The home host as `apply` works on it: the paths of its journal, the moves and copies it makes
//! there (each one step that can run again), and the journal's record.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::spec::Home;
use super::{ITEMS, Options, PMS};
use crate::remote::{Cmd, Remote, quote};

/// How far an apply got; written before the step's effects are relied on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) enum Step {
    /// The archive is extracted in `staging/<sha>`; nothing at home changed.
    Staged,
    /// The service was stopped; `backup` and `had` are fixed: the swap may be under way.
    Stopped,
    /// Every item is the archive's; the old ones are in the backup.
    Swapped,
    /// Identity and ownership done, the service started; the counts are not checked yet.
    Started,
    /// Installed and checked: this record is what is installed, and its backup what was before.
    Done,
    /// A rollback to `backup` is under way.
    RollingBack,
}

/// `journal.json`: the one record of the last or current apply (versioned: a serialized type).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Record {
    pub(super) version: u32,
    pub(super) step: Step,
    pub(super) archive: String,
    pub(super) sha256: String,
    pub(super) run_id: String,
    /// The backup directory's name under `backups/`, chosen once the service is stopped.
    pub(super) backup: Option<String>,
    /// The items (`ITEMS` names) the home had before: these are moved into the backup.
    pub(super) had: Vec<String>,
    /// The items the archive brings.
    pub(super) brings: Vec<String>,
    pub(super) take_identity: bool,
    pub(super) updated_at: String,
    /// The record this apply replaced (what a rollback makes current again).
    pub(super) previous: Option<Box<Record>>,
}

pub(super) const RECORD_VERSION: u32 = 1;

/// The home host and its data dir, with the paths of the journal.
pub(super) struct Site {
    pub(super) remote: Box<dyn Remote>,
    pub(super) home: Home,
    /// Dropped after `remote` (field order): the ssh master's socket dir.
    pub(super) _scratch: Option<tempfile::TempDir>,
}

impl Site {
    pub(super) fn data(&self) -> &str {
        self.home.path()
    }
    pub(super) fn pms(&self) -> String {
        format!("{}/{PMS}", self.data())
    }
    pub(super) fn prefs(&self) -> String {
        format!("{}/Preferences.xml", self.pms())
    }
    pub(super) fn jdir(&self) -> String {
        format!("{}/.plexburst-apply", self.data())
    }
    pub(super) fn journal(&self) -> String {
        format!("{}/journal.json", self.jdir())
    }
    pub(super) fn staging(&self, sha: &str) -> String {
        format!("{}/staging/{sha}", self.jdir())
    }
    pub(super) fn staged_pms(&self, sha: &str) -> String {
        format!("{}/{PMS}", self.staging(sha))
    }
    pub(super) fn backup(&self, name: &str) -> String {
        format!("{}/backups/{name}", self.jdir())
    }
    pub(super) fn trash(&self) -> String {
        format!("{}/trash", self.jdir())
    }

    pub(super) fn sh(&self, script: String, timeout: Duration) -> anyhow::Result<String> {
        let cmd = Cmd::new(script).timeout(timeout);
        let out = self
            .remote
            .run(&cmd)
            .with_context(|| format!("on {}", self.home.describe()))?;
        Ok(out.stdout_str())
    }
    pub(super) fn run(&self, script: String) -> anyhow::Result<()> {
        self.sh(script, Duration::from_secs(3600)).map(drop)
    }
    pub(super) fn exists(&self, path: &str) -> anyhow::Result<bool> {
        let out = self
            .remote
            .exec(&Cmd::new(format!("test -e {}", quote(path))))
            .with_context(|| format!("cannot look for {path}"))?;
        Ok(out.status == 0)
    }
    /// Rename `from` to `to` (same filesystem: one atomic step); `-T` so an existing directory
    /// `to` is an error instead of a destination to move into.
    pub(super) fn rename(&self, from: &str, to: &str) -> anyhow::Result<()> {
        self.run(format!(
            "mkdir -p -- \"$(dirname -- {t})\" && mv -T -- {f} {t}",
            f = quote(from),
            t = quote(to)
        ))
        .with_context(|| format!("cannot move {from} to {to}"))
    }
    /// Copy a file so that `to` is either absent/old or the whole copy.
    pub(super) fn copy_file(&self, from: &str, to: &str) -> anyhow::Result<()> {
        self.run(format!(
            "cp -p -- {f} {t}.tmp && mv -f -- {t}.tmp {t}",
            f = quote(from),
            t = quote(to)
        ))
        .with_context(|| format!("cannot copy {from} to {to}"))
    }

    pub(super) fn read_record(&self) -> anyhow::Result<Option<Record>> {
        match self.remote.get_file(&self.journal()) {
            Ok(bytes) => {
                let r: Record = serde_json::from_slice(&bytes).with_context(|| {
                    format!(
                        "{} is not an apply journal this plexburst reads",
                        self.journal()
                    )
                })?;
                if r.version != RECORD_VERSION {
                    bail!(
                        "{} is version {}, this plexburst reads {RECORD_VERSION}",
                        self.journal(),
                        r.version
                    );
                }
                Ok(Some(r))
            }
            Err(crate::remote::RemoteError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e).context("cannot read the apply journal"),
        }
    }
    pub(super) fn write_record(&self, r: &mut Record) -> anyhow::Result<()> {
        r.updated_at = jiff::Timestamp::now().to_string();
        self.remote
            .put_file(&self.journal(), &serde_json::to_vec_pretty(r)?, 0o644)
            .context("cannot write the apply journal")
    }
    pub(super) fn remove_record(&self) -> anyhow::Result<()> {
        self.run(format!("rm -f -- {}", quote(&self.journal())))
    }

    /// `uid:gid` of the data dir: the home server's user.
    pub(super) fn owner(&self) -> anyhow::Result<String> {
        let o = self.sh(
            format!("stat -c %u:%g -- {}", quote(self.data())),
            Duration::from_secs(60),
        )?;
        Ok(o.trim().to_string())
    }
    pub(super) fn chown_items(&self) -> anyhow::Result<()> {
        let owner = self.owner()?;
        let mut paths: Vec<String> = ITEMS
            .iter()
            .map(|(_, rel)| format!("{}/{rel}", self.pms()))
            .collect();
        paths.push(self.prefs());
        let list: Vec<String> = paths.iter().map(|p| quote(p)).collect();
        self.run(format!(
            "for p in {}; do if [ -e \"$p\" ]; then chown -R {} \"$p\"; fi; done",
            list.join(" "),
            quote(&owner)
        ))
        .with_context(|| format!("cannot give the installed data to its owner {owner}"))
    }
}

/// The home host's remote; for ssh also the scratch dir holding its master's socket, which must
/// outlive it.
pub(super) fn connect(
    home: &Home,
    opts: &Options,
) -> anyhow::Result<(Box<dyn Remote>, Option<tempfile::TempDir>)> {
    match home {
        Home::Local { .. } => Ok((Box::new(crate::remote::local::Local::new()), None)),
        Home::Ssh {
            user, host, port, ..
        } => {
            let t = crate::remote::ssh::SshTarget {
                host: host.clone(),
                port: *port,
                user: user.clone(),
                identity: opts.ssh_identity.clone(),
                extra_options: opts.ssh_options.clone(),
            };
            let scratch = tempfile::Builder::new()
                .prefix("pb-apply-")
                .tempdir()
                .context("cannot create a scratch directory")?;
            let ssh = crate::remote::ssh::Ssh::connect(&t, scratch.path())
                .with_context(|| format!("cannot connect to {user}@{host}:{port}"))?;
            Ok((Box::new(ssh), Some(scratch)))
        }
    }
}
