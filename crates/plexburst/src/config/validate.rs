//! Validation: the raw tables as written turned into the checked `Config`, one function per
//! table, every problem collected (with its field path and a fix) before any is reported.
//!
//! Problems are reported in table order: `[target]`, `[storage]`, `[plex]`, `target.work_dir`
//! (its default comes from `plex.data_dir`), `[timeouts]`, `[monitor]`, `[export]`,
//! `[[sections]]`, then the checks that span tables.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::{
    Config, ConfigError, ExportConfig, MonitorConfig, PlexConfig, RawConfig, RawExport, RawMonitor,
    RawPlex, RawSection, RawTarget, RawTimeouts, RuntimeConfig, ScalewayConfig, SectionConfig,
    SectionType, StorageConfig, Target, TargetKind, Timeouts, format_duration, parse_duration,
};

fn is_abs(p: &str) -> bool {
    p.starts_with('/')
}

/// Collects problems while the raw config is turned into the checked one.
struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, field: &str, msg: impl AsRef<str>) {
        self.0.push(format!("{field} {}", msg.as_ref()));
    }
    fn duration(&mut self, field: &str, v: &Option<String>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(s) => match parse_duration(s) {
                Ok(d) if d.is_zero() => {
                    self.push(
                        field,
                        format!("{s:?} is zero; give a positive duration like \"90s\" or \"1h\""),
                    );
                    default
                }
                Ok(d) if d > LONGEST => {
                    self.push(
                        field,
                        format!(
                            "{s:?} is more than a year, longer than any run; give a realistic duration like \"2h\" or \"3d\""
                        ),
                    );
                    default
                }
                Ok(d) => d,
                Err(e) => {
                    self.push(
                        field,
                        format!("{e}; write it like \"500ms\", \"90s\", \"10m\" or \"1h30m\""),
                    );
                    default
                }
            },
        }
    }
}

/// No duration in a config is longer than this: a longer one is a typo (a unit or digits too many).
const LONGEST: Duration = Duration::from_secs(366 * 86400);

/// The checked config, or every problem of every table.
pub(super) fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let mut p = Problems(Vec::new());
    let (kind, profile) = check_target(&raw.target, &mut p);
    let storage = required(
        raw.storage,
        "storage",
        "is missing; add [storage] with kind = \"path\" and path = \"/where/the/media/is\"",
        &mut p,
    )
    .map(|s| check_storage(s, &mut p));
    let plex = required(
        raw.plex,
        "plex",
        "is missing; add [plex] with runtime and data_dir (see `plexburst init`)",
        &mut p,
    )
    .map(|px| check_plex(px, &mut p));
    let work_dir = check_work_dir(raw.target.work_dir, plex.as_ref(), &mut p);
    let timeouts = check_timeouts(&raw.timeouts, &mut p);
    let monitor = check_monitor(&raw.monitor, &mut p);
    let export = check_export(raw.export, storage.as_ref(), &mut p);
    let sections = check_sections(raw.sections, storage.as_ref(), &timeouts, &mut p);
    let remap = check_remap(raw.remap, &mut p);
    let seed = check_seed(&raw.seed, &mut p);
    if let Some(px) = &plex {
        check_export_outside_data(&export.destination, px, &mut p);
    }
    // A rented instance's disk dies with it: the archive must leave for the bucket.
    if matches!(kind, TargetKind::Scaleway(_))
        && !matches!(&storage, Some(StorageConfig::Rclone(rc)) if rc.export_path.is_some())
    {
        p.push(
            "storage.export_path",
            "is needed with target.kind = \"scaleway\": the instance and its disk are deleted after the run, so the archive must go to the bucket; use storage.kind = \"rclone\" and set export_path",
        );
    }
    if !p.0.is_empty() {
        return Err(ConfigError { problems: p.0 });
    }
    Ok(Config {
        target: Target {
            kind,
            work_dir,
            profile,
        },
        storage: storage.expect("checked above"),
        plex: plex.expect("checked above"),
        timeouts,
        monitor,
        export,
        sections,
        remap,
        seed,
    })
}

/// `[remap]`: absolute prefixes, no trailing slash, each old prefix once; longest first, so a
/// nested old prefix is rewritten by its own rule and not by its parent's.
fn check_remap(raw: BTreeMap<String, String>, p: &mut Problems) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (old, new) in raw {
        let field = format!("remap.{old:?}");
        let norm = |s: &str| {
            if s.len() > 1 {
                s.trim_end_matches('/').to_string()
            } else {
                s.to_string()
            }
        };
        let (o, n) = (norm(&old), norm(&new));
        if !o.starts_with('/') || !n.starts_with('/') {
            p.push(
                &field,
                format!("maps {old:?} to {new:?}; both must be absolute paths as Plex sees them, e.g. \"/mnt/nas/music\" = \"/srv/media/Music\""),
            );
        } else if o == "/" {
            p.push(&field, "cannot remap \"/\"; name the folder that moved");
        } else if o == n {
            p.push(&field, "maps a prefix to itself; remove the line");
        } else if out.iter().any(|(x, _): &(String, String)| *x == o) {
            p.push(
                &field,
                "is given twice (with and without a trailing slash); keep one",
            );
        } else {
            out.push((o, n));
        }
    }
    out.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
    out
}

fn check_seed(raw: &super::RawSeed, p: &mut Problems) -> super::SeedConfig {
    let sample = match raw.sample {
        None => 1000,
        Some(n) if (1..=1_000_000).contains(&n) => n as u32,
        Some(n) => {
            p.push(
                "seed.sample",
                format!("is {n}; use 1 to 1000000 paths (default 1000)"),
            );
            1000
        }
    };
    let missing_limit = match raw.missing_limit {
        None => 0.1,
        Some(g) if (0.0..=1.0).contains(&g) => g,
        Some(g) => {
            p.push(
                "seed.missing_limit",
                format!("is {g}; give the share of sampled paths that may be missing, from 0 to 1, e.g. 0.1"),
            );
            0.1
        }
    };
    super::SeedConfig {
        sample,
        missing_limit,
    }
}

/// A table the config must have: `None` (and the problem `msg`) when it is absent.
fn required<T>(table: Option<T>, field: &str, msg: &str, p: &mut Problems) -> Option<T> {
    if table.is_none() {
        p.push(field, msg);
    }
    table
}

/// The `[target]` keys of an existing SSH host, with whether each is set.
fn ssh_fields(t: &RawTarget) -> [(&'static str, bool); 5] {
    [
        ("target.host", t.host.is_some()),
        ("target.port", t.port.is_some()),
        ("target.user", t.user.is_some()),
        ("target.identity", t.identity.is_some()),
        ("target.ssh_options", !t.ssh_options.is_empty()),
    ]
}

/// The `[target]` keys of a rented instance, with whether each is set.
fn scaleway_fields(t: &RawTarget) -> [(&'static str, bool); 13] {
    [
        ("target.zone", t.zone.is_some()),
        ("target.zones", !t.zones.is_empty()),
        ("target.type", t.commercial_type.is_some()),
        ("target.fallback_types", !t.fallback_types.is_empty()),
        ("target.image", t.image.is_some()),
        ("target.root_volume_gb", t.root_volume_gb.is_some()),
        ("target.root_volume_type", t.root_volume_type.is_some()),
        ("target.ssh_port", t.ssh_port.is_some()),
        ("target.max_lifetime", t.max_lifetime.is_some()),
        ("target.boot_timeout", t.boot_timeout.is_some()),
        ("target.budget_eur", t.budget_eur.is_some()),
        ("target.max_runtime", t.max_runtime.is_some()),
        ("target.allow_weak_deadline", t.allow_weak_deadline),
    ]
}

/// A problem for each key set that this kind of target does not use (a key silently ignored
/// would be a setting the user thinks is in force).
fn reject(p: &mut Problems, fields: &[(&str, bool)], msg: &str) {
    for (field, set) in fields {
        if *set {
            p.push(field, msg);
        }
    }
}

/// `[target]` but `work_dir`, whose default needs `[plex]`: the connection and the profile.
fn check_target(t: &RawTarget, p: &mut Problems) -> (TargetKind, String) {
    let kind = match t.kind.as_str() {
        "local" => {
            reject(
                p,
                &ssh_fields(t),
                "is only used with target.kind = \"ssh\"; remove it or set kind = \"ssh\"",
            );
            reject(
                p,
                &scaleway_fields(t),
                "is only used with target.kind = \"scaleway\"; remove it or set kind = \"scaleway\"",
            );
            TargetKind::Local
        }
        "ssh" => {
            reject(
                p,
                &scaleway_fields(t),
                "is only used with target.kind = \"scaleway\"; remove it or set kind = \"scaleway\"",
            );
            let host = t.host.clone().unwrap_or_default();
            if host.trim().is_empty() {
                p.push(
                    "target.host",
                    "is missing; set the SSH host name or address, e.g. host = \"10.0.0.5\"",
                );
            }
            let port = t.port.unwrap_or(22);
            if port == 0 {
                p.push("target.port", "is 0; use the SSH port (22 by default)");
            }
            let user = t.user.clone().unwrap_or_else(|| "root".into());
            if user.trim().is_empty() {
                p.push(
                    "target.user",
                    "is empty; set the SSH user, e.g. user = \"root\"",
                );
            }
            if let Some(id) = &t.identity
                && !(is_abs(id) || id.starts_with("~/"))
            {
                p.push(
                    "target.identity",
                    format!(
                        "{id:?} is not an absolute path; write the full path to the private key"
                    ),
                );
            }
            for (i, o) in t.ssh_options.iter().enumerate() {
                if !o.contains('=') {
                    p.push(
                        &format!("target.ssh_options[{i}]"),
                        format!(
                            "{o:?} is not KEY=VALUE; write it like \"StrictHostKeyChecking=no\""
                        ),
                    );
                }
            }
            TargetKind::Ssh {
                host,
                port,
                user,
                identity: t.identity.clone(),
                ssh_options: t.ssh_options.clone(),
            }
        }
        "scaleway" => TargetKind::Scaleway(check_scaleway(t, p)),
        other => {
            p.push(
                "target.kind",
                format!("{other:?} is not one of local, ssh, scaleway; use one of those"),
            );
            TargetKind::Local
        }
    };
    let profile = t.profile.clone().unwrap_or_else(|| "standard".into());
    if !["lite", "standard", "power", "superpower"].contains(&profile.as_str()) {
        p.push(
            "target.profile",
            format!(
                "{profile:?} is not one of lite, standard, power, superpower; use one of those"
            ),
        );
    }

    (kind, profile)
}

/// `[target]` with `kind = "scaleway"`: the machine to rent. Names are checked for shape here;
/// whether the zone, type and image exist is asked of the API by `plan`.
fn check_scaleway(t: &RawTarget, p: &mut Problems) -> ScalewayConfig {
    reject(
        p,
        &ssh_fields(t),
        "is not used with target.kind = \"scaleway\" (plexburst makes a key for each run and connects as root); remove it",
    );
    let mut zones = t.zones.clone();
    if let Some(z) = &t.zone {
        if !zones.is_empty() {
            p.push("target.zone", "and target.zones are both set; keep one (zones = [\"fr-par-1\", \"nl-ams-1\"] tries them in order)");
        }
        zones.insert(0, z.clone());
    }
    for (i, z) in zones.iter().enumerate() {
        let ok = z.len() >= 6
            && z.rsplit_once('-')
                .is_some_and(|(r, n)| r.contains('-') && n.chars().all(|c| c.is_ascii_digit()));
        if !ok {
            p.push(
                &format!("target.zones[{i}]"),
                format!("{z:?} is not a zone name; write it like \"fr-par-1\", \"nl-ams-1\" or \"pl-waw-1\""),
            );
        }
    }
    let type_ok =
        |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if let Some(ct) = &t.commercial_type
        && !type_ok(ct)
    {
        p.push(
            "target.type",
            format!("{ct:?} is not a commercial type; write it like \"GP1-S\""),
        );
    }
    for (i, ct) in t.fallback_types.iter().enumerate() {
        if !type_ok(ct) {
            p.push(
                &format!("target.fallback_types[{i}]"),
                format!("{ct:?} is not a commercial type; write it like \"GP1-M\""),
            );
        }
    }
    let root_volume_type = t.root_volume_type.clone().unwrap_or_else(|| "l_ssd".into());
    if !["l_ssd", "sbs_volume"].contains(&root_volume_type.as_str()) {
        p.push(
            "target.root_volume_type",
            format!("{root_volume_type:?} is not l_ssd or sbs_volume; use one of those"),
        );
    }
    if t.root_volume_gb == Some(0) {
        p.push("target.root_volume_gb", "is 0; give the root disk's size in GB (it holds the VFS cache), or remove it for the profile's size");
    }
    let max_lifetime = p.duration(
        "target.max_lifetime",
        &t.max_lifetime,
        Duration::from_secs(96 * 3600),
    );
    if max_lifetime < Duration::from_secs(60) {
        p.push("target.max_lifetime", "is under a minute; the instance deletes itself at this deadline, so give the job room (default 96h)");
    }
    if let Some(b) = t.budget_eur
        && !(b.is_finite() && b > 0.0)
    {
        p.push(
            "target.budget_eur",
            format!("is {b}; give the most the instance may cost in EUR, e.g. 5.0, or remove it"),
        );
    }
    let max_runtime = t
        .max_runtime
        .as_ref()
        .map(|_| p.duration("target.max_runtime", &t.max_runtime, Duration::ZERO));
    if let Some(r) = max_runtime
        && r >= max_lifetime
    {
        p.push("target.max_runtime", "is not shorter than target.max_lifetime (the instance's own deadline); make it shorter, so the export still has time");
    }
    ScalewayConfig {
        allow_weak_deadline: t.allow_weak_deadline,
        budget_eur: t.budget_eur,
        max_runtime,
        zones,
        commercial_type: t.commercial_type.clone().map(|c| c.to_ascii_uppercase()),
        fallback_types: t
            .fallback_types
            .iter()
            .map(|c| c.to_ascii_uppercase())
            .collect(),
        image: t.image.clone().unwrap_or_else(|| "debian_bookworm".into()),
        root_volume_gb: t.root_volume_gb,
        root_volume_type,
        ssh_port: t.ssh_port.unwrap_or(22),
        max_lifetime,
        boot_timeout: p.duration(
            "target.boot_timeout",
            &t.boot_timeout,
            Duration::from_secs(900),
        ),
    }
}

/// `target.work_dir`, by default `<plex.data_dir>/.plexburst`.
fn check_work_dir(work_dir: Option<String>, plex: Option<&PlexConfig>, p: &mut Problems) -> String {
    match work_dir {
        Some(w) => {
            if !is_abs(&w) {
                p.push(
                    "target.work_dir",
                    format!("{w:?} is not an absolute path; write the full path on the target"),
                );
            }
            w
        }
        None => plex
            .map(|px| format!("{}/.plexburst", px.data_dir.trim_end_matches('/')))
            .unwrap_or_default(),
    }
}

/// `[storage]`: its kind checks itself.
fn check_storage(s: StorageConfig, p: &mut Problems) -> StorageConfig {
    for (field, msg) in s.validate() {
        p.push(&field, msg);
    }
    s
}

/// `[timeouts]`.
fn check_timeouts(t: &RawTimeouts, p: &mut Problems) -> Timeouts {
    Timeouts {
        scan: p.duration("timeouts.scan", &t.scan, Duration::from_secs(3600)),
        analysis: p.duration("timeouts.analysis", &t.analysis, Duration::from_secs(3600)),
        photo: p.duration("timeouts.photo", &t.photo, Duration::from_secs(4 * 3600)),
    }
}

/// `[monitor]`.
fn check_monitor(m: &RawMonitor, p: &mut Problems) -> MonitorConfig {
    let poll_interval = p.duration(
        "monitor.poll_interval",
        &m.poll_interval,
        Duration::from_secs(10),
    );
    let stall_window = p.duration(
        "monitor.stall_window",
        &m.stall_window,
        Duration::from_secs(600),
    );
    let log_interval = p.duration(
        "monitor.log_interval",
        &m.log_interval,
        poll_interval.max(Duration::from_secs(10)),
    );
    if stall_window <= poll_interval {
        p.push(
            "monitor.stall_window",
            format!(
                "({}) is not longer than monitor.poll_interval ({}); make it several poll intervals long",
                format_duration(stall_window),
                format_duration(poll_interval)
            ),
        );
    }
    let mut count = |field: &str, v: Option<i64>, default: u32| -> u32 {
        match v {
            None => default,
            Some(n) if (1..=1000).contains(&n) => n as u32,
            Some(n) => {
                p.push(field, format!("is {n}; use a number from 1 to 1000"));
                default
            }
        }
    };
    let stable_samples = count("monitor.stable_samples", m.stable_samples, 3);
    let max_failed_samples = count("monitor.max_failed_samples", m.max_failed_samples, 5);
    let scan_gap = match m.scan_gap {
        None => 0.1,
        Some(g) if (0.0..1.0).contains(&g) => g,
        Some(g) => {
            p.push(
                "monitor.scan_gap",
                format!("is {g}; give the share of a section's media files that may end up without an item, from 0 (none) to below 1, e.g. 0.1"),
            );
            0.1
        }
    };
    MonitorConfig {
        poll_interval,
        stall_window,
        stable_samples,
        max_failed_samples,
        log_interval,
        scan_gap,
    }
}

/// `[export]`; that the destination lies outside the data folder is checked once `[plex]` and
/// `[[sections]]` are (`check_export_outside_data`).
fn check_export(
    export: Option<RawExport>,
    storage: Option<&StorageConfig>,
    p: &mut Problems,
) -> ExportConfig {
    let allow_deleted = export
        .as_ref()
        .and_then(|e| e.allow_deleted)
        .unwrap_or(false);
    let staged = export.as_ref().and_then(|e| e.staged).unwrap_or(false);
    let uploads = matches!(storage, Some(StorageConfig::Rclone(rc)) if rc.export_path.is_some());
    if staged && !uploads {
        p.push(
            "export.staged",
            "only applies when the archive is uploaded (storage.kind = \"rclone\" with storage.export_path); remove it or set export_path",
        );
    }
    let destination = match export.and_then(|e| e.destination) {
        Some(d) if is_abs(&d) => d,
        Some(d) => {
            p.push(
                "export.destination",
                format!(
                    "{d:?} is not an absolute path; write the full directory path on the target"
                ),
            );
            d
        }
        None => {
            p.push(
                "export.destination",
                "is missing; add [export] destination = \"/path/for/archives\"",
            );
            String::new()
        }
    };
    ExportConfig {
        destination,
        allow_deleted,
        staged,
    }
}

/// The archive must not land inside the tree it archives.
fn check_export_outside_data(destination: &str, px: &PlexConfig, p: &mut Problems) {
    let lib = format!("{}/Library", px.data_dir);
    if destination == lib || destination.starts_with(&format!("{lib}/")) {
        p.push(
            "export.destination",
            format!(
                "{destination:?} is inside the Plex data folder it archives; put it outside {lib:?}"
            ),
        );
    }
}

/// `[[sections]]`: at least one, names unique, each checked by `check_section`.
fn check_sections(
    raw: Vec<RawSection>,
    storage: Option<&StorageConfig>,
    timeouts: &Timeouts,
    p: &mut Problems,
) -> Vec<SectionConfig> {
    if raw.is_empty() {
        p.push(
            "sections",
            "is empty; add at least one [[sections]] with name, type and paths",
        );
    }
    let media_root = storage.map(|s| s.media_root().trim_end_matches('/').to_string());
    let mut seen = HashSet::new();
    raw.into_iter()
        .enumerate()
        .filter_map(|(i, s)| check_section(i, s, media_root.as_deref(), timeouts, &mut seen, p))
        .collect()
}

/// `sections[i]`; `None` when its type is unusable. `seen` holds the names taken so far.
fn check_section(
    i: usize,
    s: RawSection,
    media_root: Option<&str>,
    timeouts: &Timeouts,
    seen: &mut HashSet<String>,
    p: &mut Problems,
) -> Option<SectionConfig> {
    let f = |k: &str| format!("sections[{i}].{k}");
    let name = s.name.clone().unwrap_or_default();
    if name.trim().is_empty() {
        p.push(
            &f("name"),
            "is missing; give the section the name Plex should show, e.g. name = \"Music\"",
        );
    } else if !seen.insert(name.clone()) {
        p.push(
            &f("name"),
            format!("{name:?} is used by another section; section names must be unique"),
        );
    }
    let kind = match s.kind.as_deref() {
        None => {
            p.push(
                &f("type"),
                format!("is missing; use one of {}", SectionType::NAMES),
            );
            None
        }
        Some(k) => match SectionType::parse(k) {
            Some(k) => Some(k),
            None => {
                p.push(
                    &f("type"),
                    format!(
                        "{k:?} is not one of {}; use one of those",
                        SectionType::NAMES
                    ),
                );
                None
            }
        },
    };
    if s.paths.is_empty() {
        p.push(
            &f("paths"),
            "is empty; list the folders of this section, e.g. paths = [\"/data/Music\"]",
        );
    }
    for (j, path) in s.paths.iter().enumerate() {
        let field = format!("sections[{i}].paths[{j}]");
        if !is_abs(path) {
            p.push(
                &field,
                format!("{path:?} is not an absolute path; write the full path Plex will see"),
            );
        } else if let Some(root) = &media_root
            && !root.is_empty()
            && !(path == root || path.starts_with(&format!("{root}/")))
        {
            p.push(
                &field,
                format!("{path:?} is not under the storage root {root:?}; put the section under it or change [storage]"),
            );
        }
    }
    for (k, v) in [
        ("agent", &s.agent),
        ("scanner", &s.scanner),
        ("language", &s.language),
    ] {
        if let Some(v) = v
            && v.trim().is_empty()
        {
            p.push(
                &f(k),
                "is empty; remove it to use the default for the section type",
            );
        }
    }
    let kind = kind?;
    let default_timeout = if kind == SectionType::Photo {
        timeouts.photo
    } else {
        timeouts.analysis
    };
    let timeout = p.duration(&f("timeout"), &s.timeout, default_timeout);
    let extensions = match s.extensions {
        None => kind.extensions().iter().map(|e| e.to_string()).collect(),
        Some(list) => {
            let bad: Vec<&String> = list
                .iter()
                .filter(|e| {
                    e.is_empty() || e.contains(['.', '/', ' ']) || e.chars().any(|c| c.is_control())
                })
                .collect();
            if list.is_empty() || !bad.is_empty() {
                p.push(
                    &f("extensions"),
                    format!("has {bad:?}; list extensions without the dot, e.g. [\"flac\", \"mp3\"], or remove it to use the defaults for the type"),
                );
            }
            list.iter().map(|e| e.to_ascii_lowercase()).collect()
        }
    };
    Some(SectionConfig {
        name,
        kind,
        paths: s.paths,
        agent: s.agent.unwrap_or_else(|| kind.default_agent().into()),
        scanner: s.scanner.unwrap_or_else(|| kind.default_scanner().into()),
        language: s.language.unwrap_or_else(|| "en-US".into()),
        timeout,
        extensions,
    })
}

/// `[plex]`: the runtime, the data folder, the port and the environment.
/// The most analysis workers `plex.analysis_threads` accepts: more than any rentable machine's
/// vCPUs, so a larger number is a typo.
const MAX_ANALYSIS_THREADS: i64 = 1024;

/// The most CPU seconds per track `plex.sonic_cpu_seconds_per_track` accepts: an hour of CPU for
/// one track is a typo (minutes per hour, milliseconds), not a measurement.
const MAX_CPU_SECONDS_PER_TRACK: f64 = 3600.0;

fn check_plex(px: RawPlex, p: &mut Problems) -> PlexConfig {
    let data_dir = match &px.data_dir {
        Some(d) if is_abs(d) => d.trim_end_matches('/').to_string(),
        Some(d) => {
            p.push(
                "plex.data_dir",
                format!("{d:?} is not an absolute path; write the full path on the target"),
            );
            d.clone()
        }
        None => {
            p.push(
                "plex.data_dir",
                "is missing; set where Plex keeps its data (the container's /config)",
            );
            String::new()
        }
    };
    let port = px.port.unwrap_or(32400);
    if port == 0 {
        p.push(
            "plex.port",
            "is 0; use the port Plex listens on, 32400 by default",
        );
    }
    for key in px.env.keys() {
        if key == "PLEX_CLAIM" {
            p.push(
                "plex.env.PLEX_CLAIM",
                "must not be in the config file (it is a secret); export PLEX_CLAIM in the environment instead",
            );
        } else if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            p.push(
                &format!("plex.env.{key}"),
                "is not a valid variable name; use letters, digits and _",
            );
        }
    }
    let runtime = match px.runtime.as_str() {
        "docker" => {
            if px.command.is_some() {
                p.push(
                    "plex.command",
                    "is only used with runtime = \"command\"; remove it or change plex.runtime",
                );
            }
            if px.sqlite.is_some() {
                p.push(
                    "plex.sqlite",
                    "is only used with runtime = \"command\" (docker runs the image's own `Plex SQLite`); remove it",
                );
            }
            let image = px
                .image
                .clone()
                .unwrap_or_else(|| "plexinc/pms-docker:latest".into());
            if image.trim().is_empty() {
                p.push(
                    "plex.image",
                    "is empty; use e.g. \"plexinc/pms-docker:latest\"",
                );
            }
            let container_name = px
                .container_name
                .clone()
                .unwrap_or_else(|| "plexburst-plex".into());
            if container_name.is_empty()
                || !container_name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            {
                p.push(
                    "plex.container_name",
                    format!("{container_name:?} is not a valid container name; use letters, digits, _ . -"),
                );
            }
            RuntimeConfig::Docker {
                image,
                container_name,
                docker_args: px.docker_args.clone(),
            }
        }
        "command" => {
            if px.image.is_some() {
                p.push(
                    "plex.image",
                    "is only used with runtime = \"docker\"; remove it or change plex.runtime",
                );
            }
            let command = px.command.clone().unwrap_or_default();
            if command.trim().is_empty() {
                p.push(
                    "plex.command",
                    "is missing; give the shell line that starts the server, e.g. \"plex-emulator serve --data-dir {data_dir} --listen 127.0.0.1:{port}\"",
                );
            } else if command.contains("PLEX_CLAIM=") {
                p.push(
                    "plex.command",
                    "sets PLEX_CLAIM on the command line; reference $PLEX_CLAIM instead (plexburst passes it in the environment)",
                );
            }
            RuntimeConfig::Command { command }
        }
        other => {
            p.push(
                "plex.runtime",
                format!("{other:?} is not one of docker, command; use one of those"),
            );
            RuntimeConfig::Command {
                command: String::new(),
            }
        }
    };
    let plextv_url = match px.plextv_url {
        None => "https://plex.tv".to_string(),
        Some(u) if u.starts_with("https://") || u.starts_with("http://") => {
            u.trim_end_matches('/').to_string()
        }
        Some(u) => {
            p.push(
                "plex.plextv_url",
                format!("{u:?} is not an http(s) URL; remove it to use https://plex.tv"),
            );
            u
        }
    };
    let analysis_threads = match px.analysis_threads {
        None => None,
        Some(n) if (1..=MAX_ANALYSIS_THREADS).contains(&n) => Some(n as u32),
        Some(n) => {
            p.push(
                "plex.analysis_threads",
                format!(
                    "is {n}; use 1 to {MAX_ANALYSIS_THREADS} Sonic workers, or remove it to use the target's vCPU count"
                ),
            );
            None
        }
    };
    let sonic_cpu_seconds_per_track = match px.sonic_cpu_seconds_per_track {
        None => None,
        Some(s) if s > 0.0 && s <= MAX_CPU_SECONDS_PER_TRACK => Some(s),
        Some(s) => {
            p.push(
                "plex.sonic_cpu_seconds_per_track",
                format!(
                    "is {s}; give the CPU seconds one track's Sonic analysis takes, above 0 and at most {MAX_CPU_SECONDS_PER_TRACK} (a run's report.md prints the measured figure), or remove it for the default estimate"
                ),
            );
            None
        }
    };
    PlexConfig {
        runtime,
        data_dir,
        port,
        analysis_threads,
        sonic_cpu_seconds_per_track,
        env: px.env,
        scan_force: px.scan_force,
        sqlite: px
            .sqlite
            .clone()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "sqlite3".into()),
        plextv_url,
        startup_timeout: p.duration(
            "plex.startup_timeout",
            &px.startup_timeout,
            Duration::from_secs(300),
        ),
        stop_grace: p.duration("plex.stop_grace", &px.stop_grace, Duration::from_secs(60)),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, EXAMPLE};

    #[test]
    fn every_problem_is_reported() {
        let bad = EXAMPLE
            .replace("type = \"movie\"", "type = \"film\"")
            .replace("scan = \"1h\"", "scan = \"soon\"");
        let e = Config::parse(&bad).unwrap_err();
        assert_eq!(e.problems.len(), 2, "{e}");
        assert!(
            e.to_string()
                .contains("sections[1].type \"film\" is not one of movie, show, music, photo")
        );
        assert!(e.to_string().contains("timeouts.scan"));
    }
}
