//! The pipeline: phase order, persistence of each phase in the run state, resume.
//!
//! Each phase lives in its own file and is idempotent: `resume` re-enters the phase that was
//! running when the run stopped, and skips the ones recorded as done. The state is saved before
//! and after every phase, so a crash of plexburst itself leaves an accurate record behind.

mod analyze;
mod cleanup;
mod configure;
mod export;
mod prepare;
mod restore;
mod scan;
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

/// The run's command journal: `<state dir>/runs/<run id>/commands.jsonl`.
pub fn journal_path(state_dir: &Path, run_id: &str) -> std::path::PathBuf {
    state_dir.join("runs").join(run_id).join("commands.jsonl")
}

fn new_ctx(plan: Plan, state_dir: &Path, store: StateStore, state: State) -> anyhow::Result<Ctx> {
    let interrupt = install_signal_flag()?;
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
        claim: None,
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
    let mut remote = connect(&plan, state_dir)?;
    // What destroy does to a run's target goes into that run's journal too.
    if let Some(st) = &state {
        remote = Box::new(crate::remote::journal::Journaled::open(
            remote,
            &journal_path(state_dir, &st.run_id),
        )?);
    }
    let storage = Storage::from_plan(&plan.storage);
    let cleaned = cleanup::destroy(remote.as_ref(), &plan, &storage, state.as_mut());
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
        "prepare" => prepare::run(ctx),
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
            eprintln!("run {} done", ctx.state.run_id);
            eprintln!("report:  {}", dir.join("report.md").display());
            if let Some(x) = &ctx.state.export {
                eprintln!("archive: {} (sha256 {})", x.archive, x.sha256);
                eprintln!("manifest: {}", x.manifest);
                println!("{}", x.archive);
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
            // Leave nothing running unless asked to: a stopped Plex resumes fine from its data dir.
            if let Err(ce) = cleanup::after_failure(ctx) {
                tracing::warn!(
                    "cleanup after the failure failed too: {ce:#}; run `plexburst destroy`"
                );
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
