//! The HTTP API (plex.md §4): XML by default, JSON with `Accept: application/json`, token auth once
//! claimed, and the slow-API / start-up-window faults.

// Handlers return a ready `Response` as their error: boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Path, RawQuery, Request, State as AxState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use rusqlite::params;

use crate::prefs::VERSION;
use crate::state::{Job, State};
use crate::task::Task;
use crate::worker;
use crate::xml::xml_escape;

type St = AxState<Arc<State>>;

/// An attribute value, typed for JSON and rendered as Plex does in XML.
#[derive(Debug, Clone)]
pub enum V {
    S(String),
    I(i64),
    /// Rendered `1`/`0` in XML.
    B(bool),
    /// Rendered `true`/`false` in XML (pref values).
    Bt(bool),
    J(serde_json::Value),
}

impl From<&str> for V {
    fn from(s: &str) -> V {
        V::S(s.to_string())
    }
}
impl From<String> for V {
    fn from(s: String) -> V {
        V::S(s)
    }
}
impl From<i64> for V {
    fn from(i: i64) -> V {
        V::I(i)
    }
}
impl From<bool> for V {
    fn from(b: bool) -> V {
        V::B(b)
    }
}

/// One element of a response document.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub attrs: Vec<(String, V)>,
    pub children: Vec<Node>,
    /// In JSON, an object rather than an element of an array (e.g. `Context`).
    pub single: bool,
}

impl Node {
    pub fn new(name: &str) -> Node {
        Node {
            name: name.into(),
            attrs: Vec::new(),
            children: Vec::new(),
            single: false,
        }
    }
    pub fn a(mut self, k: &str, v: impl Into<V>) -> Node {
        self.attrs.push((k.into(), v.into()));
        self
    }
    pub fn child(mut self, c: Node) -> Node {
        self.children.push(c);
        self
    }

    fn xml(&self, out: &mut String) {
        out.push('<');
        out.push_str(&self.name);
        for (k, v) in &self.attrs {
            let s = match v {
                V::S(s) => s.clone(),
                V::I(i) => i.to_string(),
                V::B(b) => if *b { "1" } else { "0" }.into(),
                V::Bt(b) => b.to_string(),
                V::J(serde_json::Value::String(s)) => s.clone(),
                V::J(serde_json::Value::Bool(b)) => b.to_string(),
                V::J(j) => j.to_string(),
            };
            out.push_str(&format!(" {k}=\"{}\"", xml_escape(&s)));
        }
        if self.children.is_empty() {
            out.push_str("/>");
        } else {
            out.push('>');
            for c in &self.children {
                c.xml(out);
            }
            out.push_str(&format!("</{}>", self.name));
        }
    }

    fn json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (k, v) in &self.attrs {
            let j = match v {
                V::S(s) => serde_json::Value::String(s.clone()),
                V::I(i) => (*i).into(),
                V::B(b) | V::Bt(b) => (*b).into(),
                V::J(j) => j.clone(),
            };
            m.insert(k.clone(), j);
        }
        for c in &self.children {
            if c.single {
                m.insert(c.name.clone(), c.json());
            } else {
                let e = m
                    .entry(c.name.clone())
                    .or_insert_with(|| serde_json::Value::Array(vec![]));
                if let serde_json::Value::Array(a) = e {
                    a.push(c.json());
                }
            }
        }
        serde_json::Value::Object(m)
    }
}

fn wants_json(h: &HeaderMap) -> bool {
    h.get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"))
}

/// Render a document; in JSON the root element name is the top key, as Plex does.
fn render(h: &HeaderMap, root: Node) -> Response {
    if wants_json(h) {
        let mut m = serde_json::Map::new();
        m.insert(root.name.clone(), root.json());
        (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::Value::Object(m).to_string(),
        )
            .into_response()
    } else {
        let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        root.xml(&mut s);
        s.push('\n');
        ([(header::CONTENT_TYPE, "text/xml;charset=utf-8")], s).into_response()
    }
}

fn ok_empty(h: &HeaderMap) -> Response {
    render(h, Node::new("MediaContainer").a("size", 0i64))
}

fn err(code: StatusCode, msg: &str) -> Response {
    (
        code,
        format!("<html><head><title>{msg}</title></head><body><h1>{code} {msg}</h1></body></html>"),
    )
        .into_response()
}

fn internal(e: anyhow::Error) -> Response {
    err(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}"))
}

/// Decode a query string into ordered pairs (repeated keys kept, `+` as space, `%XX`).
pub fn query_pairs(q: Option<&str>) -> Vec<(String, String)> {
    let dec = |s: &str| {
        let b = s.replace('+', " ").into_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%'
                && i + 2 < b.len()
                && let Ok(v) =
                    u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
            {
                out.push(v);
                i += 3;
                continue;
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    q.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (dec(k), dec(v)),
            None => (dec(p), String::new()),
        })
        .collect()
}

fn q1(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

fn truthy(v: Option<String>) -> bool {
    matches!(v.as_deref(), Some("1") | Some("true"))
}

pub fn router(st: Arc<State>) -> Router {
    Router::new()
        .without_v07_checks()
        .route("/identity", get(identity))
        .route("/", get(root))
        .route("/library", get(library))
        .route("/library/all", get(library_items))
        .route("/library/metadata/{ids}", get(metadata))
        .route("/library/metadata/{ids}/analyze", put(analyze_items))
        .route("/services/browse", get(browse_root))
        .route("/services/browse/{*b64}", get(browse))
        .route("/library/sections", get(sections).post(create_section))
        .route(
            "/library/sections/{id}",
            get(section).delete(delete_section),
        )
        .route(
            "/library/sections/{id}/refresh",
            get(refresh).post(refresh).delete(cancel_refresh),
        )
        .route("/library/sections/{id}/analyze", put(analyze))
        .route("/library/sections/{id}/emptyTrash", put(empty_trash))
        .route("/library/sections/{id}/timeline", get(timeline))
        .route("/library/sections/{id}/all", get(section_items))
        .route("/library/sections/{id}/albums", get(section_albums))
        .route("/hubs/search", get(hub_search))
        .route("/activities", get(activities))
        .route("/activities/{uuid}", axum::routing::delete(cancel_activity))
        .route("/:/prefs", get(prefs).put(set_prefs))
        .route("/:/prefs/get", get(pref_get))
        .route(
            "/butler",
            get(butler).post(butler_all).delete(butler_stop_all),
        )
        .route(
            "/butler/{task}",
            axum::routing::post(butler_start).delete(butler_stop),
        )
        .route("/myplex/account", get(account))
        .layer(middleware::from_fn_with_state(st.clone(), gate))
        .with_state(st)
}

/// Slow-API fault, token check once claimed (everything but `/identity`), start-up window for
/// section calls.
async fn gate(AxState(st): St, req: Request, next: Next) -> Response {
    if let Some(d) = st.faults.slow_api() {
        tokio::time::sleep(d).await;
    }
    let path = req.uri().path().to_string();
    if path != "/identity"
        && let Some(token) = st.token()
    {
        let from_header = req
            .headers()
            .get("X-Plex-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let from_query = q1(&query_pairs(req.uri().query()), "X-Plex-Token");
        if from_header.or(from_query).as_deref() != Some(token.as_str()) {
            return err(StatusCode::UNAUTHORIZED, "Unauthorized");
        }
    }
    if path.starts_with("/library/sections") && st.starting() {
        return err(
            StatusCode::SERVICE_UNAVAILABLE,
            "server is still starting up. Please retry later",
        );
    }
    // Drain any request body (clients send empty chunked bodies with PUT/POST): an unread body
    // makes hyper close the keep-alive connection, and a pooling client then fails its next call.
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await
}

async fn identity(AxState(st): St, h: HeaderMap) -> Response {
    render(
        &h,
        Node::new("MediaContainer")
            .a("size", 0i64)
            .a("apiVersion", "0.2.0")
            .a("claimed", st.token().is_some())
            .a("machineIdentifier", st.machine_id())
            .a("version", VERSION),
    )
}

async fn root(AxState(st): St, h: HeaderMap) -> Response {
    let claimed = st.token().is_some();
    // Take the prefs lock in its own statement: a guard inside the builder chain below would
    // live to the end of it and deadlock with machine_id().
    let friendly = st.prefs().get("FriendlyName");
    let mut n = Node::new("MediaContainer")
        .a("size", 0i64)
        .a("claimed", claimed)
        .a(
            "friendlyName",
            friendly
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "plex-emulator".into()),
        )
        .a("machineIdentifier", st.machine_id())
        .a("myPlex", claimed)
        .a(
            "myPlexMappingState",
            if claimed { "mapped" } else { "unknown" },
        )
        .a("myPlexSigninState", if claimed { "ok" } else { "none" })
        .a("myPlexSubscription", claimed && st.opts.plex_pass)
        .a("platform", "Linux")
        .a("version", VERSION);
    if st.starting() {
        n = n.a("startState", "startingPlugins");
    }
    render(&h, n)
}

fn db(st: &State) -> Result<rusqlite::Connection, Response> {
    crate::db::open(&st.dd.library_db()).map_err(internal)
}

const TYPES: [(i64, &str); 4] = [(1, "movie"), (2, "show"), (8, "artist"), (13, "photo")];

fn section_node(st: &State, c: &rusqlite::Connection, id: i64) -> anyhow::Result<Option<Node>> {
    let row = c.query_row(
        "SELECT name, section_type, agent, scanner, language, uuid, CAST(strftime('%s', created_at) AS INTEGER), \
         CAST(strftime('%s', updated_at) AS INTEGER), CAST(strftime('%s', scanned_at) AS INTEGER), content_changed_at \
         FROM library_sections WHERE id=?",
        [id],
        |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, Option<i64>>(6)?,
                r.get::<_, Option<i64>>(7)?,
                r.get::<_, Option<i64>>(8)?,
                r.get::<_, Option<i64>>(9)?,
            ))
        },
    );
    let (name, t, agent, scanner, lang, uuid, created, updated, scanned, changed) = match row {
        Ok(r) => r,
        Err(rusqlite::Error::QueryReturnedNoRows) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let kind = TYPES
        .iter()
        .find(|(c, _)| *c == t)
        .map(|x| x.1)
        .unwrap_or("movie");
    let mut n = Node::new("Directory")
        .a("allowSync", true)
        .a("key", id.to_string())
        .a("type", kind)
        .a("title", name)
        .a("agent", agent.unwrap_or_default())
        .a("scanner", scanner.unwrap_or_default())
        .a("language", lang.unwrap_or_default())
        .a("uuid", uuid.unwrap_or_default())
        .a("updatedAt", updated.unwrap_or(0))
        .a("createdAt", created.unwrap_or(0))
        .a("scannedAt", scanned.unwrap_or(0))
        .a("content", true)
        .a("directory", true)
        .a("contentChangedAt", changed.unwrap_or(0))
        .a("hidden", 0i64)
        .a("refreshing", st.refreshing(id));
    let mut q = c.prepare(
        "SELECT id, root_path FROM section_locations WHERE library_section_id=? ORDER BY id",
    )?;
    let locs = q.query_map([id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
    for l in locs {
        let (lid, path) = l?;
        n = n.child(Node::new("Location").a("id", lid).a("path", path));
    }
    Ok(Some(n))
}

fn section_ids(c: &rusqlite::Connection) -> anyhow::Result<Vec<i64>> {
    let mut q = c.prepare("SELECT id FROM library_sections ORDER BY id")?;
    Ok(q.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?)
}

async fn sections(AxState(st): St, h: HeaderMap) -> Response {
    let c = match db(&st) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let build = || -> anyhow::Result<Node> {
        let ids = section_ids(&c)?;
        let mut n = Node::new("MediaContainer")
            .a("size", ids.len() as i64)
            .a("allowSync", false)
            .a("title1", "Plex Library");
        for id in ids {
            if let Some(s) = section_node(&st, &c, id)? {
                n = n.child(s);
            }
        }
        Ok(n)
    };
    match build() {
        Ok(n) => render(&h, n),
        Err(e) => internal(e),
    }
}

async fn section(AxState(st): St, h: HeaderMap, Path(id): Path<String>) -> Response {
    if id == "all" {
        return sections(AxState(st), h).await;
    }
    let Ok(id) = id.parse::<i64>() else {
        return err(StatusCode::NOT_FOUND, "Not Found");
    };
    let c = match db(&st) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match section_node(&st, &c, id) {
        Ok(Some(s)) => render(&h, Node::new("MediaContainer").a("size", 1i64).child(s)),
        Ok(None) => err(StatusCode::NOT_FOUND, "Not Found"),
        Err(e) => internal(e),
    }
}

async fn create_section(AxState(st): St, h: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let p = query_pairs(q.as_deref());
    let Some(name) = q1(&p, "name").filter(|s| !s.is_empty()) else {
        return err(StatusCode::BAD_REQUEST, "missing name");
    };
    let ty = q1(&p, "type").unwrap_or_default();
    let Some((code, kind)) = TYPES
        .iter()
        .find(|(c, k)| *k == ty || c.to_string() == ty)
        .copied()
    else {
        return err(
            StatusCode::BAD_REQUEST,
            "type must be movie, show, artist or photo",
        );
    };
    let (dagent, dscanner) = match code {
        1 => ("tv.plex.agents.movie", "Plex Movie"),
        2 => ("tv.plex.agents.series", "Plex TV Series"),
        8 => ("tv.plex.agents.music", "Plex Music"),
        _ => ("com.plexapp.agents.none", "Plex Photo Scanner"),
    };
    let locations: Vec<String> = p
        .iter()
        .filter(|(k, _)| k == "location" || k == "locations")
        .map(|(_, v)| v.clone())
        .collect();
    if locations.is_empty() {
        return err(StatusCode::BAD_REQUEST, "at least one location is required");
    }
    let agent = q1(&p, "agent").unwrap_or_else(|| dagent.into());
    let scanner = q1(&p, "scanner").unwrap_or_else(|| dscanner.into());
    let language = q1(&p, "language").unwrap_or_else(|| "en-US".into());
    let mut c = match db(&st) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut create = || -> anyhow::Result<i64> {
        let now = crate::db::datetime(crate::db::unix_now());
        let tx = c.transaction()?;
        tx.execute(
            "INSERT INTO library_sections(name, name_sort, section_type, language, agent, scanner, created_at, updated_at, \
             uuid, changed_at, content_changed_at, user_fields) VALUES (?1,?1,?2,?3,?4,?5,?6,?6,?7,0,0,'')",
            params![name, code, language, agent, scanner, now, uuid::Uuid::new_v4().to_string()],
        )?;
        let id = tx.last_insert_rowid();
        for l in &locations {
            let l = l.trim_end_matches('/');
            tx.execute(
                "INSERT INTO section_locations(library_section_id, root_path, available, created_at, updated_at) VALUES (?,?,1,?,?)",
                params![id, if l.is_empty() { "/" } else { l }, now, now],
            )?;
        }
        tx.commit()?;
        Ok(id)
    };
    match create() {
        Ok(id) => {
            st.log(&format!("Created section {id} {name:?} ({kind})"));
            match section_node(&st, &c, id) {
                Ok(Some(s)) => render(&h, Node::new("MediaContainer").a("size", 1i64).child(s)),
                Ok(None) => err(StatusCode::INTERNAL_SERVER_ERROR, "section vanished"),
                Err(e) => internal(e),
            }
        }
        Err(e) => internal(e),
    }
}

async fn delete_section(AxState(st): St, h: HeaderMap, Path(id): Path<i64>) -> Response {
    let c = match db(&st) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let del = || -> anyhow::Result<usize> {
        let n = c.execute("DELETE FROM library_sections WHERE id=?", [id])?;
        c.execute(
            "DELETE FROM section_locations WHERE library_section_id=?",
            [id],
        )?;
        Ok(n)
    };
    match del() {
        Ok(0) => err(StatusCode::NOT_FOUND, "Not Found"),
        Ok(_) => ok_empty(&h),
        Err(e) => internal(e),
    }
}

/// Resolve `{id}` (`all` or a number) to existing section ids.
fn target_sections(st: &State, id: &str) -> Result<Vec<i64>, Response> {
    let c = db(st)?;
    let ids = section_ids(&c).map_err(internal)?;
    if id == "all" {
        return Ok(ids);
    }
    match id.parse::<i64>() {
        Ok(i) if ids.contains(&i) => Ok(vec![i]),
        _ => Err(err(StatusCode::NOT_FOUND, "Not Found")),
    }
}

async fn refresh(
    AxState(st): St,
    h: HeaderMap,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let p = query_pairs(q.as_deref());
    let sections = match target_sections(&st, &id) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let path = q1(&p, "path")
        .filter(|s| !s.is_empty())
        .map(std::path::PathBuf::from);
    if !sections.is_empty() {
        st.enqueue(Job::Scan {
            sections,
            force: truthy(q1(&p, "force")),
            path,
        });
    }
    ok_empty(&h)
}

async fn cancel_refresh(AxState(st): St, h: HeaderMap, Path(id): Path<String>) -> Response {
    let section = if id == "all" {
        None
    } else {
        match id.parse::<i64>() {
            Ok(i) => Some(i),
            Err(_) => return err(StatusCode::NOT_FOUND, "Not Found"),
        }
    };
    worker::cancel_scans(&st, section);
    ok_empty(&h)
}

async fn analyze(AxState(st): St, h: HeaderMap, Path(id): Path<String>) -> Response {
    let sections = match target_sections(&st, &id) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let c = match db(&st) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match queue_analysis(&st, &c, &sections) {
        Ok(()) => ok_empty(&h),
        Err(r) => r,
    }
}

/// Analyze = media analysis; music is also earmarked for loudness and Sonic, video gets BIF when
/// enabled (spec text quoted in plex.md §3.4).
fn queue_analysis(st: &State, c: &rusqlite::Connection, sections: &[i64]) -> Result<(), Response> {
    for task in [Task::MediaAnalysis, Task::Loudness, Task::Sonic, Task::Bif] {
        worker::queue_task(st, c, task, sections).map_err(internal)?;
    }
    Ok(())
}

async fn empty_trash(AxState(st): St, h: HeaderMap, Path(id): Path<String>) -> Response {
    match target_sections(&st, &id) {
        Ok(s) => {
            for section in s {
                st.enqueue(Job::EmptyTrash { section });
            }
            ok_empty(&h)
        }
        Err(r) => r,
    }
}

async fn timeline(AxState(st): St, h: HeaderMap, Path(id): Path<String>) -> Response {
    let sections = match target_sections(&st, &id) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let q: usize = sections.iter().map(|s| st.queue_size(*s)).sum();
    let name = if wants_json(&h) {
        "MediaContainer"
    } else {
        "LibraryTimeline"
    };
    render(
        &h,
        Node::new(name)
            .a("size", 0i64)
            .a("identifier", "com.plexapp.plugins.library")
            .a("latestEntryTime", crate::db::unix_now())
            .a("updateQueueSize", q as i64),
    )
}

fn type_code(s: &str) -> Option<i64> {
    s.parse().ok().or(match s {
        "movie" => Some(1),
        "show" => Some(2),
        "season" => Some(3),
        "episode" => Some(4),
        "artist" => Some(8),
        "album" => Some(9),
        "track" => Some(10),
        "photo" => Some(13),
        "photoalbum" => Some(14),
        _ => None,
    })
}

fn type_name(t: i64) -> (&'static str, &'static str) {
    match t {
        1 => ("Video", "movie"),
        2 => ("Directory", "show"),
        3 => ("Directory", "season"),
        4 => ("Video", "episode"),
        8 => ("Directory", "artist"),
        9 => ("Directory", "album"),
        10 => ("Track", "track"),
        13 => ("Photo", "photo"),
        14 => ("Directory", "photo"),
        _ => ("Directory", "unknown"),
    }
}

/// `X-Plex-Container-Start` / `-Size` from the query or the headers (plexapi sends headers).
fn paging(p: &[(String, String)], h: &HeaderMap) -> (i64, i64) {
    let get = |k: &str| {
        q1(p, k)
            .or_else(|| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_string))
            .and_then(|v| v.parse::<i64>().ok())
    };
    let start = get("X-Plex-Container-Start").unwrap_or(0).max(0);
    let size = get("X-Plex-Container-Size")
        .filter(|s| *s >= 0)
        .unwrap_or(i64::MAX);
    (start, size)
}

/// A `WHERE` clause over `metadata_items md` and its arguments, built from a listing's filters.
#[derive(Default)]
struct Filter {
    cond: Vec<String>,
    args: Vec<rusqlite::types::Value>,
}

impl Filter {
    fn add(&mut self, cond: &str, arg: impl Into<rusqlite::types::Value>) {
        self.args.push(arg.into());
        self.cond
            .push(cond.replace('?', &format!("?{}", self.args.len())));
    }

    /// `type=` (name or code) and `title=` (a case-insensitive substring, as Plex's title
    /// filter: "partial string matches are allowed", plexapi `search`), and the
    /// `musicAnalysisVersion` probe (plex.md §2).
    fn from_query(p: &[(String, String)], default_type: Option<i64>) -> Filter {
        let mut f = Filter::default();
        if let Some(t) = q1(p, "type").and_then(|t| type_code(&t)).or(default_type) {
            f.add("md.metadata_type=?", t);
        }
        if let Some(t) = q1(p, "title").filter(|t| !t.is_empty()) {
            let esc = t
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            f.add("md.title LIKE ? ESCAPE '\\'", format!("%{esc}%"));
        }
        if let Some(v) = q1(p, "musicAnalysisVersion") {
            f.cond.push(if v == "1" {
                "md.extra_data LIKE '%ms:musicAnalysisVersion%'".into()
            } else {
                "(md.extra_data IS NULL OR md.extra_data NOT LIKE '%ms:musicAnalysisVersion%')"
                    .into()
            });
        }
        f
    }

    fn sql(&self) -> String {
        if self.cond.is_empty() {
            "1".into()
        } else {
            self.cond.join(" AND ")
        }
    }
}

/// The matching items in id order from `start`, at most `size`, and how many match in all.
fn item_nodes(
    c: &rusqlite::Connection,
    f: &Filter,
    start: i64,
    size: i64,
) -> anyhow::Result<(i64, Vec<Node>)> {
    let cond = f.sql();
    let total: i64 = c.query_row(
        &format!("SELECT count(*) FROM metadata_items md WHERE {cond}"),
        rusqlite::params_from_iter(&f.args),
        |r| r.get(0),
    )?;
    let mut q = c.prepare(&format!(
        "SELECT md.id, md.title, md.parent_id, md.\"index\", md.year, md.duration, md.added_at, md.updated_at, \
         md.deleted_at, md.extra_data, mi.id, mi.container, mi.media_analysis_version, mp.id, mp.file, mp.size, \
         md.metadata_type, md.library_section_id, md.guid, p.title, p.\"index\", p.parent_id, g.title, \
         mi.duration, mi.bitrate, mi.width, mi.height, mi.audio_codec, mi.video_codec \
         FROM metadata_items md LEFT JOIN media_items mi ON mi.metadata_item_id=md.id \
         LEFT JOIN media_parts mp ON mp.media_item_id=mi.id \
         LEFT JOIN metadata_items p ON p.id=md.parent_id LEFT JOIN metadata_items g ON g.id=p.parent_id \
         WHERE {cond} ORDER BY md.id LIMIT {size} OFFSET {start}"
    ))?;
    let mut rows = q.query(rusqlite::params_from_iter(&f.args))?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let mid: i64 = r.get(0)?;
        let (elem, tname) = type_name(r.get(16)?);
        let mut it = Node::new(elem)
            .a("ratingKey", mid.to_string())
            .a("key", format!("/library/metadata/{mid}"))
            .a("guid", r.get::<_, Option<String>>(18)?.unwrap_or_default())
            .a("type", tname)
            .a("title", r.get::<_, Option<String>>(1)?.unwrap_or_default())
            .a(
                "librarySectionID",
                r.get::<_, Option<i64>>(17)?.unwrap_or_default(),
            )
            .a("addedAt", r.get::<_, Option<i64>>(6)?.unwrap_or(0))
            .a("updatedAt", r.get::<_, Option<i64>>(7)?.unwrap_or(0));
        // Parents as Plex names them on tracks, albums, seasons, episodes and photos.
        if let Some(pid) = r.get::<_, Option<i64>>(2)? {
            it = it
                .a("parentRatingKey", pid.to_string())
                .a("parentKey", format!("/library/metadata/{pid}"))
                .a(
                    "parentTitle",
                    r.get::<_, Option<String>>(19)?.unwrap_or_default(),
                );
            if let Some(i) = r.get::<_, Option<i64>>(20)? {
                it = it.a("parentIndex", i);
            }
            if let Some(gid) = r.get::<_, Option<i64>>(21)? {
                it = it
                    .a("grandparentRatingKey", gid.to_string())
                    .a("grandparentKey", format!("/library/metadata/{gid}"))
                    .a(
                        "grandparentTitle",
                        r.get::<_, Option<String>>(22)?.unwrap_or_default(),
                    );
            }
        }
        if let Some(i) = r.get::<_, Option<i64>>(3)? {
            it = it.a("index", i);
        }
        if let Some(y) = r.get::<_, Option<i64>>(4)? {
            it = it.a("year", y);
        }
        if let Some(d) = r.get::<_, Option<i64>>(5)?.filter(|d| *d > 0) {
            it = it.a("duration", d);
        }
        if let Some(d) = r.get::<_, Option<i64>>(8)? {
            it = it.a("deletedAt", d);
        }
        let extra: Option<String> = r.get(9)?;
        if extra
            .as_deref()
            .is_some_and(|e| e.contains("ms:musicAnalysisVersion"))
        {
            it = it.a("musicAnalysisVersion", 1i64);
        }
        if let Some(media) = r.get::<_, Option<i64>>(10)? {
            let part = Node::new("Part")
                .a("id", r.get::<_, Option<i64>>(13)?.unwrap_or(0))
                .a("file", r.get::<_, Option<String>>(14)?.unwrap_or_default())
                .a("size", r.get::<_, Option<i64>>(15)?.unwrap_or(0));
            let container = r.get::<_, Option<String>>(11)?.unwrap_or_default();
            let part = part.a("container", container.clone());
            let mut m = Node::new("Media")
                .a("id", media)
                .a("container", container)
                .a(
                    "mediaAnalysisVersion",
                    r.get::<_, Option<i64>>(12)?.unwrap_or(0),
                );
            // What the scan recorded (plexapi `Media` reads these); absent when unknown.
            for (i, k) in [
                (23, "duration"),
                (24, "bitrate"),
                (25, "width"),
                (26, "height"),
            ] {
                if let Some(v) = r.get::<_, Option<i64>>(i)?.filter(|v| *v > 0) {
                    m = m.a(k, v);
                }
            }
            for (i, k) in [(27, "audioCodec"), (28, "videoCodec")] {
                if let Some(v) = r.get::<_, Option<String>>(i)?.filter(|v| !v.is_empty()) {
                    m = m.a(k, v);
                }
            }
            it = it.child(m.child(part));
        }
        out.push(it);
    }
    Ok((total, out))
}

/// A page of items in a `MediaContainer` with `size`, `totalSize` and `offset` (plexapi pages
/// until `offset + size` reaches `totalSize`).
fn item_page(c: &rusqlite::Connection, f: &Filter, start: i64, size: i64) -> anyhow::Result<Node> {
    let (total, items) = item_nodes(c, f, start, size)?;
    let mut n = Node::new("MediaContainer")
        .a("size", items.len() as i64)
        .a("totalSize", total)
        .a("offset", start);
    n.children = items;
    Ok(n)
}

async fn section_items(
    AxState(st): St,
    h: HeaderMap,
    Path(id): Path<i64>,
    RawQuery(q): RawQuery,
) -> Response {
    let p = query_pairs(q.as_deref());
    let (start, size) = paging(&p, &h);
    let c = match db(&st) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let section_type: Option<i64> = c
        .query_row(
            "SELECT section_type FROM library_sections WHERE id=?",
            [id],
            |r| r.get(0),
        )
        .ok();
    let Some(section_type) = section_type else {
        return err(StatusCode::NOT_FOUND, "Not Found");
    };
    // Without `type`, the section's top-level type (its `type` attribute).
    let default_type = match section_type {
        2 => 2,
        8 => 8,
        13 => 13,
        _ => 1,
    };
    let mut f = Filter::from_query(&p, Some(default_type));
    f.add("md.library_section_id=?", id);
    match item_page(&c, &f, start, size) {
        Ok(n) => render(&h, n.a("librarySectionID", id)),
        Err(e) => internal(e),
    }
}

/// `GET /library/sections/{id}/albums`: the section's albums (plexapi `MusicSection.albums`).
async fn section_albums(
    st: St,
    h: HeaderMap,
    Path(id): Path<i64>,
    RawQuery(q): RawQuery,
) -> Response {
    let q = match q {
        Some(q) if !q.is_empty() => format!("{q}&type=9"),
        _ => "type=9".into(),
    };
    section_items(st, h, Path(id), RawQuery(Some(q))).await
}

/// The hub search's order of types and their names (plexapi `search(mediatype=…)` names).
const HUB_TYPES: [(i64, &str); 9] = [
    (1, "movie"),
    (2, "show"),
    (3, "season"),
    (4, "episode"),
    (8, "artist"),
    (9, "album"),
    (10, "track"),
    (14, "photoalbum"),
    (13, "photo"),
];

/// `GET /hubs/search?query=&limit=&sectionId=`: one `Hub` per type with items whose title holds
/// `query` (case-insensitive), at most `limit` each (`more="1"` when cut). Titles only: no
/// spell-checking, people, genres or tags (README divergences).
async fn hub_search(AxState(st): St, h: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let p = query_pairs(q.as_deref());
    let Some(query) = q1(&p, "query").filter(|s| !s.is_empty()) else {
        return err(StatusCode::BAD_REQUEST, "missing query");
    };
    let limit = q1(&p, "limit")
        .and_then(|l| l.parse::<i64>().ok())
        .filter(|l| *l > 0)
        .unwrap_or(i64::MAX);
    let section = q1(&p, "sectionId").and_then(|s| s.parse::<i64>().ok());
    let c = match db(&st) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let run = || -> anyhow::Result<Node> {
        let mut hubs = Vec::new();
        for (code, name) in HUB_TYPES {
            let pairs = vec![
                ("type".to_string(), code.to_string()),
                ("title".to_string(), query.clone()),
            ];
            let mut f = Filter::from_query(&pairs, None);
            if let Some(s) = section {
                f.add("md.library_section_id=?", s);
            }
            let (total, items) = item_nodes(&c, &f, 0, limit)?;
            if items.is_empty() {
                continue;
            }
            let mut hub = Node::new("Hub")
                .a(
                    "title",
                    format!("{}s", name[..1].to_uppercase() + &name[1..]),
                )
                .a("type", name)
                .a("hubIdentifier", name)
                .a("context", "")
                .a("size", items.len() as i64)
                .a("more", total > items.len() as i64)
                .a("style", "shelf");
            hub.children = items;
            hubs.push(hub);
        }
        let mut n = Node::new("MediaContainer").a("size", hubs.len() as i64);
        n.children = hubs;
        Ok(n)
    };
    match run() {
        Ok(n) => render(&h, n),
        Err(e) => internal(e),
    }
}

/// `GET /library/all`: the same listing across every section.
async fn library_items(AxState(st): St, h: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let p = query_pairs(q.as_deref());
    let (start, size) = paging(&p, &h);
    let c = match db(&st) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match item_page(&c, &Filter::from_query(&p, None), start, size) {
        Ok(n) => render(&h, n),
        Err(e) => internal(e),
    }
}

/// `{ids}` of `/library/metadata/{ids}`: one id or a comma-separated list (the spec's form).
fn metadata_ids(ids: &str) -> Option<Vec<i64>> {
    ids.split(',').map(|s| s.trim().parse().ok()).collect()
}

/// `GET /library/metadata/{ids}`: those items as listings show them (plexapi reloads a partial
/// object from here).
async fn metadata(AxState(st): St, h: HeaderMap, Path(ids): Path<String>) -> Response {
    let Some(ids) = metadata_ids(&ids) else {
        return err(StatusCode::NOT_FOUND, "Not Found");
    };
    let c = match db(&st) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut f = Filter::default();
    f.cond.push(format!(
        "md.id IN ({})",
        ids.iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    ));
    match item_page(&c, &f, 0, i64::MAX) {
        Ok(n) if n.children.is_empty() => err(StatusCode::NOT_FOUND, "Not Found"),
        Ok(n) => render(&h, n),
        Err(e) => internal(e),
    }
}

/// `PUT /library/metadata/{ids}/analyze`: the analysis `…/analyze` of their sections queues. Tasks
/// select only items not yet done, so these items are analysed with any others still pending
/// (README divergences).
async fn analyze_items(AxState(st): St, h: HeaderMap, Path(ids): Path<String>) -> Response {
    let Some(ids) = metadata_ids(&ids) else {
        return err(StatusCode::NOT_FOUND, "Not Found");
    };
    let c = match db(&st) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let sections = || -> anyhow::Result<Vec<i64>> {
        let mut q = c.prepare(&format!(
            "SELECT DISTINCT library_section_id FROM metadata_items WHERE id IN ({}) AND library_section_id IS NOT NULL",
            ids.iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ))?;
        Ok(q.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?)
    };
    match sections() {
        Ok(s) if s.is_empty() => err(StatusCode::NOT_FOUND, "Not Found"),
        Ok(s) => match queue_analysis(&st, &c, &s) {
            Ok(()) => ok_empty(&h),
            Err(r) => r,
        },
        Err(e) => internal(e),
    }
}

/// `GET /library`: the library root plexapi's `PlexServer.library` loads before anything else.
async fn library(h: HeaderMap) -> Response {
    let dir = |key: &str, title: &str| Node::new("Directory").a("key", key).a("title", title);
    render(
        &h,
        Node::new("MediaContainer")
            .a("size", 3i64)
            .a("allowSync", false)
            .a("art", "/:/resources/library-art.png")
            .a("content", "")
            .a("identifier", "com.plexapp.plugins.library")
            .a("mediaTagPrefix", "/system/bundle/media/flags/")
            .a("mediaTagVersion", crate::db::unix_now())
            .a("title1", "Plex Library")
            .a("title2", "")
            .child(dir("sections", "Library Sections"))
            .child(dir("recentlyAdded", "Recently Added Content"))
            .child(dir("onDeck", "On Deck Content")),
    )
}

/// `GET /services/browse`: the emulator starts browsing at `/`.
async fn browse_root(h: HeaderMap, RawQuery(q): RawQuery) -> Response {
    browse_dir(&h, "/", q.as_deref())
}

/// `GET /services/browse/{base64 path}?includeFiles=0|1`: the folder's sub-folders as `Path`, and
/// its files as `File` unless `includeFiles=0`; 404 when the path does not decode or list.
async fn browse(h: HeaderMap, Path(b64): Path<String>, RawQuery(q): RawQuery) -> Response {
    match crate::browse::decode_path(&b64) {
        Some(dir) => browse_dir(&h, &dir, q.as_deref()),
        None => err(StatusCode::NOT_FOUND, "Not Found"),
    }
}

fn browse_dir(h: &HeaderMap, dir: &str, q: Option<&str>) -> Response {
    let include_files = q1(&query_pairs(q), "includeFiles").as_deref() != Some("0");
    let Some(entries) = crate::browse::list(dir, include_files) else {
        return err(StatusCode::NOT_FOUND, "Not Found");
    };
    let mut n = Node::new("MediaContainer")
        .a("size", entries.len() as i64)
        .a("identifier", "com.plexapp.system")
        .a("path", dir);
    for e in entries {
        n = n.child(
            Node::new(if e.is_dir { "Path" } else { "File" })
                .a(
                    "key",
                    format!("/services/browse/{}", crate::browse::encode_path(&e.path)),
                )
                .a("path", e.path)
                .a("title", e.title),
        );
    }
    render(h, n)
}

async fn activities(AxState(st): St, h: HeaderMap) -> Response {
    let acts = st.jobs().activities.clone();
    let mut n = Node::new("MediaContainer").a("size", acts.len() as i64);
    for a in acts {
        let mut ctx = Node::new("Context");
        ctx.single = true;
        if let Some(s) = a.section_id {
            ctx = ctx.a("librarySectionID", s.to_string());
        }
        n = n.child(
            Node::new("Activity")
                .a("uuid", a.uuid)
                .a("type", a.kind)
                .a("cancellable", true)
                .a("userID", 1i64)
                .a("title", a.title)
                .a("subtitle", a.subtitle)
                .a("progress", a.progress.load(Ordering::Relaxed))
                .child(ctx),
        );
    }
    render(&h, n)
}

async fn cancel_activity(AxState(st): St, h: HeaderMap, Path(uuid): Path<String>) -> Response {
    let found = st
        .jobs()
        .activities
        .iter()
        .find(|a| a.uuid == uuid)
        .map(|a| a.cancel.store(true, Ordering::SeqCst))
        .is_some();
    if found {
        ok_empty(&h)
    } else {
        err(StatusCode::NOT_FOUND, "Not Found")
    }
}

fn setting_node(st: &State, id: &str) -> Option<Node> {
    let p = st.prefs();
    let d = p.def(id)?.clone();
    let value = p.get(id).unwrap_or_default();
    let typed = |canon: &str| match d.json_value(canon) {
        serde_json::Value::Bool(b) => V::Bt(b),
        j => V::J(j),
    };
    let mut n = Node::new("Setting")
        .a("id", d.id.clone())
        .a("label", d.label.clone())
        .a("summary", d.summary.clone())
        .a("type", d.kind.clone())
        .a("default", typed(&d.default))
        .a("value", typed(&value))
        .a("hidden", V::Bt(d.hidden))
        .a("advanced", V::Bt(d.advanced))
        .a("group", d.group.clone());
    if let Some(e) = d.enum_values {
        n = n.a("enumValues", e);
    }
    Some(n)
}

async fn prefs(AxState(st): St, h: HeaderMap) -> Response {
    let ids: Vec<String> = st.prefs().defs.iter().map(|d| d.id.clone()).collect();
    let mut n = Node::new("MediaContainer").a("size", ids.len() as i64);
    for id in ids {
        if let Some(s) = setting_node(&st, &id) {
            n = n.child(s);
        }
    }
    render(&h, n)
}

async fn pref_get(AxState(st): St, h: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let p = query_pairs(q.as_deref());
    match q1(&p, "id").and_then(|id| setting_node(&st, &id)) {
        Some(s) => render(&h, Node::new("MediaContainer").a("size", 1i64).child(s)),
        None => err(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn set_prefs(AxState(st): St, h: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let changes: Vec<(String, String)> = query_pairs(q.as_deref())
        .into_iter()
        .filter(|(k, _)| !k.starts_with("X-Plex-"))
        .collect();
    let res = st
        .prefs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .apply(&changes);
    match res {
        Ok(()) => {
            st.log(&format!(
                "Prefs set: {}",
                changes
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
            ok_empty(&h)
        }
        Err(e) => err(StatusCode::BAD_REQUEST, &e),
    }
}

/// The spec's butler task names (plex.md §3.3).
const BUTLER: &[&str] = &[
    "AutomaticUpdates",
    "BackupDatabase",
    "ButlerTaskGenerateAdMarkers",
    "ButlerTaskGenerateCreditsMarkers",
    "ButlerTaskGenerateIntroMarkers",
    "ButlerTaskGenerateVoiceActivity",
    "CleanOldBundles",
    "CleanOldCacheFiles",
    "DeepMediaAnalysis",
    "GarbageCollectBlobs",
    "GarbageCollectLibraryMedia",
    "GenerateBlurHashes",
    "GenerateChapterThumbs",
    "GenerateMediaIndexFiles",
    "LoudnessAnalysis",
    "MusicAnalysis",
    "OptimizeDatabase",
    "RefreshEpgGuides",
    "RefreshLibraries",
    "RefreshLocalMedia",
    "RefreshPeriodicMetadata",
    "UpgradeMediaAnalysis",
];

fn butler_enabled(st: &State, name: &str) -> bool {
    match Task::for_butler_name(name) {
        Some(tasks) => tasks
            .iter()
            .any(|t| match (t.behavior_pref(), t.butler_pref()) {
                (Some(b), _) => st.prefs().get(b).as_deref() != Some("never"),
                (None, Some(b)) => st.prefs().get_bool(b),
                _ => true,
            }),
        None => st.prefs().get_bool(&format!("ButlerTask{name}")),
    }
}

async fn butler(AxState(st): St, h: HeaderMap) -> Response {
    let mut n = Node::new("ButlerTasks");
    for name in BUTLER {
        n = n.child(
            Node::new("ButlerTask")
                .a("name", *name)
                .a("title", *name)
                .a("description", "")
                .a("enabled", butler_enabled(&st, name))
                .a("interval", 1i64)
                .a("scheduleRandomized", false),
        );
    }
    render(&h, n)
}

fn start_named(st: &State, name: &str) -> Result<(), Response> {
    let c = db(st)?;
    for t in Task::for_butler_name(name).unwrap_or_default() {
        worker::queue_task(st, &c, t, &[]).map_err(internal)?;
    }
    Ok(())
}

async fn butler_all(AxState(st): St, h: HeaderMap) -> Response {
    for name in BUTLER {
        if butler_enabled(&st, name)
            && let Err(r) = start_named(&st, name)
        {
            return r;
        }
    }
    ok_empty(&h)
}

async fn butler_start(AxState(st): St, h: HeaderMap, Path(task): Path<String>) -> Response {
    if !BUTLER.contains(&task.as_str()) {
        return err(StatusCode::NOT_FOUND, "Not Found");
    }
    st.log(&format!("Butler: starting {task}"));
    match start_named(&st, &task) {
        Ok(()) => ok_empty(&h),
        Err(r) => r,
    }
}

fn stop_tasks(st: &State, tasks: &[Task]) -> bool {
    let mut j = st.jobs();
    let before = j.queue.len();
    j.queue
        .retain(|job| !matches!(job, Job::Task { task, .. } if tasks.contains(task)));
    let mut hit = before != j.queue.len();
    let kinds: Vec<&str> = tasks.iter().map(|t| t.activity_type()).collect();
    for a in &j.activities {
        if kinds.contains(&a.kind.as_str()) {
            a.cancel.store(true, Ordering::SeqCst);
            hit = true;
        }
    }
    hit
}

async fn butler_stop(AxState(st): St, h: HeaderMap, Path(task): Path<String>) -> Response {
    match Task::for_butler_name(&task) {
        Some(tasks) if stop_tasks(&st, &tasks) => ok_empty(&h),
        _ => err(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn butler_stop_all(AxState(st): St, h: HeaderMap) -> Response {
    stop_tasks(&st, &crate::task::ALL);
    ok_empty(&h)
}

async fn account(AxState(st): St, h: HeaderMap) -> Response {
    let token = st.token();
    let claimed = token.is_some();
    let active = claimed && st.opts.plex_pass;
    let p = st.prefs();
    let mut attrs: BTreeMap<&str, V> = BTreeMap::new();
    attrs.insert("authToken", V::S(token.unwrap_or_default()));
    attrs.insert(
        "username",
        V::S(p.attr("PlexOnlineUsername").unwrap_or_default().to_string()),
    );
    attrs.insert(
        "mappingState",
        V::S(if claimed { "mapped" } else { "unknown" }.into()),
    );
    attrs.insert(
        "signInState",
        V::S(if claimed { "ok" } else { "none" }.into()),
    );
    attrs.insert("subscriptionActive", V::B(active));
    attrs.insert(
        "subscriptionState",
        V::S(if active { "Active" } else { "Unknown" }.into()),
    );
    attrs.insert(
        "subscriptionFeatures",
        V::S(if active {
            "music-analysis,premium_music_metadata,sonic-analysis".into()
        } else {
            String::new()
        }),
    );
    let mut n = Node::new("MyPlex");
    for (k, v) in attrs {
        n = n.a(k, v);
    }
    drop(p);
    render(&h, n)
}
