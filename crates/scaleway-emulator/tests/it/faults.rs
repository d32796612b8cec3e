//! Every fault, from the command line and at run time (`/_emulator/faults`).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Emu, PROJECT, ZONE};

fn servers(zone: &str) -> String {
    format!("/instance/v1/zones/{zone}/servers")
}

#[test]
fn rate_limit_and_server_error_refuse_a_fraction_of_calls() {
    let emu = Emu::start(&["--fault", "rate-limit:1"]);
    let e = emu.call("GET", &servers(ZONE), None).expect(429);
    assert_eq!(e["type"], "too_many_requests");
    assert!(e["help_message"].is_string());
    assert_eq!(e["limit"]["window_seconds"], 1);
    emu.call("DELETE", "/_emulator/faults", None).expect(200);
    emu.call("GET", &servers(ZONE), None).expect(200);

    let emu = Emu::start(&["--fault", "server-error:0.5", "--seed", "7"]);
    let statuses: Vec<u16> = (0..200)
        .map(|_| emu.call("GET", &servers(ZONE), None).status)
        .collect();
    let errors = statuses.iter().filter(|s| **s == 500).count();
    assert!((60..140).contains(&errors), "{errors} of 200 failed");
    assert!(statuses.iter().all(|s| *s == 500 || *s == 200));
    // The log records what the client saw.
    let logged = emu.requests().iter().filter(|r| r["status"] == 500).count();
    assert_eq!(logged, errors);
}

#[test]
fn transient_refuses_the_next_actions_then_lets_them_through() {
    let emu = Emu::start(&[]);
    let id = emu.create_server(ZONE, "DEV1-S", json!({}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = emu
        .call(
            "POST",
            "/_emulator/faults",
            Some(json!({"faults": ["transient:2"]})),
        )
        .expect(200);
    assert_eq!(v["faults"], json!(["transient:2"]));
    for _ in 0..2 {
        let e = emu.action(ZONE, &id, "poweron").expect(409);
        assert_eq!(e["type"], "transient_state");
        assert_eq!(e["current_state"], "stopped");
    }
    assert_eq!(
        emu.get("/_emulator/faults")["faults"],
        json!(["transient:0"])
    );
    emu.action(ZONE, &id, "poweron").expect(202);
}

#[test]
fn out_of_stock_refuses_poweron_in_its_zone_only() {
    let emu = Emu::start(&["--fault", "out-of-stock:DEV1-S@fr-par-2"]);
    let a = emu.create_server("fr-par-2", "DEV1-S", json!({}));
    let b = emu.create_server("fr-par-1", "DEV1-S", json!({}));
    let e = emu
        .action("fr-par-2", a["id"].as_str().unwrap(), "poweron")
        .expect(412);
    assert_eq!(
        e,
        json!({"type": "out_of_stock", "message": "out of stock", "resource": "DEV1-S"})
    );
    assert_eq!(
        emu.state("fr-par-2", a["id"].as_str().unwrap()).as_deref(),
        Some("stopped")
    );
    emu.action("fr-par-1", b["id"].as_str().unwrap(), "poweron")
        .expect(202);
}

#[test]
fn quota_limits_servers_of_a_type_per_project() {
    let emu = Emu::start(&["--fault", "quota:DEV1-M=1"]);
    emu.create_server(ZONE, "DEV1-M", json!({}));
    let r = emu.call(
        "POST",
        &servers(ZONE),
        Some(json!({"commercial_type": "DEV1-M",
                    "image": emu.image(ZONE, "ubuntu_noble", "instance_local")})),
    );
    let e = r.expect(403);
    assert_eq!(e["type"], "quotas_exceeded");
    assert_eq!(
        e["details"],
        json!([{"resource": "DEV1-M", "quota": 1, "current": 1, "project_id": PROJECT}])
    );
    emu.create_server(ZONE, "DEV1-S", json!({}));
    assert_eq!(emu.resources()["servers"].as_array().unwrap().len(), 2);
}

#[test]
fn slow_boot_and_slow_detach_stretch_the_transitions() {
    let emu = Emu::start(&["--boot-delay", "50ms"]);
    emu.call(
        "POST",
        "/_emulator/faults",
        Some(json!({"faults": ["slow-boot:1500ms", "slow-detach:1s"]})),
    )
    .expect(200);
    let s = emu.create_server(
        ZONE,
        "DEV1-S",
        json!({"volumes": {"0": {"volume_type": "sbs_volume"}}}),
    );
    let id = s["id"].as_str().unwrap();
    let t0 = Instant::now();
    emu.action(ZONE, id, "poweron").expect(202);
    emu.wait_state(ZONE, id, Some("running"), 10);
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
    let t1 = Instant::now();
    emu.action(ZONE, id, "terminate").expect(202);
    emu.wait_state(ZONE, id, None, 10);
    let vol = s["volumes"]["0"]["id"].as_str().unwrap();
    crate::harness::wait_until(10, "the SBS root to be available", || {
        emu.get(&format!("/block/v1alpha1/zones/{ZONE}/volumes/{vol}"))["status"] == "available"
    });
    assert!(
        t1.elapsed() >= Duration::from_millis(800),
        "{:?}",
        t1.elapsed()
    );
}

#[test]
fn bad_fault_specs_are_refused() {
    let emu = Emu::start(&[]);
    let e = emu
        .call(
            "POST",
            "/_emulator/faults",
            Some(json!({"faults": ["explode:1"]})),
        )
        .expect(400);
    assert_eq!(e["type"], "invalid_arguments");
    let out = crate::harness::command(crate::harness::BIN)
        .args(["serve", "--fault", "rate-limit:7"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not between 0 and 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
