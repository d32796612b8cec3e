//! Rules about the stand-in's scripts that a test keeps true: shellcheck finds nothing in them, and
//! the files the emulator and the image run directly are executable.

use std::os::unix::fs::PermissionsExt;

use crate::harness::{command, output, text};

const SCRIPTS: &[&str] = &["build-image.sh", "rootfs.sh", "hook.sh", "standin-boot"];

#[test]
fn instance_scripts_pass_shellcheck() {
    let dir = instance_standin::scripts_dir();
    let out = output(command("shellcheck").args(SCRIPTS.iter().map(|s| dir.join(s))));
    assert!(
        out.status.success(),
        "shellcheck (apt-get install shellcheck):\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn hook_and_entrypoint_are_executable() {
    let dir = instance_standin::scripts_dir();
    for name in SCRIPTS {
        let mode = std::fs::metadata(dir.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert!(mode & 0o111 == 0o111, "{name} is not executable ({mode:o})");
    }
}
