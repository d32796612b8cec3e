//! Scaleway's answers (scaleway.md §2-3): a 2xx body and an error body are read without a panic
//! whatever they hold, and a server read, written back in the API's shape, reads back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexburst::cloud::scaleway::api::{self, Server};
use serde_json::{Value, json};

/// `server` as the Instance API writes it.
fn render(s: &Server) -> Value {
    let volumes: serde_json::Map<String, Value> = s
        .volumes
        .iter()
        .enumerate()
        // Zero-padded keys keep the volumes in order (the reader sees the object's key order).
        .map(|(i, (id, t))| (format!("{i:06}"), json!({"id": id, "volume_type": t})))
        .collect();
    json!({
        "id": s.id, "state": s.state, "state_detail": s.state_detail,
        "public_ips": s.ipv4.iter().map(|a| json!({"address": a, "family": "inet"})).collect::<Vec<_>>(),
        "volumes": volumes, "tags": s.tags, "commercial_type": s.commercial_type, "zone": s.zone,
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for status in [404, 409, 429, 500, 503] {
        let e = api::error_from(
            "GET /instance/v1/zones/fr-par-2/servers".into(),
            status,
            text,
        );
        let _ = (e.to_string(), e.is_retryable(), e.is_quota(), e.is_auth());
        let _ = (e.is_out_of_stock(), e.is_not_found());
    }
    let body = api::body_from(text.to_string());
    let _ = api::server_types_from(&body);
    let _ = api::availability_from(&body);
    let _ = api::image_from(&body, "DEV1-S");
    let _ = api::ips_from(&body);
    let _ = api::tagged_from(&body, "applications", "plexburst");

    let mut servers = api::servers_from(&body);
    servers.push(Server::from_json(&body["server"]));
    for s in servers {
        assert_eq!(Server::from_json(&render(&s)), s);
    }
});
