//! Where the instance stand-in lives and how a test gets it ready: the image built by
//! `scripts/instance/build-image.sh`, the power hook `scripts/instance/hook.sh` that a Scaleway
//! emulator runs at power-on and power-off, and the check that no stand-in is left behind.
//!
//! The stand-in itself is shell and a Dockerfile (see `scripts/instance/`); this crate only gives
//! other crates' tests one place to find it.

use std::path::PathBuf;
use std::process::Output;

use anyhow::{Context, Result, bail};

/// The image `build-image.sh` builds and `hook.sh` runs (unless `PB_INSTANCE_IMAGE` says otherwise).
pub const IMAGE: &str = "plexburst/instance:dev";

/// The label every stand-in container carries (`plexburst.instance=1`).
pub const LABEL: &str = "plexburst.instance=1";

/// The label naming the Scaleway server id a container stands in for.
pub const SERVER_ID_LABEL: &str = "plexburst.instance.server-id";

/// `scripts/instance/` in this workspace.
pub fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/instance")
}

/// The power hook to give a Scaleway emulator: `hook.sh boot|halt SERVER_ID ZONE [USERDATA_DIR]`.
pub fn hook() -> PathBuf {
    scripts_dir().join("hook.sh")
}

/// Builds the image unless it is up to date (the script keeps a hash of its inputs as a label, so
/// this takes a second when nothing changed) and returns its id.
pub fn ensure_image() -> Result<String> {
    let script = scripts_dir().join("build-image.sh");
    let out = run("bash", &[script.to_str().context("non-UTF-8 path")?])?;
    if !out.status.success() {
        bail!(
            "{} failed ({}):\n{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Names of the stand-in containers that exist now, running or not; with `server_id`, only the
/// one standing in for that server.
pub fn containers(server_id: Option<&str>) -> Result<Vec<String>> {
    let mut args = vec!["ps", "-a", "--format", "{{.Names}}", "--filter"];
    let by_label = format!("label={LABEL}");
    args.push(&by_label);
    let by_id;
    if let Some(id) = server_id {
        by_id = format!("label={SERVER_ID_LABEL}={id}");
        args.extend(["--filter", &by_id]);
    }
    let out = run("docker", &args)?;
    if !out.status.success() {
        bail!("docker ps failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect())
}

/// This crate's one spawn point (test support, not product code, so plexburst's process
/// chokepoint rule does not apply).
#[allow(clippy::disallowed_methods)]
fn run(program: &str, args: &[&str]) -> Result<Output> {
    std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("could not run {program}"))
}
