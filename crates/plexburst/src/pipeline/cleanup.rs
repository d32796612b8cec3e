//! Leaving nothing behind on a machine we do not rent: what every exit path takes away from the
//! target, and the check of what stays.
//!
//! The target of a local or ssh run is the user's own machine and outlives the run. So the rclone
//! config (the one secret file) goes as soon as nothing needs it: at teardown, after a failure or
//! an interrupt, and by `destroy`. The VFS cache and the mount's scratch files go at teardown and
//! by `destroy`, unless the user keeps the cache (`--keep-cache`); after a failure they stay for
//! `resume`. The Plex settings configure changed are put back on every exit: by the restore phase
//! through the API, and otherwise by writing `Preferences.xml` with Plex stopped (`prefs_file`).
//! Every cleanup ends by looking at what is still there (`inventory`): what stays on purpose, with
//! sizes, and anything else, which is reported rather than assumed gone.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};

use crate::plan::Plan;
use crate::plex::api::Pref;
use crate::remote::{Cmd, Remote, RemoteError, quote};
use crate::session::Ctx;
use crate::state::{KeptItem, LeftOnTarget, PhaseStatus, State};
use crate::storage::{FileKind, Storage};

/// Which exit is cleaning up: it decides what is expected to stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// The last phase of a run that went through.
    Teardown,
    /// A failed or interrupted run, kept for `resume`: the cache and the mount's log stay.
    Failure,
    /// `plexburst destroy`.
    Destroy,
}

impl Exit {
    fn name(self) -> &'static str {
        match self {
            Exit::Teardown => "teardown",
            Exit::Failure => "the cleanup after the failure",
            Exit::Destroy => "destroy",
        }
    }
}

/// After a failed or interrupted phase: stop Plex and put the user's settings back in its
/// `Preferences.xml`, unmount, and remove the secret files; the cache stays for `resume`. With
/// `--keep`, Plex stays up as asked and gets the settings back through its API. A resume then
/// runs configure again, since the background tasks are back on.
pub fn after_failure(ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut errors: Vec<anyhow::Error> = Vec::new();
    let mut prefs_left = Vec::new();
    if ctx.plan.options.keep {
        if prefs_changed(&ctx.state) {
            // Without a connection (Plex died, say) there is no API to put them back through;
            // they are named, and `destroy` writes them into the file.
            let restored = match ctx.plex {
                Some(_) => super::restore::run(ctx).map(|_| ()),
                None => Err(anyhow!("Plex is not reachable")),
            };
            match restored {
                Ok(()) => reopen_configure(&mut ctx.state),
                Err(e) => {
                    prefs_left = managed_values(&ctx.state);
                    errors.push(e.context("putting Plex's settings back through its API"));
                }
            }
        }
    } else {
        let stopped = ctx.stop_plex("stop it with `plexburst destroy`");
        let plex_down = stopped.is_ok();
        match stopped {
            Ok(()) => match prefs_file(ctx.remote.as_ref(), &ctx.plan, &ctx.state) {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!("{n} Plex settings put back in Preferences.xml");
                    reopen_configure(&mut ctx.state);
                }
                Err((e, left)) => {
                    prefs_left = left;
                    errors.push(e);
                }
            },
            Err(e) => {
                prefs_left = managed_values(&ctx.state);
                errors.push(e);
            }
        }
        // Never under a Plex that still runs: it would see its library vanish.
        if plex_down && prepare_started(Some(&ctx.state)) {
            match ctx.storage.unmount(ctx.remote.as_ref()) {
                Ok(()) => ctx.state.storage_mounted = false,
                Err(e) => errors.push(e.context("cannot unmount the storage")),
            }
        }
    }
    if let Err(e) = ctx.storage.remove_secrets(ctx.remote.as_ref()) {
        errors.push(e);
    }
    report_left(
        ctx.remote.as_ref(),
        &ctx.plan,
        &ctx.storage,
        &mut ctx.state,
        Exit::Failure,
        prefs_left,
    );
    combine(errors)
}

/// Teardown's cleanup, once Plex is stopped and the storage unmounted (or, with `--keep`, left
/// running): the secret files go, then the cache (unless `--keep-cache`) and the scratch files,
/// then the look at what stays.
pub fn at_teardown(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.storage
        .remove_secrets(ctx.remote.as_ref())
        .context("removing the storage's secret files")?;
    if !ctx.plan.options.keep {
        ctx.storage
            .clean(ctx.remote.as_ref(), ctx.plan.options.keep_cache)
            .context("removing the storage's cache and scratch files")?;
        remove_export_scratch(ctx.remote.as_ref(), &ctx.plan, &ctx.state)?;
        remove_seed_copy(ctx.remote.as_ref(), &ctx.plan)?;
        remove_empty_work_dir(ctx.remote.as_ref(), &ctx.plan);
    }
    report_left(
        ctx.remote.as_ref(),
        &ctx.plan,
        &ctx.storage,
        &mut ctx.state,
        Exit::Teardown,
        Vec::new(),
    );
    Ok(())
}

/// `plexburst destroy`: stop Plex, put the settings back in `Preferences.xml`, unmount, remove
/// the secret, cache (unless the run kept it) and scratch files, and say what stays. Each step
/// runs even when an earlier one failed, but nothing is unmounted under a Plex that did not stop.
pub fn destroy(
    remote: &dyn Remote,
    plan: &Plan,
    storage: &Storage,
    mut state: Option<&mut State>,
) -> anyhow::Result<()> {
    let mut errors: Vec<anyhow::Error> = Vec::new();
    let mut prefs_left = Vec::new();
    let stopped = crate::session::stop_plex(
        remote,
        &plan.plex.runtime,
        plan.plex.stop_grace,
        "look at it with `plexburst ssh`",
    );
    let plex_down = stopped.is_ok();
    if let (true, Some(st)) = (plex_down, state.as_deref_mut()) {
        st.plex_started = false;
    }
    match (stopped, state.as_deref()) {
        (Ok(()), Some(st)) => match prefs_file(remote, plan, st) {
            Ok(0) => {}
            Ok(n) => eprintln!("{n} Plex settings put back in {}", plan.plex.prefs_path),
            Err((e, left)) => {
                prefs_left = left;
                errors.push(e);
            }
        },
        (Ok(()), None) => {}
        (Err(e), st) => {
            prefs_left = st.map(managed_values).unwrap_or_default();
            errors.push(e);
        }
    }
    // Without a run's state nothing says a mount at the mount point is plexburst's.
    if plex_down && prepare_started(state.as_deref()) {
        match storage.unmount(remote) {
            Ok(()) => {
                if let Some(st) = state.as_deref_mut() {
                    st.storage_mounted = false;
                }
                if let Err(e) = storage.clean(remote, plan.options.keep_cache) {
                    errors.push(e);
                }
            }
            Err(e) => errors.push(e.context("cannot unmount the storage")),
        }
    }
    // The secret goes even when the rest could not: a mount left running does not need it.
    if let Err(e) = storage.remove_secrets(remote) {
        errors.push(e);
    }
    if let Err(e) = remove_seed_copy(remote, plan) {
        errors.push(e);
    }
    remove_empty_work_dir(remote, plan);
    if let Some(st) = state {
        if let Err(e) = remove_export_scratch(remote, plan, st) {
            errors.push(e);
        }
        report_left(remote, plan, storage, st, Exit::Destroy, prefs_left);
    }
    combine(errors)
}

/// Whether the prepare phase ever started: from then on the mount point and the rclone files
/// are plexburst's, even when the run died before it recorded the mount.
fn prepare_started(state: Option<&State>) -> bool {
    state
        .and_then(|s| s.phase("prepare"))
        .is_some_and(|p| p.attempts > 0)
}

/// Configure changed Plex's settings and the restore phase has not put them back.
fn prefs_changed(state: &State) -> bool {
    state.saved_prefs.is_some()
        && !state
            .phase("restore")
            .is_some_and(|p| p.status == PhaseStatus::Done)
}

/// The settings are the user's again: a resumed run must turn the background tasks off before it
/// scans or analyses, so configure runs again (it keeps the prefs it saved the first time).
fn reopen_configure(state: &mut State) {
    let rec = state.phase_mut("configure");
    if rec.status == PhaseStatus::Done {
        rec.status = PhaseStatus::Pending;
        rec.detail = Some(
            "Plex's settings were put back after the failure; resume turns the background tasks off again"
                .into(),
        );
    }
}

fn saved(state: &State) -> Vec<Pref> {
    state
        .saved_prefs
        .iter()
        .flatten()
        .map(super::configure::to_pref)
        .collect()
}

/// `id=value` for every setting plexburst manages, as the user had it: what to put back when
/// even the file could not be read.
fn managed_values(state: &State) -> Vec<String> {
    if !prefs_changed(state) {
        return Vec::new();
    }
    let saved = saved(state);
    let ids: Vec<&str> = saved
        .iter()
        .filter(|p| crate::plex::prefs::managed(p))
        .map(|p| p.id.as_str())
        .collect();
    crate::plex::prefs::put_back_list(&saved, &ids)
}

/// Put the user's values of the settings plexburst changed back into `Preferences.xml`, with
/// Plex stopped: only those attributes change, the rest of the file (the server's token among
/// it) stays byte for byte, and it is replaced atomically with its owner and mode. Returns how
/// many attributes changed; an `Err` carries the settings still to put back (`id=value`).
fn prefs_file(
    remote: &dyn Remote,
    plan: &Plan,
    state: &State,
) -> Result<usize, (anyhow::Error, Vec<String>)> {
    // Once the restore phase has put them back, they are the user's: nothing to do (and a
    // resume must not be sent back to configure).
    if !prefs_changed(state) {
        return Ok(0);
    }
    let saved = saved(state);
    let path = &plan.plex.prefs_path;
    let all = || managed_values(state);
    let running = plan
        .plex
        .runtime
        .is_running(remote)
        .map_err(|e| (e, all()))?;
    if running {
        return Err((
            anyhow!("Plex is running, so {path} cannot be written"),
            all(),
        ));
    }
    let read = |remote: &dyn Remote| -> anyhow::Result<(String, crate::plex::xml::Attrs)> {
        let bytes = match remote.get_file(path) {
            Err(RemoteError::NotFound { .. }) => {
                bail!("{path} is gone, so the settings cannot be put back in it")
            }
            other => other?,
        };
        let text = String::from_utf8(bytes).with_context(|| format!("{path} is not UTF-8"))?;
        let attrs = crate::plex::xml::attrs(&text).with_context(|| format!("reading {path}"))?;
        Ok((text, attrs))
    };
    let (text, now) = read(remote).map_err(|e| (e, all()))?;
    let before = state.saved_prefs_file.as_ref();
    let edits = crate::plex::prefs::file_restore(&saved, before, &now);
    if edits.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = edits.iter().map(|(k, _)| k.as_str()).collect();
    let left = || crate::plex::prefs::put_back_list(&saved, &ids);
    let written = (|| -> anyhow::Result<()> {
        let xml = crate::plex::xml::set_attrs(&text, &edits)?;
        let token = crate::plex::xml::online_token(&text)?;
        replace_file(remote, path, xml.as_bytes(), token)?;
        let (_, after) = read(remote)?;
        let still = crate::plex::prefs::file_restore(&saved, before, &after);
        if !still.is_empty() {
            bail!("{path} still differs after the write: {still:?}");
        }
        Ok(())
    })();
    match written {
        Ok(()) => Ok(edits.len()),
        Err(e) => Err((
            e.context(format!("cannot put Plex's settings back in {path}")),
            left(),
        )),
    }
}

/// Replace `path` on the target with `contents` atomically, keeping its owner and mode (a Plex
/// in docker owns its data dir as uid 1000). The contents travel on stdin, never on a command
/// line; a temp file is removed whatever happens.
fn replace_file(
    remote: &dyn Remote,
    path: &str,
    contents: &[u8],
    secret: Option<String>,
) -> anyhow::Result<()> {
    let script = format!(
        "set -e\np={p}\nt=$(mktemp \"$p.plexburst-XXXXXX\")\ntrap 'rm -f -- \"$t\"' EXIT\n\
         cat > \"$t\"\nchown --reference=\"$p\" -- \"$t\"\nchmod --reference=\"$p\" -- \"$t\"\n\
         mv -f -- \"$t\" \"$p\"\ntrap - EXIT\n",
        p = quote(path)
    );
    let mut cmd = Cmd::new(script).stdin(contents.to_vec());
    if let Some(s) = secret {
        cmd = cmd.secret(s);
    }
    remote.run(&cmd)?;
    Ok(())
}

/// plexburst's work dir, when nothing is left in it (a command runtime keeps its server log
/// there). Best effort: a directory that stays is listed by `inventory` anyway.
fn remove_empty_work_dir(remote: &dyn Remote, plan: &Plan) {
    let _ = remote.exec(&Cmd::new(format!(
        "rmdir {} 2>/dev/null; true",
        quote(&plan.target.work_dir)
    )));
}

/// The copy of the seed the run put in its work dir (a seed given as `target:` is the user's).
pub fn remove_seed_copy(remote: &dyn Remote, plan: &Plan) -> anyhow::Result<()> {
    let Some(sp) = &plan.seed else {
        return Ok(());
    };
    if matches!(sp.source, crate::seed::SeedSource::Target { .. }) {
        return Ok(());
    }
    let dir = sp.staged.rsplit_once('/').map(|(d, _)| d).unwrap_or(".");
    remote
        .run(&Cmd::new(format!(
            "rm -f {}; rmdir {} 2>/dev/null; true",
            quote(&sp.staged),
            quote(dir)
        )))
        .context("removing the seed's copy from the work dir")?;
    Ok(())
}

/// The working files a killed export of this run left in the destination (its list, snapshots,
/// partial archive): everything named after the run there but the archive and its manifest.
fn remove_export_scratch(remote: &dyn Remote, plan: &Plan, state: &State) -> anyhow::Result<()> {
    let (dest, id) = (&plan.export.destination, &state.run_id);
    remote
        .run(&Cmd::new(format!(
            "[ ! -d {d} ] || find {d} -maxdepth 1 -name {all} ! -name {archive} ! -name {manifest} -exec rm -f -- {{}} +",
            d = quote(dest),
            all = quote(&format!("{id}.*")),
            archive = quote(&format!("{id}.tar.zst")),
            manifest = quote(&format!("{id}.manifest.json")),
        )))
        .with_context(|| format!("removing the export's working files in {dest}"))?;
    Ok(())
}

/// Look at what the run leaves on the target, record it in the state and print it. A look that
/// fails is a warning: it must not turn a finished cleanup into a failure.
fn report_left(
    remote: &dyn Remote,
    plan: &Plan,
    storage: &Storage,
    state: &mut State,
    exit: Exit,
    prefs_not_restored: Vec<String>,
) {
    match inventory(remote, plan, storage, state, exit) {
        Ok((kept, stray)) => {
            let left = LeftOnTarget {
                checked_at: crate::state::now(),
                by: exit.name().to_string(),
                kept,
                stray,
                prefs_not_restored,
            };
            eprint!("{}", crate::report::render_left(&left, &remote.describe()));
            state.left_on_target = Some(left);
        }
        Err(e) => {
            tracing::warn!("cannot list what the run leaves on the target: {e:#}");
            if !prefs_not_restored.is_empty() {
                eprintln!(
                    "Plex settings plexburst changed and could NOT put back: {}",
                    prefs_not_restored.join(", ")
                );
            }
        }
    }
}

/// One remote command over every place plexburst writes to (the data dir, its work dir, the
/// storage's files, the run's files in the export destination): what exists, with its size,
/// sorted into what stays on purpose and what should not be there any more.
fn inventory(
    remote: &dyn Remote,
    plan: &Plan,
    storage: &Storage,
    state: &State,
    exit: Exit,
) -> anyhow::Result<(Vec<KeptItem>, Vec<KeptItem>)> {
    let work = plan.target.work_dir.trim_end_matches('/');
    let data = plan.plex.data_dir.trim_end_matches('/');
    let dest = plan.export.destination.trim_end_matches('/');
    let files = storage.target_files();
    // Tag, then path: `d` the data dir, `w` the work dir, `s<i>` the storage's file i, `e` an
    // entry of the work dir, `x` a file of this run in the destination.
    let mut probes = vec![
        ("d".to_string(), data.to_string()),
        ("w".into(), work.into()),
    ];
    probes.extend(
        files
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("s{i}"), f.path.clone())),
    );
    let mut script = String::from(
        "size() { if [ -e \"$2\" ] || [ -L \"$2\" ]; then s=$(timeout 120 du -sb -- \"$2\" 2>/dev/null | cut -f1); printf '%s\\t%s\\t%s\\n' \"$1\" \"${s:--}\" \"$2\"; fi; }\n",
    );
    for (tag, path) in &probes {
        script.push_str(&format!("size {tag} {}\n", quote(path)));
    }
    script.push_str(&format!(
        "[ ! -d {w} ] || find {w} -mindepth 1 -maxdepth 1 ! -name rclone -print | while IFS= read -r f; do size e \"$f\"; done\n",
        w = quote(work)
    ));
    if !state.run_id.is_empty() {
        script.push_str(&format!(
            "[ ! -d {d} ] || find {d} -maxdepth 1 -name {n} -print | while IFS= read -r f; do size x \"$f\"; done\n",
            d = quote(dest),
            n = quote(&format!("{}.*", state.run_id))
        ));
    }
    let out = remote
        .run(&Cmd::new(script).timeout(Duration::from_secs(600)))
        .with_context(|| format!("listing what the run left on {}", remote.describe()))?;
    let found: Vec<(String, Option<u64>, String)> = out
        .stdout_str()
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, '\t');
            let (tag, size, path) = (it.next()?, it.next()?, it.next()?);
            Some((tag.to_string(), size.parse().ok(), path.to_string()))
        })
        .collect();
    let size_of = |tag: &str| found.iter().find(|f| f.0 == tag).and_then(|f| f.1);
    let keep = plan.options.keep;
    let mut kept = Vec::new();
    let mut stray = Vec::new();
    let item = |what: &str, path: &str, bytes: Option<u64>| KeptItem {
        what: what.to_string(),
        path: path.to_string(),
        bytes,
    };
    for (tag, bytes, path) in &found {
        match tag.as_str() {
            "d" => {
                // The work dir (and a cache kept in it) is counted on its own line.
                let nested = work.starts_with(&format!("{data}/"));
                let own = match (bytes, size_of("w")) {
                    (Some(d), Some(w)) if nested => Some(d.saturating_sub(w)),
                    (b, _) => *b,
                };
                let what = if nested {
                    "Plex data dir (without plexburst's work dir)"
                } else {
                    "Plex data dir"
                };
                kept.push(item(what, path, own));
            }
            "e" => {
                let name = path.rsplit('/').next().unwrap_or(path);
                match name {
                    "plex.log" => kept.push(item("Plex server log", path, *bytes)),
                    "plex.pid" | "plex.pid.start" if keep => {
                        kept.push(item("pid file of the Plex left running", path, *bytes))
                    }
                    _ => stray.push(item("file in plexburst's work dir", path, *bytes)),
                }
            }
            "x" => {
                let name = path.rsplit('/').next().unwrap_or(path);
                if name == format!("{}.tar.zst", state.run_id) {
                    let what = if state.export.is_some() {
                        "export archive"
                    } else {
                        "export archive (not verified: the run did not finish its export)"
                    };
                    kept.push(item(what, path, *bytes));
                } else if name == format!("{}.manifest.json", state.run_id) {
                    kept.push(item("export manifest", path, *bytes));
                } else {
                    stray.push(item("working file of the export", path, *bytes));
                }
            }
            s if s.starts_with('s') => {
                let Some(f) = s[1..].parse::<usize>().ok().and_then(|i| files.get(i)) else {
                    continue;
                };
                let why = match (f.kind, exit) {
                    (FileKind::Secret, _) => None,
                    (_, Exit::Failure) => {
                        Some("kept for `plexburst resume`; `plexburst destroy` removes it")
                    }
                    (_, _) if keep => Some("in use by the mount left running with --keep"),
                    (FileKind::Cache, _) if plan.options.keep_cache => Some("kept: --keep-cache"),
                    _ => None,
                };
                match why {
                    Some(why) => kept.push(item(&format!("{} ({why})", f.what), path, *bytes)),
                    None => stray.push(item(f.what, path, *bytes)),
                }
            }
            _ => {}
        }
    }
    Ok((kept, stray))
}

/// One error from several, each with its own context, or `Ok` when there were none.
fn combine(errors: Vec<anyhow::Error>) -> anyhow::Result<()> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.into_iter().next().expect("one error")),
        _ => Err(anyhow!(
            "{}",
            errors
                .iter()
                .map(|e| format!("{e:#}"))
                .collect::<Vec<_>>()
                .join("; ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    use super::*;
    use crate::remote::local::Local;
    use crate::state::SavedPref;

    /// A plan whose Plex (a command runtime, not running: no pid file) keeps its data in `dir`.
    fn plan(dir: &Path) -> Plan {
        let config = crate::config::Config::parse(&format!(
            "[target]\nkind = \"local\"\n[storage]\nkind = \"path\"\npath = \"/srv/media\"\n\
             [plex]\nruntime = \"command\"\ncommand = \"true\"\ndata_dir = \"{d}\"\n\
             [export]\ndestination = \"{d}/export\"\n\
             [[sections]]\nname = \"Music\"\ntype = \"music\"\npaths = [\"/srv/media/Music\"]\n",
            d = dir.display()
        ))
        .unwrap();
        crate::plan::build(&config, &crate::plan::RunOptions::default(), "/root")
    }

    fn saved(id: &str, kind: &str, value: &str, default: &str) -> SavedPref {
        SavedPref {
            id: id.into(),
            kind: kind.into(),
            value: value.into(),
            default: default.into(),
        }
    }

    /// Killed mid-analysis: the file holds plexburst's values, configure saved the user's.
    fn state(plan: &Plan) -> State {
        let mut st = State::new(
            Path::new("x.toml"),
            plan.options.clone(),
            "local".into(),
            &plan.phase_names(),
        );
        st.saved_prefs = Some(vec![
            saved("autoEmptyTrash", "bool", "true", "true"),
            saved("GenerateBIFBehavior", "text", "scheduled", "never"),
            saved("ScannerLowPriority", "bool", "true", "false"),
            saved("MusicAnalysisBehavior", "text", "scheduled", "scheduled"),
            saved("FriendlyName", "text", "Den", ""),
        ]);
        st.phase_mut("configure").status = PhaseStatus::Done;
        st
    }

    const DURING: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Preferences MachineIdentifier=\"m-1\" autoEmptyTrash=\"0\" PlexOnlineToken=\"tok&amp;secret-42\" GenerateBIFBehavior=\"never\" FriendlyName=\"Den\" ScannerLowPriority=\"0\" MusicAnalysisBehavior=\"asap\"/>\n";

    #[test]
    fn prefs_file_puts_the_users_settings_back_keeping_the_rest_the_owner_and_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan(dir.path());
        let path = Path::new(&plan.plex.prefs_path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, DURING).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o640)).unwrap();
        // Plex in docker owns its data dir as uid 1000; as root, the test gives the file that owner.
        let root = std::fs::metadata(path).unwrap().uid() == 0;
        if root {
            std::os::unix::fs::chown(path, Some(1000), Some(1000)).unwrap();
        }
        let st = state(&plan);
        let r = Local::new();
        assert_eq!(prefs_file(&r, &plan, &st).unwrap(), 4);
        assert_eq!(
            std::fs::read_to_string(path).unwrap(),
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Preferences MachineIdentifier=\"m-1\" PlexOnlineToken=\"tok&amp;secret-42\" GenerateBIFBehavior=\"scheduled\" FriendlyName=\"Den\" ScannerLowPriority=\"1\"/>\n"
        );
        let meta = std::fs::metadata(path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        if root {
            assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
        }
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "a temp file is left: {names:?}");
        // Done once, nothing more to do; once the restore phase ran, nothing to do either.
        assert_eq!(prefs_file(&r, &plan, &st).unwrap(), 0);
        std::fs::write(path, DURING).unwrap();
        let mut restored = st.clone();
        restored.phase_mut("restore").status = PhaseStatus::Done;
        assert_eq!(prefs_file(&r, &plan, &restored).unwrap(), 0);
    }

    #[test]
    fn prefs_file_goes_by_the_recorded_file_and_names_what_it_could_not_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan(dir.path());
        let path = Path::new(&plan.plex.prefs_path);
        let mut st = state(&plan);
        // No file: every managed setting is named, with the user's value.
        let (e, left) = prefs_file(&Local::new(), &plan, &st).unwrap_err();
        assert!(format!("{e:#}").contains("is gone"), "{e:#}");
        assert_eq!(
            left,
            [
                "autoEmptyTrash=true",
                "GenerateBIFBehavior=scheduled",
                "ScannerLowPriority=true",
                "MusicAnalysisBehavior=scheduled"
            ]
        );
        // The file stated autoEmptyTrash at its default before the run: it does again.
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, DURING).unwrap();
        st.saved_prefs_file = Some(
            [("autoEmptyTrash", Some("1"))]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.map(String::from)))
                .collect(),
        );
        prefs_file(&Local::new(), &plan, &st).unwrap();
        let attrs = crate::plex::xml::attrs(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(attrs["autoEmptyTrash"], "1");
        assert_eq!(attrs["PlexOnlineToken"], "tok&secret-42");
        assert!(!attrs.contains_key("MusicAnalysisBehavior"));
    }
}
