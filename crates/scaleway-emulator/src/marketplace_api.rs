//! The Marketplace API v2 local images (`/marketplace/v2/local-images`, scaleway.md §2.8): how
//! clients turn a label such as `ubuntu_noble` into the image UUID of a zone, type and root
//! volume kind. Any authenticated caller may read it.

use axum::Router;
use axum::extract::{OriginalUri, Path};
use axum::routing::get;
use serde_json::{Value, json};

use crate::apierror::ApiError;
use crate::http::{ApiResult, PAGE_SIZE, St, ok, page, query_map};
use crate::lifecycle::App;
use crate::world::lock;

pub fn routes() -> Router<App> {
    Router::new()
        .route("/marketplace/v2/local-images", get(list))
        .route("/marketplace/v2/local-images/{id}", get(read))
}

/// Filters `image_label`, `zone`, `type` (`unknown_type` = any), `arch`, `image_id`;
/// `order_by` `type_asc` (default) or `type_desc`, then zone and label.
async fn list(st: St, uri: OriginalUri) -> ApiResult {
    let q = query_map(uri.query());
    let w = lock(&st.0.world);
    let ty = q
        .get("type")
        .filter(|t| t.as_str() != "unknown_type")
        .cloned();
    let mut imgs: Vec<_> = w
        .images
        .iter()
        .filter(|i| q.get("image_label").is_none_or(|l| l == i.label))
        .filter(|i| q.get("zone").is_none_or(|z| z == &i.zone))
        .filter(|i| ty.as_ref().is_none_or(|t| t == i.kind.marketplace_type()))
        .filter(|_| q.get("arch").is_none_or(|a| a == "x86_64"))
        .filter(|i| q.get("image_id").is_none_or(|id| id == &i.id))
        .collect();
    imgs.sort_by_key(|i| (i.kind.marketplace_type(), i.zone.clone(), i.label));
    match q.get("order_by").map(String::as_str) {
        None | Some("type_asc") | Some("created_at_asc") => {}
        Some("type_desc") | Some("created_at_desc") => imgs.reverse(),
        Some(other) => {
            return Err(ApiError::invalid_argument(
                "order_by",
                "constraint",
                format!("unknown order_by {other:?}"),
            ));
        }
    }
    let (imgs, total) = page(imgs, &q, "page_size", PAGE_SIZE)?;
    let list: Vec<Value> = imgs.into_iter().map(|i| i.local_image_json()).collect();
    Ok(ok(&json!({"local_images": list, "total_count": total})))
}

async fn read(st: St, Path(id): Path<String>) -> ApiResult {
    let w = lock(&st.0.world);
    let img = w
        .images
        .iter()
        .find(|i| i.id == id)
        .ok_or_else(|| ApiError::not_found("local_image", &id))?;
    Ok(ok(&img.local_image_json()))
}
