//! Phase restore: put back the prefs saved in configure, and check that Plex took them.

use anyhow::{Context, bail};

use super::Outcome;
use super::configure::to_pref;
use crate::session::Ctx;

pub fn run(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let Some(saved) = ctx.state.saved_prefs.clone() else {
        return Ok(Outcome::Skipped("no prefs were saved".into()));
    };
    ctx.ensure_plex()?;
    let saved: Vec<_> = saved.iter().map(to_pref).collect();
    let current = ctx.client()?.prefs().context("cannot read Plex's prefs")?;
    let values = crate::plex::prefs::restore(&saved, &current);
    if !values.is_empty() {
        ctx.client()?
            .set_prefs(&values)
            .context("cannot restore Plex's prefs")?;
    }
    let after = ctx.client()?.prefs().context("cannot read Plex's prefs")?;
    let left = crate::plex::prefs::restore(&saved, &after);
    if !left.is_empty() {
        let ids: Vec<_> = left.iter().map(|(k, _)| k.as_str()).collect();
        bail!("Plex did not take back these prefs: {}", ids.join(", "));
    }
    Ok(Outcome::Done(Some(format!(
        "{} prefs restored",
        values.len()
    ))))
}
