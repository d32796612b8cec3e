//! Test controls under `/_emulator/` (no auth, not logged): every resource, the request log,
//! the hook calls, the emulated clock, and faults at run time.

use axum::Router;
use axum::body::Bytes;
use axum::extract::OriginalUri;
use axum::routing::{get, post};
use serde_json::json;

use crate::apierror::ApiError;
use crate::clock::fmt;
use crate::faults::FaultSpec;
use crate::http::{ApiResult, St, body_json, ok, query_map};
use crate::lifecycle::App;
use crate::world::{lock, string_list};

pub fn routes() -> Router<App> {
    Router::new()
        .route("/_emulator/resources", get(resources))
        .route("/_emulator/requests", get(requests))
        .route("/_emulator/hooks", get(hooks))
        .route("/_emulator/clock", get(clock))
        .route("/_emulator/clock/advance", post(advance))
        .route(
            "/_emulator/faults",
            get(faults).post(add_faults).delete(clear_faults),
        )
}

async fn resources(st: St) -> ApiResult {
    Ok(ok(&lock(&st.0.world).resources_json()))
}

/// `?since=SEQ` returns only later entries.
async fn requests(st: St, uri: OriginalUri) -> ApiResult {
    let since: u64 = query_map(uri.query())
        .get("since")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let w = lock(&st.0.world);
    let list: Vec<_> = w.requests.iter().filter(|r| r.seq > since).collect();
    Ok(ok(&json!({ "requests": list })))
}

async fn hooks(st: St) -> ApiResult {
    Ok(ok(&json!({ "calls": lock(&st.0.world).hook_calls })))
}

async fn clock(st: St) -> ApiResult {
    let w = lock(&st.0.world);
    Ok(ok(
        &json!({"now": fmt(w.now()), "offset_secs": w.clock.offset_secs}),
    ))
}

/// `POST /_emulator/clock/advance?secs=N`.
async fn advance(st: St, uri: OriginalUri) -> ApiResult {
    let Some(secs) = query_map(uri.query())
        .get("secs")
        .and_then(|s| s.parse::<i64>().ok())
    else {
        return Err(ApiError::invalid_argument(
            "secs",
            "required",
            "give ?secs=N (whole seconds)",
        ));
    };
    let mut w = lock(&st.0.world);
    w.clock.advance(secs);
    // The clock is part of the state file (key expiries must survive a restart).
    if let Err(e) = w.save() {
        eprintln!("scaleway-emulator: state file: {e:#}");
    }
    Ok(ok(
        &json!({"now": fmt(w.now()), "offset_secs": w.clock.offset_secs}),
    ))
}

fn fault_list(st: &St) -> serde_json::Value {
    let w = lock(&st.0.world);
    let specs: Vec<String> = w.faults.specs().iter().map(|f| f.to_string()).collect();
    json!({ "faults": specs })
}

async fn faults(st: St) -> ApiResult {
    Ok(ok(&fault_list(&st)))
}

/// Body `{"faults":["transient:2", …]}` adds them; answers the faults now in force.
async fn add_faults(st: St, body: Bytes) -> ApiResult {
    let body = body_json(&body)?;
    let mut specs = Vec::new();
    for s in string_list(&body["faults"]) {
        specs.push(
            s.parse::<FaultSpec>()
                .map_err(|e| ApiError::invalid_argument("faults", "format", e))?,
        );
    }
    {
        let mut w = lock(&st.0.world);
        for f in specs {
            w.faults.add(f);
        }
    }
    Ok(ok(&fault_list(&st)))
}

async fn clear_faults(st: St) -> ApiResult {
    lock(&st.0.world).faults.clear();
    Ok(ok(&fault_list(&st)))
}
