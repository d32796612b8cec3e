//! Where the media library lives and how Plex reaches it: a path already on the target, or an
//! S3 bucket mounted with `rclone mount` (see `rclone/`). The pipeline only talks to `Storage`.

pub mod rclone;

use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::remote::{Cmd, Remote, quote};

/// Where the media is, as the plan resolved it (see `plan::storage::resolve`).
#[allow(clippy::large_enum_variant)] // one value per run
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StorageSpec {
    /// The library is already at `path` on the target.
    Path { path: String },
    /// An S3 bucket mounted read-only with `rclone mount`.
    Rclone(rclone::RcloneSpec),
}

impl StorageSpec {
    /// The directory Plex sees the library under (inside and outside the container).
    pub fn media_root(&self) -> &str {
        match self {
            StorageSpec::Path { path } => path,
            StorageSpec::Rclone(rc) => &rc.mount_point,
        }
    }

    /// The binds a Plex container needs to see the library at the same path as the host.
    pub fn container_volumes(&self) -> Vec<crate::runtime::Volume> {
        match self {
            // A plain directory: a read-only bind. (rslave needs a shared or slave source mount,
            // and a user's own directory usually sits on a private one, where Docker refuses it.)
            StorageSpec::Path { path } => vec![crate::runtime::Volume {
                host: path.clone(),
                container: path.clone(),
                options: "ro".to_string(),
            }],
            StorageSpec::Rclone(rc) => rc.container_volumes(),
        }
    }
}

/// The verdict of one health probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Health {
    Healthy,
    /// The mount cannot be trusted (hang, read error, dead FUSE endpoint); the reason says which.
    Degraded(String),
}

/// The outcome of reading the first 64 KiB of a list of files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmReport {
    /// Files read successfully.
    pub ok: u64,
    /// Files that do not exist (ENOENT): the DB and the bucket disagree.
    pub missing: Vec<String>,
    /// Files that exist but could not be read, with the error text.
    pub failed: Vec<(String, String)>,
}

/// What a file the storage puts on the target is, for its cleanup and the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Holds a secret: removed as soon as nothing needs it (teardown, a failure, destroy).
    Secret,
    /// The mount's cache: removed at teardown and destroy unless the user keeps it.
    Cache,
    /// Working files (log, probes, pid): removed at teardown and destroy.
    Scratch,
}

/// A file or directory the storage may have put on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetFile {
    pub kind: FileKind,
    pub what: &'static str,
    pub path: String,
}

impl TargetFile {
    pub fn new(kind: FileKind, what: &'static str, path: String) -> TargetFile {
        TargetFile { kind, what, path }
    }
}

/// How long a health probe may take before the mount counts as hung.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(20);

/// The library storage of one run.
#[allow(clippy::large_enum_variant)] // one value per run
#[derive(Debug)]
pub enum Storage {
    Path { path: String },
    Rclone(rclone::Rclone),
}

impl Storage {
    /// The storage the plan resolved. An rclone storage reads its S3 secret (endpoint mode) from
    /// this process's environment here, and keeps it in memory only.
    pub fn from_plan(spec: &StorageSpec) -> Storage {
        match spec {
            StorageSpec::Path { path } => Storage::Path { path: path.clone() },
            StorageSpec::Rclone(rc) => Storage::Rclone(rclone::Rclone::new(rc)),
        }
    }

    /// Push configuration and check the target can mount (rclone kind); nothing for a path.
    pub fn prepare(&self, r: &dyn Remote) -> anyhow::Result<()> {
        match self {
            Storage::Path { .. } => Ok(()),
            Storage::Rclone(rc) => rc.prepare(r),
        }
    }

    /// Make the library readable at `media_root()`, and prove it by reading a real file.
    pub fn mount(&self, r: &dyn Remote) -> anyhow::Result<()> {
        match self {
            Storage::Path { path } => {
                let file = first_file(r, path, HEALTH_TIMEOUT)?;
                let Some(file) = file else {
                    bail!(
                        "storage.path {path:?} on {} contains no file; put the library there or fix storage.path",
                        r.describe()
                    );
                };
                read_probe(r, &[file], HEALTH_TIMEOUT)
                    .map_err(|e| anyhow::anyhow!(e))
                    .with_context(|| {
                        format!("storage.path {path:?} lists but a file under it does not read")
                    })
            }
            Storage::Rclone(rc) => rc.mount(r),
        }
    }

    /// Fill the directory cache before the scan (rclone); nothing for a path.
    pub fn prewarm(&self, r: &dyn Remote) -> anyhow::Result<()> {
        match self {
            Storage::Path { .. } => Ok(()),
            Storage::Rclone(rc) => rc.prewarm(r),
        }
    }

    /// A timed listing and read. `Err` only when the probe itself could not run (target unreachable).
    pub fn health(&self, r: &dyn Remote) -> anyhow::Result<Health> {
        match self {
            Storage::Path { path } => match first_file(r, path, HEALTH_TIMEOUT) {
                Err(e) => Ok(Health::Degraded(format!("listing {path} failed: {e:#}"))),
                Ok(None) => Ok(Health::Degraded(format!("{path} lists no file"))),
                Ok(Some(f)) => Ok(match read_probe(r, &[f], HEALTH_TIMEOUT) {
                    Ok(()) => Health::Healthy,
                    Err(reason) => Health::Degraded(reason),
                }),
            },
            Storage::Rclone(rc) => rc.health(r),
        }
    }

    /// Bytes read from the bucket since the mount started; `None` for a path (nothing to count).
    pub fn bytes_read(&self, r: &dyn Remote) -> anyhow::Result<Option<u64>> {
        match self {
            Storage::Path { .. } => Ok(None),
            Storage::Rclone(rc) => rc.bytes_read(r).map(Some),
        }
    }

    /// Bring a degraded mount back (unmount, remount, re-probe). A path cannot be recovered by us.
    pub fn recover(&self, r: &dyn Remote) -> anyhow::Result<()> {
        match self {
            Storage::Path { path } => match self.health(r)? {
                Health::Healthy => Ok(()),
                Health::Degraded(why) => bail!(
                    "storage.path {path:?} is unhealthy ({why}) and plexburst does not manage it; fix the path on the target"
                ),
            },
            Storage::Rclone(rc) => rc.recover(r),
        }
    }

    /// Read the first 64 KiB of each file, bounded parallel, on the target.
    pub fn warm_files(&self, r: &dyn Remote, files: &[String]) -> anyhow::Result<WarmReport> {
        let (dir, parallel) = match self {
            Storage::Path { .. } => ("/tmp".to_string(), 8),
            Storage::Rclone(rc) => (rc.work_dir().to_string(), rc.settings().warm_parallel),
        };
        warm_files(r, &dir, files, parallel)
    }

    /// Unmount (rclone); nothing for a path.
    pub fn unmount(&self, r: &dyn Remote) -> anyhow::Result<()> {
        match self {
            Storage::Path { .. } => Ok(()),
            Storage::Rclone(rc) => rc.unmount(r),
        }
    }

    /// Put the secret files the storage needs on the target (the rclone config); nothing for a
    /// path. `prepare` does it too; a resumed run whose secrets were removed calls this.
    pub fn push_secrets(&self, r: &dyn Remote) -> anyhow::Result<()> {
        match self {
            Storage::Path { .. } => Ok(()),
            Storage::Rclone(rc) => rc.push_config(r),
        }
    }

    /// Remove every secret file the storage put on the target.
    pub fn remove_secrets(&self, r: &dyn Remote) -> anyhow::Result<()> {
        match self {
            Storage::Path { .. } => Ok(()),
            Storage::Rclone(rc) => rc.remove_config(r),
        }
    }

    /// Remove what the storage left on the target once unmounted (secrets, scratch files, and
    /// the cache unless `keep_cache`).
    pub fn clean(&self, r: &dyn Remote, keep_cache: bool) -> anyhow::Result<()> {
        match self {
            Storage::Path { .. } => Ok(()),
            Storage::Rclone(rc) => rc.clean(r, keep_cache),
        }
    }

    /// Everything the storage may have put on the target.
    pub fn target_files(&self) -> Vec<TargetFile> {
        match self {
            Storage::Path { .. } => Vec::new(),
            Storage::Rclone(rc) => rc.target_files(),
        }
    }

    /// The rclone storage, for the export phase's `rclone::upload_stream`.
    pub fn as_rclone(&self) -> Option<&rclone::Rclone> {
        match self {
            Storage::Rclone(rc) => Some(rc),
            Storage::Path { .. } => None,
        }
    }

    /// The directory Plex sees the library under.
    pub fn media_root(&self) -> &str {
        match self {
            Storage::Path { path } => path,
            Storage::Rclone(rc) => rc.mount_point(),
        }
    }
}

/// The first regular file under `dir` (depth-first as `find` walks), within `timeout`.
pub(crate) fn first_file(
    r: &dyn Remote,
    dir: &str,
    timeout: Duration,
) -> anyhow::Result<Option<String>> {
    let script = format!(
        "timeout -k 2 {secs} find {d} -type f -print -quit",
        secs = timeout.as_secs().max(1),
        d = quote(dir)
    );
    let out = r
        .run(&Cmd::new(script).timeout(timeout + Duration::from_secs(5)))
        .with_context(|| format!("listing {dir} on {}", r.describe()))?;
    let line = out.stdout_str().lines().next().unwrap_or("").to_string();
    Ok((!line.is_empty()).then_some(line))
}

/// Stat and read the first 4 KiB of each file through the target's filesystem, with a deadline.
/// `Err` carries the reason the files are not trustworthy (a hang, an error text).
pub(crate) fn read_probe(
    r: &dyn Remote,
    files: &[String],
    timeout: Duration,
) -> Result<(), String> {
    if files.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = files.iter().map(|f| quote(f)).collect();
    let script = format!("set -- {}; {}", list.join(" "), read_probe_loop(timeout));
    match r.exec(&Cmd::new(script).timeout(timeout + Duration::from_secs(5))) {
        Ok(out) => read_probe_verdict(
            files,
            timeout,
            out.status,
            &String::from_utf8_lossy(&out.stderr),
        ),
        Err(crate::remote::RemoteError::Timeout { .. }) => {
            read_probe_verdict(files, timeout, 124, "")
        }
        Err(e) => Err(format!("probe could not run: {e}")),
    }
}

/// The shell loop of `read_probe` over the positional parameters (`set -- FILE...`): stat and
/// read each file, each step under `timeout`; it exits with the first failing step's status.
// `timeout` kills a read stuck in the kernel's FUSE wait only if it is interruptible; the
// caller's own deadline (a few seconds later) is the backstop for an uninterruptible hang.
pub(crate) fn read_probe_loop(timeout: Duration) -> String {
    let secs = timeout.as_secs().max(1);
    format!(
        "for f; do timeout -k 2 {secs} stat -c %s -- \"$f\" >/dev/null || exit $?; \
         timeout -k 2 {secs} dd if=\"$f\" of=/dev/null bs=4096 count=1 status=none || exit $?; done"
    )
}

/// What `read_probe_loop`'s exit status and stderr say about `files`: `Err` with the reason they
/// are not trustworthy (124 and 137 are `timeout`'s: a hang).
pub(crate) fn read_probe_verdict(
    files: &[String],
    timeout: Duration,
    status: i32,
    stderr: &str,
) -> Result<(), String> {
    let secs = timeout.as_secs().max(1);
    match status {
        0 => Ok(()),
        124 | 137 => Err(format!(
            "reading {} hung for more than {secs} s",
            files.join(", ")
        )),
        _ => Err(format!(
            "reading {} failed: {}",
            files.join(", "),
            stderr.trim()
        )),
    }
}

/// Read the first 64 KiB of every file with `parallel` readers: one remote command over a
/// NUL-separated list put on the target, so a 100,000-file section is one round trip.
pub(crate) fn warm_files(
    r: &dyn Remote,
    dir: &str,
    files: &[String],
    parallel: u32,
) -> anyhow::Result<WarmReport> {
    if files.is_empty() {
        return Ok(WarmReport::default());
    }
    let list_path = format!(
        "{}/warm-{}.list",
        dir.trim_end_matches('/'),
        uuid::Uuid::new_v4()
    );
    let mut list = Vec::new();
    for f in files {
        list.extend_from_slice(f.as_bytes());
        list.push(0);
    }
    r.put_file(&list_path, &list, 0o600)
        .with_context(|| format!("writing the warm list to {list_path} on {}", r.describe()))?;
    // Each record is NUL-terminated: "o", or "m" + path, or "f" + path + "\t" + error.
    // `head -c` reads through the mount, so a miss in the VFS cache fetches from the bucket.
    let worker = r#"for f; do
  if err=$(head -c 65536 -- "$f" 2>&1 >/dev/null); then printf 'o\0';
  elif [ ! -e "$f" ] && [ ! -L "$f" ]; then printf 'm%s\0' "$f";
  else printf 'f%s\t%s\0' "$f" "$(printf %s "$err" | tr '\n\0' '  ')"; fi
done"#;
    let script = format!(
        "xargs -0 -n 32 -P {p} sh -c {w} sh < {l}; rc=$?; rm -f {l}; exit $rc",
        p = parallel.max(1),
        w = quote(worker),
        l = quote(&list_path)
    );
    // Budget: a generous 50 ms per file per reader on top of a fixed minute.
    let budget = Duration::from_secs(60)
        + Duration::from_millis(50 * files.len() as u64 / u64::from(parallel.max(1)));
    let out = r
        .run(&Cmd::new(script).timeout(budget))
        .with_context(|| format!("warming {} files on {}", files.len(), r.describe()))?;
    Ok(parse_warm(&out.stdout))
}

fn parse_warm(stdout: &[u8]) -> WarmReport {
    let mut rep = WarmReport::default();
    for rec in stdout.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let text = String::from_utf8_lossy(&rec[1..]).into_owned();
        match rec[0] {
            b'o' => rep.ok += 1,
            b'm' => rep.missing.push(text),
            _ => {
                let (path, err) = text.split_once('\t').unwrap_or((text.as_str(), ""));
                rep.failed.push((path.to_string(), err.trim().to_string()));
            }
        }
    }
    rep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_records_split_missing_from_failed() {
        let out = b"o\0m/a b/x.flac\0f/c.flac\tInput/output error\0o\0";
        let rep = parse_warm(out);
        assert_eq!(rep.ok, 2);
        assert_eq!(rep.missing, vec!["/a b/x.flac".to_string()]);
        assert_eq!(
            rep.failed,
            vec![("/c.flac".to_string(), "Input/output error".to_string())]
        );
    }
}
