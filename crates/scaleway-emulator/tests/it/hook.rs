//! The instance hook contract (README "Instance hook"), checked with a small shell hook that
//! records its calls and whose boot waits for a per-server "go" file the test writes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::harness::{Emu, ZONE, wait_until};

/// The hook: appends `ARGS | name=… type=… url=… ip=… mark=…` to `calls.log`; on boot saves
/// `cloud-init`, then the user data folder's listing (renamed into place, so `<id>.keys` existing
/// means both are complete), then waits for `<id>.go`: `fail` exits 3,
/// `ip` prints `public_ip=10.9.8.7`, anything else succeeds.
fn write_hook(dir: &Path) -> PathBuf {
    let path = dir.join("hook.sh");
    let d = dir.display();
    std::fs::write(
        &path,
        format!(
            r#"#!/bin/sh
echo "$* | name=$SCALEWAY_EMULATOR_SERVER_NAME type=$SCALEWAY_EMULATOR_COMMERCIAL_TYPE url=$SCALEWAY_EMULATOR_URL ip=$SCALEWAY_EMULATOR_PUBLIC_IP mark=$HOOK_MARK" >> "{d}/calls.log"
case "$1" in
boot)
    [ -f "$4/cloud-init" ] && cp "$4/cloud-init" "{d}/$2.cloud-init"
    ls "$4" > "{d}/$2.keys.tmp" && mv "{d}/$2.keys.tmp" "{d}/$2.keys"
    # Give up when the test's temp dir is gone (a failed test must not leave this loop behind).
    while [ ! -e "{d}/$2.go" ]; do [ -d "{d}" ] || exit 9; sleep 0.02; done
    case "$(cat "{d}/$2.go")" in
        fail) echo "starting the container" >&2; echo "docker: no space left on device" >&2; exit 3 ;;
        ip) echo "booted"; echo "public_ip=10.9.8.7" ;;
    esac
    ;;
esac
exit 0
"#
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("calls.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn start(dir: &Path, extra: &[&str]) -> Emu {
    let hook = write_hook(dir);
    let mut args = vec![
        "--instance-hook",
        hook.to_str().unwrap(),
        "--boot-delay",
        "0s",
    ];
    args.extend_from_slice(extra);
    Emu::start_with_env(&args, &[("HOOK_MARK", "inherited")])
}

fn set_user_data(emu: &Emu, id: &str, key: &str, value: &str) {
    let r = emu.raw(
        Some(&emu.token),
        "PATCH",
        &format!("/instance/v1/zones/{ZONE}/servers/{id}/user_data/{key}"),
        Some(("text/plain", value.as_bytes().to_vec())),
    );
    assert_eq!(r.status, 204, "{}", r.body);
}

#[test]
fn boot_gets_the_user_data_and_running_waits_for_the_hook() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let emu = start(dir, &[]);
    let s = emu.create_server(ZONE, "DEV1-M", json!({"name": "plexjob-7"}));
    let id = s["id"].as_str().unwrap();
    set_user_data(&emu, id, "cloud-init", "#cloud-config\nusers: []\n");
    set_user_data(&emu, id, "plexburst", "run=7");
    emu.action(ZONE, id, "poweron").expect(202);
    wait_until(10, "the boot hook to be called", || {
        calls(dir).iter().any(|c| c.starts_with("boot "))
    });
    let boot = calls(dir)[0].clone();
    let (argv, env) = boot.split_once(" | ").unwrap();
    let argv: Vec<&str> = argv.split(' ').collect();
    assert_eq!(argv[..3], ["boot", id, ZONE]);
    assert_eq!(argv.len(), 4, "{boot}");
    assert_eq!(
        env,
        format!(
            "name=plexjob-7 type=DEV1-M url={} ip=127.0.0.1 mark=inherited",
            emu.base
        )
    );
    // The hook is still running, so the server is still starting.
    assert_eq!(emu.state(ZONE, id).as_deref(), Some("starting"));
    wait_until(10, "the hook to list the user data", || {
        dir.join(format!("{id}.keys")).exists()
    });
    assert_eq!(
        std::fs::read_to_string(dir.join(format!("{id}.keys"))).unwrap(),
        "cloud-init\nplexburst\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join(format!("{id}.cloud-init"))).unwrap(),
        "#cloud-config\nusers: []\n"
    );
    std::fs::write(dir.join(format!("{id}.go")), "ip").unwrap();
    emu.wait_state(ZONE, id, Some("running"), 10);
    let s = emu.server(ZONE, id).expect(200)["server"].clone();
    assert_eq!(s["public_ips"][0]["address"], "10.9.8.7");
    assert_eq!(s["public_ip"]["address"], "10.9.8.7");

    emu.action(ZONE, id, "terminate").expect(202);
    emu.wait_state(ZONE, id, None, 10);
    let all = calls(dir);
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(
        all[1].starts_with(&format!("halt {id} {ZONE} | ")),
        "{all:?}"
    );
    let hooks = emu.hook_calls();
    assert_eq!(hooks.len(), 2);
    assert_eq!(hooks[0]["verb"], "boot");
    assert_eq!(hooks[0]["ok"], true);
    assert_eq!(hooks[0]["exit_code"], 0);
    assert_eq!(hooks[0]["public_ip"], "10.9.8.7");
    assert_eq!(hooks[1]["verb"], "halt");
    // The user-data folder handed to boot is gone once the server is.
    assert!(!Path::new(argv[3]).exists(), "{} still exists", argv[3]);
}

#[test]
fn a_failing_boot_stops_the_server_with_the_reason_and_halts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let emu = start(dir, &[]);
    let id = emu.create_server(ZONE, "DEV1-S", json!({}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(dir.join(format!("{id}.go")), "fail").unwrap();
    emu.action(ZONE, &id, "poweron").expect(202);
    emu.wait_state(ZONE, &id, Some("stopped"), 10);
    let s = emu.server(ZONE, &id).expect(200)["server"].clone();
    let detail = s["state_detail"].as_str().unwrap();
    assert!(
        detail.contains("exit status 3") && detail.contains("no space left on device"),
        "{detail}"
    );
    assert_eq!(s["public_ips"], json!([]));
    // The clean-up halt ran while the server was still starting, so it is done by now and no
    // new boot can overlap it.
    let all = calls(dir);
    assert!(
        all.len() == 2 && all[1].starts_with(&format!("halt {id} {ZONE} |")),
        "{all:?}"
    );
    let hooks = emu.hook_calls();
    assert_eq!(hooks[0]["ok"], false);
    assert_eq!(hooks[0]["exit_code"], 3);
    // It can be powered on again.
    std::fs::write(dir.join(format!("{id}.go")), "ok").unwrap();
    emu.action(ZONE, &id, "poweron").expect(202);
    emu.wait_state(ZONE, &id, Some("running"), 10);
    let s = emu.server(ZONE, &id).expect(200)["server"].clone();
    assert_eq!(s["state_detail"], "booting kernel");
    assert_eq!(s["public_ips"][0]["address"], "127.0.0.1");
}

#[test]
fn poweroff_and_delete_halt_and_a_hung_boot_times_out() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let emu = start(dir, &["--hook-timeout", "700ms"]);
    let a = emu.create_server(ZONE, "DEV1-S", json!({}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(dir.join(format!("{a}.go")), "ok").unwrap();
    emu.action(ZONE, &a, "poweron").expect(202);
    emu.wait_state(ZONE, &a, Some("running"), 10);
    emu.action(ZONE, &a, "poweroff").expect(202);
    emu.wait_state(ZONE, &a, Some("stopped"), 10);
    assert!(calls(dir)[1].starts_with(&format!("halt {a} {ZONE} |")));
    emu.call(
        "DELETE",
        &format!("/instance/v1/zones/{ZONE}/servers/{a}"),
        None,
    )
    .expect(204);
    wait_until(10, "halt after DELETE", || calls(dir).len() == 3);
    assert!(calls(dir)[2].starts_with(&format!("halt {a} {ZONE} |")));

    // No go file: boot never returns and is killed at --hook-timeout.
    let b = emu.create_server(ZONE, "DEV1-S", json!({}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    emu.action(ZONE, &b, "poweron").expect(202);
    emu.wait_state(ZONE, &b, Some("stopped"), 10);
    let s = emu.server(ZONE, &b).expect(200)["server"].clone();
    assert!(
        s["state_detail"].as_str().unwrap().contains("timed out"),
        "{s}"
    );
}

#[test]
fn a_missing_hook_is_refused_at_start() {
    let out = crate::harness::command(crate::harness::BIN)
        .args(["serve", "--instance-hook", "/nonexistent/hook.sh"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/hook.sh"));
}
