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
//!
//! This file holds `Rclone` and the paths it keeps on the target; `spec` the resolved spec and the
//! user's rclone.conf, `mount` mounting and prewarming, `health` the guard, remount and unmount,
//! `upload` the export to the bucket, `clean` the config, cache and scratch files and their removal.

mod clean;
mod health;
mod mount;
mod prefetch;
mod spec;
mod upload;

use std::sync::{Mutex, OnceLock};

use anyhow::bail;

pub use mount::{MIN_RCLONE, parse_rclone_version};
pub use prefetch::{PrefetchJob, PrefetchStatus, parse_status, parse_stopped};
pub use spec::{
    CACHE_SIZE_AT_MOUNT, ConfSource, GENERATED_REMOTE, RcloneSpec, SECRET_ENVS, Settings,
    extract_remotes, local_problems,
};
pub use upload::{UploadReport, UploadSpec, upload_stream};

use crate::remote::Cmd;
use spec::{read_user_conf, secret_from_env};

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

    pub(super) fn dir(&self) -> String {
        self.spec.dir.clone()
    }

    /// The rclone config plexburst pushes to the target (0600).
    pub fn conf_path(&self) -> String {
        self.spec.conf_path.clone()
    }

    pub fn log_path(&self) -> String {
        self.spec.log_path.clone()
    }

    pub(super) fn pid_path(&self) -> String {
        format!("{}/mount.pid", self.dir())
    }

    /// Present while the parent's shared bind mount is one plexburst made.
    pub(super) fn parent_bind_marker(&self) -> String {
        format!("{}/parent-bind", self.dir())
    }

    pub(super) fn probes_path(&self) -> String {
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

    pub(super) fn rc_url(&self) -> String {
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

    pub(super) fn secrets(&self) -> Vec<String> {
        self.secret_values
            .get_or_init(|| self.conf_text().map(|(_, s)| s).unwrap_or_default())
            .clone()
    }

    /// A command carrying every secret of the remote for redaction.
    pub(super) fn cmd(&self, script: impl Into<String>) -> Cmd {
        let mut c = Cmd::new(script);
        for s in self.secrets() {
            c = c.secret(s);
        }
        c
    }

    /// `rclone --config <pushed conf>` as a shell prefix.
    pub(super) fn rclone(&self) -> String {
        self.spec.rclone()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::storage::tests::cfg;
    use crate::config::{RcloneConfig, StorageConfig};

    /// The spec the plan resolves from `c`.
    pub(crate) fn spec(c: &RcloneConfig, profile: &str, work_dir: &str) -> RcloneSpec {
        match crate::plan::storage::resolve(&StorageConfig::Rclone(c.clone()), profile, work_dir) {
            crate::storage::StorageSpec::Rclone(s) => s,
            other => panic!("not an rclone plan: {other:?}"),
        }
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
}
