//! The pipeline: phase order, persistence of each phase in the run state, resume.
//!
//! Each phase lives in its own file and is idempotent: `resume` re-enters the phase that was
//! running when the run stopped, and skips the ones recorded as done. The state is saved before
//! and after every phase, so a crash of plexburst itself leaves an accurate record behind.

mod analyze;
mod configure;
mod export;
mod prepare;
mod restore;
mod scan;
mod start_plex;
mod teardown;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::app::{BadInput, Interrupted};
use crate::cli::RunArgs;
use crate::config::{Config, RuntimeConfig, SectionConfig, TargetKind};
use crate::plex::api::Client;
use crate::remote::{Forward, Remote};
use crate::runtime::{CommandSpec, DockerSpec, Runtime, Volume};
use crate::state::{PhaseStatus, RunStatus, State, StateStore};
use crate::storage::Storage;

pub use configure::retry_starting;
pub use start_plex::ensure_plex;

/// The phases, in order.
pub const PHASES: [&str; 8] = [
    "prepare",
    "start-plex",
    "configure",
    "scan",
    "analyze",
    "restore",
    "export",
    "teardown",
];

/// A live connection to Plex: the API client and the port forward it goes through.
pub struct PlexConn {
    pub client: Client,
    pub _forward: Box<dyn Forward>,
}

/// Everything a phase works with.
pub struct Ctx<'a> {
    pub config: &'a Config,
    pub remote: Box<dyn Remote>,
    pub storage: Storage,
    pub store: StateStore,
    pub state: State,
    pub plex: Option<PlexConn>,
    /// The claim token, in memory only.
    pub claim: Option<String>,
    pub interrupt: Arc<AtomicBool>,
}

impl Ctx<'_> {
    pub fn interrupted(&self) -> bool {
        self.interrupt.load(Ordering::SeqCst)
    }

    /// Stop here if Ctrl-C or SIGTERM arrived.
    pub fn check_interrupt(&self) -> anyhow::Result<()> {
        if self.interrupted() {
            return Err(Interrupted("interrupted by a signal".into()).into());
        }
        Ok(())
    }

    pub fn save(&mut self) -> anyhow::Result<()> {
        self.store.save(&mut self.state)
    }

    pub fn client(&self) -> anyhow::Result<&Client> {
        match &self.plex {
            Some(p) => Ok(&p.client),
            None => bail!("internal: Plex is not connected"),
        }
    }

    pub fn runtime(&self) -> Runtime {
        runtime_for(self.config, self.claim.as_deref())
    }

    /// The config sections this run works on.
    pub fn sections(&self) -> Vec<&SectionConfig> {
        crate::plan::selected(self.config, &self.state.options.only_section)
    }

    /// Sleep up to `d`, waking early (and returning an error) on Ctrl-C/SIGTERM.
    pub fn pause(&self, d: Duration) -> anyhow::Result<()> {
        let end = std::time::Instant::now() + d;
        loop {
            self.check_interrupt()?;
            let now = std::time::Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
    }
}

/// The result of one phase.
pub enum Outcome {
    Done(Option<String>),
    Skipped(String),
}

/// The ssh target of the config (`~/` in the identity expanded), or `None` for a local target.
pub fn ssh_target(config: &Config) -> Option<crate::remote::ssh::SshTarget> {
    match &config.target.kind {
        TargetKind::Local => None,
        TargetKind::Ssh {
            host,
            port,
            user,
            identity,
            ssh_options,
        } => Some(crate::remote::ssh::SshTarget {
            host: host.clone(),
            port: *port,
            user: user.clone(),
            identity: identity.as_ref().map(|i| match i.strip_prefix("~/") {
                Some(rest) => Path::new(&std::env::var("HOME").unwrap_or_default()).join(rest),
                None => i.into(),
            }),
            extra_options: ssh_options.clone(),
        }),
    }
}

/// Open the remote for the configured target.
pub fn connect(config: &Config, state_dir: &Path) -> anyhow::Result<Box<dyn Remote>> {
    let Some(t) = ssh_target(config) else {
        return Ok(Box::new(crate::remote::local::Local::new()));
    };
    let ssh = crate::remote::ssh::Ssh::connect(&t, &state_dir.join("ssh"))
        .with_context(|| format!("cannot connect to {}@{}:{}", t.user, t.host, t.port))?;
    Ok(Box::new(ssh))
}

/// How Plex runs on the target. `claim` is only needed to start an unclaimed server.
pub fn runtime_for(config: &Config, claim: Option<&str>) -> Runtime {
    let plex = &config.plex;
    let secret_env: Vec<(String, String)> = claim
        .map(|c| vec![("PLEX_CLAIM".to_string(), c.to_string())])
        .unwrap_or_default();
    match &plex.runtime {
        RuntimeConfig::Docker {
            image,
            container_name,
            docker_args,
        } => {
            let mut env: Vec<(String, String)> = vec![
                ("PLEX_UID".into(), "1000".into()),
                ("PLEX_GID".into(), "1000".into()),
                ("TZ".into(), "UTC".into()),
            ];
            for (k, v) in &plex.env {
                env.retain(|(ek, _)| ek != k);
                env.push((k.clone(), v.clone()));
            }
            let mut volumes = vec![Volume {
                host: plex.data_dir.clone(),
                container: "/config".into(),
                options: "rw".into(),
            }];
            // The storage decides how the media is bound (same path inside, rslave for mounts).
            let storage = config
                .storage
                .build(&config.target.profile, &config.target.work_dir);
            volumes.extend(storage.container_volumes());
            Runtime::Docker(DockerSpec {
                name: container_name.clone(),
                image: image.clone(),
                env,
                secret_env,
                volumes,
                port: plex.port,
                extra_args: docker_args.clone(),
            })
        }
        RuntimeConfig::Command { command } => Runtime::Command(CommandSpec {
            command: crate::plan::command_line(command, &plex.data_dir, plex.port),
            env: plex
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            secret_env,
            port: plex.port,
            pid_file: format!("{}/plex.pid", config.target.work_dir),
            log_file: format!("{}/plex.log", config.target.work_dir),
        }),
    }
}

fn install_signal_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // The first signal asks for a clean stop at the next poll; a second one exits at once.
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag))
            .context("cannot install the signal handler")?;
        signal_hook::flag::register(sig, Arc::clone(&flag))
            .context("cannot install the signal handler")?;
    }
    Ok(flag)
}

fn new_ctx<'a>(
    config: &'a Config,
    state_dir: &Path,
    store: StateStore,
    state: State,
) -> anyhow::Result<Ctx<'a>> {
    let interrupt = install_signal_flag()?;
    let remote = connect(config, state_dir)?;
    let storage = config
        .storage
        .build(&config.target.profile, &config.target.work_dir);
    Ok(Ctx {
        config,
        remote,
        storage,
        store,
        state,
        plex: None,
        claim: None,
        interrupt,
    })
}

/// `plexburst run`.
pub fn run(
    config: &Config,
    config_path: &Path,
    state_dir: &Path,
    args: RunArgs,
) -> anyhow::Result<()> {
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
        args,
        crate::plan::describe_target(config),
        &PHASES,
    );
    let mut ctx = new_ctx(config, state_dir, store, state)?;
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

/// `plexburst resume`.
pub fn resume(config: &Config, state_dir: &Path, allow_deleted: bool) -> anyhow::Result<()> {
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
    let mut ctx = new_ctx(config, state_dir, store, state)?;
    ctx.state.status = RunStatus::Running;
    ctx.state.error = None;
    // `resume --allow-deleted` is how a run the trash gate stopped is let through.
    if allow_deleted {
        ctx.state.options.allow_deleted = true;
    }
    ctx.save()?;
    tracing::info!("resuming run {}", ctx.state.run_id);
    execute(&mut ctx)
}

/// Stop Plex when it runs, then check that it stopped: nothing goes on (an export, a run's end)
/// while it still writes. `fix` is what the error tells the user to do.
fn stop_plex(remote: &dyn Remote, rt: &Runtime, grace: Duration, fix: &str) -> anyhow::Result<()> {
    if rt.is_running(remote)? {
        tracing::info!("stopping Plex on {}", remote.describe());
        rt.stop(remote, grace).context("cannot stop Plex")?;
    }
    if rt.is_running(remote)? {
        bail!(
            "Plex is still running on {} after the stop; {fix}",
            remote.describe()
        );
    }
    Ok(())
}

impl Ctx<'_> {
    /// Stop the run's Plex (see `stop_plex`) and record that it no longer runs.
    pub fn stop_plex(&mut self, fix: &str) -> anyhow::Result<()> {
        self.plex = None;
        stop_plex(
            self.remote.as_ref(),
            &self.runtime(),
            self.config.plex.stop_grace,
            fix,
        )?;
        self.state.plex_started = false;
        Ok(())
    }

    /// Unmount the storage if this run mounted it.
    pub fn release_storage(&mut self) -> anyhow::Result<()> {
        if self.state.storage_mounted {
            self.storage
                .unmount(self.remote.as_ref())
                .context("cannot unmount the storage")?;
            self.state.storage_mounted = false;
        }
        Ok(())
    }
}

/// `plexburst destroy`: stop whatever a run left (Plex, the mount) and close its state.
pub fn destroy(config: &Config, state_dir: &Path) -> anyhow::Result<()> {
    let store = StateStore::lock(state_dir)?;
    let state = store.load()?;
    let remote = connect(config, state_dir)?;
    let rt = runtime_for(config, None);
    stop_plex(
        remote.as_ref(),
        &rt,
        config.plex.stop_grace,
        "look at it with `plexburst ssh`",
    )?;
    if state.as_ref().is_some_and(|s| s.storage_mounted) {
        let storage = config
            .storage
            .build(&config.target.profile, &config.target.work_dir);
        storage.unmount(remote.as_ref())?;
    }
    if let Some(mut st) = state {
        st.plex_started = false;
        st.storage_mounted = false;
        if st.status != RunStatus::Done {
            st.status = RunStatus::Destroyed;
        }
        st.current_phase = None;
        store.save(&mut st)?;
        crate::report::write(store.dir(), &st)?;
        eprintln!(
            "run {} destroyed; nothing of it is running on {}",
            st.run_id,
            remote.describe()
        );
    } else {
        eprintln!(
            "no run state in {}; nothing of plexburst is running on {}",
            state_dir.display(),
            remote.describe()
        );
    }
    Ok(())
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
    if prepared && !ctx.state.storage_mounted {
        ctx.storage
            .mount(ctx.remote.as_ref())
            .context("mounting the storage again failed")?;
        ctx.state.storage_mounted = true;
        ctx.save()?;
    }
    for name in PHASES {
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
            if !ctx.state.options.keep
                && let Err(ce) = cleanup(ctx)
            {
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

/// Stop Plex and unmount the storage after a failure or an interrupt.
fn cleanup(ctx: &mut Ctx) -> anyhow::Result<()> {
    ctx.stop_plex("stop it with `plexburst destroy`")?;
    ctx.release_storage()
}
