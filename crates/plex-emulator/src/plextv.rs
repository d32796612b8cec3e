//! The emulated plex.tv (plex.md §4.5, §5): the PIN link flow (`/api/v2/pins`), the account
//! (`/api/v2/user`), claim tokens (`/api/claim/token.json`) and their exchange by a server
//! (`/api/claim/exchange`), plus test controls under `/_emulator/`. The `plextv` subcommand runs
//! it as a process ([`serve`]); tests of other crates run it on a thread ([`spawn`]).
//!
//! The v2 endpoints answer XML by default (python-plexapi parses them as XML) and JSON with
//! `Accept: application/json`; JSON is the shape of the document and XML is derived from it.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Path, Query, Request, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

use crate::faults::parse_duration;
pub use crate::plextv_state::PlexTvOptions;
use crate::plextv_state::{Account, Pin, PlexTv, iso8601};
use crate::xml::xml_escape;

/// `plex-emulator plextv` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct PlexTvArgs {
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// An account's token (X-Plex-Token); repeatable, one account each. The first account is the
    /// one --link-after links PINs to.
    #[arg(long = "account-token", value_name = "TOKEN")]
    pub account_tokens: Vec<String>,
    /// The first account's username (later accounts get NAME-2, NAME-3, ...).
    #[arg(long, default_value = "plexburst")]
    pub username: String,
    /// The accounts' Plex Pass (`subscription.active`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub plex_pass: bool,
    /// Link every new PIN to the first account this long after it is created (plays the user
    /// typing the code at plex.tv/link).
    #[arg(long, value_parser = parse_duration)]
    pub link_after: Option<Duration>,
    /// How long a claim token stays exchangeable (emulated clock).
    #[arg(long, default_value = "4m", value_parser = parse_duration)]
    pub claim_ttl: Duration,
    /// PIN lifetime (default: 15 minutes for 4-character codes, 30 minutes for strong ones).
    #[arg(long, value_parser = parse_duration)]
    pub pin_ttl: Option<Duration>,
}

impl From<PlexTvArgs> for PlexTvOptions {
    fn from(a: PlexTvArgs) -> Self {
        PlexTvOptions {
            listen: a.listen,
            account_tokens: a.account_tokens,
            username: a.username,
            plex_pass: a.plex_pass,
            link_after: a.link_after,
            claim_ttl: a.claim_ttl,
            pin_ttl: a.pin_ttl,
        }
    }
}

/// Run the emulated plex.tv until SIGTERM/SIGINT. Prints one flushed stdout line,
/// `listening on http://ADDR`, once it accepts requests. Blocking; builds its own tokio runtime.
pub fn serve(opts: PlexTvOptions) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(opts.listen)
        .with_context(|| format!("binding {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let rt = runtime()?;
    rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let listener = into_tokio(listener)?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on http://{addr}")?;
            out.flush()?;
        }
        axum::serve(listener, router(opts))
            .with_graceful_shutdown(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            })
            .await?;
        anyhow::Ok(())
    })
}

/// An emulated plex.tv running on a background thread of the calling process; stops on drop.
pub struct PlexTvHandle {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PlexTvHandle {
    /// `http://127.0.0.1:PORT`, the base every endpoint hangs off (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop serving and wait for the thread (what dropping the handle does).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PlexTvHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Start the emulated plex.tv on a background thread. The port is bound before this returns, so
/// [`PlexTvHandle::url`] accepts requests at once.
pub fn spawn(opts: PlexTvOptions) -> anyhow::Result<PlexTvHandle> {
    let listener = std::net::TcpListener::bind(opts.listen)
        .with_context(|| format!("binding {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    let thread = std::thread::Builder::new()
        .name("plextv".into())
        .spawn(move || {
            let run = || -> anyhow::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let listener = into_tokio(listener)?;
                    let _ = ready_tx.send(Ok(()));
                    axum::serve(listener, router(opts))
                        .with_graceful_shutdown(async move {
                            let _ = rx.await;
                        })
                        .await?;
                    anyhow::Ok(())
                })
            };
            if let Err(e) = run() {
                eprintln!("plextv emulator: {e:#}");
            }
        })?;
    ready_rx
        .recv()
        .context("the plextv thread ended before serving")??;
    Ok(PlexTvHandle {
        addr,
        stop: Some(tx),
        thread: Some(thread),
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn into_tokio(l: std::net::TcpListener) -> anyhow::Result<tokio::net::TcpListener> {
    l.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(l)?)
}

type Shared = Arc<Mutex<PlexTv>>;
type St = AxState<Shared>;
type Params = Query<HashMap<String, String>>;

fn lock(s: &Shared) -> MutexGuard<'_, PlexTv> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// The plex.tv API and the test controls.
pub fn router(opts: PlexTvOptions) -> Router {
    let st: Shared = Arc::new(Mutex::new(PlexTv::new(opts)));
    Router::new()
        .route("/api/v2/pins", post(create_pin))
        .route("/api/v2/pins/link", put(link_pin))
        .route("/api/v2/pins/{id}", get(get_pin))
        .route("/api/v2/user", get(user))
        .route("/api/claim/token.json", get(claim_token))
        .route("/api/claim/exchange", post(exchange))
        .route("/_emulator/clock/advance", post(advance))
        .route("/_emulator/stats", get(stats))
        .fallback(|h: HeaderMap| async move { error(&h, StatusCode::NOT_FOUND, "Not Found") })
        .layer(middleware::from_fn_with_state(st.clone(), record))
        .with_state(st)
}

/// A header, else the query parameter of the same name (plex.tv takes `X-Plex-*` either way).
fn header_or_query(h: &HeaderMap, q: &HashMap<String, String>, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| q.get(name).cloned())
        .filter(|v| !v.is_empty())
}

fn token(h: &HeaderMap, q: &HashMap<String, String>) -> Option<String> {
    header_or_query(h, q, "X-Plex-Token")
}

fn client_identifier(h: &HeaderMap, q: &HashMap<String, String>) -> Option<String> {
    header_or_query(h, q, "X-Plex-Client-Identifier")
}

/// Count every request under the token it carried (an `X-Plex-Token`, or the claim being
/// exchanged), so a test can tell which token went where.
async fn record(AxState(st): St, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if !path.starts_with("/_emulator/") {
        let q: HashMap<String, String> = Query::try_from_uri(req.uri())
            .map(|Query(q)| q)
            .unwrap_or_default();
        let what = format!("{} {path}", req.method());
        let mut tv = lock(&st);
        if let Some(t) = token(req.headers(), &q) {
            tv.record(&t, &what);
        }
        if path == "/api/claim/exchange"
            && let Some(claim) = q.get("token").filter(|c| !c.is_empty())
        {
            tv.record(claim, &what);
        }
    }
    next.run(req).await
}

fn wants_json(h: &HeaderMap) -> bool {
    h.get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

/// Answer a v2 document: JSON as is, or XML derived from it (`root` names the element).
fn document(h: &HeaderMap, status: StatusCode, root: &str, doc: &Value) -> Response {
    if wants_json(h) {
        return json_response(status, doc);
    }
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    to_xml(root, doc, &mut s);
    s.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        s,
    )
        .into_response()
}

fn json_response(status: StatusCode, doc: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        doc.to_string(),
    )
        .into_response()
}

/// plex.tv's v2 error document: `{"errors":[{"message":…,"status":…}]}`, in XML
/// `<errors><error message="…" status="…"/></errors>`.
fn error(h: &HeaderMap, status: StatusCode, message: &str) -> Response {
    let errors = json!([{ "message": message, "status": status.as_u16() }]);
    if wants_json(h) {
        json_response(status, &json!({ "errors": errors }))
    } else {
        document(h, status, "errors", &errors)
    }
}

/// XML of a JSON value: scalars become attributes (bools `1`/`0`, null left out), objects
/// child elements, arrays a wrapper element holding one element per item, named by the
/// singular of the key (`roles` -> `role`; a string item becomes `id="…"`).
fn to_xml(name: &str, v: &Value, out: &mut String) {
    let attr = |v: &Value| match v {
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    };
    out.push('<');
    out.push_str(name);
    let mut children = Vec::new();
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match v {
                    Value::Object(_) | Value::Array(_) => children.push((k.as_str(), v)),
                    v => {
                        if let Some(s) = attr(v) {
                            out.push_str(&format!(" {k}=\"{}\"", xml_escape(&s)));
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            let singular = name.strip_suffix('s').unwrap_or(name);
            for item in items {
                children.push((singular, item));
            }
        }
        v => {
            if let Some(s) = attr(v) {
                out.push_str(&format!(" id=\"{}\"", xml_escape(&s)));
            }
        }
    }
    if children.is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    for (k, v) in children {
        to_xml(k, v, out);
    }
    out.push_str(&format!("</{name}>"));
}

/// The v2 pin document (shape of plex.tv's, fields as in public API docs).
fn pin_doc(p: &Pin, now_ms: i64) -> Value {
    json!({
        "id": p.id,
        "code": p.code,
        "product": p.product,
        "trusted": false,
        "qr": format!("https://plex.tv/api/v2/pins/qr/{}", p.code),
        "clientIdentifier": p.client_identifier,
        "location": {
            "code": "ZZ",
            "european_union_member": false,
            "continent_code": "ZZ",
            "country": "Emulated",
            "city": "Loopback",
            "time_zone": "UTC",
            "postal_code": null,
            "in_privacy_restricted_country": false,
            "in_privacy_restricted_region": false,
            "subdivisions": null,
            "coordinates": "0.0, 0.0"
        },
        "expiresIn": (p.expires_ms - now_ms).max(0) / 1000,
        "createdAt": iso8601(p.created_ms),
        "expiresAt": iso8601(p.expires_ms),
        "authToken": p.auth_token,
        "newRegistration": null
    })
}

/// The v2 user document: the attributes and children python-plexapi's `MyPlexAccount` reads.
fn user_doc(a: &Account, token: &str, plex_pass: bool) -> Value {
    let subscription = if plex_pass {
        json!({
            "active": true,
            "subscribedAt": format!("{} UTC", crate::db::datetime(a.joined_at)),
            "status": "Active",
            "paymentService": "emulated",
            "plan": "lifetime",
            "features": ["music-analysis", "premium_music_metadata", "sonic-analysis", "webhooks"]
        })
    } else {
        json!({
            "active": false,
            "subscribedAt": null,
            "status": "Inactive",
            "paymentService": null,
            "plan": null,
            "features": []
        })
    };
    json!({
        "id": a.id,
        "uuid": a.uuid,
        "username": a.username,
        "title": a.username,
        "friendlyName": a.username,
        "email": a.email,
        "locale": null,
        "confirmed": true,
        "joinedAt": a.joined_at,
        "emailOnlyAuth": false,
        "hasPassword": true,
        "protected": false,
        "thumb": format!("https://plex.tv/users/{}/avatar", a.uuid),
        "authToken": token,
        "mailingListStatus": "inactive",
        "mailingListActive": false,
        "scrobbleTypes": "",
        "country": "ZZ",
        "subscription": subscription,
        "subscriptionDescription": null,
        "restricted": false,
        "anonymous": null,
        "home": false,
        "guest": false,
        "homeSize": 1,
        "homeAdmin": false,
        "maxHomeSize": 15,
        "rememberExpiresAt": a.joined_at + 2 * 365 * 86_400,
        "profile": {
            "autoSelectAudio": true,
            "defaultAudioLanguage": "en",
            "defaultSubtitleLanguage": "en",
            "autoSelectSubtitle": 0,
            "defaultSubtitleAccessibility": 0,
            "defaultSubtitleForces": 0
        },
        "entitlements": [],
        "roles": if plex_pass { json!(["plexpass"]) } else { json!([]) },
        "services": [],
        "adsConsent": null,
        "adsConsentSetAt": null,
        "adsConsentReminderAt": null,
        "experimentalFeatures": false,
        "twoFactorEnabled": false,
        "backupCodesCreated": false
    })
}

async fn create_pin(AxState(st): St, h: HeaderMap, Query(q): Params) -> Response {
    let Some(client) = client_identifier(&h, &q) else {
        return error(
            &h,
            StatusCode::BAD_REQUEST,
            "X-Plex-Client-Identifier is missing",
        );
    };
    let product = header_or_query(&h, &q, "X-Plex-Product").unwrap_or_default();
    // python-plexapi sends `strong=True` (requests spells Python's bool that way).
    let strong = q
        .get("strong")
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
    let mut tv = lock(&st);
    let pin = tv.create_pin(&client, &product, strong);
    let doc = pin_doc(&pin, tv.now_ms());
    drop(tv);
    document(&h, StatusCode::CREATED, "pin", &doc)
}

async fn get_pin(
    AxState(st): St,
    h: HeaderMap,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    let Some(client) = client_identifier(&h, &q) else {
        return error(
            &h,
            StatusCode::BAD_REQUEST,
            "X-Plex-Client-Identifier is missing",
        );
    };
    let mut tv = lock(&st);
    let pin = id.parse().ok().and_then(|id| tv.pin(id, &client));
    let now = tv.now_ms();
    drop(tv);
    match pin {
        Some(p) => document(&h, StatusCode::OK, "pin", &pin_doc(&p, now)),
        None => error(&h, StatusCode::NOT_FOUND, "Not Found"),
    }
}

/// What the user does at plex.tv/link: the code, with the account's token.
async fn link_pin(AxState(st): St, h: HeaderMap, Query(q): Params) -> Response {
    let Some(code) = q.get("code").filter(|c| !c.is_empty()) else {
        return error(&h, StatusCode::BAD_REQUEST, "code is missing");
    };
    let Some(token) = token(&h, &q) else {
        return error(&h, StatusCode::UNAUTHORIZED, "Unauthorized");
    };
    match lock(&st).link(code, &token) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(401) => error(&h, StatusCode::UNAUTHORIZED, "Unauthorized"),
        Err(_) => error(&h, StatusCode::NOT_FOUND, "Code not found or expired"),
    }
}

async fn user(AxState(st): St, h: HeaderMap, Query(q): Params) -> Response {
    let token = token(&h, &q).unwrap_or_default();
    let mut tv = lock(&st);
    let account = tv.user(&token);
    let plex_pass = tv.opts().plex_pass;
    drop(tv);
    match account {
        Some(a) => document(&h, StatusCode::OK, "user", &user_doc(&a, &token, plex_pass)),
        None => error(&h, StatusCode::UNAUTHORIZED, "Invalid token"),
    }
}

/// `{"token":"claim-…"}`, always JSON (the `.json` path), as `MyPlexAccount.claimToken` reads it.
async fn claim_token(AxState(st): St, h: HeaderMap, Query(q): Params) -> Response {
    let token = token(&h, &q).unwrap_or_default();
    match lock(&st).issue_claim(&token) {
        Some(claim) => json_response(StatusCode::OK, &json!({ "token": claim })),
        None => json_response(
            StatusCode::UNAUTHORIZED,
            &json!({ "errors": [{ "message": "Invalid token", "status": 401 }] }),
        ),
    }
}

/// What pms-docker's first run POSTs; it cuts the token out of `<authentication-token>…` with
/// a line-wise sed, so that element sits on a line of its own.
async fn exchange(AxState(st): St, h: HeaderMap, Query(q): Params) -> Response {
    let client = client_identifier(&h, &q).unwrap_or_default();
    let result = lock(&st).exchange(q.get("token").map(String::as_str), &client);
    let (a, token) = match result {
        Ok(ok) => ok,
        Err(r) => {
            let status = match r {
                crate::plextv_state::Rejection::Missing => StatusCode::BAD_REQUEST,
                _ => StatusCode::NOT_FOUND,
            };
            return (
                status,
                [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
                format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<errors>\n  <error reason=\"{}\">{}</error>\n</errors>\n",
                    r.reason(),
                    xml_escape(r.message())
                ),
            )
                .into_response();
        }
    };
    let plex_pass = lock(&st).opts().plex_pass;
    let e = |s: &str| xml_escape(s);
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<user email=\"{}\" id=\"{}\" uuid=\"{}\" username=\"{}\" title=\"{}\" authenticationToken=\"{}\" authToken=\"{}\">\n",
        e(&a.email),
        a.id,
        e(&a.uuid),
        e(&a.username),
        e(&a.username),
        e(&token),
        e(&token)
    ));
    x.push_str(&format!(
        "  <subscription active=\"{}\" status=\"{}\"/>\n",
        u8::from(plex_pass),
        if plex_pass { "Active" } else { "Inactive" }
    ));
    x.push_str(&format!("  <username>{}</username>\n", e(&a.username)));
    x.push_str(&format!("  <email>{}</email>\n", e(&a.email)));
    x.push_str(&format!(
        "  <joined-at type=\"datetime\">{} UTC</joined-at>\n",
        crate::db::datetime(a.joined_at)
    ));
    x.push_str(&format!(
        "  <authentication-token>{}</authentication-token>\n",
        e(&token)
    ));
    x.push_str("</user>\n");
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        x,
    )
        .into_response()
}

async fn advance(AxState(st): St, Query(q): Params) -> Response {
    let Some(secs) = q.get("secs").and_then(|s| s.parse::<f64>().ok()) else {
        return (
            StatusCode::BAD_REQUEST,
            "secs=N (seconds, >= 0) is required",
        )
            .into_response();
    };
    let Ok(by) = Duration::try_from_secs_f64(secs) else {
        return (StatusCode::BAD_REQUEST, "secs must be >= 0").into_response();
    };
    let mut tv = lock(&st);
    tv.advance(by);
    let offset = tv.stats()["clock_offset_secs"].clone();
    drop(tv);
    json_response(StatusCode::OK, &json!({ "clock_offset_secs": offset }))
}

async fn stats(AxState(st): St) -> Response {
    let s = lock(&st).stats();
    json_response(StatusCode::OK, &s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_is_derived_from_the_json_shape() {
        let doc = json!({
            "id": 7, "ok": true, "none": null, "name": "a&b",
            "sub": {"active": false},
            "roles": ["plexpass"],
            "entitlements": []
        });
        let mut s = String::new();
        to_xml("user", &doc, &mut s);
        assert_eq!(
            s,
            "<user id=\"7\" name=\"a&amp;b\" ok=\"1\"><entitlements/><roles><role id=\"plexpass\"/></roles><sub active=\"0\"/></user>"
        );
    }
}
