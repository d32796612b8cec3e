//! Phase teardown: stop everything the run started (Plex, the mount), or with `--keep` leave Plex
//! running and say how to stop it later.

use anyhow::{Context, bail};

use super::{Ctx, Outcome, ensure_plex};

pub fn run(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    if ctx.state.options.keep {
        ensure_plex(ctx)?;
        let base = ctx.client()?.base().to_string();
        eprintln!("Plex left running at {base} (--keep); stop it with `plexburst destroy`");
        return Ok(Outcome::Done(Some(format!(
            "Plex left running at {base} (--keep)"
        ))));
    }
    ctx.plex = None;
    let rt = ctx.runtime();
    if rt.is_running(ctx.remote.as_ref())? {
        rt.stop(ctx.remote.as_ref(), ctx.config.plex.stop_grace)
            .context("cannot stop Plex")?;
    }
    if rt.is_running(ctx.remote.as_ref())? {
        bail!("Plex is still running after the stop; stop it with `plexburst destroy`");
    }
    ctx.state.plex_started = false;
    if ctx.state.storage_mounted {
        ctx.storage
            .unmount(ctx.remote.as_ref())
            .context("cannot unmount the storage")?;
        ctx.state.storage_mounted = false;
    }
    Ok(Outcome::Done(Some("Plex stopped, storage released".into())))
}
