//! Whether the mount can be trusted (`health`), bringing it back (`recover`) and taking it down
//! (`unmount`).

use std::time::Duration;

use anyhow::{Context, bail};

use super::Rclone;
use crate::remote::{Cmd, Remote, quote};
use crate::storage::{HEALTH_TIMEOUT, Health, read_probe_loop, read_probe_verdict};

impl Rclone {
    /// One remote command: the mount table and the rclone process, a timed stat+read of the
    /// probe files through the mount, then a read of the same objects from the bucket (a cached
    /// read through the VFS would hide a bucket that stopped serving them). The first check that
    /// fails is the reason; `Err` only when the probe itself could not run.
    pub fn health(&self, r: &dyn Remote) -> anyhow::Result<Health> {
        let probes = self.probes(r);
        let budget = HEALTH_TIMEOUT * (probes.len() as u32 + 2) + Duration::from_secs(10);
        let out = r.exec(&self.cmd(self.health_script(&probes)).timeout(budget))?;
        let said = out.stdout_str();
        parse_health(self.mount_point(), &probes, &said).with_context(|| {
            format!(
                "the health probe exited with status {} on {}: {}",
                out.status,
                r.describe(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })
    }

    /// Bytes the mount has read from the bucket since it started: `bytes` of rclone's
    /// `core/stats` (every VFS read from the bucket is a transfer rclone accounts). Short
    /// deadlines: it only feeds the report's picture, and must never hold up the monitor's poll.
    pub fn bytes_read(&self, r: &dyn Remote) -> anyhow::Result<u64> {
        let script = format!(
            "rclone rc --url {} --timeout 2s --contimeout 2s core/stats",
            quote(&self.rc_url())
        );
        let out = r.run(&self.cmd(script).timeout(Duration::from_secs(5)))?;
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("rclone's core/stats is not JSON")?;
        v["bytes"]
            .as_u64()
            .context("rclone's core/stats has no byte count")
    }

    /// The script of `health`. It prints one verdict line, the first that applies: `unmounted`,
    /// `fstype TYPE` (not FUSE), `gone PID` (the pid file names a dead process), `noprobes`,
    /// `read STATUS` then the probe's stderr, `bucket` then the bucket reads' stderr, or `ok`.
    ///
    /// The read probe runs in the background under a watchdog so that a read stuck where
    /// `timeout` cannot kill it still yields `read 124` a few seconds after its deadline, the
    /// backstop a separate command's own timeout used to be; it writes only to files, so a stuck
    /// reader holds no pipe of this command open.
    fn health_script(&self, probes: &[String]) -> String {
        let secs = HEALTH_TIMEOUT.as_secs().max(1);
        let mp = self.mount_point();
        let mut bucket = String::new();
        for p in probes {
            let rel = p.strip_prefix(mp).unwrap_or(p).trim_start_matches('/');
            let obj = format!("{}/{rel}", self.fs());
            bucket.push_str(&format!(
                "timeout -k 2 {secs} {} cat --count 1 --retries 1 --low-level-retries 1 {} >/dev/null 2>>\"$d/bucket\" || \
                 {{ echo {} >>\"$d/bucket\"; echo bucket; cat \"$d/bucket\"; exit 0; }}\n",
                self.rclone(),
                quote(&obj),
                quote(&format!("bucket read of {obj} failed")),
            ));
        }
        let probes: Vec<String> = probes.iter().map(|p| quote(p)).collect();
        format!(
            r#"d=$(mktemp -d) || exit 1
trap 'rm -rf "$d"' EXIT
t=$(findmnt -n -o FSTYPE -M {mp} 2>/dev/null | head -n 1)
case "$t" in
'') echo unmounted; exit 0 ;;
fuse*) ;;
*) printf 'fstype %s\n' "$t"; exit 0 ;;
esac
pid=$(cat {pid_file} 2>/dev/null)
case "$pid" in
''|*[!0-9]*) ;;
*) kill -0 "$pid" 2>/dev/null || {{ echo "gone $pid"; exit 0; }} ;;
esac
set -- {probes}
[ $# -gt 0 ] || {{ echo noprobes; exit 0; }}
{{ ( {read} ) >/dev/null 2>"$d/read"; echo $? >"$d/status"; }} >/dev/null 2>&1 &
i=0
until [ -s "$d/status" ]; do
  [ $i -lt {ticks} ] || {{ echo 'read 124'; exit 0; }}
  sleep 0.1; i=$((i + 1))
done
st=$(cat "$d/status")
[ "$st" = 0 ] || {{ echo "read $st"; cat "$d/read"; exit 0; }}
{bucket}echo ok
"#,
            mp = quote(mp),
            pid_file = quote(&self.pid_path()),
            probes = probes.join(" "),
            read = read_probe_loop(HEALTH_TIMEOUT),
            ticks = (secs + 5) * 10,
        )
    }

    pub(super) fn force_unmount(&self, r: &dyn Remote) -> anyhow::Result<()> {
        let mp = quote(self.mount_point());
        let pid = self.pid(r);
        let kill = match pid {
            Some(p) => format!(
                "kill {p} 2>/dev/null; i=0; while kill -0 {p} 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; kill -9 {p} 2>/dev/null; "
            ),
            None => String::new(),
        };
        r.run(&Cmd::new(format!("{kill}fusermount3 -u {mp} 2>/dev/null || fusermount3 -uz {mp} 2>/dev/null || umount -l {mp} 2>/dev/null; true")))?;
        Ok(())
    }

    /// `fusermount3 -uz`, remount, re-probe, and refresh the listing (the scan is cancelled
    /// while this runs, so the refresh is not "during the scan").
    pub fn recover(&self, r: &dyn Remote) -> anyhow::Result<()> {
        tracing::warn!("remounting {} at {}", self.fs(), self.mount_point());
        self.force_unmount(r)?;
        self.mount(r)?;
        self.refresh(r)?;
        match self.health(r)? {
            Health::Healthy => Ok(()),
            Health::Degraded(why) => bail!(
                "{} is still degraded after a remount: {why}",
                self.mount_point()
            ),
        }
    }

    pub fn unmount(&self, r: &dyn Remote) -> anyhow::Result<()> {
        // A prefetcher reading through the mount would keep it busy (and outlive it).
        if let Err(e) = self.prefetch_stop(r) {
            tracing::warn!("cannot stop the prefetcher: {e:#}");
        }
        if self.mounted_type(r)?.is_some() || self.pid(r).is_some() {
            self.force_unmount(r)?;
        }
        // Undo the shared bind of the parent if plexburst made it. A plain (not lazy) umount
        // fails while anything else is mounted below it, and then the bind stays.
        let p = quote(&self.parent());
        let m = quote(&self.parent_bind_marker());
        r.run(&Cmd::new(format!(
            "rm -f {pid}; if [ -e {m} ] && [ \"$(findmnt -n -o TARGET -M {p})\" = {p} ]; then umount {p} 2>/dev/null && rm -f {m}; fi; true",
            pid = quote(&self.pid_path())
        )))?;
        Ok(())
    }
}

/// The verdict `Rclone::health_script` printed, as the reason the mount is degraded (the same
/// words as the separate probes it replaces). `Err` when it printed none.
fn parse_health(mp: &str, probes: &[String], said: &str) -> anyhow::Result<Health> {
    let (verdict, detail) = said.split_once('\n').unwrap_or((said, ""));
    let (word, arg) = verdict
        .trim()
        .split_once(' ')
        .unwrap_or((verdict.trim(), ""));
    let why = match word {
        "ok" => return Ok(Health::Healthy),
        "unmounted" => format!("nothing is mounted at {mp}"),
        "fstype" => format!("{mp} is a {} mount, not rclone", arg.trim()),
        "gone" => {
            format!("the rclone mount process (pid {arg}) is gone; {mp} is a dead FUSE endpoint")
        }
        "noprobes" => format!("no probe file known for {mp}; remount"),
        "read" => {
            let status = arg.trim().parse().unwrap_or(-1);
            match read_probe_verdict(probes, HEALTH_TIMEOUT, status, detail) {
                Err(why) => why,
                Ok(()) => bail!("the health probe printed {verdict:?}"),
            }
        }
        "bucket" => {
            let reason = detail
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("bucket read failed");
            let error = detail
                .lines()
                .find(|l| l.contains("ERROR"))
                .unwrap_or("")
                .trim();
            format!("{mp} lists files the bucket no longer serves: {reason} {error}")
                .trim()
                .to_string()
        }
        _ => bail!("the health probe printed no verdict: {said:?}"),
    };
    Ok(Health::Degraded(why))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::storage::tests::cfg;
    use crate::remote::local::Local;
    use crate::storage::rclone::tests::spec;

    fn rclone_at(mount_point: &str) -> Rclone {
        let mut c = cfg();
        c.mount_point = mount_point.into();
        Rclone::new(&spec(&c, "standard", "/nonexistent/plexburst-work"))
    }

    #[test]
    fn the_health_script_reports_what_is_not_a_fuse_mount() {
        let dir = tempfile::tempdir().unwrap();
        let mp = dir.path().to_str().unwrap();
        assert_eq!(
            rclone_at(mp).health(&Local::new()).unwrap(),
            Health::Degraded(format!("nothing is mounted at {mp}"))
        );
        assert_eq!(
            rclone_at("/proc").health(&Local::new()).unwrap(),
            Health::Degraded("/proc is a proc mount, not rclone".into())
        );
    }

    #[test]
    fn every_health_verdict_reads_as_the_reason_it_names() {
        let probes = vec!["/m/a.flac".to_string(), "/m/b.mkv".to_string()];
        let why = |said: &str| match parse_health("/m", &probes, said).unwrap() {
            Health::Degraded(why) => why,
            Health::Healthy => "healthy".into(),
        };
        assert_eq!(why("ok\n"), "healthy");
        assert_eq!(
            why("gone 4242\n"),
            "the rclone mount process (pid 4242) is gone; /m is a dead FUSE endpoint"
        );
        assert_eq!(why("noprobes\n"), "no probe file known for /m; remount");
        assert_eq!(
            why("read 124\n"),
            "reading /m/a.flac, /m/b.mkv hung for more than 20 s"
        );
        assert_eq!(
            why("read 1\nstat: cannot statx '/m/a.flac': Transport endpoint is not connected\n"),
            "reading /m/a.flac, /m/b.mkv failed: stat: cannot statx '/m/a.flac': Transport endpoint is not connected"
        );
        assert_eq!(
            why(
                "bucket\n2024/01/01 ERROR : Music/x.flac: object not found\nbucket read of s3:m/x.flac failed\n"
            ),
            "/m lists files the bucket no longer serves: bucket read of s3:m/x.flac failed 2024/01/01 ERROR : Music/x.flac: object not found"
        );
        assert!(parse_health("/m", &probes, "").is_err());
        assert!(parse_health("/m", &probes, "Segmentation fault\n").is_err());
    }
}
