//! `plexburst apply`: bring an exported archive home. Verify it against its manifest, stop the
//! home Plex, move its databases, `Metadata/` and `Media/` aside as the backup, rename the
//! archive's into place, keep the home's identity, fix ownership, start it, and check through its
//! API that it serves the manifest's counts; roll back to the backup when it does not.
//!
//! Crash safety rests on a journal in `<data dir>/.plexburst-apply/`: `journal.json` (one record,
//! written atomically, saying which step was reached), `staging/<sha256>/` (the archive extracted
//! on the home's filesystem, so installing is a rename), `backups/<time>-<sha>/` (the moved-aside
//! old directories and a copy of `Preferences.xml`) and `trash/`. Every step can be run again, and
//! the record plus what exists on disk say how to finish forward or roll back: an interrupted
//! `apply` is completed by running it again, or undone by `apply --rollback`.

mod served;
mod site;
pub mod spec;
mod verify;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::archive::{SHA256, number_and_sha256};
use crate::error::BadInput;
use crate::export::Manifest;
use crate::remote::quote;
use served::{check_served, connect_api};
use site::{RECORD_VERSION, Record, Site, Step, connect};
use spec::{Home, Service};
use verify::{Verified, verify_archive};

/// The Plex folder inside a data dir (pms-docker's `/config` layout, as the export archives it).
const PMS: &str = "Library/Application Support/Plex Media Server";
/// The library DB inside `PMS`: an archive without it is refused.
const LIBRARY_DB: &str = "Plug-in Support/Databases/com.plexapp.plugins.library.db";
/// What is installed, as (name in the backup, path under `PMS`). Each moves as one directory,
/// so the DB and its `-wal`/`-shm` are always of the same side.
const ITEMS: &[(&str, &str)] = &[
    ("Databases", "Plug-in Support/Databases"),
    ("Metadata", "Metadata"),
    ("Media", "Media"),
];
/// `Preferences.xml` attributes that make a server itself (plex.md §6): kept from the home unless
/// `--take-identity`.
pub const IDENTITY_ATTRS: &[&str] = &[
    "MachineIdentifier",
    "ProcessedMachineIdentifier",
    "AnonymousMachineIdentifier",
    "PlexOnlineToken",
    "PlexOnlineUsername",
    "PlexOnlineMail",
    "PlexOnlineHome",
    "CertificateUUID",
    "CertificateVersion",
    "PubSubServer",
    "PubSubServerRegion",
    "PubSubServerPing",
];

/// TEST ONLY: when this variable names one of `KILL_POINTS`, the process exits with
/// `KILLED_STATUS` right there, as a kill would leave it (no cleanup runs). The suite uses it to
/// interrupt `apply` at every step deterministically.
pub const ABORT_ENV: &str = "PLEXBURST_TEST_APPLY_ABORT_AT";
pub const KILLED_STATUS: i32 = 86;
/// Every point of a forward `apply` where `ABORT_ENV` can stop it, in order.
pub const KILL_POINTS: &[&str] = &[
    "staged",
    "stopped",
    "prefs-backed-up",
    "moved-old:Databases",
    "installed:Databases",
    "moved-old:Metadata",
    "installed:Metadata",
    "moved-old:Media",
    "installed:Media",
    "swapped",
    "identity",
    "owned",
    "started",
];
/// Over ssh only: the archive is on the home host, not extracted yet, nothing recorded.
pub const PUSHED_KILL_POINT: &str = "pushed";
/// The same for `apply --rollback`.
pub const ROLLBACK_KILL_POINTS: &[&str] = &[
    "rb-begun",
    "rb-stopped",
    "rb-restored:Databases",
    "rb-restored:Metadata",
    "rb-restored:Media",
    "rb-prefs",
];

fn abort_point(name: &str) {
    if std::env::var(ABORT_ENV).is_ok_and(|v| v == name) {
        eprintln!("apply: aborting at {name} ({ABORT_ENV}, test only)");
        std::process::exit(KILLED_STATUS);
    }
}

/// `apply`'s flags.
#[derive(Debug, Clone)]
pub struct Options {
    pub archive: Option<PathBuf>,
    pub manifest: Option<PathBuf>,
    pub to: String,
    pub service: Option<String>,
    pub take_identity: bool,
    pub dry_run: bool,
    pub rollback: bool,
    pub plex_port: u16,
    pub timeout: Duration,
    pub ssh_identity: Option<PathBuf>,
    pub ssh_options: Vec<String>,
}

/// `plexburst apply`.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let home = spec::parse_to(&opts.to, &cwd)?;
    let service = match &opts.service {
        Some(s) => spec::parse_service(s)?,
        None => {
            return Err(BadInput(
                "apply needs --service to stop and start the home Plex: systemd:NAME, docker:NAME or command:'CMD'".into(),
            )
            .into());
        }
    };
    if opts.rollback && opts.archive.is_some() {
        return Err(BadInput(
            "--rollback restores the last backup and takes no ARCHIVE; drop one of them".into(),
        )
        .into());
    }
    // Everything about the archive is checked before the home is touched at all.
    let verified = if opts.rollback {
        None
    } else {
        let Some(archive) = &opts.archive else {
            return Err(BadInput(
                "apply needs the ARCHIVE to install (or --rollback to restore the last backup)"
                    .into(),
            )
            .into());
        };
        Some(verify_archive(archive, opts.manifest.as_deref())?)
    };

    let (remote, scratch) = connect(&home, opts)?;
    let site = Site {
        remote,
        home,
        _scratch: scratch,
    };
    if !site.exists(&site.prefs())? {
        return Err(BadInput(format!(
            "--to {:?}: {} has no {PMS}/Preferences.xml; point --to at the home server's data dir (the folder holding `Library/`)",
            opts.to,
            site.home.describe()
        ))
        .into());
    }
    let record = site.read_record()?;
    match verified {
        None => rollback_command(&site, &service, record, opts),
        Some(v) => apply_command(&site, &service, record, v, opts),
    }
}

fn apply_command(
    site: &Site,
    service: &Service,
    record: Option<Record>,
    v: Verified,
    opts: &Options,
) -> anyhow::Result<()> {
    let sha = v.manifest.sha256.clone();
    let r = match record {
        Some(r) if r.step == Step::Done && r.sha256 == sha => {
            println!(
                "{} is already installed in {} (applied {}); nothing to do",
                r.archive,
                site.home.describe(),
                r.updated_at
            );
            return Ok(());
        }
        Some(r) if r.step == Step::RollingBack => {
            return Err(BadInput(format!(
                "a rollback of {} in {} is unfinished; finish it with `plexburst apply --rollback` first",
                r.archive,
                site.home.describe()
            ))
            .into());
        }
        Some(r) if r.step != Step::Done && r.sha256 != sha => {
            return Err(BadInput(format!(
                "an apply of {} (sha256 {}) in {} stopped at step {:?}; run it again to finish it, or `plexburst apply --rollback`, before applying another archive",
                r.archive, r.sha256, site.home.describe(), r.step
            ))
            .into());
        }
        Some(r) if r.step != Step::Done => r,
        done => {
            // A new apply: the record it replaces (with its own chain) is what a rollback makes
            // current again, so each `--rollback` undoes one apply while its backup is kept.
            let previous = done.map(Box::new);
            if opts.dry_run {
                print_plan(site, service, &v, opts, previous.as_deref());
                return Ok(());
            }
            let brings = stage(site, &v)?;
            let mut r = Record {
                version: RECORD_VERSION,
                step: Step::Staged,
                archive: v
                    .archive
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default(),
                sha256: sha.clone(),
                run_id: v.manifest.run_id.clone(),
                backup: None,
                had: Vec::new(),
                brings,
                take_identity: opts.take_identity,
                updated_at: String::new(),
                previous,
            };
            site.write_record(&mut r)?;
            abort_point("staged");
            return forward(site, service, r, &v.manifest, opts);
        }
    };
    if opts.dry_run {
        println!(
            "dry run: the apply of {} stopped at step {:?}; `apply` would finish it from there (or `--rollback` undo it)",
            r.archive, r.step
        );
        return Ok(());
    }
    if r.take_identity != opts.take_identity {
        return Err(BadInput(format!(
            "the unfinished apply of {} was started {} --take-identity; run it again the same way",
            r.archive,
            if r.take_identity { "with" } else { "without" }
        ))
        .into());
    }
    tracing::info!(
        "continuing the apply of {} from step {:?}",
        r.archive,
        r.step
    );
    forward(site, service, r, &v.manifest, opts)
}

/// Extract the archive into `staging/<sha>` on the home host (pushing it there first over ssh),
/// unless a previous attempt already did. Returns the `ITEMS` it brings. Changes nothing at home.
fn stage(site: &Site, v: &Verified) -> anyhow::Result<Vec<String>> {
    let sha = &v.manifest.sha256;
    let staging = site.staging(sha);
    if !site.exists(&staging)? {
        let partial = format!("{staging}.partial");
        site.run(format!("rm -rf -- {}", quote(&partial)))?;
        let (source, pushed) = match &site.home {
            Home::Local { .. } => (v.archive.to_string_lossy().to_string(), false),
            Home::Ssh { .. } => (push(site, &v.archive, sha)?, true),
        };
        tracing::info!("extracting the archive into {staging}");
        site.run(format!(
            "mkdir -p -- {p} && tar --zstd --no-same-owner -xf {s} -C {p} && mv -T -- {p} {st}",
            p = quote(&partial),
            s = quote(&source),
            st = quote(&staging)
        ))
        .context("cannot extract the archive on the home host")?;
        if pushed {
            site.run(format!("rm -f -- {}", quote(&source)))?;
        }
    }
    let pms = site.staged_pms(sha);
    if !site.exists(&format!("{pms}/{LIBRARY_DB}"))? {
        site.run(format!("rm -rf -- {}", quote(&staging)))?;
        return Err(BadInput(format!(
            "{} holds no {PMS}/{LIBRARY_DB}; it is not a Plex data folder export, nothing was changed at home",
            v.archive.display()
        ))
        .into());
    }
    let mut brings = Vec::new();
    for (name, rel) in ITEMS {
        if site.exists(&format!("{pms}/{rel}"))? {
            brings.push(name.to_string());
        }
    }
    Ok(brings)
}

/// Push a chunk at a time, so an archive of many GB never sits in memory whole.
const PUSH_CHUNK: usize = 32 << 20;

/// Copy the archive to `incoming/<sha>.tar.zst` on the home host and check its sha256 there.
fn push(site: &Site, archive: &Path, sha: &str) -> anyhow::Result<String> {
    use std::io::Read;
    let dest = format!("{}/incoming/{sha}.tar.zst", site.jdir());
    let parts = format!("{dest}.parts");
    // Already there from an attempt interrupted before it was extracted: checked, not re-sent.
    if site.exists(&dest)? {
        let said = site.sh(
            format!("echo \"0 $({SHA256} < {})\"", quote(&dest)),
            Duration::from_secs(12 * 3600),
        )?;
        if number_and_sha256(&said, "the copy on the home host", "status")?.1 == sha {
            tracing::info!("the archive is already at {dest}");
            return Ok(dest);
        }
    }
    tracing::info!("copying the archive to {dest}");
    site.run(format!("rm -rf -- {}", quote(&parts)))?;
    let mut f = std::fs::File::open(archive)
        .with_context(|| format!("cannot read {}", archive.display()))?;
    let mut buf = vec![0u8; PUSH_CHUNK];
    let mut n = 0u32;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let got = f.read(&mut buf[filled..])?;
            if got == 0 {
                break;
            }
            filled += got;
        }
        if filled == 0 {
            break;
        }
        site.remote
            .put_file(&format!("{parts}/{n:06}"), &buf[..filled], 0o600)
            .context("cannot copy the archive to the home host")?;
        n += 1;
        if filled < buf.len() {
            break;
        }
    }
    let said = site.sh(
        format!(
            "set -e; cd {p}; cat $(ls | sort) > {d}.partial; cd /; rm -rf -- {p}; echo \"0 $({SHA256} < {d}.partial)\"",
            p = quote(&parts),
            d = quote(&dest)
        ),
        Duration::from_secs(12 * 3600),
    )?;
    let (_, got) = number_and_sha256(&said, "the copy on the home host", "status")?;
    if got != sha {
        bail!(
            "the archive copied to the home host has sha256 {got}, not {sha}; the copy was damaged, try again"
        );
    }
    site.rename(&format!("{dest}.partial"), &dest)?;
    abort_point(PUSHED_KILL_POINT);
    Ok(dest)
}

fn stop(site: &Site, service: &Service) -> anyhow::Result<()> {
    tracing::info!("stopping the home Plex: {}", service.stop_line());
    site.sh(service.stop_line(), Duration::from_secs(600))
        .context("cannot stop the home Plex")
        .map(drop)
}

fn start(site: &Site, service: &Service) -> anyhow::Result<()> {
    tracing::info!("starting the home Plex: {}", service.start_line());
    site.sh(service.start_line(), Duration::from_secs(600))
        .context("cannot start the home Plex")
        .map(drop)
}

/// A backup directory name that is not taken: the time and the archive's sha256 prefix.
fn new_backup_name(site: &Site, sha: &str) -> anyhow::Result<String> {
    let ts = jiff::Timestamp::now()
        .strftime("%Y%m%dT%H%M%SZ")
        .to_string();
    let base = format!("{ts}-{}", &sha[..12.min(sha.len())]);
    let mut name = base.clone();
    let mut i = 1;
    while site.exists(&site.backup(&name))? {
        i += 1;
        name = format!("{base}-{i}");
    }
    Ok(name)
}

/// Carry an apply from its recorded step to the end.
fn forward(
    site: &Site,
    service: &Service,
    mut r: Record,
    manifest: &Manifest,
    opts: &Options,
) -> anyhow::Result<()> {
    let pms = site.pms();
    let staged = site.staged_pms(&r.sha256);
    if r.step == Step::Staged {
        stop(site, service)?;
        let mut had = Vec::new();
        for (name, rel) in ITEMS {
            if site.exists(&format!("{pms}/{rel}"))? {
                had.push(name.to_string());
            }
        }
        r.had = had;
        r.backup = Some(new_backup_name(site, &r.sha256)?);
        r.step = Step::Stopped;
        site.write_record(&mut r)?;
        abort_point("stopped");
    }
    if r.step == Step::Stopped {
        let backup = site.backup(r.backup.as_deref().context("no backup in the journal")?);
        site.run(format!("mkdir -p -- {}", quote(&backup)))?;
        // Copied once: a second pass must not overwrite it with a prefs file already edited.
        let saved = format!("{backup}/Preferences.xml");
        if !site.exists(&saved)? {
            site.copy_file(&site.prefs(), &saved)?;
        }
        abort_point("prefs-backed-up");
        // The staged copy must still hold whatever is not installed yet (someone may have
        // removed it): finding out after the old data is aside would leave the home without it.
        for (name, rel) in ITEMS {
            let (live, old) = (format!("{pms}/{rel}"), format!("{backup}/{name}"));
            let had = r.had.iter().any(|h| h == name);
            let installed = site.exists(&live)? && (!had || site.exists(&old)?);
            if r.brings.iter().any(|b| b == name)
                && !installed
                && !site.exists(&format!("{staged}/{rel}"))?
            {
                bail!(
                    "the staged {rel} of {} is gone from {staged}; run `plexburst apply --rollback`, then apply it again",
                    r.archive
                );
            }
        }
        tracing::info!("backing up to {backup} and installing the archive's data");
        for (name, rel) in ITEMS {
            let live = format!("{pms}/{rel}");
            let old = format!("{backup}/{name}");
            // Nothing is installed before the old one is aside, so while the backup lacks it the
            // live one is the old one.
            if r.had.iter().any(|h| h == name) && !site.exists(&old)? {
                site.rename(&live, &old)?;
            }
            abort_point(&format!("moved-old:{name}"));
            let new = format!("{staged}/{rel}");
            if r.brings.iter().any(|b| b == name) && site.exists(&new)? {
                site.rename(&new, &live)?;
            }
            abort_point(&format!("installed:{name}"));
        }
        r.step = Step::Swapped;
        site.write_record(&mut r)?;
        abort_point("swapped");
    }
    if r.step == Step::Swapped {
        if r.take_identity {
            take_identity(site, &format!("{staged}/Preferences.xml"))?;
        }
        abort_point("identity");
        site.chown_items()?;
        abort_point("owned");
        start(site, service)?;
        r.step = Step::Started;
        site.write_record(&mut r)?;
        abort_point("started");
    } else if r.step == Step::Started {
        // Resumed here: the service may have stopped since; starting a running one is harmless
        // (the contract: start succeeds when already running).
        start(site, service)?;
    }
    if r.step == Step::Started {
        match check_served(site, manifest, opts) {
            Ok(lines) => {
                for l in lines {
                    println!("{l}");
                }
            }
            Err(e) => {
                tracing::warn!("the home Plex does not serve what the archive holds: {e:#}");
                tracing::warn!("rolling back to the backup");
                rollback(site, service, r, opts)
                    .context("the rollback after the failed check failed too")?;
                bail!(
                    "the home Plex did not serve the archive's counts ({e:#}); it was rolled back to the backup"
                );
            }
        }
        r.step = Step::Done;
        site.write_record(&mut r)?;
        site.run(format!("rm -rf -- {}", quote(&site.staging(&r.sha256))))?;
        println!(
            "applied {} to {}; the previous data is in {} (`plexburst apply --rollback` restores it)",
            r.archive,
            site.home.describe(),
            site.backup(r.backup.as_deref().unwrap_or_default())
        );
    }
    Ok(())
}

/// Write the archive's identity attributes into the home's `Preferences.xml` (an attribute the
/// archive lacks is removed), every other setting kept.
fn take_identity(site: &Site, archived_prefs: &str) -> anyhow::Result<()> {
    let theirs = site
        .remote
        .get_file(archived_prefs)
        .context("cannot read the archive's Preferences.xml")?;
    let theirs = crate::plex::xml::attrs(&String::from_utf8_lossy(&theirs))?;
    let ours = site
        .remote
        .get_file(&site.prefs())
        .context("cannot read the home's Preferences.xml")?;
    let edits: Vec<(String, Option<String>)> = IDENTITY_ATTRS
        .iter()
        .map(|a| (a.to_string(), theirs.get(*a).cloned()))
        .collect();
    let new = crate::plex::xml::set_attrs(&String::from_utf8_lossy(&ours), &edits)?;
    site.remote
        .put_file(&site.prefs(), new.as_bytes(), 0o644)
        .context("cannot write the home's Preferences.xml")
}

fn rollback_command(
    site: &Site,
    service: &Service,
    record: Option<Record>,
    opts: &Options,
) -> anyhow::Result<()> {
    let Some(r) = record else {
        return Err(BadInput(format!(
            "no apply is recorded in {}; there is nothing to roll back",
            site.home.describe()
        ))
        .into());
    };
    if r.step == Step::Done
        && let Some(b) = &r.backup
        && !site.exists(&site.backup(b))?
    {
        return Err(BadInput(format!(
            "the backup {} of the last apply ({}) is gone; there is nothing to roll back to",
            site.backup(b),
            r.archive
        ))
        .into());
    }
    if opts.dry_run {
        println!(
            "dry run: would stop the home Plex ({}), put back {} from {} (Preferences.xml copied, directories renamed), start it ({}) and wait for it on port {}",
            service.stop_line(),
            r.had.join(", "),
            r.backup
                .as_deref()
                .map(|b| site.backup(b))
                .unwrap_or_else(|| "nowhere (nothing was moved yet)".into()),
            service.start_line(),
            opts.plex_port
        );
        return Ok(());
    }
    rollback(site, service, r, opts)?;
    println!("rolled back {}", site.home.describe());
    Ok(())
}

/// Put the backup back: each directory the apply installed goes to the trash, each it moved aside
/// comes back, `Preferences.xml` is copied back; then start and wait for the server. Every step
/// can run again after an interruption.
fn rollback(site: &Site, service: &Service, mut r: Record, opts: &Options) -> anyhow::Result<()> {
    if r.step != Step::RollingBack {
        r.step = Step::RollingBack;
        site.write_record(&mut r)?;
    }
    abort_point("rb-begun");
    stop(site, service)?;
    abort_point("rb-stopped");
    let pms = site.pms();
    let trash = site.trash();
    if let Some(b) = &r.backup {
        let backup = site.backup(b);
        for (name, rel) in ITEMS {
            let live = format!("{pms}/{rel}");
            let old = format!("{backup}/{name}");
            let had = r.had.iter().any(|h| h == name);
            // While the backup holds it, the live one (if any) is the archive's; an item the home
            // never had is the archive's whenever it exists.
            let live_is_new = if had { site.exists(&old)? } else { true };
            if live_is_new && site.exists(&live)? {
                let gone = format!("{trash}/{name}");
                site.run(format!("rm -rf -- {}", quote(&gone)))?;
                site.rename(&live, &gone)?;
            }
            if had && site.exists(&old)? {
                site.rename(&old, &live)?;
            }
            abort_point(&format!("rb-restored:{name}"));
        }
        let saved = format!("{backup}/Preferences.xml");
        if site.exists(&saved)? {
            site.copy_file(&saved, &site.prefs())?;
        }
    }
    abort_point("rb-prefs");
    site.chown_items()?;
    start(site, service)?;
    connect_api(site, opts).context("the home Plex did not come back after the rollback")?;
    let mut leftovers = vec![quote(&trash), quote(&site.staging(&r.sha256))];
    if let Some(b) = &r.backup {
        leftovers.push(quote(&site.backup(b)));
    }
    site.run(format!("rm -rf -- {}", leftovers.join(" ")))?;
    match r.previous.take() {
        Some(mut p) => site.write_record(&mut p)?,
        None => site.remove_record()?,
    }
    Ok(())
}

/// `--dry-run`: every step `apply` would take, with the commands and paths, and nothing done.
fn print_plan(
    site: &Site,
    service: &Service,
    v: &Verified,
    opts: &Options,
    previous: Option<&Record>,
) {
    let sha = &v.manifest.sha256;
    let pms = site.pms();
    let mut steps = Vec::new();
    steps.push(format!(
        "verify the archive against its manifest: done above (run {})",
        v.manifest.run_id
    ));
    if let Home::Ssh { .. } = site.home {
        steps.push(format!(
            "copy the archive to {}/incoming/{sha}.tar.zst and check its sha256 there",
            site.jdir()
        ));
    }
    steps.push(format!(
        "extract it into {} (same filesystem as the data)",
        site.staging(sha)
    ));
    steps.push(format!("stop the home Plex: {}", service.stop_line()));
    let items = ITEMS.iter().map(|(_, r)| *r).collect::<Vec<_>>().join(", ");
    steps.push(format!(
        "back up to {}/backups/<time>-{}/: copy Preferences.xml, move aside {items} of {pms}",
        site.jdir(),
        &sha[..12.min(sha.len())],
    ));
    steps.push(format!(
        "install the archive's {items} by renaming them into place"
    ));
    steps.push(if opts.take_identity {
        format!(
            "take the archive's identity: set {} in {} from the archive's Preferences.xml",
            IDENTITY_ATTRS.join(", "),
            site.prefs()
        )
    } else {
        format!(
            "keep the home's identity and settings: {} is left as it is",
            site.prefs()
        )
    });
    steps.push(format!(
        "give the installed data to the owner of {} (chown -R)",
        site.data()
    ));
    steps.push(format!("start the home Plex: {}", service.start_line()));
    let counts: Vec<String> = v
        .manifest
        .sections
        .iter()
        .map(|s| {
            if s.section_type == 8 {
                format!(
                    "{} {} items, {} Sonic-analysed",
                    s.name,
                    s.items + s.deleted,
                    s.sonic_analyzed
                )
            } else {
                format!("{} {} items", s.name, s.items + s.deleted)
            }
        })
        .collect();
    steps.push(format!(
        "check through the API on 127.0.0.1:{} (within {}) that it serves {}; roll back to the backup if not",
        opts.plex_port,
        crate::units::format_duration(opts.timeout),
        counts.join("; ")
    ));
    steps.push(format!(
        "record the apply in {}{}",
        site.journal(),
        match previous {
            Some(p) => format!(" (replacing the record of {})", p.archive),
            None => String::new(),
        }
    ));
    println!(
        "dry run: apply {} to {} (nothing is changed)",
        v.archive.display(),
        site.home.describe()
    );
    for (i, s) in steps.iter().enumerate() {
        println!("{:>3}. {s}", i + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_points_name_every_item() {
        for (name, _) in ITEMS {
            assert!(KILL_POINTS.contains(&format!("installed:{name}").as_str()));
            assert!(ROLLBACK_KILL_POINTS.contains(&format!("rb-restored:{name}").as_str()));
        }
    }
}
