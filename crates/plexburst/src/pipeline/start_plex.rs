//! Phase start-plex: start the server, wait for `/identity`, read its token from Preferences.xml,
//! claim it when analysis needs Plex Pass, and check Plex Pass through `/myplex/account`.

use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{Ctx, Outcome, PlexConn};
use crate::app::BadInput;
use crate::config::SectionType;
use crate::plex::api::{ApiError, Client};
use crate::remote::RemoteError;

const API_TIMEOUT: Duration = Duration::from_secs(30);
const RETRY: Duration = Duration::from_millis(250);

/// The server's own token, if Preferences.xml exists and has one.
fn read_token(ctx: &Ctx) -> anyhow::Result<Option<String>> {
    let path = ctx.config.plex.prefs_path();
    let probe = ctx.remote.exec(&crate::remote::Cmd::new(format!(
        "test -f {}",
        crate::plan::quote(&path)
    )))?;
    if probe.status != 0 {
        return Ok(None);
    }
    let bytes = match ctx.remote.get_file(&path) {
        Ok(b) => b,
        Err(RemoteError::Failed { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // A half-written file is an error for the parser; the caller retries until its deadline.
    crate::plex::xml::online_token(&String::from_utf8_lossy(&bytes))
}

fn log_tail(ctx: &Ctx) -> String {
    match ctx.runtime().log_tail(ctx.remote.as_ref(), 20) {
        Ok(t) if !t.trim().is_empty() => {
            format!("\nlast lines of the server's log:\n{}", t.trim_end())
        }
        Ok(_) => "\n(the server's log is empty)".into(),
        Err(e) => format!("\n(cannot read the server's log: {e:#})"),
    }
}

/// Start Plex if needed and connect to it (token included). Idempotent; used by every phase that
/// talks to Plex, and by the monitor after a crash.
pub fn ensure_plex(ctx: &mut Ctx) -> anyhow::Result<()> {
    if ctx.plex.is_some() {
        return Ok(());
    }
    let had_token = read_token(ctx).unwrap_or(None).is_some();
    let rt = ctx.runtime();
    rt.start(ctx.remote.as_ref())
        .with_context(|| format!("starting Plex failed{}", log_tail(ctx)))?;
    ctx.state.plex_started = true;
    ctx.save()?;
    let fwd = ctx
        .remote
        .forward(rt.port())
        .context("cannot forward Plex's port")?;
    let base = format!("http://{}", fwd.local_addr());
    let mut client = Client::new(&base, None, API_TIMEOUT);
    let deadline = Instant::now() + ctx.config.plex.startup_timeout;
    let identity = loop {
        ctx.check_interrupt()?;
        match client.identity() {
            Ok(id) => break id,
            Err(e) if e.is_retryable() => {
                if !rt.is_running(ctx.remote.as_ref())? {
                    bail!("Plex exited while starting: {e}{}", log_tail(ctx));
                }
                if Instant::now() > deadline {
                    bail!(
                        "Plex did not answer /identity within {:?}: {e}{}",
                        ctx.config.plex.startup_timeout,
                        log_tail(ctx)
                    );
                }
                ctx.pause(RETRY)?;
            }
            Err(e) => bail!("Plex's /identity failed: {e}{}", log_tail(ctx)),
        }
    };
    // The token appears in Preferences.xml a few seconds after a claim; wait for it when the server
    // is (or is being) claimed. An unclaimed server takes local requests without one.
    let expect_token = identity.claimed || had_token || ctx.claim.is_some();
    let token = if expect_token {
        loop {
            ctx.check_interrupt()?;
            match read_token(ctx) {
                Ok(Some(t)) => break Some(t),
                Ok(None) => {}
                Err(e) => tracing::debug!("Preferences.xml not readable yet: {e:#}"),
            }
            if Instant::now() > deadline {
                bail!(
                    "no PlexOnlineToken in {} within {:?}; the claim may have failed (claim tokens expire after 4 minutes){}",
                    ctx.config.plex.prefs_path(),
                    ctx.config.plex.startup_timeout,
                    log_tail(ctx)
                );
            }
            ctx.pause(RETRY)?;
        }
    } else {
        None
    };
    client.set_token(token);
    loop {
        ctx.check_interrupt()?;
        match client.ready() {
            Ok(()) => break,
            Err(e) if e.is_retryable() && Instant::now() < deadline => ctx.pause(RETRY)?,
            Err(e) => bail!("Plex is not ready: {e}{}", log_tail(ctx)),
        }
    }
    ctx.state.plex_version = Some(identity.version.clone());
    tracing::info!(
        "Plex {} is up at {base} (claimed: {})",
        identity.version,
        identity.claimed || ctx.claim.is_some()
    );
    ctx.plex = Some(PlexConn {
        client,
        _forward: fwd,
    });
    Ok(())
}

/// Whether this run will run Sonic analysis (the part that needs Plex Pass).
pub fn needs_plex_pass(ctx: &Ctx) -> bool {
    !ctx.state.options.skip_analysis && ctx.sections().iter().any(|s| s.kind == SectionType::Music)
}

fn prompt_claim() -> anyhow::Result<Option<String>> {
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

pub fn run(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let pass = needs_plex_pass(ctx);
    if ctx.claim.is_none() {
        ctx.claim = std::env::var("PLEX_CLAIM")
            .ok()
            .filter(|c| !c.trim().is_empty());
    }
    if pass && ctx.claim.is_none() && read_token(ctx)?.is_none() {
        ctx.claim = prompt_claim()?;
        if ctx.claim.is_none() {
            return Err(BadInput(
                "Sonic analysis needs a claimed server with Plex Pass, and this one is not claimed; export PLEX_CLAIM=claim-... (from https://plex.tv/claim, valid 4 minutes) or run with --skip-analysis".into(),
            )
            .into());
        }
    }
    ensure_plex(ctx)?;
    if pass {
        let account = match ctx.client()?.account() {
            Ok(a) => a,
            Err(ApiError::Unauthorized { .. }) => bail!(
                "Plex refused the token for /myplex/account; the server is not signed in, so Sonic analysis cannot run; claim it (PLEX_CLAIM) or run with --skip-analysis"
            ),
            Err(e) => return Err(e).context("cannot check Plex Pass through /myplex/account"),
        };
        if !account.subscription_active {
            bail!(
                "the Plex account {:?} has no active Plex Pass, which Sonic analysis needs; subscribe, or run with --skip-analysis",
                account.username
            );
        }
    }
    let version = ctx.state.plex_version.clone().unwrap_or_default();
    Ok(Outcome::Done(Some(format!(
        "Plex {version} up{}",
        if pass { ", Plex Pass active" } else { "" }
    ))))
}
