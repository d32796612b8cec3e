//! Phase teardown: stop everything the run started (Plex, the mount), or with `--keep` leave Plex
//! running and say how to stop it later.

use super::Outcome;
use crate::session::Ctx;

pub fn run(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    if ctx.plan.options.keep_logs {
        let dir = super::fetch_target_logs(ctx)?;
        tracing::info!("target logs kept in {}", dir.display());
    }
    if ctx.plan.options.keep {
        ctx.ensure_plex()?;
        let base = ctx.client()?.base().to_string();
        eprintln!("Plex left running at {base} (--keep); stop it with `plexburst destroy`");
        return Ok(Outcome::Done(Some(format!(
            "Plex left running at {base} (--keep)"
        ))));
    }
    ctx.stop_plex("stop it with `plexburst destroy`")?;
    ctx.release_storage()?;
    if ctx.state.instance.is_some() {
        let (_, api) = super::provision::connect_api()?;
        super::provision::release(ctx, &api)?;
        return Ok(Outcome::Done(Some(format!(
            "Plex stopped, storage released; deleted: {}",
            ctx.state.released.join(", ")
        ))));
    }
    Ok(Outcome::Done(Some("Plex stopped, storage released".into())))
}
