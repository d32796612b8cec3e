//! `--state-file`: a restarted emulator (after SIGKILL) keeps every resource, and finishes the
//! transitions it was in.

use serde_json::json;

use crate::harness::{Emu, TOKEN, ZONE};

#[test]
fn a_killed_emulator_restarts_with_its_resources_and_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.json");
    let state = state.to_str().unwrap();
    let args = ["--state-file", state, "--secret-key", TOKEN];
    let mut emu = Emu::start(&args);
    let s = emu.create_server(
        ZONE,
        "DEV1-S",
        json!({"tags": ["plexjob"], "volumes": {"0": {"volume_type": "sbs_volume"}}}),
    );
    let id = s["id"].as_str().unwrap().to_string();
    emu.raw(
        Some(TOKEN),
        "PATCH",
        &format!("/instance/v1/zones/{ZONE}/servers/{id}/user_data/cloud-init"),
        Some(("text/plain", b"#cloud-config\n".to_vec())),
    )
    .expect(204);
    emu.action(ZONE, &id, "poweron").expect(202);
    emu.wait_state(ZONE, &id, Some("running"), 10);
    let app = emu
        .call(
            "POST",
            "/iam/v1alpha1/applications",
            Some(json!({"name": "a", "description": ""})),
        )
        .expect(200)["id"]
        .clone();
    emu.call(
        "POST",
        "/iam/v1alpha1/policies",
        Some(
            json!({"name": "p", "description": "", "application_id": app,
                    "rules": [{"permission_set_names": ["InstancesReadOnly"],
                               "project_ids": [crate::harness::PROJECT]}]}),
        ),
    )
    .expect(200);
    let key = emu
        .call(
            "POST",
            "/iam/v1alpha1/api-keys",
            Some(json!({"application_id": app, "description": ""})),
        )
        .expect(200);
    let secret = key["secret_key"].as_str().unwrap().to_string();
    let before = emu.resources();
    emu.kill();

    let emu = Emu::start(&args);
    assert_eq!(emu.resources(), before);
    let s = emu.server(ZONE, &id).expect(200)["server"].clone();
    assert_eq!(s["state"], "running");
    assert_eq!(s["public_ips"][0]["address"], "127.0.0.1");
    let r = emu.call(
        "GET",
        &format!("/instance/v1/zones/{ZONE}/servers/{id}/user_data/cloud-init"),
        None,
    );
    assert_eq!(r.body, "#cloud-config\n");
    emu.call_as(
        &secret,
        "GET",
        &format!("/instance/v1/zones/{ZONE}/servers/{id}"),
        None,
    )
    .expect(200);
}

#[test]
fn a_transition_in_progress_is_finished_after_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state.json");
    let state = state.to_str().unwrap();
    let mut emu = Emu::start(&["--state-file", state, "--stop-delay", "1h"]);
    let id = emu.create_server(ZONE, "DEV1-S", json!({}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    emu.action(ZONE, &id, "poweron").expect(202);
    emu.wait_state(ZONE, &id, Some("running"), 10);
    emu.action(ZONE, &id, "terminate").expect(202);
    assert_eq!(emu.state(ZONE, &id).as_deref(), Some("stopping"));
    emu.kill();
    let emu = Emu::start(&["--state-file", state]);
    emu.wait_state(ZONE, &id, None, 10);
    assert_eq!(emu.resources()["count"], 0);
}
