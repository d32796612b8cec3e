//! Phase teardown: stop everything the run started (Plex, the mount), or with `--keep` leave Plex
//! running and say how to stop it later; then remove what the run put on the target but for what
//! stays on purpose, and say what that is (`cleanup::at_teardown`).

use super::Outcome;
use crate::session::Ctx;

pub fn run(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
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
    super::cleanup::at_teardown(ctx)?;
    Ok(Outcome::Done(Some(detail)))
}
