//! The storage part of the plan: `[storage]` resolved into what the run mounts and binds.
//!
//! Every default is decided here, once: the profile's rclone settings with the user's tuning over
//! them, the cache, config and log paths under the work dir, the remote name, and the full
//! `rclone mount` argv. The storage layer executes that spec and derives nothing from the config.

use crate::config::{MtimeMode, RcloneConfig, StorageConfig, Tuning};
use crate::storage::StorageSpec;
use crate::storage::rclone::{ConfSource, GENERATED_REMOTE, RcloneSpec, SECRET_ENVS, Settings};

/// `[storage]` resolved for this profile and work dir.
pub fn resolve(cfg: &StorageConfig, profile: &str, work_dir: &str) -> StorageSpec {
    match cfg {
        StorageConfig::Path { path } => StorageSpec::Path {
            path: path.trim_end_matches('/').to_string(),
        },
        StorageConfig::Rclone(c) => StorageSpec::Rclone(rclone_spec(c, profile, work_dir)),
    }
}

/// The profile's defaults with every tuning value the user set laid over them.
pub fn settings(profile: &str, t: &Tuning) -> Settings {
    let mut s = Settings::for_profile(profile);
    let text = |v: &Option<String>, into: &mut String| {
        if let Some(v) = v {
            *into = v.clone();
        }
    };
    let num = |v: Option<u32>, into: &mut u32| {
        if let Some(v) = v {
            *into = v;
        }
    };
    if t.cache_max_size.is_some() {
        s.cache_max_size = t.cache_max_size.clone();
    }
    num(t.cache_disk_percent, &mut s.cache_disk_percent);
    text(&t.dir_cache_time, &mut s.dir_cache_time);
    text(&t.attr_timeout, &mut s.attr_timeout);
    text(&t.vfs_read_chunk_size, &mut s.vfs_read_chunk_size);
    num(t.vfs_read_chunk_streams, &mut s.vfs_read_chunk_streams);
    text(&t.buffer_size, &mut s.buffer_size);
    text(&t.vfs_read_ahead, &mut s.vfs_read_ahead);
    text(&t.timeout, &mut s.timeout);
    text(&t.contimeout, &mut s.contimeout);
    num(t.retries, &mut s.retries);
    num(t.low_level_retries, &mut s.low_level_retries);
    num(t.stat_parallel, &mut s.stat_parallel);
    num(t.warm_parallel, &mut s.warm_parallel);
    num(t.prefetch_readers, &mut s.prefetch_readers);
    num(t.prefetch_lead_secs, &mut s.prefetch_lead_secs);
    text(&t.s3_chunk_size, &mut s.s3_chunk_size);
    num(t.s3_upload_concurrency, &mut s.s3_upload_concurrency);
    if t.upload_bwlimit.is_some() {
        s.upload_bwlimit = t.upload_bwlimit.clone();
    }
    if let Some(v) = t.mount_timeout_secs {
        s.mount_timeout_secs = v;
    }
    s
}

fn rclone_spec(c: &RcloneConfig, profile: &str, work_dir: &str) -> RcloneSpec {
    let work_dir = work_dir.trim_end_matches('/').to_string();
    let dir = format!("{work_dir}/rclone");
    let remote = c
        .remote
        .clone()
        .unwrap_or_else(|| GENERATED_REMOTE.to_string());
    let conf = match (&c.remote, &c.endpoint) {
        (Some(_), _) | (None, None) => ConfSource::UserConf {
            path: c.rclone_conf.clone(),
        },
        (None, Some(endpoint)) => ConfSource::Endpoint {
            provider: c.provider.clone(),
            endpoint: endpoint.clone(),
            region: c.region.clone(),
            access_key_id: c.access_key_id.clone().unwrap_or_default(),
            secret_env: match &c.secret_access_key_env {
                Some(n) => vec![n.clone()],
                None => SECRET_ENVS.iter().map(|s| s.to_string()).collect(),
            },
        },
    };
    let mut spec = RcloneSpec {
        fs: format!("{remote}:{}", c.bucket.trim_matches('/')),
        remote,
        conf,
        mount_point: c.mount_point.trim_end_matches('/').to_string(),
        conf_path: format!("{dir}/rclone.conf"),
        cache_dir: c
            .cache_dir
            .clone()
            .unwrap_or_else(|| format!("{dir}/cache")),
        log_path: format!("{dir}/mount.log"),
        dir,
        work_dir,
        server_modtime: c.mtime == MtimeMode::Server,
        anchor: c.anchor.clone(),
        // Real mtimes cost one HEAD per file: stat every file before the scan so Plex does not
        // pay them one by one. Server mtimes come with the listing.
        prewarm_stat: c.mtime == MtimeMode::Real && c.prewarm_stat.unwrap_or(true),
        rc_port: c.rc_port,
        settings: settings(profile, &c.tuning),
        extra_flags: c.extra_flags.clone(),
        export_path: c.export_path.clone(),
        mount_argv: Vec::new(),
    };
    spec.mount_argv = spec.build_mount_argv();
    spec
}
