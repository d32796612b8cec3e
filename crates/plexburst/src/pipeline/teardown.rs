//! Phase teardown: stop everything the run started (Plex, the mount), or with `--keep` leave Plex
//! running and say how to stop it later; then remove what the run put on the target but for what
//! stays on purpose, and say what that is (`cleanup::at_teardown`); on a rented instance, delete
//! it and everything it had.

use super::Outcome;
use crate::session::Ctx;

pub fn run(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    if ctx.plan.options.keep_logs {
        let dir = super::fetch_target_logs(ctx)?;
        tracing::info!("target logs kept in {}", dir.display());
    }
    let detail = if ctx.plan.options.keep {
        ctx.ensure_plex()?;
        let base = ctx.client()?.base().to_string();
        eprintln!("Plex left running at {base} (--keep); stop it with `plexburst destroy`");
        format!("Plex left running at {base} (--keep)")
    } else {
        ctx.stop_plex("stop it with `plexburst destroy`")?;
        ctx.release_storage()?;
        "Plex stopped, storage released".to_string()
    };
    if ctx.state.instance.is_some() && !ctx.plan.options.keep {
        let (_, api) = super::provision::connect_api()?;
        super::provision::release(ctx, &api)?;
        return Ok(Outcome::Done(Some(format!(
            "{detail}; deleted: {}",
            ctx.state.released.join(", ")
        ))));
    }
    super::cleanup::at_teardown(ctx)?;
    Ok(Outcome::Done(Some(detail)))
}
