//! The server state machine of scaleway.md Appendix A over HTTP: create, poweron, poweroff,
//! terminate, DELETE, reboot, detach-volume, and what happens to volumes and IPs.

use serde_json::json;

use crate::harness::{Emu, ZONE, wait_until};

fn srv(id: &str) -> String {
    format!("/instance/v1/zones/{ZONE}/servers/{id}")
}

#[test]
fn create_answers_201_stopped_with_location_and_volumes() {
    let emu = Emu::start(&[]);
    let r = emu.call(
        "POST",
        &format!("/instance/v1/zones/{ZONE}/servers"),
        Some(json!({
            "name": "plexjob-1",
            "commercial_type": "DEV1-S",
            "image": emu.image(ZONE, "ubuntu_noble", "instance_local"),
            "dynamic_ip_required": true,
            "tags": ["plexjob", "plexjob-run=1"],
            "volumes": {"0": {"name": "plexjob-1-root", "volume_type": "l_ssd", "size": 20_000_000_000u64}},
        })),
    );
    let s = r.expect(201)["server"].clone();
    let id = s["id"].as_str().unwrap();
    assert_eq!(
        r.location.as_deref(),
        Some(format!("/instance/v1/zones/{ZONE}/servers/{id}").as_str())
    );
    assert_eq!(s["state"], "stopped");
    assert_eq!(s["state_detail"], "");
    assert_eq!(s["allowed_actions"], json!(["poweron", "backup"]));
    assert_eq!(s["tags"], json!(["plexjob", "plexjob-run=1"]));
    assert_eq!(s["project"], crate::harness::PROJECT);
    assert_eq!(s["dynamic_ip_required"], true);
    assert_eq!(s["public_ips"], json!([]));
    assert_eq!(s["location"], json!(null));
    let root = &s["volumes"]["0"];
    assert_eq!(root["volume_type"], "l_ssd");
    assert_eq!(root["name"], "plexjob-1-root");
    assert_eq!(root["size"], 20_000_000_000u64);
    assert_eq!(root["server"]["id"], id);
    // The root volume is an Instance API volume.
    let v = emu.get(&format!(
        "/instance/v1/zones/{ZONE}/volumes/{}",
        root["id"].as_str().unwrap()
    ));
    assert_eq!(v["volume"]["volume_type"], "l_ssd");
    assert_eq!(v["volume"]["server"]["name"], "plexjob-1");
}

#[test]
fn poweron_starts_then_runs_with_a_dynamic_ip_and_poweroff_drops_it() {
    // Long enough that the transient states are still there when the next request looks.
    let emu = Emu::start(&["--boot-delay", "1500ms", "--stop-delay", "1500ms"]);
    let id = emu.create_server(ZONE, "DEV1-S", json!({}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let task = emu.action(ZONE, &id, "poweron").expect(202)["task"].clone();
    assert_eq!(task["description"], "server_batch_poweron");
    assert_eq!(task["status"], "pending");
    assert_eq!(task["href_result"], format!("/servers/{id}"));
    let s = emu.server(ZONE, &id).expect(200)["server"].clone();
    assert_eq!(s["state"], "starting");
    assert_eq!(s["state_detail"], "allocating node");
    assert_eq!(s["allowed_actions"], json!(["stop_in_place", "backup"]));
    // Transient: every action is refused with the real body.
    let e = emu.action(ZONE, &id, "poweroff").expect(409);
    assert_eq!(e["type"], "transient_state");
    assert_eq!(e["resource"], "instance_server");
    assert_eq!(e["resource_id"], id.as_str());
    assert_eq!(e["current_state"], "starting");

    emu.wait_state(ZONE, &id, Some("running"), 10);
    let s = emu.server(ZONE, &id).expect(200)["server"].clone();
    assert_eq!(s["state_detail"], "booting kernel");
    assert_eq!(
        s["allowed_actions"],
        json!(["poweroff", "terminate", "reboot", "stop_in_place", "backup"])
    );
    let ip = &s["public_ips"][0];
    assert_eq!(ip["address"], "127.0.0.1");
    assert_eq!(ip["dynamic"], true);
    assert_eq!(ip["family"], "inet");
    assert_eq!(ip["state"], "pending");
    assert_eq!(s["public_ip"], *ip);
    assert_eq!(s["location"]["zone_id"], ZONE);

    // An action outside allowed_actions (chosen: 400 invalid_request_error).
    let e = emu.action(ZONE, &id, "poweron").expect(400);
    assert_eq!(e["type"], "invalid_request_error");

    emu.action(ZONE, &id, "poweroff").expect(202);
    let s = emu.server(ZONE, &id).expect(200)["server"].clone();
    assert_eq!(s["state"], "stopping");
    assert_eq!(s["state_detail"], "stopping");
    assert_eq!(
        s["public_ips"],
        json!([]),
        "the dynamic IP goes while stopping"
    );
    emu.wait_state(ZONE, &id, Some("stopped"), 10);
    let s = emu.server(ZONE, &id).expect(200)["server"].clone();
    assert_eq!(s["public_ip"], json!(null));
    assert_eq!(s["location"], json!(null));
}

#[test]
fn terminate_deletes_local_volumes_keeps_sbs_and_flexible_ips() {
    let emu = Emu::start(&["--detach-delay", "500ms", "--stop-delay", "1500ms"]);
    let local = emu.create_server(ZONE, "DEV1-S", json!({}));
    let sbs = emu.create_server(
        ZONE,
        "DEV1-S",
        json!({"volumes": {"0": {"volume_type": "sbs_volume", "size": 15_000_000_000u64}}}),
    );
    let ip = emu
        .call(
            "POST",
            &format!("/instance/v1/zones/{ZONE}/ips"),
            Some(json!({"type": "routed_ipv4"})),
        )
        .expect(201)["ip"]
        .clone();
    let ip_id = ip["id"].as_str().unwrap();
    let (lid, sid) = (local["id"].as_str().unwrap(), sbs["id"].as_str().unwrap());
    emu.call(
        "PATCH",
        &format!("/instance/v1/zones/{ZONE}/ips/{ip_id}"),
        Some(json!({"server": lid})),
    )
    .expect(200);
    let lvol = local["volumes"]["0"]["id"].as_str().unwrap();
    let svol = sbs["volumes"]["0"]["id"].as_str().unwrap();
    let block = |id: &str| emu.get(&format!("/block/v1alpha1/zones/{ZONE}/volumes/{id}"));
    assert_eq!(block(svol)["status"], "in_use");
    assert_eq!(block(svol)["references"][0]["product_resource_id"], sid);
    assert_eq!(block(svol)["references"][0]["status"], "attached");
    // An SBS volume is not an Instance API volume (§2.7).
    let e = emu
        .call(
            "GET",
            &format!("/instance/v1/zones/{ZONE}/volumes/{svol}"),
            None,
        )
        .expect(404);
    assert_eq!(e["resource"], "instance_volume");

    for id in [lid, sid] {
        emu.action(ZONE, id, "poweron").expect(202);
    }
    for id in [lid, sid] {
        emu.wait_state(ZONE, id, Some("running"), 10);
    }
    // With a flexible IP attached, no dynamic IP is added.
    let s = emu.server(ZONE, lid).expect(200)["server"].clone();
    assert_eq!(s["public_ips"].as_array().unwrap().len(), 1);
    assert_eq!(s["public_ips"][0]["id"], ip_id);
    assert_eq!(s["public_ips"][0]["dynamic"], false);

    for id in [lid, sid] {
        emu.action(ZONE, id, "terminate").expect(202);
        let s = emu.server(ZONE, id).expect(200)["server"].clone();
        assert_eq!(s["state"], "stopping");
        assert_eq!(s["state_detail"], "terminating");
    }
    for id in [lid, sid] {
        emu.wait_state(ZONE, id, None, 10);
    }
    let e = emu.server(ZONE, lid).expect(404);
    assert_eq!(
        e,
        json!({"type": "not_found", "message": "resource is not found",
               "resource": "instance_server", "resource_id": lid})
    );
    emu.call(
        "GET",
        &format!("/instance/v1/zones/{ZONE}/volumes/{lvol}"),
        None,
    )
    .expect(404);
    // The SBS root detaches, then is available and deletable through the Block API.
    let v = block(svol);
    assert!(
        v["status"] == "available" || v["references"][0]["status"] == "detaching",
        "{v}"
    );
    wait_until(10, "the SBS root to be available", || {
        let v = block(svol);
        v["status"] == "available" && v["references"] == json!([])
    });
    assert!(block(svol)["last_detached_at"].is_string());
    // The flexible IP survives, detached.
    let ip = emu.get(&format!("/instance/v1/zones/{ZONE}/ips/{ip_id}"))["ip"].clone();
    assert_eq!(ip["server"], json!(null));
    assert_eq!(ip["state"], "detached");
    emu.call(
        "DELETE",
        &format!("/block/v1alpha1/zones/{ZONE}/volumes/{svol}"),
        None,
    )
    .expect(204);
    emu.call(
        "DELETE",
        &format!("/instance/v1/zones/{ZONE}/ips/{ip_id}"),
        None,
    )
    .expect(204);
    assert_eq!(emu.resources()["count"], 0);
}

#[test]
fn delete_needs_a_stopped_server_and_keeps_every_volume() {
    let emu = Emu::start(&["--stop-delay", "1500ms"]);
    let s = emu.create_server(ZONE, "DEV1-M", json!({}));
    let id = s["id"].as_str().unwrap();
    emu.action(ZONE, id, "poweron").expect(202);
    emu.wait_state(ZONE, id, Some("running"), 10);
    let e = emu.call("DELETE", &srv(id), None).expect(400);
    assert_eq!(e["type"], "invalid_request_error");
    assert_eq!(e["message"], "server should be stopped");
    emu.action(ZONE, id, "poweroff").expect(202);
    let e = emu.call("DELETE", &srv(id), None).expect(409);
    assert_eq!(e["type"], "transient_state");
    emu.wait_state(ZONE, id, Some("stopped"), 10);
    let r = emu.call("DELETE", &srv(id), None);
    assert_eq!(r.status, 204);
    assert_eq!(r.body, "");
    emu.server(ZONE, id).expect(404);
    let vol = s["volumes"]["0"]["id"].as_str().unwrap();
    let v = emu.get(&format!("/instance/v1/zones/{ZONE}/volumes/{vol}"))["volume"].clone();
    assert_eq!(v["server"], json!(null));
    assert_eq!(v["state"], "available");
    emu.call(
        "DELETE",
        &format!("/instance/v1/zones/{ZONE}/volumes/{vol}"),
        None,
    )
    .expect(204);
    assert_eq!(emu.resources()["count"], 0);
}

#[test]
fn reboot_keeps_the_address_and_detach_volume_frees_an_sbs_volume() {
    let emu = Emu::start(&["--boot-delay", "1500ms"]);
    let s = emu.create_server(
        ZONE,
        "GP1-XS",
        json!({"volumes": {
            "0": {"volume_type": "sbs_volume"},
            "1": {"volume_type": "sbs_volume", "size": 50_000_000_000u64, "name": "data"},
        }}),
    );
    let id = s["id"].as_str().unwrap();
    assert_eq!(s["volumes"]["0"]["volume_type"], "sbs_volume");
    let data = s["volumes"]["1"]["id"].as_str().unwrap();
    emu.action(ZONE, id, "poweron").expect(202);
    emu.wait_state(ZONE, id, Some("running"), 10);
    let before = emu.server(ZONE, id).expect(200)["server"]["public_ips"][0]["id"].clone();
    emu.action(ZONE, id, "reboot").expect(202);
    let s2 = emu.server(ZONE, id).expect(200)["server"].clone();
    assert_eq!(s2["state"], "starting");
    assert_eq!(s2["state_detail"], "rebooting");
    emu.wait_state(ZONE, id, Some("running"), 10);
    let after = emu.server(ZONE, id).expect(200)["server"]["public_ips"][0]["id"].clone();
    assert_eq!(before, after);
    // Hot-detach of an SBS volume from a running server.
    let r = emu.call(
        "POST",
        &format!("{}/detach-volume", srv(id)),
        Some(json!({"volume_id": data})),
    );
    let s3 = r.expect(200)["server"].clone();
    assert!(s3["volumes"].get("1").is_none(), "{s3}");
    wait_until(10, "the data volume to be available", || {
        emu.get(&format!("/block/v1alpha1/zones/{ZONE}/volumes/{data}"))["status"] == "available"
    });
    // A volume that is not attached.
    let e = emu
        .call(
            "POST",
            &format!("{}/detach-volume", srv(id)),
            Some(json!({"volume_id": data})),
        )
        .expect(400);
    assert_eq!(e["type"], "invalid_arguments");
    // The root is still in use: the Block API refuses to delete it.
    let root = s["volumes"]["0"]["id"].as_str().unwrap();
    let e = emu
        .call(
            "DELETE",
            &format!("/block/v1alpha1/zones/{ZONE}/volumes/{root}"),
            None,
        )
        .expect(412);
    assert_eq!(e["type"], "precondition_failed");
    assert_eq!(e["precondition"], "resource_still_in_use");
}

#[test]
fn user_data_is_plain_text_with_a_key_list_and_empty_404s() {
    let emu = Emu::start(&[]);
    let id = emu.create_server(ZONE, "DEV1-S", json!({}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let ud = format!("{}/user_data", srv(&id));
    let script = b"#cloud-config\nruncmd:\n  - echo hi\n".to_vec();
    let r = emu.raw(
        Some(&emu.token),
        "PATCH",
        &format!("{ud}/cloud-init"),
        Some(("text/plain", script.clone())),
    );
    assert_eq!(r.status, 204);
    assert_eq!(r.body, "");
    let r = emu.call("GET", &format!("{ud}/cloud-init"), None);
    assert_eq!(r.status, 200);
    assert!(
        r.content_type.starts_with("text/plain"),
        "{}",
        r.content_type
    );
    assert_eq!(r.body.as_bytes(), script.as_slice());
    assert_eq!(emu.get(&ud), json!({"user_data": ["cloud-init"]}));
    let r = emu.call("GET", &format!("{ud}/missing"), None);
    assert_eq!((r.status, r.body.as_str()), (404, ""));
    emu.call("DELETE", &format!("{ud}/cloud-init"), None)
        .expect(204);
    assert_eq!(emu.get(&ud), json!({"user_data": []}));
    let e = emu
        .raw(
            Some(&emu.token),
            "PATCH",
            &format!("{ud}/..%2Fescape"),
            Some(("text/plain", b"x".to_vec())),
        )
        .expect(400);
    assert_eq!(e["type"], "invalid_arguments");
}
