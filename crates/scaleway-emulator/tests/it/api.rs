//! Auth, zones, paging and filters, the catalog, the Marketplace, error shapes, the request log,
//! and the in-process `spawn`.

use serde_json::json;

use crate::harness::{Emu, PROJECT, TOKEN, ZONE};

#[test]
fn auth_needs_a_token_and_only_the_configured_secret_keys() {
    let emu = Emu::start(&["--secret-key", TOKEN]);
    let path = format!("/instance/v1/zones/{ZONE}/servers");
    let e = emu.raw(None, "GET", &path, None).expect(401);
    assert_eq!(
        e,
        json!({"type": "denied_authentication", "message": "authentication is denied",
               "method": "unknown_method", "reason": "invalid_argument"})
    );
    let e = emu
        .call_as("22222222-2222-4222-8222-222222222222", "GET", &path, None)
        .expect(401);
    assert_eq!(e["method"], "api_key");
    assert_eq!(e["reason"], "not_found");
    let r = emu.call("GET", &path, None);
    assert_eq!(r.expect(200), json!({"servers": []}));
    assert_eq!(r.total, Some(0));
    // Without --secret-key any non-empty token is accepted.
    let open = Emu::start(&[]);
    open.call_as("anything", "GET", &path, None).expect(200);
}

#[test]
fn unknown_zones_and_routes_answer_real_error_shapes() {
    let emu = Emu::start(&["--zone", "fr-par-1", "--zone", "nl-ams-1"]);
    let e = emu
        .call("GET", "/instance/v1/zones/fr-par-2/servers", None)
        .expect(400);
    assert_eq!(e["type"], "invalid_arguments");
    assert_eq!(e["details"][0]["argument_name"], "zone");
    emu.call("GET", "/instance/v1/zones/nl-ams-1/servers", None)
        .expect(200);
    let e = emu.call("GET", "/instance/v1/nothing", None).expect(404);
    assert_eq!(e["type"], "not_found");
    // The same server ID in another zone is not found.
    let id = emu.create_server(ZONE, "DEV1-S", json!({}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let e = emu.server("nl-ams-1", &id).expect(404);
    assert_eq!(e["resource"], "instance_server");
}

#[test]
fn create_validates_like_the_api() {
    let emu = Emu::start(&[]);
    let path = format!("/instance/v1/zones/{ZONE}/servers");
    // The recorded 400 for a body without commercial_type, image and volumes (§2.1).
    let e = emu.call("POST", &path, Some(json!({}))).expect(400);
    assert_eq!(e["type"], "invalid_arguments");
    let names: Vec<_> = e["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["argument_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["commercial_type", "image", "volumes"]);
    assert_eq!(e["details"][0]["reason"], "required");
    let local = emu.image(ZONE, "ubuntu_noble", "instance_local");
    let sbs = emu.image(ZONE, "ubuntu_noble", "instance_sbs");
    let bad = |body: serde_json::Value| emu.call("POST", &path, Some(body)).expect(400);
    let e = bad(json!({"commercial_type": "DEV9-Z", "image": local}));
    assert_eq!(e["message"], "Validation Error");
    assert!(e["fields"]["commercial_type"][0].is_string());
    // Local storage beyond the type's volumes_constraint.max_size.
    let e = bad(json!({"commercial_type": "DEV1-S", "image": local,
                       "volumes": {"0": {"volume_type": "l_ssd", "size": 40_000_000_000u64}}}));
    assert!(e["fields"]["volumes"].is_array(), "{e}");
    // A block-only type has no local storage; an SBS image needs an SBS root.
    bad(json!({"commercial_type": "PRO2-S", "image": local}));
    bad(json!({"commercial_type": "DEV1-S", "image": sbs,
               "volumes": {"0": {"volume_type": "l_ssd"}}}));
    let e = emu
        .call(
            "POST",
            &path,
            Some(json!({"commercial_type": "DEV1-S", "image": "ubuntu_noble"})),
        )
        .expect(404);
    assert_eq!(e["resource"], "instance_image");
    // An SBS image gives an SBS root of the image size by default.
    let s = emu
        .call(
            "POST",
            &path,
            Some(json!({"commercial_type": "PRO2-S", "image": sbs})),
        )
        .expect(201)["server"]
        .clone();
    assert_eq!(s["volumes"]["0"]["volume_type"], "sbs_volume");
    let vol = s["volumes"]["0"]["id"].as_str().unwrap();
    let v = emu.get(&format!("/block/v1alpha1/zones/{ZONE}/volumes/{vol}"));
    assert_eq!(v["size"], 10_000_000_000u64);
    assert_eq!(v["name"], "Ubuntu 24.04 Noble Numbat_sbs_volume_0");
    assert_eq!(v["project_id"], PROJECT);
}

#[test]
fn lists_page_with_x_total_count_and_filter_tags_with_and() {
    let emu = Emu::start(&[]);
    let mut ids = Vec::new();
    for i in 0..7 {
        let tags = if i % 2 == 0 {
            json!(["plexjob", "even"])
        } else {
            json!(["plexjob"])
        };
        let s = emu.create_server(
            ZONE,
            "DEV1-S",
            json!({"name": format!("job-{i}"), "tags": tags}),
        );
        ids.push(s["id"].as_str().unwrap().to_string());
    }
    emu.create_server(ZONE, "DEV1-S", json!({"name": "other"}));
    let base = format!("/instance/v1/zones/{ZONE}/servers");
    let mut seen = Vec::new();
    for page in 1..=3 {
        let r = emu.call(
            "GET",
            &format!("{base}?tags=plexjob&per_page=3&page={page}"),
            None,
        );
        let v = r.expect(200);
        assert_eq!(r.total, Some(7));
        assert!(v.get("total_count").is_none(), "the total is only a header");
        seen.extend(
            v["servers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["id"].as_str().unwrap().to_string()),
        );
    }
    // Newest first by default (creation_date_desc).
    let mut want = ids.clone();
    want.reverse();
    assert_eq!(seen, want);
    let r = emu.call("GET", &format!("{base}?tags=plexjob,even"), None);
    assert_eq!(r.total, Some(4), "several tags are ANDed");
    let r = emu.call("GET", &format!("{base}?name=job-"), None);
    assert_eq!(r.total, Some(7), "name is a substring match");
    let r = emu.call(
        "GET",
        &format!("{base}?project={PROJECT}&state=stopped"),
        None,
    );
    assert_eq!(r.total, Some(8));
    let e = emu
        .call("GET", &format!("{base}?per_page=101"), None)
        .expect(400);
    assert_eq!(e["details"][0]["argument_name"], "per_page");
}

#[test]
fn products_availability_and_images_match_the_reference() {
    let emu = Emu::start(&[
        "--fault",
        "shortage:GP1-S@fr-par-1",
        "--fault",
        "end-of-service:DEV1-L",
    ]);
    let r = emu.call(
        "GET",
        &format!("/instance/v1/zones/{ZONE}/products/servers"),
        None,
    );
    let v = r.expect(200);
    let n = v["servers"].as_object().unwrap().len();
    assert_eq!(r.total, Some(n));
    // scaleway.md §4 (2026-07-01 prices) and the recorded DEV1-S entry (§2.11).
    for (ty, ncpus, ram_gib, local_gb, price) in [
        ("DEV1-S", 2, 2u64, 20u64, 0.008976),
        ("DEV1-M", 3, 4, 40, 0.020196),
        ("DEV1-L", 4, 8, 80, 0.04284),
        ("GP1-XS", 4, 16, 150, 0.09282),
        ("GP1-S", 8, 32, 300, 0.19074),
        ("GP1-M", 16, 64, 600, 0.38352),
    ] {
        let t = &v["servers"][ty];
        assert_eq!(t["ncpus"], ncpus, "{ty}");
        assert_eq!(t["ram"], ram_gib << 30, "{ty}");
        assert_eq!(
            t["volumes_constraint"]["max_size"],
            local_gb * 1_000_000_000,
            "{ty}"
        );
        assert_eq!(t["hourly_price"], price, "{ty}");
        assert!(t["network"]["sum_internet_bandwidth"].as_u64().unwrap() > 0);
        assert_eq!(t["end_of_service"], ty == "DEV1-L", "{ty}");
    }
    assert_eq!(v["servers"]["PRO2-S"]["volumes_constraint"]["max_size"], 0);
    let r = emu.call(
        "GET",
        &format!("/instance/v1/zones/{ZONE}/products/servers?per_page=5&page=2"),
        None,
    );
    assert_eq!(r.expect(200)["servers"].as_object().unwrap().len(), 5);
    assert_eq!(r.total, Some(n));
    let a = emu.get(&format!(
        "/instance/v1/zones/{ZONE}/products/servers/availability"
    ));
    assert_eq!(a["servers"]["GP1-S"]["availability"], "shortage");
    assert_eq!(a["servers"]["DEV1-S"]["availability"], "available");
    let a2 = emu.get("/instance/v1/zones/fr-par-2/products/servers/availability");
    assert_eq!(a2["servers"]["GP1-S"]["availability"], "available");
    // End of service shows on servers of the type too.
    let s = emu.create_server(ZONE, "DEV1-L", json!({}));
    assert_eq!(s["end_of_service"], true);
    // Marketplace: one image per label, zone and root volume kind, with compatible types.
    for label in ["debian_bookworm", "ubuntu_noble", "ubuntu_jammy"] {
        for kind in ["instance_local", "instance_sbs"] {
            let v = emu.get(&format!(
                "/marketplace/v2/local-images?image_label={label}&zone=nl-ams-1&type={kind}&order_by=type_asc"
            ));
            assert_eq!(v["total_count"], 1, "{label} {kind}");
            let img = &v["local_images"][0];
            assert_eq!(img["type"], kind);
            assert_eq!(img["zone"], "nl-ams-1");
            assert_eq!(img["arch"], "x86_64");
            let types = img["compatible_commercial_types"].as_array().unwrap();
            assert!(types.contains(&json!("DEV1-S")));
            assert_eq!(types.contains(&json!("PRO2-S")), kind == "instance_sbs");
            let id = img["id"].as_str().unwrap();
            let i = emu.get(&format!("/instance/v1/zones/nl-ams-1/images/{id}"))["image"].clone();
            assert_eq!(i["id"], id);
            assert_eq!(i["state"], "available");
            let root = if kind == "instance_sbs" {
                "sbs_snapshot"
            } else {
                "l_ssd"
            };
            assert_eq!(i["root_volume"]["volume_type"], root);
        }
    }
    let all = emu.get("/marketplace/v2/local-images?image_label=ubuntu_noble&zone=fr-par-1");
    assert_eq!(all["total_count"], 2);
    assert_eq!(all["local_images"][0]["type"], "instance_local", "type_asc");
}

#[test]
fn the_request_log_shows_calls_without_secrets() {
    let emu = Emu::start(&[]);
    let id = emu.create_server(ZONE, "DEV1-S", json!({}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    emu.raw(
        None,
        "GET",
        &format!("/instance/v1/zones/{ZONE}/servers?tags=a,b"),
        None,
    );
    let log = emu.requests();
    let create = log
        .iter()
        .find(|r| r["method"] == "POST")
        .expect("the create is logged");
    assert_eq!(create["path"], format!("/instance/v1/zones/{ZONE}/servers"));
    assert_eq!(create["status"], 201);
    assert_eq!(create["caller"], "admin");
    let denied = log.last().unwrap();
    assert_eq!(denied["status"], 401);
    assert_eq!(denied["query"], "tags=a,b");
    assert_eq!(denied["caller"], "");
    let text = serde_json::to_string(&log).unwrap();
    assert!(!text.contains(TOKEN), "no secret in the log");
    assert!(!text.contains("/_emulator/"), "controls are not logged");
    let since = log.last().unwrap()["seq"].as_u64().unwrap();
    emu.server(ZONE, &id).expect(200);
    let newer = emu.get(&format!("/_emulator/requests?since={since}"))["requests"].clone();
    assert_eq!(newer.as_array().unwrap().len(), 1);
}

#[test]
fn spawn_serves_in_process_and_stops_on_drop() {
    let emu = scaleway_emulator::spawn(scaleway_emulator::Options::default()).unwrap();
    let url = emu.url();
    let agent = crate::harness::agent();
    let r = agent
        .get(format!("{url}/instance/v1/zones/{ZONE}/servers"))
        .header("X-Auth-Token", TOKEN)
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    drop(emu);
    assert!(
        agent
            .get(format!("{url}/_emulator/resources"))
            .call()
            .is_err(),
        "nothing answers once the handle is dropped"
    );
}

#[test]
fn serve_prints_one_line_and_exits_cleanly_on_sigterm() {
    let mut emu = Emu::start(&[]);
    assert!(emu.base.starts_with("http://127.0.0.1:"), "{}", emu.base);
    emu.get(&format!("/instance/v1/zones/{ZONE}/servers"));
    let status = emu.stop();
    assert!(status.success(), "{status:?}");
}
