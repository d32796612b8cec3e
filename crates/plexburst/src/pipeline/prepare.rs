//! Phase prepare: the target has every tool the run needs, plexburst's directories exist, and the
//! storage is prepared and mounted. A missing tool is an error here, never "0 items" later.

use anyhow::{Context, bail};

use super::Outcome;
use crate::session::Ctx;

/// The Debian package that provides a tool, for the error message.
fn package_of(tool: &str) -> &str {
    match tool {
        "docker" => "docker.io",
        "setsid" => "util-linux",
        "sha256sum" | "find" => "coreutils findutils",
        "sh" => "dash",
        other => other,
    }
}

pub fn run(ctx: &mut Ctx) -> anyhow::Result<Outcome> {
    let tools = ctx.plan.tools.clone();
    let tools: Vec<&str> = tools.iter().map(String::as_str).collect();
    let missing = crate::host::missing_tools(ctx.remote.as_ref(), &tools)
        .with_context(|| format!("cannot check the tools on {}", ctx.remote.describe()))?;
    if !missing.is_empty() {
        let pkgs: Vec<&str> = missing.iter().map(|t| package_of(t)).collect();
        bail!(
            "{} missing on {}: plexburst needs them to run and watch Plex; install them (Debian: apt-get install {})",
            missing.join(", "),
            ctx.remote.describe(),
            pkgs.join(" ")
        );
    }
    ctx.make_dirs(&[
        &ctx.plan.target.work_dir,
        &ctx.plan.plex.data_dir,
        &ctx.plan.export.destination,
    ])?;
    ctx.storage
        .prepare(ctx.remote.as_ref())
        .context("preparing the storage failed")?;
    ctx.storage
        .mount(ctx.remote.as_ref())
        .context("mounting the storage failed")?;
    ctx.state.storage_mounted = true;
    ctx.save()?;
    ctx.storage
        .prewarm(ctx.remote.as_ref())
        .context("prewarming the storage failed")?;
    Ok(Outcome::Done(Some(format!(
        "tools present: {}",
        tools.join(", ")
    ))))
}
