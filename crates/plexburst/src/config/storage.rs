//! The `[storage]` table: where the media is (a path on the target, or an S3 bucket mounted with
//! rclone), as the user writes it, and every check of its values.
//!
//! The plan resolves it (profile defaults, paths, the mount line); nothing here runs anything.

use serde::{Deserialize, Serialize};

/// `[storage]` in plexburst.toml.
// One value per run: the size difference between the variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StorageConfig {
    /// The library is already at `path` on the target (a local disk, or a mount the user made).
    Path { path: String },
    /// The library is an S3 bucket mounted with rclone.
    Rclone(RcloneConfig),
}

impl StorageConfig {
    /// Every problem with this section, as (field path, "problem; fix"). Empty means valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        match self {
            StorageConfig::Path { path } => {
                let mut errs = Vec::new();
                if !path.starts_with('/') {
                    errs.push((
                        "storage.path".to_string(),
                        format!("{path:?} is not an absolute path; write the full path on the target, e.g. \"/data/media\""),
                    ));
                }
                errs
            }
            StorageConfig::Rclone(c) => c.validate(),
        }
    }

    /// The directory Plex sees the library under (inside and outside the container).
    pub fn media_root(&self) -> &str {
        match self {
            StorageConfig::Path { path } => path,
            StorageConfig::Rclone(c) => &c.mount_point,
        }
    }
}

/// How file modification times are read. It must match what the long-term (home) server uses,
/// or Plex there sees every file as changed and re-analyses the library (ops.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MtimeMode {
    /// `--use-server-modtime`: the object's upload time from the listing; no HEAD per file.
    #[default]
    Server,
    /// The original mtime stored in `X-Amz-Meta-Mtime`: one HEAD per file (prewarmed in parallel).
    Real,
}

/// `[storage]` with `kind = "rclone"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RcloneConfig {
    /// A remote name in the user's rclone.conf. Exclusive with `endpoint`.
    #[serde(default)]
    pub remote: Option<String>,
    /// The user's rclone.conf (default: `$RCLONE_CONFIG`, else `~/.config/rclone/rclone.conf`).
    #[serde(default)]
    pub rclone_conf: Option<String>,
    /// S3 endpoint URL, e.g. `https://s3.fr-par.scw.cloud`. Exclusive with `remote`.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// The environment variable holding the secret key (default: the first set of `SECRET_ENVS`).
    #[serde(default)]
    pub secret_access_key_env: Option<String>,
    /// rclone's S3 provider (`Scaleway`, `AWS`, `Minio`, `Other`, ...).
    #[serde(default = "default_provider")]
    pub provider: String,
    #[serde(default)]
    pub region: Option<String>,
    /// `bucket` or `bucket/prefix`: the library root.
    pub bucket: String,
    /// Where the library appears on the target and inside the container (same path: DB paths stay
    /// valid for the home server).
    pub mount_point: String,
    #[serde(default)]
    pub mtime: MtimeMode,
    /// A file (relative to the mount point) the health guard reads; default: the first file found.
    #[serde(default)]
    pub anchor: Option<String>,
    /// After the listing refresh, stat every file in parallel (real mtime mode only). Default true.
    #[serde(default)]
    pub prewarm_stat: Option<bool>,
    /// Port of rclone's remote control on the target's 127.0.0.1.
    #[serde(default = "default_rc_port")]
    pub rc_port: u16,
    /// VFS cache directory on the target (default: `<work_dir>/rclone/cache`).
    #[serde(default)]
    pub cache_dir: Option<String>,
    /// Overrides of the profile's mount and transfer settings.
    #[serde(default)]
    pub tuning: Tuning,
    /// Appended verbatim to the `rclone mount` command line.
    #[serde(default)]
    pub extra_flags: Vec<String>,
    /// `bucket/prefix` on the same remote where the export archive and its manifest are uploaded
    /// (after the local archive is verified). Unset: the export stays on the target.
    #[serde(default)]
    pub export_path: Option<String>,
}

fn default_provider() -> String {
    "Other".to_string()
}
fn default_rc_port() -> u16 {
    5572
}

/// Every field overrides the profile default of the same name in `Settings`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tuning {
    pub cache_max_size: Option<String>,
    pub cache_disk_percent: Option<u32>,
    pub dir_cache_time: Option<String>,
    pub attr_timeout: Option<String>,
    pub vfs_read_chunk_size: Option<String>,
    pub vfs_read_chunk_streams: Option<u32>,
    pub buffer_size: Option<String>,
    pub vfs_read_ahead: Option<String>,
    pub timeout: Option<String>,
    pub contimeout: Option<String>,
    pub retries: Option<u32>,
    pub low_level_retries: Option<u32>,
    pub stat_parallel: Option<u32>,
    pub warm_parallel: Option<u32>,
    /// 0 turns the prefetcher off.
    pub prefetch_readers: Option<u32>,
    pub prefetch_lead_secs: Option<u32>,
    pub s3_chunk_size: Option<String>,
    pub s3_upload_concurrency: Option<u32>,
    pub upload_bwlimit: Option<String>,
    pub mount_timeout_secs: Option<u64>,
}

impl RcloneConfig {
    /// Every problem, as (field path, "problem; fix").
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut e = Vec::new();
        let mut push = |f: &str, m: String| e.push((format!("storage.{f}"), m));
        match (&self.remote, &self.endpoint) {
            (Some(_), Some(_)) => push(
                "remote",
                "both `remote` and `endpoint` are set; use a remote name from your rclone.conf OR endpoint + access_key_id".into(),
            ),
            (None, None) => push(
                "remote",
                "neither `remote` nor `endpoint` is set; name a remote from your rclone.conf, or give endpoint + access_key_id".into(),
            ),
            (Some(name), None) => {
                // Whether the remote is in the user's rclone.conf is checked on this machine
                // before anything starts (`storage::rclone::local_problems`): a fact about a file,
                // not about this one.
                if name.is_empty() || name.contains(':') || name.contains('[') {
                    push("remote", format!("{name:?} is not a remote name; write the name as in rclone.conf, without the colon"));
                }
            }
            (None, Some(ep)) => {
                if !(ep.starts_with("http://") || ep.starts_with("https://")) {
                    push("endpoint", format!("{ep:?} is not a URL; write e.g. \"https://s3.fr-par.scw.cloud\""));
                }
                if self.access_key_id.as_deref().unwrap_or("").is_empty() {
                    push("access_key_id", "missing; set the S3 access key id (the secret goes in the environment)".into());
                }
            }
        }
        if self.bucket.trim_matches('/').is_empty() {
            push("bucket", "empty; write the bucket (and optional prefix), e.g. \"media\" or \"media/library\"".into());
        } else if self.bucket.contains(':') {
            push(
                "bucket",
                format!(
                    "{:?} contains ':'; write only the bucket path, the remote goes in `remote`",
                    self.bucket
                ),
            );
        }
        let mp = self.mount_point.trim_end_matches('/');
        if !self.mount_point.starts_with('/') {
            push(
                "mount_point",
                format!(
                    "{:?} is not absolute; write the path Plex sees, e.g. \"/mnt/media\"",
                    self.mount_point
                ),
            );
        } else if mp.matches('/').count() < 2 {
            push(
                "mount_point",
                format!(
                    "{:?} sits directly under /; its parent is bound into the container, so use a deeper path such as \"/mnt/media\"",
                    self.mount_point
                ),
            );
        }
        if let Some(a) = &self.anchor
            && (a.starts_with('/') || a.split('/').any(|c| c == ".."))
        {
            push(
                "anchor",
                format!(
                    "{a:?} must be relative to the mount point; write e.g. \"Movies/anchor.txt\""
                ),
            );
        }
        if let Some(x) = &self.export_path
            && (x.trim_matches('/').is_empty() || x.contains(':'))
        {
            push(
                "export_path",
                format!(
                    "{x:?} is not a bucket path; write e.g. \"media-exports/plexburst\" (the remote is the storage's)"
                ),
            );
        }
        if self.rc_port == 0 {
            push("rc_port", "0 is not a port; leave it out for 5572".into());
        }
        if let Some(p) = self.tuning.cache_disk_percent
            && !(1..=95).contains(&p)
        {
            push(
                "tuning.cache_disk_percent",
                format!("{p} is outside 1..=95; use e.g. 70"),
            );
        }
        for (f, m) in self.tuning.problems() {
            push(&format!("tuning.{f}"), m);
        }
        e
    }
}

pub use crate::units::parse_size;

/// Whether `s` is a duration rclone reads: "off", or number+unit groups such as "5m", "1h30m",
/// "8760h", "30s", "2d".
fn is_duration(s: &str) -> bool {
    if s == "off" {
        return true;
    }
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ms", "us", "ns", "s", "m", "h", "d", "w", "M", "y"]
            .into_iter()
            .find(|u| rest.starts_with(u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

/// A tuning check: the field, its value, whether rclone can read it, what to write instead.
type Check<'a> = (
    &'static str,
    &'a Option<String>,
    fn(&str) -> bool,
    &'static str,
);

impl Tuning {
    /// Every unreadable value, as (field, "problem; fix"), so a typo stops `plan` instead of a
    /// mount or an upload on a billed instance.
    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut e = Vec::new();
        let size: fn(&str) -> bool = |v| parse_size(v).is_some();
        let bandwidth: fn(&str) -> bool = |v| v == "off" || parse_size(v).is_some();
        const SIZE: &str = "is not a size; write e.g. \"64M\" or \"2G\"";
        const DURATION: &str = "is not a duration; write e.g. \"30s\", \"5m\" or \"1h\"";
        let checks: [Check; 10] = [
            ("cache_max_size", &self.cache_max_size, size, SIZE),
            ("vfs_read_chunk_size", &self.vfs_read_chunk_size, size, SIZE),
            ("buffer_size", &self.buffer_size, size, SIZE),
            ("vfs_read_ahead", &self.vfs_read_ahead, size, SIZE),
            ("s3_chunk_size", &self.s3_chunk_size, size, SIZE),
            (
                "dir_cache_time",
                &self.dir_cache_time,
                is_duration,
                DURATION,
            ),
            ("attr_timeout", &self.attr_timeout, is_duration, DURATION),
            ("timeout", &self.timeout, is_duration, DURATION),
            ("contimeout", &self.contimeout, is_duration, DURATION),
            (
                "upload_bwlimit",
                &self.upload_bwlimit,
                bandwidth,
                "is not a bandwidth; write bytes per second, e.g. \"80M\", or \"off\"",
            ),
        ];
        for (f, v, ok, fix) in checks {
            if let Some(v) = v
                && !ok(v)
            {
                e.push((f, format!("{v:?} {fix}")));
            }
        }
        // S3 parts are at least 5 MiB, and a stream has at most 10,000 of them.
        if let Some(n) = self.s3_chunk_size.as_deref().and_then(parse_size)
            && n < 5 << 20
        {
            e.push((
                "s3_chunk_size",
                format!(
                    "{:?} is below S3's 5 MiB minimum part; use e.g. \"64M\" (archives up to ~625 GiB)",
                    self.s3_chunk_size.as_deref().unwrap_or("")
                ),
            ));
        }
        let counts = [
            ("stat_parallel", self.stat_parallel),
            ("warm_parallel", self.warm_parallel),
            ("s3_upload_concurrency", self.s3_upload_concurrency),
            ("prefetch_lead_secs", self.prefetch_lead_secs),
        ];
        for (f, v) in counts {
            if v == Some(0) {
                e.push((
                    f,
                    "0 would never run; use 1 or more (or leave it out for the profile's)".into(),
                ));
            }
        }
        e
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An endpoint storage whose secret is not in the environment (shared with storage's tests).
    pub(crate) fn cfg() -> RcloneConfig {
        toml::from_str(
            r#"
endpoint = "http://127.0.0.1:9000"
access_key_id = "AK"
secret_access_key_env = "PLEXBURST_TEST_NO_SUCH_ENV"
bucket = "media/lib"
mount_point = "/mnt/media"
mtime = "real"
extra_flags = ["--vfs-refresh"]
[tuning]
vfs_read_chunk_streams = 3
"#,
        )
        .unwrap()
    }

    #[test]
    fn storage_config_reads_both_kinds_from_toml() {
        let p: StorageConfig = toml::from_str("kind = \"path\"\npath = \"/data/media\"").unwrap();
        assert_eq!(
            p,
            StorageConfig::Path {
                path: "/data/media".into()
            }
        );
        assert!(p.validate().is_empty());
        let rel: StorageConfig = toml::from_str("kind = \"path\"\npath = \"data\"").unwrap();
        assert_eq!(rel.validate()[0].0, "storage.path");
    }

    #[test]
    fn validate_names_the_field_and_the_fix() {
        let mut c = cfg();
        c.mount_point = "media".into();
        c.bucket = "".into();
        let errs = c.validate();
        let fields: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        assert!(fields.contains(&"storage.mount_point"), "{errs:?}");
        assert!(fields.contains(&"storage.bucket"), "{errs:?}");
    }

    #[test]
    fn tuning_values_rclone_cannot_read_are_refused_with_the_field() {
        let mut c = cfg();
        c.tuning = toml::from_str(
            r#"
s3_chunk_size = "4M"
buffer_size = "16 MB"
attr_timeout = "1 hour"
timeout = "5m30s"
upload_bwlimit = "fast"
warm_parallel = 0
vfs_read_ahead = "128Mi"
"#,
        )
        .unwrap();
        let errs = c.validate();
        let fields: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
        for f in [
            "storage.tuning.s3_chunk_size",
            "storage.tuning.buffer_size",
            "storage.tuning.attr_timeout",
            "storage.tuning.upload_bwlimit",
            "storage.tuning.warm_parallel",
        ] {
            assert!(fields.contains(&f), "{f} not reported: {errs:?}");
        }
        assert!(!fields.contains(&"storage.tuning.timeout"), "{errs:?}");
        assert!(
            !fields.contains(&"storage.tuning.vfs_read_ahead"),
            "{errs:?}"
        );
        let chunk = errs
            .iter()
            .find(|(f, _)| f == "storage.tuning.s3_chunk_size")
            .unwrap();
        assert!(chunk.1.contains("5 MiB minimum"), "{chunk:?}");
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("512k"), Some(512 << 10));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("10X"), None);
    }
}
