//! Phase start-plex: start the server (with a claim token fetched right now when it needs one,
//! `Ctx::claim_for_start`), wait for `/identity`, read its token from Preferences.xml, and check
//! Plex Pass through `/myplex/account` when analysis is asked.

use anyhow::{Context, bail};

use super::Outcome;
use crate::plex::api::ApiError;
use crate::session::Ctx;

pub fn run(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let pass = ctx.plan.needs_plex_pass();
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
