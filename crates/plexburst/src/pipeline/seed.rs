//! Phase seed (a seeded run only, before Plex starts): put the home server's DB or a plexburst
//! archive into the empty data dir, check it and repair it when damaged, remap the paths that
//! moved, and make sure the DB's sections and paths match the storage before any scan may trash
//! what it cannot find. Every stop here is the input's fault (exit 2) and costs no scan.

use anyhow::Context;

use super::Outcome;
use crate::error::BadInput;
use crate::plan::SeedPlan;
use crate::remote::{Cmd, Remote, quote};
use crate::seed::{self, SeedKind, SeedRecord, SeedSource};
use crate::session::Ctx;
use crate::storage::StorageSpec;

/// The folder of the data dir that holds the DBs.
const DB_DIR: &str = "Library/Application Support/Plex Media Server/Plug-in Support/Databases";

pub fn run(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let out = seed(ctx);
    if out.is_err() && ctx.state.seed.is_some() {
        // Nothing of a refused seed stays: the next `run` finds the empty data dir it needs.
        let data_dir = ctx.plan.plex.data_dir.clone();
        if let Err(e) = ctx.remote.run(&Cmd::new(uninstall(&data_dir))) {
            tracing::warn!("cannot remove the refused seed from {data_dir}: {e:#}");
        }
        if let Err(e) = super::cleanup::remove_seed_copy(ctx.remote.as_ref(), &ctx.plan) {
            tracing::warn!("{e:#}");
        }
        ctx.state.seed = None;
    }
    out
}

fn seed(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let sp = ctx
        .plan
        .seed
        .clone()
        .context("internal: seed phase without a seed")?;
    let data_dir = ctx.plan.plex.data_dir.clone();
    let db = ctx.plan.plex.db_path.clone();
    let r = ctx.remote.as_ref();
    stage(r, &ctx.plan.storage, &sp)?;
    // A re-entered phase starts again from the staged file: what a first attempt installed is ours.
    let ours = ctx.state.seed.is_some();
    install(r, &sp, &data_dir, &db, ours)?;
    let installed_at = jiff::Timestamp::now().as_second();
    ctx.state.seed = Some(SeedRecord {
        source: sp.source.describe(),
        installed_at,
        ..Default::default()
    });
    ctx.save()?;

    let mut rec = ctx.state.seed.clone().unwrap_or_default();
    let r = ctx.remote.as_ref();
    rec.check = seed::check(r, &db)?;
    if !rec.check.ok() {
        let keep = format!("{db}.damaged-{installed_at}");
        tracing::warn!(
            "the seed DB is damaged ({}); rebuilding it with .recover, keeping the original as {keep}",
            rec.check.problems.join("; ")
        );
        match seed::recover(r, &sp.sqlite, &db, &keep, &rec.check.damaged_tables()) {
            Ok((how, after)) if after.ok() => {
                tracing::info!("the seed DB was rebuilt ({how:?}) and checks sound");
                rec.recovered_from = Some(keep);
                rec.rebuilt = Some(how);
            }
            Ok((_, after)) => {
                return Err(unrecoverable(&sp, &rec.check.problems, &after.problems));
            }
            Err(e) => return Err(unrecoverable(&sp, &rec.check.problems, &[format!("{e:#}")])),
        }
    }
    if !sp.remap.is_empty() {
        let backup = format!("{db}.pre-remap-{installed_at}");
        rec.remap = seed::remap(r, &sp.sqlite, &db, &backup, &sp.remap)?;
        rec.remap_backup = Some(backup);
        tracing::info!(
            "remapped: {}",
            rec.remap
                .iter()
                .map(|(k, v)| format!("{k} {v} rows"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    rec.sections = seed::counts(r, &db)?;
    ctx.state.seed = Some(rec.clone());
    ctx.save()?;
    check_locations(&ctx.plan, &rec.sections)?;

    let locations: Vec<String> = rec
        .sections
        .iter()
        .flat_map(|s| s.locations.clone())
        .collect();
    let sample = seed::sample(ctx.remote.as_ref(), &db, sp.sample, &locations)?;
    tracing::info!("seed paths on the storage: {}", sample.summary());
    let share = sample.share_missing();
    rec.sample = Some(sample.clone());
    ctx.state.seed = Some(rec.clone());
    if share > sp.missing_limit {
        let what = format!(
            "the seeded DB's paths are not on the storage: {}",
            sample.summary()
        );
        if !sp.allow_missing {
            return Err(BadInput(format!(
                "{what}. More than seed.missing_limit ({:.0} %) are missing, so a scan would trash those items. If folders moved in the bucket, map them with [remap] \"old/prefix\" = \"new/prefix\"; if they are really gone, run again with --allow-missing",
                100.0 * sp.missing_limit
            ))
            .into());
        }
        let w = format!("seed: {what} (--allow-missing)");
        tracing::warn!("{w}");
        ctx.state.warnings.push(w);
    }
    let summary = rec
        .sections
        .iter()
        .map(|s| {
            if s.section_type == 8 {
                format!(
                    "{}: {} tracks, {} Sonic-analysed",
                    s.name, s.tracks, s.sonic
                )
            } else {
                format!("{}: {} items", s.name, s.items)
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    Ok(Outcome::Done(Some(format!(
        "{summary}{}; {}",
        if rec.recovered_from.is_some() {
            " (repaired with .recover)"
        } else {
            ""
        },
        sample.summary()
    ))))
}

fn unrecoverable(sp: &SeedPlan, before: &[String], after: &[String]) -> anyhow::Error {
    BadInput(format!(
        "the seed {} is damaged ({}) and cannot be repaired (.recover, then table by table: {}); nothing was started. Take another copy from your home server (stop Plex first) or an older plexburst archive",
        sp.source.describe(),
        before.join("; "),
        after.join("; ")
    ))
    .into()
}

/// Have the seed file at `sp.staged` on the target.
fn stage(r: &dyn Remote, storage: &StorageSpec, sp: &SeedPlan) -> anyhow::Result<()> {
    let dir = sp.staged.rsplit_once('/').map(|(d, _)| d).unwrap_or(".");
    match &sp.source {
        SeedSource::Target { path } => {
            r.run(&Cmd::new(format!("test -f {}", quote(path))))
                .map_err(|_| {
                    BadInput(format!("--seed target:{path}: no such file on the target"))
                })?;
        }
        SeedSource::Local { path } => {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read the seed {path}"))?;
            r.run(&Cmd::new(format!("mkdir -p {}", quote(dir))))?;
            r.put_file(&sp.staged, &bytes, 0o600)
                .context("cannot copy the seed to the target")?;
        }
        SeedSource::Bucket { object } => {
            let StorageSpec::Rclone(rc) = storage else {
                return Err(BadInput(
                    "--seed bucket:… needs storage.kind = \"rclone\"; give a local path or target:/path".into(),
                )
                .into());
            };
            r.run(
                &Cmd::new(format!(
                    "mkdir -p {} && {} copyto {} {}",
                    quote(dir),
                    rc.rclone(),
                    quote(&rc.object(object)),
                    quote(&sp.staged)
                ))
                .timeout(std::time::Duration::from_secs(6 * 3600)),
            )
            .map_err(|e| {
                BadInput(format!(
                    "--seed bucket:{object}: cannot copy it from the bucket ({e})"
                ))
            })?;
        }
    }
    Ok(())
}

/// Restore the seed into the data dir: an archive's DBs, `Metadata/` and `Media/` (not its
/// Preferences.xml: this Plex has its own identity and claim), or the bare DB. The data dir
/// must hold no library, unless `ours` (a previous attempt of this phase put it there).
fn install(
    r: &dyn Remote,
    sp: &SeedPlan,
    data_dir: &str,
    db: &str,
    ours: bool,
) -> anyhow::Result<()> {
    let pms = format!(
        "{}/Library/Application Support/Plex Media Server",
        data_dir.trim_end_matches('/')
    );
    if !ours {
        let has = r
            .run(&Cmd::new(format!(
                "test -e {} && echo yes || echo no",
                quote(db)
            )))?
            .stdout_str();
        if has.trim() == "yes" {
            return Err(BadInput(format!(
                "plex.data_dir {data_dir} already holds a Plex library; a seeded run starts from an empty data dir: move it away or point plex.data_dir at a new folder"
            ))
            .into());
        }
    }
    let clean = uninstall(data_dir);
    let put = match sp.kind {
        SeedKind::Archive => format!(
            "zstd -dc {a} | tar -x -C {dd} --exclude 'Preferences.xml'",
            a = quote(&sp.staged),
            dd = quote(data_dir)
        ),
        SeedKind::Db => format!(
            "mkdir -p {dir} && cp -f {s} {db} && rm -f {db}-wal {db}-shm",
            dir = quote(&format!("{}/{DB_DIR}", data_dir.trim_end_matches('/'))),
            s = quote(&sp.staged),
            db = quote(db)
        ),
    };
    r.run(
        &Cmd::new(format!(
            "set -e\nmkdir -p {}\n{clean}\n{put}\n",
            quote(&pms)
        ))
        .timeout(std::time::Duration::from_secs(6 * 3600)),
    )
    .with_context(|| {
        format!(
            "cannot restore the seed {} into {data_dir}",
            sp.source.describe()
        )
    })?;
    Ok(())
}

/// Remove what `install` put in the data dir.
fn uninstall(data_dir: &str) -> String {
    let pms = format!(
        "{}/Library/Application Support/Plex Media Server",
        data_dir.trim_end_matches('/')
    );
    format!(
        "rm -rf {} {} {}",
        quote(&format!("{pms}/Plug-in Support/Databases")),
        quote(&format!("{pms}/Metadata")),
        quote(&format!("{pms}/Media")),
    )
}

/// Every section of the plan that the seed has (by name) must have the plan's locations: a
/// section whose folders moved is a `[remap]` to add, or the scan would trash it.
fn check_locations(plan: &crate::plan::Plan, seeded: &[seed::SeedSection]) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for s in &plan.sections {
        let Some(had) = seeded.iter().find(|x| x.name == s.name) else {
            continue;
        };
        let mut a: Vec<&str> = had
            .locations
            .iter()
            .map(|x| x.trim_end_matches('/'))
            .collect();
        let mut b: Vec<&str> = s.paths.iter().map(|x| x.trim_end_matches('/')).collect();
        a.sort();
        b.sort();
        if a != b {
            let hint = match (a.as_slice(), b.as_slice()) {
                ([old], [new]) => format!("add [remap] \"{old}\" = \"{new}\""),
                _ => "map each old folder to its new one under [remap]".to_string(),
            };
            problems.push(format!(
                "section {:?}: the seed has {}, the config {}; {hint}",
                s.name,
                a.join(", "),
                b.join(", ")
            ));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(BadInput(format!(
        "the seeded library's folders are not the config's:\n  {}",
        problems.join("\n  ")
    ))
    .into())
}
