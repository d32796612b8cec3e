//! The Block Storage API v1alpha1 (`/block/v1alpha1/zones/{zone}/volumes`, scaleway.md §2.7):
//! SBS volumes, including the roots servers create. Objects are answered bare (no wrapper key),
//! lists with `total_count` in the body.

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path};
use axum::routing::get;
use serde_json::{Value, json};

use crate::http::{
    ApiResult, PAGE_SIZE, St, body_json, no_content, ok, page, query_all, query_map,
};
use crate::lifecycle::App;
use crate::world::{Caller, Product, lock, string_list};

pub fn routes() -> Router<App> {
    let z = "/block/v1alpha1/zones/{zone}";
    Router::new()
        .route(&format!("{z}/volumes"), get(list).post(create))
        .route(
            &format!("{z}/volumes/{{id}}"),
            get(read).patch(update).delete(delete),
        )
}

type C = Extension<Caller>;

/// Filters `project_id`, `organization_id`, `name` (substring), `product_resource_id`, and
/// `tags`, where a volume matches if it has any of them (§5.5: Block tag matching is "any").
async fn list(st: St, Extension(c): C, Path(zone): Path<String>, uri: OriginalUri) -> ApiResult {
    let q = query_map(uri.query());
    let tags = query_all(uri.query(), "tags");
    let w = lock(&st.0.world);
    w.check_zone(&zone)?;
    let visible = w.readable_projects(&c, Product::Block, "volume")?;
    let mut vols: Vec<_> = w
        .block_volumes
        .values()
        .filter(|v| v.zone == zone)
        .filter(|v| visible.as_ref().is_none_or(|p| p.contains(&v.project)))
        .filter(|v| q.get("project_id").is_none_or(|p| &v.project == p))
        .filter(|_| {
            q.get("organization_id")
                .is_none_or(|o| o == &w.opts.organization_id)
        })
        .filter(|v| q.get("name").is_none_or(|n| v.name.contains(n.as_str())))
        .filter(|v| {
            q.get("product_resource_id")
                .is_none_or(|id| v.references.iter().any(|r| &r.server_id == id))
        })
        .filter(|v| tags.is_empty() || tags.iter().any(|t| v.tags.contains(t)))
        .collect();
    vols.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    let (vols, total) = page(vols, &q, "page_size", PAGE_SIZE)?;
    let list: Vec<Value> = vols.into_iter().map(|v| v.to_json()).collect();
    Ok(ok(&json!({"volumes": list, "total_count": total})))
}

/// `POST` with `from_empty.size` → 200 (not 201, §2.7).
async fn create(st: St, Extension(c): C, Path(zone): Path<String>, body: Bytes) -> ApiResult {
    let body = body_json(&body)?;
    let mut w = lock(&st.0.world);
    w.check_zone(&zone)?;
    let id = w.create_block_volume(&c, &zone, &body)?;
    Ok(ok(&w.block_volumes[&id].to_json()))
}

async fn read(st: St, Extension(c): C, Path((zone, id)): Path<(String, String)>) -> ApiResult {
    let w = lock(&st.0.world);
    w.check_zone(&zone)?;
    Ok(ok(&w.block_volume(&c, &zone, &id, false)?.to_json()))
}

/// `PATCH` with `name`, `size` (grow only), `tags`, `perf_iops`.
async fn update(
    st: St,
    Extension(c): C,
    Path((zone, id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult {
    let body = body_json(&body)?;
    let mut w = lock(&st.0.world);
    w.check_zone(&zone)?;
    w.block_volume(&c, &zone, &id, true)?;
    let now = w.now();
    let v = w.block_volumes.get_mut(&id).expect("checked above");
    if let Some(n) = body["name"].as_str() {
        v.name = n.to_string();
    }
    if body.get("tags").is_some() {
        v.tags = string_list(&body["tags"]);
    }
    if let Some(size) = body["size"].as_u64() {
        if size < v.size {
            return Err(crate::apierror::ApiError::invalid_argument(
                "size",
                "constraint",
                "a volume can only grow",
            ));
        }
        v.size = size;
    }
    if let Some(iops) = body["perf_iops"].as_u64() {
        v.perf_iops = iops as u32;
    }
    v.updated_at = now;
    Ok(ok(&v.to_json()))
}

/// 204; a volume still referenced (in use or detaching) is 412 `precondition_failed`.
async fn delete(st: St, Extension(c): C, Path((zone, id)): Path<(String, String)>) -> ApiResult {
    let mut w = lock(&st.0.world);
    w.check_zone(&zone)?;
    w.delete_block_volume(&c, &zone, &id)?;
    Ok(no_content())
}
