//! The IAM API v1alpha1 (`/iam/v1alpha1/…`, scaleway.md §2.12): applications, policies with
//! their rules, and API keys whose secrets the gate then accepts with the policies' grants.
//! Objects are answered bare, lists with `total_count`; creates answer 200.

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{OriginalUri, Path};
use axum::routing::get;
use serde_json::{Value, json};

use crate::http::{ApiResult, PAGE_SIZE, St, body_as, body_json, no_content, ok, page, query_map};
use crate::iam::{CreateApiKey, CreatePolicy};
use crate::lifecycle::App;
use crate::model::{ApiKey, Policy};
use crate::world::{Caller, Product, World, lock, split_list};

pub fn routes() -> Router<App> {
    let iam = "/iam/v1alpha1";
    Router::new()
        .route(
            &format!("{iam}/applications"),
            get(list_applications).post(create_application),
        )
        .route(
            &format!("{iam}/applications/{{id}}"),
            get(get_application).delete(delete_application),
        )
        .route(
            &format!("{iam}/policies"),
            get(list_policies).post(create_policy),
        )
        .route(
            &format!("{iam}/policies/{{id}}"),
            get(get_policy).delete(delete_policy),
        )
        .route(&format!("{iam}/rules"), get(list_rules))
        .route(
            &format!("{iam}/api-keys"),
            get(list_api_keys).post(create_api_key),
        )
        .route(
            &format!("{iam}/api-keys/{{id}}"),
            get(get_api_key).delete(delete_api_key),
        )
}

type C = Extension<Caller>;

fn read(w: &World, c: &Caller, resource: &str) -> Result<(), crate::apierror::ApiError> {
    w.authorize(c, Product::Iam, false, None, resource)
}

fn write(w: &World, c: &Caller, resource: &str) -> Result<(), crate::apierror::ApiError> {
    w.authorize(c, Product::Iam, true, None, resource)
}

async fn create_application(st: St, Extension(c): C, body: Bytes) -> ApiResult {
    let body = body_json(&body)?;
    let mut w = lock(&st.0.world);
    write(&w, &c, "application")?;
    let id = w.create_application(&body)?;
    Ok(ok(&w.application_json(&w.applications[&id])))
}

async fn list_applications(st: St, Extension(c): C, uri: OriginalUri) -> ApiResult {
    let q = query_map(uri.query());
    let w = lock(&st.0.world);
    read(&w, &c, "application")?;
    let ids = q.get("application_ids").map(|s| split_list(s));
    let apps: Vec<_> = w
        .applications
        .values()
        .filter(|a| q.get("name").is_none_or(|n| a.name.contains(n.as_str())))
        .filter(|a| ids.as_ref().is_none_or(|ids| ids.contains(&a.id)))
        .collect();
    let (apps, total) = page(apps, &q, "page_size", PAGE_SIZE)?;
    let list: Vec<Value> = apps.into_iter().map(|a| w.application_json(a)).collect();
    Ok(ok(&json!({"applications": list, "total_count": total})))
}

async fn get_application(st: St, Extension(c): C, Path(id): Path<String>) -> ApiResult {
    let w = lock(&st.0.world);
    read(&w, &c, "application")?;
    Ok(ok(&w.application_json(w.application(&id)?)))
}

async fn delete_application(st: St, Extension(c): C, Path(id): Path<String>) -> ApiResult {
    let mut w = lock(&st.0.world);
    write(&w, &c, "application")?;
    w.delete_application(&id)?;
    Ok(no_content())
}

async fn create_policy(st: St, Extension(c): C, body: Bytes) -> ApiResult {
    let req: CreatePolicy = body_as(&body)?;
    let mut w = lock(&st.0.world);
    write(&w, &c, "policy")?;
    let id = w.create_policy(req)?;
    Ok(ok(&w.policies[&id].to_json()))
}

async fn list_policies(st: St, Extension(c): C, uri: OriginalUri) -> ApiResult {
    let q = query_map(uri.query());
    let w = lock(&st.0.world);
    read(&w, &c, "policy")?;
    let apps = q.get("application_ids").map(|s| split_list(s));
    let ids = q.get("policy_ids").map(|s| split_list(s));
    let policies: Vec<_> = w
        .policies
        .values()
        .filter(|p| {
            apps.as_ref()
                .is_none_or(|a| p.application_id.as_ref().is_some_and(|id| a.contains(id)))
        })
        .filter(|p| ids.as_ref().is_none_or(|ids| ids.contains(&p.id)))
        .filter(|p| {
            q.get("policy_name")
                .is_none_or(|n| p.name.contains(n.as_str()))
        })
        .collect();
    let (policies, total) = page(policies, &q, "page_size", PAGE_SIZE)?;
    let list: Vec<Value> = policies.into_iter().map(Policy::to_json).collect();
    Ok(ok(&json!({"policies": list, "total_count": total})))
}

async fn get_policy(st: St, Extension(c): C, Path(id): Path<String>) -> ApiResult {
    let w = lock(&st.0.world);
    read(&w, &c, "policy")?;
    Ok(ok(&w.policy(&id)?.to_json()))
}

async fn delete_policy(st: St, Extension(c): C, Path(id): Path<String>) -> ApiResult {
    let mut w = lock(&st.0.world);
    write(&w, &c, "policy")?;
    w.delete_policy(&id)?;
    Ok(no_content())
}

/// `GET rules?policy_id=` → `{"rules":[…],"total_count"}`.
async fn list_rules(st: St, Extension(c): C, uri: OriginalUri) -> ApiResult {
    let q = query_map(uri.query());
    let w = lock(&st.0.world);
    read(&w, &c, "policy")?;
    let Some(pid) = q.get("policy_id") else {
        return Err(crate::apierror::ApiError::invalid_argument(
            "policy_id",
            "required",
            "required key not provided",
        ));
    };
    let rules: Vec<Value> = w.policy(pid)?.rules.iter().map(|r| r.to_json()).collect();
    let (rules, total) = page(rules, &q, "page_size", PAGE_SIZE)?;
    Ok(ok(&json!({"rules": rules, "total_count": total})))
}

/// 200 with the key, `secret_key` included this once.
async fn create_api_key(st: St, Extension(c): C, body: Bytes) -> ApiResult {
    let req: CreateApiKey = body_as(&body)?;
    let mut w = lock(&st.0.world);
    write(&w, &c, "api_key")?;
    let ak = w.create_api_key(req)?;
    Ok(ok(&w.api_keys[&ak].to_json(true)))
}

async fn list_api_keys(st: St, Extension(c): C, uri: OriginalUri) -> ApiResult {
    let q = query_map(uri.query());
    let w = lock(&st.0.world);
    read(&w, &c, "api_key")?;
    let app = q.get("application_id").or(q.get("bearer_id"));
    let keys: Vec<_> = w
        .api_keys
        .values()
        .filter(|k| app.is_none_or(|a| &k.application_id == a))
        .collect();
    let (keys, total) = page(keys, &q, "page_size", PAGE_SIZE)?;
    let list: Vec<Value> = keys
        .into_iter()
        .map(|k: &ApiKey| k.to_json(false))
        .collect();
    Ok(ok(&json!({"api_keys": list, "total_count": total})))
}

async fn get_api_key(st: St, Extension(c): C, Path(ak): Path<String>) -> ApiResult {
    let w = lock(&st.0.world);
    read(&w, &c, "api_key")?;
    Ok(ok(&w.api_key(&ak)?.to_json(false)))
}

async fn delete_api_key(st: St, Extension(c): C, Path(ak): Path<String>) -> ApiResult {
    let mut w = lock(&st.0.world);
    write(&w, &c, "api_key")?;
    w.delete_api_key(&ak)?;
    Ok(no_content())
}
