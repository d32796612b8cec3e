//! The Instance API v1 (`/instance/v1/zones/{zone}/…`, scaleway.md §2): products and
//! availability, images, servers (create, get, list, actions, delete, user data, detach-volume),
//! local volumes and flexible IPs.

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::apierror::ApiError;
use crate::catalog::SERVER_TYPES;
use crate::http::{
    ApiResult, INSTANCE_PER_PAGE, St, body_as, body_json, json, no_content, ok, page, query_map,
    with_total,
};
use crate::lifecycle::{App, run_effects};
use crate::world::{Caller, CreateIp, CreateServer, Product, lock, split_list};

pub fn routes() -> Router<App> {
    let z = "/instance/v1/zones/{zone}";
    Router::new()
        .route(&format!("{z}/products/servers"), get(products))
        .route(
            &format!("{z}/products/servers/availability"),
            get(availability),
        )
        .route(&format!("{z}/images/{{id}}"), get(image))
        .route(
            &format!("{z}/servers"),
            get(list_servers).post(create_server),
        )
        .route(
            &format!("{z}/servers/{{id}}"),
            get(get_server).delete(delete_server),
        )
        .route(
            &format!("{z}/servers/{{id}}/action"),
            post(action).get(list_actions),
        )
        .route(
            &format!("{z}/servers/{{id}}/user_data"),
            get(list_user_data),
        )
        .route(
            &format!("{z}/servers/{{id}}/user_data/{{key}}"),
            get(get_user_data)
                .patch(set_user_data)
                .delete(delete_user_data),
        )
        .route(
            &format!("{z}/servers/{{id}}/detach-volume"),
            post(detach_volume),
        )
        .route(&format!("{z}/volumes"), get(list_volumes))
        .route(
            &format!("{z}/volumes/{{id}}"),
            get(get_volume).delete(delete_volume),
        )
        .route(&format!("{z}/ips"), get(list_ips).post(create_ip))
        .route(
            &format!("{z}/ips/{{id}}"),
            get(get_ip).patch(update_ip).delete(delete_ip),
        )
}

type Z = Path<String>;
type ZId = Path<(String, String)>;
type C = Extension<Caller>;

/// `products/servers` (§2.11): `{"servers":{TYPE:{…}}}`, paged by type name, `X-Total-Count`.
async fn products(st: St, Extension(c): C, Path(zone): Z, uri: OriginalUri) -> ApiResult {
    let w = lock(&st.0.world);
    w.check_zone(&zone)?;
    w.authorize(&c, Product::Instance, false, None, "instance_server")?;
    let mut types: Vec<_> = SERVER_TYPES.iter().collect();
    types.sort_by_key(|t| t.name);
    let (types, total) = page(
        types,
        &query_map(uri.query()),
        "per_page",
        INSTANCE_PER_PAGE,
    )?;
    let servers: serde_json::Map<String, Value> = types
        .iter()
        .map(|t| {
            (
                t.name.to_string(),
                t.to_json(w.faults.end_of_service(t.name)),
            )
        })
        .collect();
    Ok(with_total(&json!({ "servers": servers }), total))
}

/// `products/servers/availability` (§2.11): `available` unless a `shortage` fault says otherwise.
async fn availability(st: St, Extension(c): C, Path(zone): Z, uri: OriginalUri) -> ApiResult {
    let w = lock(&st.0.world);
    w.check_zone(&zone)?;
    w.authorize(&c, Product::Instance, false, None, "instance_server")?;
    let mut types: Vec<_> = SERVER_TYPES.iter().collect();
    types.sort_by_key(|t| t.name);
    let (types, total) = page(
        types,
        &query_map(uri.query()),
        "per_page",
        INSTANCE_PER_PAGE,
    )?;
    let servers: serde_json::Map<String, Value> = types
        .iter()
        .map(|t| {
            (
                t.name.to_string(),
                json!({"availability": w.availability(&zone, t.name)}),
            )
        })
        .collect();
    Ok(with_total(&json!({ "servers": servers }), total))
}

async fn image(st: St, Extension(c): C, Path((zone, id)): ZId) -> ApiResult {
    let w = lock(&st.0.world);
    w.check_zone(&zone)?;
    w.authorize(&c, Product::Instance, false, None, "instance_image")?;
    let img = w
        .image(&zone, &id)
        .ok_or_else(|| ApiError::not_found("instance_image", &id))?;
    Ok(ok(&json!({"image": w.image_json(img)})))
}

async fn create_server(st: St, Extension(c): C, Path(zone): Z, body: Bytes) -> ApiResult {
    let req: CreateServer = body_as(&body)?;
    let mut w = lock(&st.0.world);
    w.check_zone(&zone)?;
    let id = w.create_server(&c, &zone, req)?;
    let mut r = json(
        StatusCode::CREATED,
        &json!({"server": w.server_json(&w.servers[&id])}),
    );
    if let Ok(loc) = HeaderValue::from_str(&format!("/instance/v1/zones/{zone}/servers/{id}")) {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(r)
}

async fn list_servers(st: St, Extension(c): C, Path(zone): Z, uri: OriginalUri) -> ApiResult {
    let q = query_map(uri.query());
    let w = lock(&st.0.world);
    w.check_zone(&zone)?;
    let servers = w.list_servers(&c, &zone, &q)?;
    let (servers, total) = page(servers, &q, "per_page", INSTANCE_PER_PAGE)?;
    let list: Vec<Value> = servers.into_iter().map(|s| w.server_json(s)).collect();
    Ok(with_total(&json!({ "servers": list }), total))
}

async fn get_server(st: St, Extension(c): C, Path((zone, id)): ZId) -> ApiResult {
    let w = lock(&st.0.world);
    w.check_zone(&zone)?;
    let s = w.server_for(&c, &zone, &id, false)?;
    Ok(ok(&json!({"server": w.server_json(s)})))
}

async fn delete_server(st: St, Extension(c): C, Path((zone, id)): ZId) -> ApiResult {
    let effects = {
        let mut w = lock(&st.0.world);
        w.check_zone(&zone)?;
        w.delete_server(&c, &zone, &id)?
    };
    run_effects(&st.0, effects);
    Ok(no_content())
}

/// `POST …/action` → 202 `{"task":{…}}` (§2.3).
async fn action(st: St, Extension(c): C, Path((zone, id)): ZId, body: Bytes) -> ApiResult {
    let body = body_json(&body)?;
    let Some(action) = body["action"].as_str() else {
        return Err(ApiError::invalid_argument(
            "action",
            "required",
            "required key not provided",
        ));
    };
    let (task, effect) = {
        let mut w = lock(&st.0.world);
        w.check_zone(&zone)?;
        w.server_action(&c, &zone, &id, action)?
    };
    run_effects(&st.0, vec![effect]);
    Ok(json(StatusCode::ACCEPTED, &task))
}

async fn list_actions(st: St, Extension(c): C, Path((zone, id)): ZId) -> ApiResult {
    let w = lock(&st.0.world);
    w.check_zone(&zone)?;
    let s = w.server_for(&c, &zone, &id, false)?;
    Ok(ok(&json!({"actions": s.state.allowed_actions()})))
}

async fn list_user_data(st: St, Extension(c): C, Path((zone, id)): ZId) -> ApiResult {
    let w = lock(&st.0.world);
    w.check_zone(&zone)?;
    let s = w.server_for(&c, &zone, &id, false)?;
    let keys: Vec<&String> = s.user_data.keys().collect();
    Ok(ok(&json!({ "user_data": keys })))
}

/// Keys become file names for the boot hook, so only `[A-Za-z0-9._-]` (chosen, README).
fn check_key(key: &str) -> Result<(), ApiError> {
    let fine = !key.is_empty()
        && key != "."
        && key != ".."
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if fine {
        Ok(())
    } else {
        Err(ApiError::invalid_argument(
            "key",
            "format",
            format!("user data key {key:?} may only hold letters, digits, '.', '_' and '-'"),
        ))
    }
}

fn text(status: StatusCode, body: Vec<u8>) -> axum::response::Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

type ZIdKey = Path<(String, String, String)>;

/// `PATCH …/user_data/{key}` with the raw value (text/plain) → 204 (§2.6).
async fn set_user_data(
    st: St,
    Extension(c): C,
    Path((zone, id, key)): ZIdKey,
    body: Bytes,
) -> ApiResult {
    check_key(&key)?;
    let mut w = lock(&st.0.world);
    w.check_zone(&zone)?;
    w.user_data_mut(&c, &zone, &id)?.insert(key, body.to_vec());
    Ok(text(StatusCode::NO_CONTENT, vec![]))
}

/// The raw value as text/plain; a missing key is 404 with an empty body (§2.6).
async fn get_user_data(st: St, Extension(c): C, Path((zone, id, key)): ZIdKey) -> ApiResult {
    let w = lock(&st.0.world);
    w.check_zone(&zone)?;
    let s = w.server_for(&c, &zone, &id, false)?;
    let v = s.user_data.get(&key).ok_or(ApiError::NotFoundEmpty)?;
    Ok(text(StatusCode::OK, v.clone()))
}

async fn delete_user_data(st: St, Extension(c): C, Path((zone, id, key)): ZIdKey) -> ApiResult {
    let mut w = lock(&st.0.world);
    w.check_zone(&zone)?;
    w.user_data_mut(&c, &zone, &id)?
        .remove(&key)
        .ok_or(ApiError::NotFoundEmpty)?;
    Ok(text(StatusCode::NO_CONTENT, vec![]))
}

/// `POST …/detach-volume {"volume_id"}` → 200 `{"server"}` (§5.3).
async fn detach_volume(st: St, Extension(c): C, Path((zone, id)): ZId, body: Bytes) -> ApiResult {
    let body = body_json(&body)?;
    let Some(volume_id) = body["volume_id"].as_str() else {
        return Err(ApiError::invalid_argument(
            "volume_id",
            "required",
            "required key not provided",
        ));
    };
    let (resp, effects) = {
        let mut w = lock(&st.0.world);
        w.check_zone(&zone)?;
        let effects = w.detach_volume(&c, &zone, &id, volume_id)?;
        (json!({"server": w.server_json(&w.servers[&id])}), effects)
    };
    run_effects(&st.0, effects);
    Ok(ok(&resp))
}

async fn list_volumes(st: St, Extension(c): C, Path(zone): Z, uri: OriginalUri) -> ApiResult {
    let q = query_map(uri.query());
    let w = lock(&st.0.world);
    w.check_zone(&zone)?;
    let visible = w.readable_projects(&c, Product::Instance, "instance_volume")?;
    let tags = q.get("tags").map(|t| split_list(t)).unwrap_or_default();
    if q.get("volume_type")
        .is_some_and(|t| t != "l_ssd" && t != "scratch")
    {
        // Only local volumes live in the Instance API (§2.7).
        return Ok(with_total(&json!({"volumes": []}), 0));
    }
    let mut vols: Vec<_> = w
        .volumes
        .values()
        .filter(|v| v.zone == zone)
        .filter(|v| visible.as_ref().is_none_or(|p| p.contains(&v.project)))
        .filter(|v| q.get("project").is_none_or(|p| &v.project == p))
        .filter(|v| q.get("organization").is_none_or(|o| &v.organization == o))
        .filter(|v| q.get("name").is_none_or(|n| v.name.contains(n.as_str())))
        .filter(|v| tags.iter().all(|t| v.tags.contains(t)))
        .collect();
    vols.sort_by(|a, b| (a.creation_date, &a.id).cmp(&(b.creation_date, &b.id)));
    let (vols, total) = page(vols, &q, "per_page", INSTANCE_PER_PAGE)?;
    let list: Vec<Value> = vols
        .into_iter()
        .map(|v| w.instance_volume_json(v))
        .collect();
    Ok(with_total(&json!({ "volumes": list }), total))
}

async fn get_volume(st: St, Extension(c): C, Path((zone, id)): ZId) -> ApiResult {
    let w = lock(&st.0.world);
    w.check_zone(&zone)?;
    let v = w.instance_volume(&c, &zone, &id, false)?;
    Ok(ok(&json!({"volume": w.instance_volume_json(v)})))
}

async fn delete_volume(st: St, Extension(c): C, Path((zone, id)): ZId) -> ApiResult {
    let mut w = lock(&st.0.world);
    w.check_zone(&zone)?;
    w.delete_instance_volume(&c, &zone, &id)?;
    Ok(no_content())
}

async fn create_ip(st: St, Extension(c): C, Path(zone): Z, body: Bytes) -> ApiResult {
    let req: CreateIp = body_as(&body)?;
    let mut w = lock(&st.0.world);
    w.check_zone(&zone)?;
    let id = w.create_ip(&c, &zone, req)?;
    let mut r = json(StatusCode::CREATED, &json!({"ip": w.ip_json(&w.ips[&id])}));
    if let Ok(loc) = HeaderValue::from_str(&format!("/instance/v1/zones/{zone}/ips/{id}")) {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(r)
}

async fn list_ips(st: St, Extension(c): C, Path(zone): Z, uri: OriginalUri) -> ApiResult {
    let q = query_map(uri.query());
    let w = lock(&st.0.world);
    w.check_zone(&zone)?;
    let visible = w.readable_projects(&c, Product::Instance, "instance_ip")?;
    let tags = q.get("tags").map(|t| split_list(t)).unwrap_or_default();
    let mut ips: Vec<_> = w
        .ips
        .values()
        .filter(|ip| ip.zone == zone)
        .filter(|ip| visible.as_ref().is_none_or(|p| p.contains(&ip.project)))
        .filter(|ip| q.get("project").is_none_or(|p| &ip.project == p))
        .filter(|ip| q.get("organization").is_none_or(|o| &ip.organization == o))
        .filter(|ip| {
            q.get("name")
                .is_none_or(|n| ip.address.contains(n.as_str()))
        })
        .filter(|ip| q.get("type").is_none_or(|t| &ip.ip_type == t))
        .filter(|ip| tags.iter().all(|t| ip.tags.contains(t)))
        .collect();
    ips.sort_by(|a, b| a.address.cmp(&b.address));
    let (ips, total) = page(ips, &q, "per_page", INSTANCE_PER_PAGE)?;
    let list: Vec<Value> = ips.into_iter().map(|ip| w.ip_json(ip)).collect();
    Ok(with_total(&json!({ "ips": list }), total))
}

async fn get_ip(st: St, Extension(c): C, Path((zone, id)): ZId) -> ApiResult {
    let w = lock(&st.0.world);
    w.check_zone(&zone)?;
    let ip = w.ip(&c, &zone, &id, false)?;
    Ok(ok(&json!({"ip": w.ip_json(ip)})))
}

async fn update_ip(st: St, Extension(c): C, Path((zone, id)): ZId, body: Bytes) -> ApiResult {
    let body = body_json(&body)?;
    let mut w = lock(&st.0.world);
    w.check_zone(&zone)?;
    let id = w.update_ip(&c, &zone, &id, &body)?;
    Ok(ok(&json!({"ip": w.ip_json(&w.ips[&id])})))
}

async fn delete_ip(st: St, Extension(c): C, Path((zone, id)): ZId) -> ApiResult {
    let mut w = lock(&st.0.world);
    w.check_zone(&zone)?;
    w.delete_ip(&c, &zone, &id)?;
    Ok(no_content())
}
