//! IAM: applications, policies and API keys, and what a key of an application may then do
//! (scaleway.md §2.12): its policies' permission sets on their projects, until it expires.

use serde_json::{Value, json};

use crate::harness::{Emu, ORG, PROJECT, ZONE};

const OTHER_PROJECT: &str = "5ca1e000-0000-4000-8000-0000000000b2";

/// An application with one policy (`sets` on `projects`) and a key expiring in an hour.
/// Returns (application, policy, key with secret).
fn key_for(emu: &Emu, sets: &[&str], projects: &[&str]) -> (String, String, Value) {
    let app = emu
        .call(
            "POST",
            "/iam/v1alpha1/applications",
            Some(json!({"name": "plexjob-run", "description": "", "organization_id": ORG})),
        )
        .expect(200);
    let app_id = app["id"].as_str().unwrap().to_string();
    assert_eq!(app["nb_api_keys"], 0);
    let policy = emu
        .call(
            "POST",
            "/iam/v1alpha1/policies",
            Some(json!({
                "name": "plexjob-run", "description": "", "organization_id": ORG,
                "application_id": app_id,
                "rules": [{"permission_set_names": sets, "project_ids": projects}],
            })),
        )
        .expect(200);
    assert_eq!(policy["application_id"], app_id.as_str());
    assert_eq!(policy["nb_rules"], 1);
    let expires = emu.get("/_emulator/clock")["now"]
        .as_str()
        .unwrap()
        .to_string();
    let expires = bump_hour(&expires);
    let key = emu
        .call(
            "POST",
            "/iam/v1alpha1/api-keys",
            Some(json!({"application_id": app_id, "description": "run key",
                        "expires_at": expires, "default_project_id": PROJECT})),
        )
        .expect(200);
    (app_id, policy["id"].as_str().unwrap().to_string(), key)
}

/// An RFC 3339 timestamp one hour after `ts`.
fn bump_hour(ts: &str) -> String {
    let t: jiff::Timestamp = ts.parse().unwrap();
    (t + jiff::SignedDuration::from_hours(1)).to_string()
}

#[test]
fn a_policy_scoped_key_acts_on_its_project_only() {
    let emu = Emu::start(&["--project-id", PROJECT, "--project-id", OTHER_PROJECT]);
    let mine = emu.create_server(ZONE, "DEV1-S", json!({}));
    let theirs = emu.create_server(ZONE, "DEV1-S", json!({"project": OTHER_PROJECT}));
    let (app, _, key) = key_for(&emu, &["InstancesFullAccess"], &[PROJECT]);
    let ak = key["access_key"].as_str().unwrap();
    let secret = key["secret_key"].as_str().unwrap();
    assert!(ak.starts_with("SCW") && ak.len() == 20, "{ak}");
    assert!(uuid::Uuid::parse_str(secret).is_ok());
    assert_eq!(key["application_id"], app.as_str());
    // The secret is shown once.
    let again = emu.get(&format!("/iam/v1alpha1/api-keys/{ak}"));
    assert!(again.get("secret_key").is_none(), "{again}");
    assert_eq!(
        emu.get(&format!("/iam/v1alpha1/applications/{app}"))["nb_api_keys"],
        1
    );

    let (mine_id, theirs_id) = (mine["id"].as_str().unwrap(), theirs["id"].as_str().unwrap());
    let srv = |id: &str| format!("/instance/v1/zones/{ZONE}/servers/{id}");
    emu.call_as(secret, "GET", &srv(mine_id), None).expect(200);
    let e = emu
        .call_as(secret, "GET", &srv(theirs_id), None)
        .expect(403);
    assert_eq!(
        e,
        json!({"type": "permissions_denied", "message": "insufficient permissions",
               "details": [{"resource": "instance_server", "action": "read"}]})
    );
    let e = emu
        .call_as(
            secret,
            "POST",
            &format!("{}/action", srv(theirs_id)),
            Some(json!({"action": "poweron"})),
        )
        .expect(403);
    assert_eq!(e["details"][0]["action"], "write");
    // A list shows only the key's project.
    let list = emu
        .call_as(
            secret,
            "GET",
            &format!("/instance/v1/zones/{ZONE}/servers"),
            None,
        )
        .expect(200);
    let ids: Vec<_> = list["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [mine_id]);
    // Creating in the other project is refused; in its own it works.
    let image = emu.image(ZONE, "ubuntu_noble", "instance_local");
    emu.call_as(
        secret,
        "POST",
        &format!("/instance/v1/zones/{ZONE}/servers"),
        Some(json!({"commercial_type": "DEV1-S", "image": image, "project": OTHER_PROJECT})),
    )
    .expect(403);
    // The self-destruct path: power on and terminate its own server.
    emu.call_as(
        secret,
        "POST",
        &format!("{}/action", srv(mine_id)),
        Some(json!({"action": "poweron"})),
    )
    .expect(202);
    emu.wait_state(ZONE, mine_id, Some("running"), 10);
    emu.call_as(
        secret,
        "POST",
        &format!("{}/action", srv(mine_id)),
        Some(json!({"action": "terminate"})),
    )
    .expect(202);
    emu.wait_state(ZONE, mine_id, None, 10);
    // No IAM and no Block access.
    let e = emu
        .call_as(
            secret,
            "GET",
            &format!("/iam/v1alpha1/applications/{app}"),
            None,
        )
        .expect(403);
    assert_eq!(e["type"], "permissions_denied");
    emu.call_as(
        secret,
        "GET",
        &format!("/block/v1alpha1/zones/{ZONE}/volumes"),
        None,
    )
    .expect(403);
    // The log names the key, never its secret.
    let log = serde_json::to_string(&emu.requests()).unwrap();
    assert!(log.contains(ak) && !log.contains(secret));
}

#[test]
fn read_only_keys_read_and_expired_or_deleted_keys_are_denied() {
    let emu = Emu::start(&[]);
    let s = emu.create_server(ZONE, "DEV1-S", json!({}));
    let id = s["id"].as_str().unwrap();
    let (app, policy, key) = key_for(&emu, &["InstancesReadOnly"], &[PROJECT]);
    let secret = key["secret_key"].as_str().unwrap();
    let ak = key["access_key"].as_str().unwrap();
    let path = format!("/instance/v1/zones/{ZONE}/servers/{id}");
    emu.call_as(secret, "GET", &path, None).expect(200);
    emu.call_as(
        secret,
        "POST",
        &format!("{path}/action"),
        Some(json!({"action": "poweron"})),
    )
    .expect(403);
    // The rules of the policy.
    let rules = emu.get(&format!("/iam/v1alpha1/rules?policy_id={policy}"));
    assert_eq!(rules["total_count"], 1);
    assert_eq!(
        rules["rules"][0]["permission_set_names"],
        json!(["InstancesReadOnly"])
    );
    assert_eq!(rules["rules"][0]["project_ids"], json!([PROJECT]));

    // Past expires_at on the emulated clock: 401 expired.
    emu.call("POST", "/_emulator/clock/advance?secs=7200", None)
        .expect(200);
    let e = emu.call_as(secret, "GET", &path, None).expect(401);
    assert_eq!(e["reason"], "expired");
    assert_eq!(e["method"], "api_key");
    emu.call("DELETE", &format!("/iam/v1alpha1/api-keys/{ak}"), None)
        .expect(204);
    emu.call("GET", &format!("/iam/v1alpha1/api-keys/{ak}"), None)
        .expect(404);
    emu.call("DELETE", &format!("/iam/v1alpha1/policies/{policy}"), None)
        .expect(204);
    emu.call("DELETE", &format!("/iam/v1alpha1/applications/{app}"), None)
        .expect(204);
    let e = emu
        .call("GET", &format!("/iam/v1alpha1/applications/{app}"), None)
        .expect(404);
    assert_eq!(e["resource"], "application");
}

#[test]
fn with_secret_keys_only_they_and_live_iam_keys_get_in() {
    let admin = crate::harness::TOKEN;
    let emu = Emu::start(&["--secret-key", admin]);
    let (app, _, key) = key_for(&emu, &["InstancesFullAccess"], &[PROJECT]);
    let secret = key["secret_key"].as_str().unwrap();
    let path = format!("/instance/v1/zones/{ZONE}/servers");
    emu.call_as(secret, "GET", &path, None).expect(200);
    // Deleting the application deletes its keys.
    emu.call("DELETE", &format!("/iam/v1alpha1/applications/{app}"), None)
        .expect(204);
    let e = emu.call_as(secret, "GET", &path, None).expect(401);
    assert_eq!(e["reason"], "not_found");
}

#[test]
fn policies_are_validated() {
    let emu = Emu::start(&[]);
    let app = emu
        .call(
            "POST",
            "/iam/v1alpha1/applications",
            Some(json!({"name": "a", "description": ""})),
        )
        .expect(200)["id"]
        .clone();
    let bad = |rule: Value| {
        emu.call(
            "POST",
            "/iam/v1alpha1/policies",
            Some(json!({"name": "p", "description": "", "application_id": app, "rules": [rule]})),
        )
        .expect(400)
    };
    let e = bad(json!({"permission_set_names": ["InstancesFullAcess"], "project_ids": [PROJECT]}));
    assert_eq!(e["type"], "invalid_arguments");
    bad(json!({"permission_set_names": ["IAMManager"], "project_ids": [PROJECT]}));
    bad(json!({"permission_set_names": ["InstancesFullAccess"], "organization_id": ORG}));
    bad(json!({"permission_set_names": ["InstancesFullAccess"],
               "project_ids": ["5ca1e000-0000-4000-8000-0000000000ff"]}));
    let e = emu
        .call(
            "POST",
            "/iam/v1alpha1/api-keys",
            Some(json!({"application_id": app, "description": "",
                        "expires_at": "2000-01-01T00:00:00Z"})),
        )
        .expect(400);
    assert_eq!(e["details"][0]["argument_name"], "expires_at");
}
