//! The live run: the plan it executes, the journaled connection to the target, the storage and
//! Plex runtime built from the plan, the state, and the connection to Plex.
//!
//! The phases (`pipeline`) and the watch loop (`monitor`) both work on a `Ctx`; it lives here,
//! below both, so the monitor needs nothing from the pipeline. Starting and reconnecting to Plex
//! (`ensure_plex`) is here too: every phase that talks to Plex and the monitor after a crash use it.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::error::{BadInput, Interrupted};
use crate::plan::{CLAIM_ENV, Plan, TargetSpec};
use crate::plex::api::{ApiError, Client};
use crate::remote::{Cmd, Forward, Remote, RemoteError, quote};
use crate::runtime::Runtime;
use crate::state::{State, StateStore};
use crate::storage::Storage;

const API_TIMEOUT: Duration = Duration::from_secs(30);
const RETRY: Duration = Duration::from_millis(250);

/// A live connection to Plex: the API client and the port forward it goes through.
pub struct PlexConn {
    pub client: Client,
    pub _forward: Box<dyn Forward>,
}

/// Everything a phase works with.
pub struct Ctx {
    /// What runs. Nothing in a run reads the config: it is all here.
    pub plan: Plan,
    pub remote: Box<dyn Remote>,
    pub storage: Storage,
    pub store: StateStore,
    pub state: State,
    pub plex: Option<PlexConn>,
    /// Where a claim token comes from when Plex starts unclaimed; secrets in memory only.
    pub claim: ClaimSource,
    pub interrupt: Arc<AtomicBool>,
}

/// How the run gets the claim token a fresh server needs for Sonic analysis (plex.md §5): decided
/// before anything starts (`Ctx::decide_claim`), used right before Plex starts
/// (`Ctx::claim_for_start`), so the token's 4 minutes never cover provisioning or an image pull.
#[derive(Clone, Default)]
pub enum ClaimSource {
    /// Not decided yet (a fresh `Ctx`).
    #[default]
    Undecided,
    /// No claim: no Sonic analysis, or the server is signed in already.
    NotNeeded,
    /// A fresh claim from plex.tv with the user's account token, fetched at start.
    Account {
        token: crate::plextv::AccountToken,
        held: Option<crate::plextv::Claim>,
    },
    /// `PLEX_CLAIM` as the user gave it.
    Given(String),
    /// Asked on the terminal at start.
    Prompt,
}

fn prompt_claim() -> anyhow::Result<Option<String>> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Ok(None);
    }
    eprint!("Plex claim token (from https://plex.tv/claim, valid 4 minutes): ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let t = line.trim().to_string();
    Ok((!t.is_empty()).then_some(t))
}

/// Open the remote for the plan's target: this machine, or an ssh host through a master whose
/// socket lives in `state_dir`.
pub fn connect(plan: &Plan, state_dir: &Path) -> anyhow::Result<Box<dyn Remote>> {
    match &plan.target.spec {
        TargetSpec::Local => Ok(Box::new(crate::remote::local::Local::new())),
        TargetSpec::Ssh(t) => {
            let ssh = crate::remote::ssh::Ssh::connect(t, &state_dir.join("ssh"))
                .with_context(|| format!("cannot connect to {}@{}:{}", t.user, t.host, t.port))?;
            Ok(Box::new(ssh))
        }
        TargetSpec::Scaleway(_) => {
            let instance = crate::state::read(state_dir)?.and_then(|s| s.instance);
            match instance {
                Some(i) if i.address.is_some() && i.host_key_pinned => {
                    let t = instance_target(&i, true);
                    let ssh = crate::remote::ssh::Ssh::connect(&t, &state_dir.join("ssh"))
                        .with_context(|| {
                            format!("cannot connect to the instance {}:{}", t.host, t.port)
                        })?;
                    Ok(Box::new(ssh))
                }
                _ => Ok(Box::new(crate::remote::Pending(
                    plan.target.describe.clone(),
                ))),
            }
        }
    }
}

/// The SSH target of a rented instance: root, the run's own key, the run's known_hosts; the host
/// key is accepted on first contact only (`pinned` false), strictly checked after.
pub fn instance_target(i: &crate::state::Instance, pinned: bool) -> crate::remote::ssh::SshTarget {
    crate::remote::ssh::SshTarget {
        host: i.address.clone().unwrap_or_default(),
        port: i.ssh_port,
        user: "root".into(),
        identity: Some(i.key_path.clone().into()),
        extra_options: vec![
            format!("UserKnownHostsFile={}", i.known_hosts),
            format!(
                "StrictHostKeyChecking={}",
                if pinned { "yes" } else { "accept-new" }
            ),
            "LogLevel=ERROR".into(),
        ],
    }
}

/// Install the Ctrl-C / SIGTERM flag: the first signal asks for a clean stop at the next poll; a
/// second one exits at once.
pub fn install_signal_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag))
            .context("cannot install the signal handler")?;
        signal_hook::flag::register(sig, Arc::clone(&flag))
            .context("cannot install the signal handler")?;
    }
    Ok(flag)
}

/// Stop Plex when it runs, then check that it stopped: nothing goes on (an export, a run's end)
/// while it still writes. `fix` is what the error tells the user to do.
pub fn stop_plex(
    remote: &dyn Remote,
    rt: &Runtime,
    grace: Duration,
    fix: &str,
) -> anyhow::Result<()> {
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

impl Ctx {
    /// How Plex runs: the plan's runtime spec.
    pub fn runtime(&self) -> &Runtime {
        &self.plan.plex.runtime
    }

    pub fn interrupted(&self) -> bool {
        self.interrupt.load(Ordering::SeqCst)
    }

    /// What the rented machine(s) cost so far, when the target is rented.
    pub fn cost_now(&self) -> Option<f64> {
        (!self.state.rented.is_empty())
            .then(|| crate::state::cost(&self.state.rented, jiff::Timestamp::now()))
    }

    /// A cap of the plan reached: the budget spent, or the instance up for `max_runtime`.
    pub fn limit_reached(&self) -> Option<String> {
        let TargetSpec::Scaleway(sc) = &self.plan.target.spec else {
            return None;
        };
        let cost = self.cost_now()?;
        if let Some(b) = sc.budget_eur
            && cost >= b
        {
            return Some(format!(
                "the budget is spent ({cost:.4} EUR of target.budget_eur {b:.4})"
            ));
        }
        let up = self
            .state
            .rented
            .first()
            .map(|r| r.seconds(jiff::Timestamp::now()))
            .unwrap_or(0.0);
        if let Some(m) = sc.max_runtime
            && up >= m.as_secs_f64()
        {
            return Some(format!(
                "the instance ran target.max_runtime ({})",
                crate::units::format_duration(m)
            ));
        }
        None
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

    /// Sleep up to `d`, waking early (and returning an error) on Ctrl-C/SIGTERM.
    pub fn pause(&self, d: Duration) -> anyhow::Result<()> {
        let end = Instant::now() + d;
        loop {
            self.check_interrupt()?;
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
    }

    /// Retry a call while Plex answers "still starting up" (section calls do, right after start).
    pub fn retry_starting<T>(
        &self,
        mut f: impl FnMut() -> Result<T, ApiError>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + self.plan.plex.startup_timeout;
        loop {
            match f() {
                Err(e @ ApiError::Starting { .. }) if Instant::now() < deadline => {
                    tracing::debug!("{e}; retrying");
                    self.pause(Duration::from_millis(250))?;
                }
                other => return Ok(other?),
            }
        }
    }

    /// Stop the run's Plex (see `stop_plex`) and record that it no longer runs.
    pub fn stop_plex(&mut self, fix: &str) -> anyhow::Result<()> {
        self.plex = None;
        stop_plex(
            self.remote.as_ref(),
            self.runtime(),
            self.plan.plex.stop_grace,
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

    /// The server's own token, if Preferences.xml exists and has one.
    pub fn read_token(&self) -> anyhow::Result<Option<String>> {
        let path = &self.plan.plex.prefs_path;
        let bytes = match self.remote.get_file(path) {
            Ok(b) => b,
            Err(RemoteError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // A half-written file is an error for the parser; the caller retries until its deadline.
        crate::plex::xml::online_token(&String::from_utf8_lossy(&bytes))
    }

    /// The last lines of the server's log, for an error message.
    pub fn log_tail(&self) -> String {
        match self.runtime().log_tail(self.remote.as_ref(), 20) {
            Ok(t) if !t.trim().is_empty() => {
                format!("\nlast lines of the server's log:\n{}", t.trim_end())
            }
            Ok(_) => "\n(the server's log is empty)".into(),
            Err(e) => format!("\n(cannot read the server's log: {e:#})"),
        }
    }

    fn plextv(&self) -> crate::plextv::PlexTv {
        crate::plextv::PlexTv::new(&self.plan.plex.plextv_url, &crate::plextv::client_id())
    }

    /// Decide where the claim comes from, before anything starts: none when no Sonic analysis is
    /// asked or the server already has its token; else the account token (checked with plex.tv,
    /// Plex Pass included), else `PLEX_CLAIM`, else a prompt on a terminal. Bad input otherwise.
    /// Returns what was decided, for the log and the state (never a secret).
    pub fn decide_claim(&mut self) -> anyhow::Result<String> {
        let (source, said) = if !self.plan.needs_plex_pass() {
            (
                ClaimSource::NotNeeded,
                "no claim needed: no Sonic analysis asked".to_string(),
            )
        } else if self.read_token()?.is_some() {
            (
                ClaimSource::NotNeeded,
                "no claim needed: the server is signed in already (PlexOnlineToken in Preferences.xml)".into(),
            )
        } else if let Some(token) = crate::plextv::account_token()? {
            let tv = self.plextv();
            let account = crate::plextv::checked_account(&tv, &token)?;
            let said = format!(
                "a claim token from {} for the account {:?} (Plex Pass active), fetched right before Plex starts (account token from {})",
                tv.base(),
                account.username,
                token.origin
            );
            (ClaimSource::Account { token, held: None }, said)
        } else if let Some(c) = std::env::var(CLAIM_ENV)
            .ok()
            .filter(|c| !c.trim().is_empty())
        {
            (
                ClaimSource::Given(c.trim().to_string()),
                format!(
                    "env {CLAIM_ENV}: valid 4 minutes from when it was made; `plexburst login` fetches a fresh one at the right moment instead"
                ),
            )
        } else if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            (
                ClaimSource::Prompt,
                "asked on this terminal right before Plex starts".into(),
            )
        } else {
            return Err(BadInput(format!(
                "Sonic analysis needs a server signed in to a Plex account with Plex Pass, and the data dir {} has none; sign in once with `plexburst login` (or set {} to your account token) and plexburst claims the server itself, or set {CLAIM_ENV} from https://plex.tv/claim right before the run, or run with --skip-analysis",
                self.plan.plex.data_dir,
                crate::plextv::TOKEN_ENV
            ))
            .into());
        };
        self.claim = source;
        Ok(said)
    }

    /// The claim token to start Plex with, if it needs one: decided (see `decide_claim`) and, for
    /// an account, fetched now unless the one held is still fresh.
    pub fn claim_for_start(&mut self) -> anyhow::Result<Option<String>> {
        if matches!(self.claim, ClaimSource::Undecided) {
            let said = self.decide_claim()?;
            tracing::info!("claim: {said}");
        }
        if matches!(self.claim, ClaimSource::NotNeeded) {
            return Ok(None);
        }
        // A server that already signed in (restarted after a crash) needs no claim again.
        if self.read_token().unwrap_or(None).is_some() {
            return Ok(None);
        }
        let tv = self.plextv();
        match &mut self.claim {
            ClaimSource::Account { token, held } => {
                let claim = crate::plextv::fresh_claim(&tv, token, held, Instant::now())
                    .context("cannot get a claim token from plex.tv")?;
                Ok(Some(claim))
            }
            ClaimSource::Given(c) => Ok(Some(c.clone())),
            ClaimSource::Prompt => match prompt_claim()? {
                Some(c) => Ok(Some(c)),
                None => Err(BadInput(
                    "no claim token given; Sonic analysis needs a claimed server (or run with --skip-analysis)".into(),
                )
                .into()),
            },
            ClaimSource::Undecided | ClaimSource::NotNeeded => Ok(None),
        }
    }

    /// Start Plex if needed and connect to it (token included). Idempotent; used by every phase
    /// that talks to Plex, and by the monitor after a crash.
    pub fn ensure_plex(&mut self) -> anyhow::Result<()> {
        if self.plex.is_some() {
            return Ok(());
        }
        let had_token = self.read_token().unwrap_or(None).is_some();
        // Only a server that is not running yet gets a claim: one already up keeps its state.
        let claim = if self.runtime().is_running(self.remote.as_ref())? {
            None
        } else {
            self.claim_for_start()?
        };
        let secrets: Vec<(String, String)> = claim
            .iter()
            .map(|c| (CLAIM_ENV.to_string(), c.clone()))
            .collect();
        self.runtime()
            .start(self.remote.as_ref(), &secrets)
            .with_context(|| format!("starting Plex failed{}", self.log_tail()))?;
        self.state.plex_started = true;
        self.save()?;
        let fwd = self
            .remote
            .forward(self.runtime().port())
            .context("cannot forward Plex's port")?;
        let base = format!("http://{}", fwd.local_addr());
        let mut client = Client::new(&base, None, API_TIMEOUT);
        let timeout = self.plan.plex.startup_timeout;
        let deadline = Instant::now() + timeout;
        let identity = loop {
            self.check_interrupt()?;
            match client.identity() {
                Ok(id) => break id,
                Err(e) if e.is_retryable() => {
                    if !self.runtime().is_running(self.remote.as_ref())? {
                        bail!("Plex exited while starting: {e}{}", self.log_tail());
                    }
                    if Instant::now() > deadline {
                        bail!(
                            "Plex did not answer /identity within {timeout:?}: {e}{}",
                            self.log_tail()
                        );
                    }
                    self.pause(RETRY)?;
                }
                Err(e) => bail!("Plex's /identity failed: {e}{}", self.log_tail()),
            }
        };
        // The token appears in Preferences.xml a few seconds after a claim; wait for it when the
        // server is (or is being) claimed. An unclaimed server takes local requests without one.
        let expect_token = identity.claimed || had_token || claim.is_some();
        let token = if expect_token {
            loop {
                self.check_interrupt()?;
                match self.read_token() {
                    Ok(Some(t)) => break Some(t),
                    Ok(None) => {}
                    Err(e) => tracing::debug!("Preferences.xml not readable yet: {e:#}"),
                }
                if Instant::now() > deadline {
                    bail!(
                        "no PlexOnlineToken in {} within {timeout:?}; the claim may have failed (claim tokens expire after 4 minutes){}",
                        self.plan.plex.prefs_path,
                        self.log_tail()
                    );
                }
                self.pause(RETRY)?;
            }
        } else {
            None
        };
        client.set_token(token);
        loop {
            self.check_interrupt()?;
            match client.ready() {
                Ok(()) => break,
                Err(e) if e.is_retryable() && Instant::now() < deadline => self.pause(RETRY)?,
                Err(e) => bail!("Plex is not ready: {e}{}", self.log_tail()),
            }
        }
        self.state.plex_version = Some(identity.version.clone());
        tracing::info!(
            "Plex {} is up at {base} (claimed: {})",
            identity.version,
            identity.claimed || claim.is_some()
        );
        self.plex = Some(PlexConn {
            client,
            _forward: fwd,
        });
        Ok(())
    }

    /// `mkdir -p` the directories and `chmod 700` the first one (plexburst's own work dir).
    pub fn make_dirs(&self, dirs: &[&str]) -> anyhow::Result<()> {
        let script = format!(
            "mkdir -p {} && chmod 700 {}",
            dirs.iter().map(|d| quote(d)).collect::<Vec<_>>().join(" "),
            quote(dirs[0])
        );
        self.remote
            .run(&Cmd::new(script))
            .context("cannot create plexburst's directories on the target")?;
        Ok(())
    }
}
