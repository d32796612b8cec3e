//! Phase start-plex: start the server, wait for `/identity`, read its token from Preferences.xml,
//! claim it when analysis needs Plex Pass, and check Plex Pass through `/myplex/account`.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context, bail};

use super::Outcome;
use crate::error::BadInput;
use crate::plan::CLAIM_ENV;
use crate::plex::api::ApiError;
use crate::session::Ctx;

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
    let pass = ctx.plan.needs_plex_pass();
    if ctx.claim.is_none() {
        ctx.claim = std::env::var(CLAIM_ENV)
            .ok()
            .filter(|c| !c.trim().is_empty());
    }
    if pass && ctx.claim.is_none() && ctx.read_token()?.is_none() {
        ctx.claim = prompt_claim()?;
        if ctx.claim.is_none() {
            return Err(BadInput(
                "Sonic analysis needs a claimed server with Plex Pass, and this one is not claimed; export PLEX_CLAIM=claim-... (from https://plex.tv/claim, valid 4 minutes) or run with --skip-analysis".into(),
            )
            .into());
        }
    }
    ctx.ensure_plex()?;
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
