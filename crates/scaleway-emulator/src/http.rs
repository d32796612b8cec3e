//! HTTP plumbing every API shares: the gate in front of them (authentication, injected
//! rate-limit and server-error faults, the request log, the state file after each change),
//! body and query parsing, and the two paging styles (scaleway.md §2.0).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::apierror::ApiError;
use crate::lifecycle::App;
use crate::world::{RequestLog, lock};

pub type St = AxState<App>;
pub type ApiResult = Result<Response, ApiError>;

/// Every API call passes here: `X-Auth-Token` → [`crate::world::Caller`] (401 otherwise), then
/// the rate-limit and server-error faults, then the handler; the call is logged and, when it
/// may have changed something, the state file rewritten. `/_emulator/*` skips all of it.
pub async fn gate(AxState(app): St, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path.starts_with("/_emulator/") {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let query = req.uri().query().unwrap_or_default().to_string();
    let token = req
        .headers()
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let checked = {
        let mut w = lock(&app.world);
        match w.authenticate(token.as_deref()) {
            Err(e) => Err((e, String::new())),
            Ok(caller) => {
                let label = caller.label();
                if w.faults.rate_limited() {
                    Err((ApiError::TooManyRequests, label))
                } else if w.faults.server_error() {
                    Err((ApiError::Internal, label))
                } else {
                    Ok((caller, label))
                }
            }
        }
    };
    let (resp, caller) = match checked {
        Err((e, label)) => (e.into_response(), label),
        Ok((caller, label)) => {
            req.extensions_mut().insert(caller);
            (next.run(req).await, label)
        }
    };
    let mut w = lock(&app.world);
    w.log_request(RequestLog {
        seq: 0,
        method: method.to_string(),
        path,
        query,
        status: resp.status().as_u16(),
        caller,
    });
    if method != Method::GET
        && let Err(e) = w.save()
    {
        eprintln!("scaleway-emulator: state file: {e:#}");
    }
    resp
}

/// A JSON body; an empty body is `{}` (SDKs send bodies with any content type, even on GET).
pub fn body_json(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidRequest(format!("the body is not valid JSON: {e}")))
}

/// A JSON body as `T`; a field of the wrong type is 400 `invalid_arguments`.
pub fn body_as<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let v = body_json(body)?;
    serde_json::from_value(v)
        .map_err(|e| ApiError::invalid_argument("body", "format", e.to_string()))
}

/// Query parameters as sent, repeated names kept (the Python SDK repeats `tags=` for lists).
pub fn query_pairs(req_query: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = req_query else {
        return vec![];
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Query parameters, the last of a repeated name winning.
pub fn query_map(req_query: Option<&str>) -> BTreeMap<String, String> {
    query_pairs(req_query).into_iter().collect()
}

/// Every value of `name`, comma-separated ones split.
pub fn query_all(req_query: Option<&str>, name: &str) -> Vec<String> {
    query_pairs(req_query)
        .into_iter()
        .filter(|(k, _)| k == name)
        .flat_map(|(_, v)| crate::world::split_list(&v))
        .collect()
}

fn decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let escaped = (b == b'%' && i + 2 < bytes.len())
            .then(|| Some(hex(bytes[i + 1])? * 16 + hex(bytes[i + 2])?))
            .flatten();
        match (b, escaped) {
            (_, Some(e)) => {
                out.push(e);
                i += 2;
            }
            (b'+', None) => out.push(b' '),
            (b, None) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn number(q: &BTreeMap<String, String>, name: &str, default: usize) -> Result<usize, ApiError> {
    match q.get(name) {
        None => Ok(default),
        Some(v) => v.parse::<usize>().ok().filter(|n| *n >= 1).ok_or_else(|| {
            ApiError::invalid_argument(name, "format", format!("{name} must be a positive integer"))
        }),
    }
}

/// One page of `items` by `page` (1-based) and `size_param` (`per_page` for the Instance API,
/// `page_size` elsewhere; at most 100, default `default`).
pub fn page<T>(
    items: Vec<T>,
    q: &BTreeMap<String, String>,
    size_param: &str,
    default: usize,
) -> Result<(Vec<T>, usize), ApiError> {
    let page = number(q, "page", 1)?;
    let size = number(q, size_param, default)?;
    if size > 100 {
        return Err(ApiError::invalid_argument(
            size_param,
            "constraint",
            format!("{size_param} must be at most 100"),
        ));
    }
    let total = items.len();
    let out = items
        .into_iter()
        .skip((page - 1).saturating_mul(size))
        .take(size)
        .collect();
    Ok((out, total))
}

/// Instance API lists default to 50 per page (the recorded `products/servers` pages, §2.0).
pub const INSTANCE_PER_PAGE: usize = 50;
/// Block, Marketplace and IAM lists (`page_size`).
pub const PAGE_SIZE: usize = 20;

pub fn json(status: StatusCode, v: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

pub fn ok(v: &Value) -> Response {
    json(StatusCode::OK, v)
}

/// An Instance API list: the body holds only the array, the total is `X-Total-Count` (§2.0).
pub fn with_total(v: &Value, total: usize) -> Response {
    let mut r = ok(v);
    r.headers_mut()
        .insert("x-total-count", HeaderValue::from(total as u64));
    r
}

pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_keeps_repeats_and_decodes() {
        let q = Some("tags=a%2Cb&tags=c&name=x+y&page=2");
        assert_eq!(query_all(q, "tags"), ["a", "b", "c"]);
        assert_eq!(query_map(q)["name"], "x y");
        assert_eq!(query_map(q)["page"], "2");
        assert_eq!(query_map(Some("a=%zz"))["a"], "%zz");
    }

    #[test]
    fn paging_counts_the_total_and_refuses_big_pages() {
        let items: Vec<u32> = (0..7).collect();
        let q: BTreeMap<String, String> =
            [("page".into(), "2".into()), ("per_page".into(), "3".into())].into();
        let (p, total) = page(items.clone(), &q, "per_page", 50).unwrap();
        assert_eq!((p, total), (vec![3, 4, 5], 7));
        let q: BTreeMap<String, String> = [("per_page".into(), "101".into())].into();
        assert!(page(items.clone(), &q, "per_page", 50).is_err());
        let q: BTreeMap<String, String> = [("page".into(), "0".into())].into();
        assert!(page(items, &q, "per_page", 50).is_err());
    }

    #[test]
    fn empty_bodies_are_empty_objects() {
        assert_eq!(
            body_json(&Bytes::from_static(b"")).unwrap(),
            serde_json::json!({})
        );
        assert!(body_json(&Bytes::from_static(b"{")).is_err());
    }
}
