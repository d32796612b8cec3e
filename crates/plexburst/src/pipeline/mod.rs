//! The pipeline: phase order, persistence of each phase in the run state, resume.
//!
//! Each phase lives in its own file and is idempotent: `resume` re-enters the phase that was
//! running when the run stopped, and skips the ones recorded as done. The state is saved before
//! and after every phase, so a crash of plexburst itself leaves an accurate record behind.

mod analyze;
mod cleanup;
mod configure;
mod export;
mod preflight;
mod prepare;
pub mod provision;
mod restore;
mod scan;
mod seed;
mod start_plex;
mod teardown;

use std::path::Path;

use anyhow::{Context, bail};

use crate::error::{BadInput, Interrupted};
use crate::plan::Plan;
use crate::session::{Ctx, connect, install_signal_flag};
use crate::state::{PhaseStatus, RunStatus, State, StateStore};
use crate::storage::Storage;

/// The result of one phase.
pub enum Outcome {
    Done(Option<String>),
    Skipped(String),
}

pub use preflight::{check as preflight, summary as survey_summary};

/// The run's command journal: `<state dir>/runs/<run id>/commands.jsonl`.
pub fn journal_path(state_dir: &Path, run_id: &str) -> std::path::PathBuf {
    state_dir.join("runs").join(run_id).join("commands.jsonl")
}

fn new_ctx(plan: Plan, state_dir: &Path, store: StateStore, state: State) -> anyhow::Result<Ctx> {
    let interrupt = install_signal_flag()?;
    let run_dir = state_dir.join("runs").join(&state.run_id);
    std::fs::create_dir_all(&run_dir)?;
    crate::logging::to_file(&run_dir.join("plexburst.log"))?;
    let remote = connect(&plan, state_dir)?;
    let remote = Box::new(crate::remote::journal::Journaled::open(
        remote,
        &journal_path(state_dir, &state.run_id),
    )?);
    let storage = Storage::from_plan(&plan.storage);
    Ok(Ctx {
        plan,
        remote,
        storage,
        store,
        state,
        plex: None,
        claim: Default::default(),
        interrupt,
    })
}

/// `plexburst run`: store the plan, then execute it phase by phase.
pub fn run(plan: Plan, config_path: &Path, state_dir: &Path) -> anyhow::Result<()> {
    let store = StateStore::lock(state_dir)?;
    if let Some(old) = store.load()?
        && matches!(
            old.status,
            RunStatus::Running | RunStatus::Interrupted | RunStatus::Failed
        )
        && !stopped_before_plex(&old)
    {
        return Err(BadInput(format!(
            "run {} in {} did not finish ({:?}); continue it with `plexburst resume` or clean it up with `plexburst destroy`",
            old.run_id,
            state_dir.display(),
            old.status
        ))
        .into());
    }
    let config_abs =
        std::fs::canonicalize(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    let state = State::new(
        &config_abs,
        plan.options.clone(),
        plan.target.describe.clone(),
        &plan.phase_names(),
    );
    // The plan is on disk before the first phase: `resume` and `destroy` execute exactly it.
    store.save_plan(&plan)?;
    let mut ctx = new_ctx(plan, state_dir, store, state)?;
    ctx.state.target = ctx.remote.describe();
    ctx.save()?;
    tracing::info!(
        "run {} on {} (state in {})",
        ctx.state.run_id,
        ctx.state.target,
        state_dir.display()
    );
    execute(&mut ctx)
}

/// A run that stopped before Plex ever started and left nothing mounted (a failed preflight, a
/// missing tool) has nothing to resume or clean up: a new `run` replaces it, so fixing a typo in
/// the config is "edit, run again".
fn stopped_before_plex(old: &State) -> bool {
    old.status != RunStatus::Running
        && !old.plex_started
        && !old.storage_mounted
        && old.phase("start-plex").is_none_or(|p| p.attempts == 0)
}

/// The plan a run in `state_dir` stored, if any.
pub fn stored_plan(state_dir: &Path) -> anyhow::Result<Option<Plan>> {
    StateStore::read_plan(state_dir)
}

/// `plexburst resume`: execute the stored plan from where it stopped. `fresh` builds the plan
/// the config on disk yields now for the stored run's options; when it differs, the resume stops
/// and names every difference, unless `replan` says to take the fresh one.
pub fn resume(
    state_dir: &Path,
    allow_deleted: bool,
    replan: bool,
    fresh: impl FnOnce(&crate::plan::RunOptions) -> Plan,
) -> anyhow::Result<()> {
    // Nothing to resume is said before the lock, which would make the state dir.
    if !state_dir.join("state.json").exists() {
        return Err(BadInput(format!(
            "no run to resume in {}; start one with `plexburst run` (or pass the run's --state-dir)",
            state_dir.display()
        ))
        .into());
    }
    let store = StateStore::lock(state_dir)?;
    let Some(state) = store.load()? else {
        return Err(BadInput(format!(
            "no run to resume in {}; start one with `plexburst run`",
            state_dir.display()
        ))
        .into());
    };
    if matches!(state.status, RunStatus::Done | RunStatus::Destroyed) {
        return Err(BadInput(format!(
            "run {} is {:?}; nothing to resume (start a new one with `plexburst run`)",
            state.run_id, state.status
        ))
        .into());
    }
    let Some(mut stored) = StateStore::read_plan(state_dir)? else {
        return Err(BadInput(format!(
            "run {} has no stored plan in {} (an older plexburst started it); stop what it left with `plexburst destroy`, then start a new run",
            state.run_id,
            state_dir.display()
        ))
        .into());
    };
    // `resume --allow-deleted` is how a run the trash gate stopped is let through.
    if allow_deleted {
        stored.allow_deletions();
    }
    let fresh = fresh(&stored.options);
    let plan = match stored.differences(&fresh) {
        d if d.is_empty() => stored,
        _ if replan => {
            tracing::warn!(
                "the config changed since the run started; resuming with the new plan (--replan)"
            );
            fresh
        }
        d => {
            return Err(BadInput(format!(
                "the config now plans a different run than the one stored for run {}:\n  {}\nput the config back, or resume with the new plan: `plexburst resume --replan`",
                state.run_id,
                d.join("\n  ")
            ))
            .into());
        }
    };
    store.save_plan(&plan)?;
    let mut ctx = new_ctx(plan, state_dir, store, state)?;
    ctx.state.status = RunStatus::Running;
    ctx.state.error = None;
    ctx.state.options = ctx.plan.options.clone();
    // A rented instance deleted after the failure took its data dir with it: the resume rents a
    // new one and starts the job over on it.
    if provision::scaleway(&ctx.plan).is_some()
        && ctx.state.instance.is_none()
        && ctx
            .state
            .phase("provision")
            .is_some_and(|p| p.status == PhaseStatus::Done)
    {
        tracing::info!(
            "the run's instance was deleted when it stopped; resuming on a new one, from the start"
        );
        for p in ctx.state.phases.iter_mut() {
            p.status = PhaseStatus::Pending;
        }
        ctx.state.sections.clear();
        ctx.state.saved_prefs = None;
        ctx.state.plex_started = false;
        ctx.state.storage_mounted = false;
    }
    ctx.save()?;
    tracing::info!("resuming run {}", ctx.state.run_id);
    execute(&mut ctx)
}

/// `plexburst destroy`: stop whatever a run left (Plex, the mount) and close its state. The
/// stored plan says what the run started; `fallback` (the config's) serves when none is stored.
pub fn destroy(state_dir: &Path, fallback: Plan) -> anyhow::Result<()> {
    let store = StateStore::lock(state_dir)?;
    let mut state = store.load()?;
    let plan = StateStore::read_plan(state_dir)?.unwrap_or(fallback);
    let rented = state.as_ref().is_some_and(|s| s.instance.is_some());
    let mut remote = match connect(&plan, state_dir) {
        Ok(r) => r,
        // An instance that cannot be reached is deleted all the same.
        Err(e) if rented => {
            tracing::warn!(
                "cannot reach the instance ({e:#}); deleting it without stopping Plex first"
            );
            Box::new(crate::remote::Pending(plan.target.describe.clone()))
        }
        Err(e) => return Err(e),
    };
    // What destroy does to a run's target goes into that run's journal too.
    if let Some(st) = &state {
        remote = Box::new(crate::remote::journal::Journaled::open(
            remote,
            &journal_path(state_dir, &st.run_id),
        )?);
    }
    let storage = Storage::from_plan(&plan.storage);
    // A rented target that no longer exists (or never did) has nothing on it to clean.
    let gone = provision::scaleway(&plan).is_some()
        && state
            .as_ref()
            .is_none_or(|s| s.instance.is_none() && s.iam.is_empty());
    let mut cleaned = if gone {
        Ok(())
    } else {
        cleanup::destroy(remote.as_ref(), &plan, &storage, state.as_mut())
    };
    if let Some(st) = state.as_mut()
        && (st.instance.is_some() || !st.iam.is_empty())
    {
        // A rented instance goes whatever its cleanup said: with it goes all it held.
        if let Err(e) = &cleaned {
            tracing::warn!("{e:#}; the instance is deleted anyway");
        }
        let (_, api) = provision::connect_api()?;
        provision::release_state(st, &api, &mut |s| store.save(s))?;
        eprintln!("deleted: {}", st.released.join(", "));
        st.plex_started = false;
        st.storage_mounted = false;
        cleaned = Ok(());
    }
    if let Some(mut st) = state {
        // Destroyed once nothing of it runs; what could not be removed is in the report.
        let stopped = !st.plex_started && !st.storage_mounted;
        if stopped && st.status != RunStatus::Done {
            st.status = RunStatus::Destroyed;
        }
        st.current_phase = None;
        store.save(&mut st)?;
        crate::report::write(store.dir(), &st)?;
        if stopped {
            eprintln!(
                "run {} destroyed; nothing of it is running on {}",
                st.run_id,
                remote.describe()
            );
        }
    } else {
        eprintln!(
            "no run state in {}; nothing of plexburst is running on {}",
            state_dir.display(),
            remote.describe()
        );
    }
    cleaned
}

fn run_phase(ctx: &mut Ctx, name: &str) -> anyhow::Result<Outcome> {
    match name {
        "provision" => provision::run(ctx),
        "prepare" => prepare::run(ctx),
        "preflight" => preflight::run(ctx),
        "seed" => seed::run(ctx),
        "start-plex" => start_plex::run(ctx),
        "configure" => configure::run(ctx),
        "scan" => scan::run(ctx),
        "analyze" => analyze::run(ctx),
        "restore" => restore::run(ctx),
        "export" => export::run(ctx),
        "teardown" => teardown::run(ctx),
        other => bail!("internal: unknown phase {other}"),
    }
}

fn execute(ctx: &mut Ctx) -> anyhow::Result<()> {
    let mut failure: Option<anyhow::Error> = None;
    // A resumed run whose storage was released after the interruption mounts it again first.
    let prepared = ctx
        .state
        .phase("prepare")
        .is_some_and(|p| p.status == PhaseStatus::Done);
    // Its secret files were removed when it stopped; the phases ahead need them again.
    if prepared {
        ctx.storage
            .push_secrets(ctx.remote.as_ref())
            .context("pushing the storage's secret files again failed")?;
    }
    if prepared && !ctx.state.storage_mounted {
        ctx.storage
            .mount(ctx.remote.as_ref())
            .context("mounting the storage again failed")?;
        ctx.state.storage_mounted = true;
        ctx.save()?;
    }
    let phases: Vec<String> = ctx
        .plan
        .phase_names()
        .into_iter()
        .map(String::from)
        .collect();
    for name in phases.iter().map(String::as_str) {
        let status = ctx
            .state
            .phase(name)
            .map(|p| p.status)
            .unwrap_or(PhaseStatus::Pending);
        if matches!(status, PhaseStatus::Done | PhaseStatus::Skipped) {
            continue;
        }
        if let Err(e) = ctx.check_interrupt() {
            failure = Some(e);
            break;
        }
        {
            let rec = ctx.state.phase_mut(name);
            rec.status = PhaseStatus::Running;
            rec.attempts += 1;
            rec.started_at = Some(crate::state::now());
            rec.ended_at = None;
            rec.detail = None;
        }
        ctx.state.current_phase = Some(name.to_string());
        ctx.save()?;
        tracing::info!("phase {name}: started");
        let started = std::time::Instant::now();
        let result = run_phase(ctx, name);
        let rec = ctx.state.phase_mut(name);
        rec.ended_at = Some(crate::state::now());
        match result {
            Ok(Outcome::Done(detail)) => {
                rec.status = PhaseStatus::Done;
                rec.detail = detail;
                tracing::info!(
                    "phase {name}: done in {:.1}s",
                    started.elapsed().as_secs_f64()
                );
            }
            Ok(Outcome::Skipped(why)) => {
                rec.status = PhaseStatus::Skipped;
                tracing::info!("phase {name}: skipped ({why})");
                rec.detail = Some(why);
            }
            Err(e) => {
                let interrupted = e.downcast_ref::<Interrupted>().is_some();
                rec.status = if interrupted {
                    PhaseStatus::Interrupted
                } else {
                    PhaseStatus::Failed
                };
                rec.detail = Some(format!("{e:#}"));
                failure = Some(e.context(format!("phase {name} failed")));
                ctx.save()?;
                break;
            }
        }
        ctx.save()?;
    }
    ctx.state.current_phase = None;
    match failure {
        None => {
            ctx.state.status = RunStatus::Done;
            ctx.save()?;
            let dir = crate::report::write(ctx.store.dir(), &ctx.state)?;
            let warnings = &ctx.state.warnings;
            if warnings.is_empty() {
                eprintln!("run {} done", ctx.state.run_id);
            } else {
                eprintln!(
                    "run {} done with warnings:\n  - {}",
                    ctx.state.run_id,
                    warnings.join("\n  - ")
                );
            }
            eprintln!("report:  {}", dir.join("report.md").display());
            if let Some(x) = &ctx.state.export {
                eprintln!("archive: {} (sha256 {})", x.archive, x.sha256);
                eprintln!("manifest: {}", x.manifest);
                println!("{}", x.archive);
            }
            if ctx.plan.options.strict && !warnings.is_empty() {
                bail!(
                    "run {} ended with {} warning(s), and --strict makes that a failure",
                    ctx.state.run_id,
                    warnings.len()
                );
            }
            Ok(())
        }
        Some(e) => {
            let interrupted = e.downcast_ref::<Interrupted>().is_some() || ctx.interrupted();
            ctx.state.status = if interrupted {
                RunStatus::Interrupted
            } else {
                RunStatus::Failed
            };
            ctx.state.error = Some(format!("{e:#}"));
            ctx.save()?;
            // The target's logs first: on a rented instance they die with it.
            match fetch_target_logs(ctx) {
                Ok(dir) => eprintln!("target logs: {}", dir.display()),
                Err(e) => tracing::warn!("cannot keep the target's logs: {e:#}"),
            }
            // Leave nothing running unless asked to: a stopped Plex resumes fine from its data dir.
            if let Err(ce) = cleanup::after_failure(ctx) {
                tracing::warn!(
                    "cleanup after the failure failed too: {ce:#}; run `plexburst destroy`"
                );
            }
            // A rented instance is deleted after a failure too (unless --keep): a resume
            // provisions a new one, which is cheaper than one left running.
            if !ctx.plan.options.keep && (ctx.state.instance.is_some() || !ctx.state.iam.is_empty())
            {
                let released =
                    provision::connect_api().and_then(|(_, api)| provision::release(ctx, &api));
                if let Err(e) = released {
                    tracing::warn!("deleting the instance failed: {e:#}; run `plexburst destroy`");
                }
            }
            ctx.save()?;
            let dir = crate::report::write(ctx.store.dir(), &ctx.state)?;
            eprintln!(
                "run {} {}; state kept in {}",
                ctx.state.run_id,
                if interrupted { "interrupted" } else { "failed" },
                ctx.store.dir().display()
            );
            eprintln!("report: {}", dir.join("report.md").display());
            eprintln!(
                "continue with `plexburst resume`, or stop everything it left with `plexburst destroy`"
            );
            if interrupted && e.downcast_ref::<Interrupted>().is_none() {
                return Err(Interrupted(format!("{e:#}")).into());
            }
            Err(e)
        }
    }
}

/// Lines kept of each log fetched from the target.
const TARGET_LOG_LINES: usize = 2000;

/// Copy the tails of the target's logs (Plex's server log, the rclone mount log, cloud-init's
/// output on a rented instance) into `runs/<id>/target-logs/`, before anything that could take
/// them away (an instance's logs die with it). Best effort: what cannot be read is said in place.
pub fn fetch_target_logs(ctx: &Ctx) -> anyhow::Result<std::path::PathBuf> {
    let dir = ctx
        .store
        .dir()
        .join("runs")
        .join(&ctx.state.run_id)
        .join("target-logs");
    std::fs::create_dir_all(&dir)?;
    let mut logs: Vec<(&str, String)> = Vec::new();
    logs.push((
        "plex.log",
        match ctx
            .runtime()
            .log_tail(ctx.remote.as_ref(), TARGET_LOG_LINES)
        {
            Ok(t) => t,
            Err(e) => format!("(cannot read the server's log: {e:#})\n"),
        },
    ));
    let tail = |path: &str| {
        let cmd = crate::remote::Cmd::new(format!(
            "tail -n {TARGET_LOG_LINES} {} 2>&1",
            crate::remote::quote(path)
        ));
        match ctx.remote.exec(&cmd) {
            Ok(o) => o.stdout_str(),
            Err(e) => format!("(cannot read {path}: {e})\n"),
        }
    };
    if let Some(rc) = ctx.storage.as_rclone() {
        logs.push(("rclone-mount.log", tail(&rc.log_path())));
    }
    if ctx.state.instance.is_some() {
        logs.push((
            "cloud-init-output.log",
            tail("/var/log/cloud-init-output.log"),
        ));
    }
    for (name, text) in logs {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(dir)
}
