//! What the mount puts on the target besides the mount itself, and taking it away: the pushed
//! config (the one secret file), the VFS cache, the mount's log, probes and warm lists.
//!
//! The config lives only while something needs it: pushed before the mount (and again by a
//! resumed run), removed at teardown, after a failure and by destroy. The cache and the scratch
//! files go at teardown and destroy, unless the user keeps the cache (`--keep-cache`).

use anyhow::{Context, bail};

use super::Rclone;
use crate::remote::{Cmd, Remote, quote};
use crate::storage::{FileKind, TargetFile};

impl Rclone {
    /// Push the rclone config (0600, only the needed remote) into plexburst's rclone directory.
    pub fn push_config(&self, r: &dyn Remote) -> anyhow::Result<()> {
        let (text, secrets) = self.conf_text()?;
        r.run(&Cmd::new(format!(
            "mkdir -p {d} && chmod 700 {d}",
            d = quote(&self.dir())
        )))?;
        r.put_file(&self.conf_path(), text.as_bytes(), 0o600)
            .map_err(|e| anyhow::anyhow!(crate::remote::redact(&e.to_string(), &secrets)))
            .with_context(|| format!("pushing the rclone config to {}", self.conf_path()))
    }

    /// Remove the pushed config. A running mount does not need it (rclone read it at start); the
    /// next command that does (a remount, the export) belongs to a run that pushes it again.
    pub fn remove_config(&self, r: &dyn Remote) -> anyhow::Result<()> {
        r.run(&Cmd::new(format!("rm -f {}", quote(&self.conf_path()))))
            .with_context(|| format!("removing the rclone config {}", self.conf_path()))?;
        Ok(())
    }

    /// The VFS cache of this mount: the whole cache dir when it is plexburst's own (the default,
    /// under its rclone directory); in a cache dir the user chose, only this remote and root's
    /// `vfs/` and `vfsMeta/` trees (rclone keeps other mounts' caches beside them).
    pub fn cache_paths(&self) -> Vec<String> {
        let cache = self.cache_dir();
        if cache == format!("{}/cache", self.dir()) {
            return vec![cache];
        }
        let (remote, root) = self.spec.fs.split_once(':').unwrap_or((&self.spec.fs, ""));
        let root = root.trim_matches('/');
        ["vfs", "vfsMeta"]
            .iter()
            .map(|d| {
                format!("{}/{d}/{remote}/{root}", cache.trim_end_matches('/'))
                    .trim_end_matches('/')
                    .to_string()
            })
            .collect()
    }

    /// Everything this storage may have put on the target, and what each is.
    pub fn target_files(&self) -> Vec<TargetFile> {
        let mut files = vec![TargetFile::new(
            FileKind::Secret,
            "rclone config",
            self.conf_path(),
        )];
        for c in self.cache_paths() {
            files.push(TargetFile::new(FileKind::Cache, "VFS cache", c));
        }
        for (what, path) in [
            ("rclone mount log", self.log_path()),
            ("rclone probes", self.probes_path()),
            ("rclone pid file", self.pid_path()),
            ("shared bind marker", self.parent_bind_marker()),
            ("prefetcher files", self.prefetch_dir()),
        ] {
            files.push(TargetFile::new(FileKind::Scratch, what, path));
        }
        files
    }

    /// Remove what the mount left, once it is unmounted: the config, the cache (unless
    /// `keep_cache`), the log, the probes and any warm list; then plexburst's rclone directory
    /// when nothing else is in it. The marker of a shared bind that could not be
    /// undone stays: it is how a later unmount knows the bind is plexburst's.
    pub fn clean(&self, r: &dyn Remote, keep_cache: bool) -> anyhow::Result<()> {
        if self.mounted_type(r)?.is_some() {
            bail!(
                "{} is still mounted on {}; unmount it first (`plexburst destroy`)",
                self.mount_point(),
                r.describe()
            );
        }
        let mut gone = vec![
            self.conf_path(),
            self.log_path(),
            self.probes_path(),
            self.prefetch_dir(),
        ];
        if !keep_cache {
            gone.extend(self.cache_paths());
        }
        let gone: Vec<String> = gone.iter().map(|p| quote(p)).collect();
        // Empty parents of a cache in the user's cache dir go too, up to that dir (`rmdir -p`
        // would climb past it).
        let mut prune = String::new();
        if !keep_cache && self.cache_paths().len() > 1 {
            let top = self.cache_dir().trim_end_matches('/').to_string();
            for c in self.cache_paths() {
                let mut p = c.as_str();
                while let Some((parent, _)) = p.rsplit_once('/') {
                    if parent.len() <= top.len() {
                        break;
                    }
                    prune.push_str(&format!("rmdir {} 2>/dev/null; ", quote(parent)));
                    p = parent;
                }
            }
        }
        let script = format!(
            "rm -rf {gone} && rm -f {work}/warm-*.list && {{ {prune}rmdir {dir} 2>/dev/null; true; }}",
            gone = gone.join(" "),
            work = quote(self.work_dir()),
            dir = quote(&self.dir()),
        );
        r.run(&Cmd::new(script).timeout(std::time::Duration::from_secs(600)))
            .with_context(|| {
                format!(
                    "removing the rclone files in {} on {}",
                    self.dir(),
                    r.describe()
                )
            })?;
        Ok(())
    }
}
