//! An rclone storage as the plan resolved it (`RcloneSpec`): the profile's settings, every path,
//! the remote and where its config comes from, the full `rclone mount` argv; and the user's
//! rclone.conf on this machine (which remotes to push, what only this machine can check).

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::remote::quote;
use crate::runtime::Volume;

/// Environment variables tried, in order, for the S3 secret when `secret_access_key_env` is unset.
pub const SECRET_ENVS: [&str; 2] = ["PLEXBURST_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"];

/// The remote name plexburst writes when the config gives an endpoint rather than a remote name.
pub const GENERATED_REMOTE: &str = "plexburst";

/// The mount and transfer settings in force: the profile's defaults with the user's `[storage.tuning]` laid over them (by the plan).
///
/// Profile defaults are guesses from ops.md §1e (not yet measured on Scaleway): lite is a 2 vCPU /
/// 2 GB box, so fewer read streams and smaller buffers (memory ≈ buffer × open files); power and
/// superpower run Sonic analysis, which opens many files at once, so they read wider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// An explicit `--vfs-cache-max-size`; `None` sizes it to `cache_disk_percent` of free disk.
    pub cache_max_size: Option<String>,
    pub cache_disk_percent: u32,
    pub dir_cache_time: String,
    pub attr_timeout: String,
    pub vfs_read_chunk_size: String,
    pub vfs_read_chunk_streams: u32,
    pub buffer_size: String,
    pub vfs_read_ahead: String,
    pub timeout: String,
    pub contimeout: String,
    pub retries: u32,
    pub low_level_retries: u32,
    /// Parallel `stat` of the real-mtime prewarm (one HEAD each).
    pub stat_parallel: u32,
    /// Parallel readers of warm-before-analysis.
    pub warm_parallel: u32,
    /// Parallel readers of the prefetcher during analysis (0: no prefetcher).
    #[serde(default)]
    pub prefetch_readers: u32,
    /// Seconds of analysis the prefetcher keeps read ahead.
    #[serde(default)]
    pub prefetch_lead_secs: u32,
    /// Multipart chunk of the export upload: 10,000 parts × 64M allows ~625 GiB streamed.
    pub s3_chunk_size: String,
    pub s3_upload_concurrency: u32,
    /// `--bwlimit` of the export upload (e.g. "80M" bytes/s): for a target whose uplink is
    /// shared, such as a home server over ssh. `None`: as fast as the link goes.
    pub upload_bwlimit: Option<String>,
    pub mount_timeout_secs: u64,
}

impl Settings {
    /// Defaults for a profile name; an unknown name gets `standard` (config.rs validates names).
    pub fn for_profile(profile: &str) -> Settings {
        let (streams, buffer, ahead, stat, warm, upload, prefetch) = match profile {
            "lite" => (4, "8M", "16M", 16, 8, 4, 2),
            "power" => (16, "16M", "64M", 64, 32, 8, 8),
            "superpower" => (16, "32M", "128M", 64, 64, 16, 16),
            _ => (8, "16M", "32M", 32, 16, 8, 4),
        };
        Settings {
            cache_max_size: None,
            cache_disk_percent: 70,
            // Nothing else writes the bucket during a run, so long caches are safe (ops.md §1d).
            dir_cache_time: "8760h".into(),
            attr_timeout: "1h".into(),
            vfs_read_chunk_size: "4M".into(),
            vfs_read_chunk_streams: streams,
            buffer_size: buffer.into(),
            vfs_read_ahead: ahead.into(),
            timeout: "5m".into(),
            contimeout: "30s".into(),
            retries: 5,
            low_level_retries: 20,
            stat_parallel: stat,
            warm_parallel: warm,
            prefetch_readers: prefetch,
            prefetch_lead_secs: 30,
            s3_chunk_size: "64M".into(),
            s3_upload_concurrency: upload,
            upload_bwlimit: None,
            mount_timeout_secs: 120,
        }
    }
}

/// Where the rclone.conf pushed to the target comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum ConfSource {
    /// The named remote (and any it wraps) from the user's rclone.conf on this machine: `path`,
    /// or `$RCLONE_CONFIG`, or `~/.config/rclone/rclone.conf`.
    UserConf { path: Option<String> },
    /// A generated S3 remote; the secret key comes from the first of `secret_env` that is set.
    Endpoint {
        provider: String,
        endpoint: String,
        region: Option<String>,
        access_key_id: String,
        secret_env: Vec<String>,
    },
}

/// The value of `--vfs-cache-max-size` in a planned mount line when the size is decided on the
/// target at mount time (from its free disk): the mount replaces it, nothing else changes.
pub const CACHE_SIZE_AT_MOUNT: &str = "<decided at mount from free disk>";

/// An rclone storage as the plan resolved it: every path, setting and flag the run uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RcloneSpec {
    /// The remote's name in the pushed config.
    pub remote: String,
    pub conf: ConfSource,
    /// `remote:bucket/prefix`, the library root.
    pub fs: String,
    pub mount_point: String,
    pub work_dir: String,
    /// plexburst's rclone directory on the target (config, log, pid, probes).
    pub dir: String,
    pub conf_path: String,
    pub cache_dir: String,
    pub log_path: String,
    /// `--use-server-modtime` (no HEAD per file) rather than the real mtime in metadata.
    pub server_modtime: bool,
    /// A file (relative to the mount point) the health guard reads besides its own probes.
    pub anchor: Option<String>,
    /// Stat every file after the listing refresh (real mtimes: one HEAD each, in parallel).
    pub prewarm_stat: bool,
    pub rc_port: u16,
    pub settings: Settings,
    pub extra_flags: Vec<String>,
    /// `bucket/prefix` for the export, on the same remote.
    pub export_path: Option<String>,
    /// The whole `rclone mount` argv; `--vfs-cache-max-size` may be `CACHE_SIZE_AT_MOUNT`.
    pub mount_argv: Vec<String>,
}

impl RcloneSpec {
    /// The `rclone mount` argv for this spec (the plan stores it in `mount_argv`).
    pub fn build_mount_argv(&self) -> Vec<String> {
        let s = &self.settings;
        let cache = s
            .cache_max_size
            .clone()
            .unwrap_or_else(|| CACHE_SIZE_AT_MOUNT.to_string());
        let mut a: Vec<String> = [
            "rclone",
            "mount",
            &self.fs,
            &self.mount_point,
            "--config",
            &self.conf_path,
            "--read-only",
            "--allow-other",
            "--uid",
            "1000",
            "--gid",
            "1000",
            "--umask",
            "002",
            "--dir-cache-time",
            &s.dir_cache_time,
            "--attr-timeout",
            &s.attr_timeout,
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        if self.server_modtime {
            a.push("--use-server-modtime".into());
        }
        a.extend([
            "--vfs-cache-mode".into(),
            "full".into(),
            "--cache-dir".into(),
            self.cache_dir.clone(),
            "--vfs-cache-max-size".into(),
            cache,
            "--vfs-read-chunk-size".into(),
            s.vfs_read_chunk_size.clone(),
            "--vfs-read-chunk-streams".into(),
            s.vfs_read_chunk_streams.to_string(),
            "--buffer-size".into(),
            s.buffer_size.clone(),
            "--vfs-read-ahead".into(),
            s.vfs_read_ahead.clone(),
            "--vfs-fast-fingerprint".into(),
            "--use-mmap".into(),
            "--timeout".into(),
            s.timeout.clone(),
            "--contimeout".into(),
            s.contimeout.clone(),
            "--retries".into(),
            s.retries.to_string(),
            "--low-level-retries".into(),
            s.low_level_retries.to_string(),
            "--rc".into(),
            "--rc-addr".into(),
            format!("127.0.0.1:{}", self.rc_port),
            "--rc-no-auth".into(),
            "--log-file".into(),
            self.log_path.clone(),
            "--log-level".into(),
            "INFO".into(),
            "--stats".into(),
            "1m".into(),
        ]);
        a.extend(self.extra_flags.iter().cloned());
        a
    }

    /// The mount point's parent: what the container binds with `rslave`.
    pub fn parent(&self) -> String {
        match self.mount_point.rfind('/') {
            Some(0) | None => "/".to_string(),
            Some(i) => self.mount_point[..i].to_string(),
        }
    }

    /// The container binds the mount point's parent (not the mount itself) with `rslave`, so a
    /// remount after a crash of rclone propagates into a running container.
    pub fn container_volumes(&self) -> Vec<Volume> {
        let parent = self.parent();
        vec![Volume {
            host: parent.clone(),
            container: parent,
            options: "ro,rslave".to_string(),
        }]
    }

    /// `remote:path` of an object given as `bucket/path`.
    pub fn object(&self, object: &str) -> String {
        format!("{}:{}", self.remote, object.trim_start_matches('/'))
    }

    /// The transfer flags of every upload: 64M chunks allow a ~625 GiB stream (10,000 parts).
    pub fn upload_flags(&self) -> String {
        let s = &self.settings;
        let mut f = format!(
            "--s3-chunk-size {} --s3-upload-concurrency {} --retries {} --low-level-retries {}",
            s.s3_chunk_size, s.s3_upload_concurrency, s.retries, s.low_level_retries
        );
        if let Some(bw) = &s.upload_bwlimit {
            f.push_str(&format!(" --bwlimit {}", quote(bw)));
        }
        f
    }

    /// `rclone --config <pushed conf>` as a shell prefix.
    pub fn rclone(&self) -> String {
        format!("rclone --config {}", quote(&self.conf_path))
    }

    /// The `rclone rcat` stage of the streamed export, exactly as the run issues it.
    pub fn rcat_line(&self, object: &str) -> String {
        format!(
            "{} rcat {} {}",
            self.rclone(),
            self.upload_flags(),
            quote(&self.object(object))
        )
    }

    /// Where the config comes from, for the plan's rendering (no secret: names only).
    pub fn conf_source_text(&self) -> String {
        match &self.conf {
            ConfSource::UserConf { path } => format!(
                "remote {:?} from {}, pushed to {}",
                self.remote,
                path.as_deref()
                    .unwrap_or("$RCLONE_CONFIG or ~/.config/rclone/rclone.conf"),
                self.conf_path
            ),
            ConfSource::Endpoint {
                endpoint,
                access_key_id,
                secret_env,
                ..
            } => format!(
                "generated for {endpoint} (key id {access_key_id}, secret from ${}), pushed to {}",
                secret_env.join(" or $"),
                self.conf_path
            ),
        }
    }
}

/// Problems with the spec that only this machine can see (the user's rclone.conf, the secret in
/// the environment), as (field, "problem; fix"): checked before anything starts.
pub fn local_problems(spec: &RcloneSpec) -> Vec<(String, String)> {
    let mut e = Vec::new();
    match &spec.conf {
        ConfSource::UserConf { path } => match read_user_conf(path.as_deref()) {
            Err(err) => e.push(("storage.rclone_conf".into(), format!("{err:#}"))),
            Ok(text) => {
                if let Err(err) = extract_remotes(&text, &spec.remote) {
                    e.push(("storage.remote".into(), format!("{err:#}")));
                }
            }
        },
        ConfSource::Endpoint { secret_env, .. } => {
            if secret_from_env(secret_env).is_none() {
                e.push((
                    "storage.secret_access_key_env".into(),
                    format!(
                        "the S3 secret key is not in the environment; export {}",
                        secret_env.join(" or ")
                    ),
                ));
            }
        }
    }
    e
}

pub(super) fn read_user_conf(path: Option<&str>) -> anyhow::Result<String> {
    let path = match path {
        Some(p) => p.to_string(),
        None => match std::env::var("RCLONE_CONFIG") {
            Ok(p) if !p.is_empty() => p,
            _ => {
                let home = std::env::var("HOME").unwrap_or_default();
                format!("{home}/.config/rclone/rclone.conf")
            }
        },
    };
    std::fs::read_to_string(&path).with_context(|| {
        format!("cannot read rclone config {path}; set storage.rclone_conf to your rclone.conf")
    })
}

/// The first of `names` set (non-empty) in this process's environment.
pub(super) fn secret_from_env(names: &[String]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

/// The sections of an rclone.conf needed for `name`: itself and any remote it wraps
/// (`remote = other:path` in crypt, alias, union...). Returns (conf text, secret values).
pub fn extract_remotes(conf: &str, name: &str) -> anyhow::Result<(String, Vec<String>)> {
    if conf
        .trim_start()
        .starts_with("# Encrypted rclone configuration")
    {
        bail!(
            "the rclone config is encrypted; plexburst needs a plain config (or use endpoint + access_key_id)"
        );
    }
    let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in conf.lines() {
        let l = line.trim();
        if l.starts_with('[') && l.ends_with(']') {
            sections.push((l[1..l.len() - 1].to_string(), Vec::new()));
        } else if let Some((k, v)) = l.split_once('=')
            && !l.starts_with('#')
            && !l.starts_with(';')
            && let Some(s) = sections.last_mut()
        {
            s.1.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut wanted = vec![name.to_string()];
    let mut out = String::new();
    let mut secrets = Vec::new();
    let mut i = 0;
    while i < wanted.len() {
        let n = wanted[i].clone();
        let Some((_, kv)) = sections.iter().find(|(s, _)| *s == n) else {
            bail!(
                "remote {n:?} is not in the rclone config; run `rclone config` or fix storage.remote"
            );
        };
        out.push_str(&format!("[{n}]\n"));
        for (k, v) in kv {
            out.push_str(&format!("{k} = {v}\n"));
            let kl = k.to_lowercase();
            if ["secret", "password", "pass", "token", "key", "session"]
                .iter()
                .any(|w| kl.contains(w))
                && kl != "access_key_id"
                && !v.is_empty()
            {
                secrets.push(v.clone());
            }
            if (k == "remote" || k == "upstreams")
                && let Some(inner) = v
                    .split_whitespace()
                    .filter_map(|u| u.split_once(':').map(|(r, _)| r.to_string()))
                    .next()
                && !inner.is_empty()
                && !wanted.contains(&inner)
            {
                wanted.push(inner);
            }
        }
        out.push('\n');
        i += 1;
    }
    Ok((out, secrets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::storage::tests::cfg;
    use crate::config::{MtimeMode, Tuning};
    use crate::storage::rclone::tests::spec;

    #[test]
    fn a_bandwidth_limit_reaches_every_upload() {
        let mut c = cfg();
        assert!(!spec(&c, "power", "/w").upload_flags().contains("--bwlimit"));
        c.tuning.upload_bwlimit = Some("80M".into());
        let rc = spec(&c, "power", "/w");
        assert!(
            rc.upload_flags().ends_with(" --bwlimit 80M"),
            "{}",
            rc.upload_flags()
        );
        assert!(rc.rcat_line("media/x.tar.zst").contains("--bwlimit 80M"));
    }

    #[test]
    fn mount_line_carries_profile_overrides_and_mtime_mode() {
        let rc = spec(&cfg(), "lite", "/var/lib/plexburst");
        let a = rc.mount_argv.join(" ");
        assert!(a.starts_with("rclone mount plexburst:media/lib /mnt/media --config /var/lib/plexburst/rclone/rclone.conf --read-only --allow-other --uid 1000 --gid 1000 --umask 002"), "{a}");
        assert!(
            a.contains("--vfs-read-chunk-streams 3"),
            "override wins: {a}"
        );
        assert!(a.contains("--buffer-size 8M"), "lite default: {a}");
        assert!(!a.contains("--use-server-modtime"), "real mtime mode: {a}");
        assert!(a.contains("--rc-addr 127.0.0.1:5572"), "{a}");
        assert!(a.ends_with("--vfs-refresh"), "{a}");
        assert_eq!(rc.parent(), "/mnt");
        assert_eq!(rc.container_volumes()[0].options, "ro,rslave");
    }

    #[test]
    fn plan_mount_line_is_stable() {
        let mut c = cfg();
        c.mtime = MtimeMode::Server;
        c.extra_flags.clear();
        c.tuning = Tuning::default();
        let rc = spec(&c, "power", "/var/lib/plexburst");
        assert_eq!(
            rc.mount_argv.join(" "),
            "rclone mount plexburst:media/lib /mnt/media --config /var/lib/plexburst/rclone/rclone.conf \
             --read-only --allow-other --uid 1000 --gid 1000 --umask 002 --dir-cache-time 8760h \
             --attr-timeout 1h --use-server-modtime --vfs-cache-mode full \
             --cache-dir /var/lib/plexburst/rclone/cache --vfs-cache-max-size <decided at mount from free disk> \
             --vfs-read-chunk-size 4M --vfs-read-chunk-streams 16 --buffer-size 16M \
             --vfs-read-ahead 64M --vfs-fast-fingerprint --use-mmap --timeout 5m --contimeout 30s \
             --retries 5 --low-level-retries 20 --rc --rc-addr 127.0.0.1:5572 --rc-no-auth \
             --log-file /var/lib/plexburst/rclone/mount.log --log-level INFO --stats 1m"
        );
    }

    #[test]
    fn only_the_named_remote_and_what_it_wraps_are_pushed() {
        let conf = "[other]\ntype = s3\nsecret_access_key = OTHER\n\n[s3]\ntype = s3\naccess_key_id = AK\nsecret_access_key = SEKRIT\n\n[lib]\ntype = crypt\nremote = s3:media\npassword = PW\n";
        let (text, secrets) = extract_remotes(conf, "lib").unwrap();
        assert!(text.contains("[lib]") && text.contains("[s3]"), "{text}");
        assert!(!text.contains("OTHER"), "{text}");
        assert!(secrets.contains(&"SEKRIT".to_string()) && secrets.contains(&"PW".to_string()));
        assert!(!secrets.contains(&"AK".to_string()));
        assert!(extract_remotes(conf, "nope").is_err());
    }
}
