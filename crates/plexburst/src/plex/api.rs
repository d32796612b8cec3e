//! Blocking HTTP client for the Plex Media Server API (JSON via `Accept: application/json`).
//!
//! Signatures are a contract with the pipeline: do not change one without updating both sides.
//! Parsing is deliberately lenient about scalar types, because real Plex is inconsistent: section
//! `key` and `Context.librarySectionID` are JSON strings, `claimed`/`refreshing` are booleans in JSON
//! but `"1"`/`"0"` in XML-derived emulators, and pref values carry their own JSON type (plex.md §4,
//! `real-pms-prefs.json`).

use std::time::Duration;

use serde_json::Value;

/// Errors callers branch on: `Starting` and `Unreachable` are retried, `Unauthorized` is fatal.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Plex at {url} is unreachable: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("Plex at {url} is still starting up")]
    Starting { url: String },
    #[error("Plex at {url} refused the token (401); check the token in Preferences.xml")]
    Unauthorized { url: String },
    #[error("Plex answered {status} to {method} {path}: {body}")]
    Status {
        method: String,
        path: String,
        status: u16,
        body: String,
    },
    #[error("cannot parse Plex's answer to {path}: {detail}")]
    Parse { path: String, detail: String },
}

impl ApiError {
    /// Worth retrying after a pause: the server is down, restarting or still starting up.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ApiError::Unreachable { .. } | ApiError::Starting { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub machine_identifier: String,
    pub version: String,
    pub claimed: bool,
}

#[derive(Debug, Clone)]
pub struct Section {
    pub id: i64,
    pub title: String,
    /// `movie`, `show`, `artist` or `photo`, as the API spells it.
    pub kind: String,
    pub agent: String,
    pub scanner: String,
    pub language: String,
    pub refreshing: bool,
    pub locations: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct NewSection {
    pub name: String,
    /// `movie`, `show`, `artist` or `photo`.
    pub kind: String,
    pub agent: String,
    pub scanner: String,
    pub language: String,
    pub locations: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Activity {
    pub uuid: String,
    pub kind: String,
    pub title: String,
    pub progress: i64,
    pub section_id: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Pref {
    pub id: String,
    /// `text`, `bool`, `int` or `double`.
    pub kind: String,
    /// The value rendered as Plex accepts it back in `PUT /:/prefs` (`true`/`false` for bools).
    pub value: String,
    pub default: String,
}

#[derive(Debug, Clone)]
pub struct Account {
    pub username: String,
    pub subscription_active: bool,
}

/// Longest slice of an error body kept in `ApiError::Status` (Plex error pages are HTML).
const MAX_ERROR_BODY: usize = 500;

/// The phrase Plex puts in its answers while it is still starting (plex.md §4, plexapi).
const STARTING_UP: &str = "still starting up";

#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl std::fmt::Debug for Client {
    // Hand-written so the token can never reach a log through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

enum Method {
    Get,
    Post,
    Put,
    Delete,
}

impl Method {
    fn as_str(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
        }
    }
}

impl Client {
    /// `base` is `http://127.0.0.1:PORT`; `token` is sent as `X-Plex-Token` when present.
    pub fn new(base: &str, token: Option<String>, timeout: Duration) -> Client {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            // Non-2xx answers come back as responses so their bodies can be read and classified.
            .http_status_as_error(false)
            .build()
            .new_agent();
        Client {
            agent,
            base: base.trim_end_matches('/').to_string(),
            token: token.filter(|t| !t.is_empty()),
        }
    }

    pub fn set_token(&mut self, token: Option<String>) {
        self.token = token.filter(|t| !t.is_empty());
    }

    /// The base URL this client talks to.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn identity(&self) -> Result<Identity, ApiError> {
        identity_from(&self.call(Method::Get, "/identity", &[])?)
    }

    /// `GET /`: `Err(ApiError::Starting)` while the server reports a `startState`.
    pub fn ready(&self) -> Result<(), ApiError> {
        if started_from(&self.call(Method::Get, "/", &[])?)? {
            Ok(())
        } else {
            Err(ApiError::Starting {
                url: self.base.clone(),
            })
        }
    }

    pub fn sections(&self) -> Result<Vec<Section>, ApiError> {
        sections_from(&self.call(Method::Get, "/library/sections", &[])?)
    }

    pub fn create_section(&self, s: &NewSection) -> Result<(), ApiError> {
        let mut q: Vec<(&str, &str)> = vec![
            ("name", &s.name),
            ("type", &s.kind),
            ("agent", &s.agent),
            ("scanner", &s.scanner),
            ("language", &s.language),
        ];
        // Plex takes one `location` parameter per root folder (plexapi `Library.add`).
        for l in &s.locations {
            q.push(("location", l));
        }
        self.call(Method::Post, "/library/sections", &q).map(drop)
    }

    /// `GET /library/sections/all/refresh?force=0|1`.
    pub fn refresh_all(&self, force: bool) -> Result<(), ApiError> {
        let force = if force { "1" } else { "0" };
        self.call(
            Method::Get,
            "/library/sections/all/refresh",
            &[("force", force)],
        )
        .map(drop)
    }

    /// `DELETE /library/sections/all/refresh`.
    pub fn cancel_refresh_all(&self) -> Result<(), ApiError> {
        self.call(Method::Delete, "/library/sections/all/refresh", &[])
            .map(drop)
    }

    /// `PUT /library/sections/{id}/analyze`.
    pub fn analyze_section(&self, id: i64) -> Result<(), ApiError> {
        self.call(Method::Put, &format!("/library/sections/{id}/analyze"), &[])
            .map(drop)
    }

    /// How many items of metadata type `item_type` section `id` lists (`totalSize` of
    /// `/library/sections/{id}/all` with an empty page, so nothing but the count travels);
    /// `sonic_only` keeps the tracks with Sonic analysis (`musicAnalysisVersion=1`). Plex lists
    /// trashed items too (they carry `deletedAt`).
    pub fn count_items(&self, id: i64, item_type: i64, sonic_only: bool) -> Result<i64, ApiError> {
        let path = format!("/library/sections/{id}/all");
        let t = item_type.to_string();
        let mut q = vec![
            ("type", t.as_str()),
            ("X-Plex-Container-Start", "0"),
            ("X-Plex-Container-Size", "0"),
        ];
        if sonic_only {
            q.push(("musicAnalysisVersion", "1"));
        }
        total_size_from(&path, &self.call(Method::Get, &path, &q)?)
    }

    pub fn activities(&self) -> Result<Vec<Activity>, ApiError> {
        activities_from(&self.call(Method::Get, "/activities", &[])?)
    }

    pub fn prefs(&self) -> Result<Vec<Pref>, ApiError> {
        prefs_from(&self.call(Method::Get, "/:/prefs", &[])?)
    }

    /// One `PUT /:/prefs?k=v&...`; Plex rejects the whole request when one id is unknown.
    pub fn set_prefs(&self, values: &[(String, String)]) -> Result<(), ApiError> {
        if values.is_empty() {
            return Ok(());
        }
        let q: Vec<(&str, &str)> = values
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.call(Method::Put, "/:/prefs", &q).map(drop)
    }

    /// `POST /butler/{task}`.
    pub fn start_butler_task(&self, task: &str) -> Result<(), ApiError> {
        self.call(Method::Post, &format!("/butler/{task}"), &[])
            .map(drop)
    }

    pub fn account(&self) -> Result<Account, ApiError> {
        account_from(&self.call(Method::Get, "/myplex/account", &[])?)
    }

    /// Send a request; return the body of a 2xx answer, classify everything else.
    fn call(&self, method: Method, path: &str, query: &[(&str, &str)]) -> Result<String, ApiError> {
        let url = format!("{}{}", self.base, path);
        let result = match method {
            Method::Get => self.with_common(self.agent.get(&url), query).call(),
            Method::Delete => self.with_common(self.agent.delete(&url), query).call(),
            Method::Post => self.with_common(self.agent.post(&url), query).send_empty(),
            Method::Put => self.with_common(self.agent.put(&url), query).send_empty(),
        };
        let mut resp = result.map_err(|e| self.transport_error(e))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| self.transport_error(e))?;
        if (200..300).contains(&status) {
            return Ok(body);
        }
        if status == 401 {
            return Err(ApiError::Unauthorized {
                url: self.base.clone(),
            });
        }
        if status == 503 || body.contains(STARTING_UP) {
            return Err(ApiError::Starting {
                url: self.base.clone(),
            });
        }
        Err(ApiError::Status {
            method: method.as_str().to_string(),
            path: path.to_string(),
            status,
            body: truncate(body.trim(), MAX_ERROR_BODY),
        })
    }

    fn with_common<B>(
        &self,
        mut req: ureq::RequestBuilder<B>,
        query: &[(&str, &str)],
    ) -> ureq::RequestBuilder<B> {
        req = req.header("Accept", "application/json");
        if let Some(t) = &self.token {
            req = req.header("X-Plex-Token", t);
        }
        // `query` percent-encodes keys and values (`&`, `=`, `/`, spaces ...).
        for (k, v) in query {
            req = req.query(k, v);
        }
        req
    }

    /// Everything that is not an HTTP answer (refused, reset, timed out, DNS, protocol garbage) means
    /// the server is not there right now: the caller retries or gives up after its own deadline.
    fn transport_error(&self, e: ureq::Error) -> ApiError {
        let detail = match &e {
            ureq::Error::Timeout(t) => format!("timed out ({t})"),
            ureq::Error::Io(io) => format!("{} ({:?})", io, io.kind()),
            other => other.to_string(),
        };
        ApiError::Unreachable {
            url: self.base.clone(),
            detail,
        }
    }
}

// The answers read, one function per endpoint: a 2xx body in, typed data or `ApiError::Parse`
// out. Public so the fuzz targets (fuzz/) reach them without a server.

/// `GET /identity`.
pub fn identity_from(body: &str) -> Result<Identity, ApiError> {
    let path = "/identity";
    let v = json(path, body)?;
    let mc = container(&v, path)?;
    Ok(Identity {
        machine_identifier: str_field(mc, "machineIdentifier"),
        version: str_field(mc, "version"),
        claimed: bool_field(mc, "claimed"),
    })
}

/// `GET /`: `false` while the server reports a `startState`.
pub fn started_from(body: &str) -> Result<bool, ApiError> {
    let path = "/";
    let v = json(path, body)?;
    let mc = container(&v, path)?;
    Ok(matches!(mc.get("startState"), Some(Value::Null) | None))
}

/// `GET /library/sections`.
pub fn sections_from(body: &str) -> Result<Vec<Section>, ApiError> {
    let path = "/library/sections";
    let v = json(path, body)?;
    let mc = container(&v, path)?;
    let mut out = Vec::new();
    for d in array_field(mc, "Directory") {
        let id = int_field(d, "key").ok_or_else(|| ApiError::Parse {
            path: path.to_string(),
            detail: format!("a Directory has no numeric `key`: {d}"),
        })?;
        out.push(Section {
            id,
            title: str_field(d, "title"),
            kind: str_field(d, "type"),
            agent: str_field(d, "agent"),
            scanner: str_field(d, "scanner"),
            language: str_field(d, "language"),
            refreshing: bool_field(d, "refreshing"),
            locations: array_field(d, "Location")
                .iter()
                .map(|l| str_field(l, "path"))
                .filter(|p| !p.is_empty())
                .collect(),
        });
    }
    Ok(out)
}

/// `totalSize` of a listing at `path` (`count_items`).
pub fn total_size_from(path: &str, body: &str) -> Result<i64, ApiError> {
    let v = json(path, body)?;
    let mc = container(&v, path)?;
    int_field(mc, "totalSize").ok_or_else(|| ApiError::Parse {
        path: path.to_string(),
        detail: format!("no numeric `totalSize` in {mc}"),
    })
}

/// `GET /activities`.
pub fn activities_from(body: &str) -> Result<Vec<Activity>, ApiError> {
    let path = "/activities";
    let v = json(path, body)?;
    let mc = container(&v, path)?;
    Ok(array_field(mc, "Activity")
        .iter()
        .map(|a| Activity {
            uuid: str_field(a, "uuid"),
            kind: str_field(a, "type"),
            title: str_field(a, "title"),
            progress: int_field(a, "progress").unwrap_or(-1),
            section_id: a
                .get("Context")
                .and_then(|c| int_field(c, "librarySectionID")),
        })
        .collect())
}

/// `GET /:/prefs`.
pub fn prefs_from(body: &str) -> Result<Vec<Pref>, ApiError> {
    let path = "/:/prefs";
    let v = json(path, body)?;
    let mc = container(&v, path)?;
    let mut out = Vec::new();
    for s in array_field(mc, "Setting") {
        let id = str_field(s, "id");
        if id.is_empty() {
            return Err(ApiError::Parse {
                path: path.to_string(),
                detail: format!("a Setting has no `id`: {s}"),
            });
        }
        out.push(Pref {
            id,
            kind: str_field(s, "type"),
            value: render_value(s.get("value")),
            default: render_value(s.get("default")),
        });
    }
    Ok(out)
}

/// `GET /myplex/account`.
pub fn account_from(body: &str) -> Result<Account, ApiError> {
    let path = "/myplex/account";
    let v = json(path, body)?;
    // Real Plex's root element here is `MyPlex`, not `MediaContainer`; accept both.
    let root = v
        .get("MyPlex")
        .or_else(|| v.get("MediaContainer"))
        .ok_or_else(|| ApiError::Parse {
            path: path.to_string(),
            detail: "no `MyPlex` or `MediaContainer` object".to_string(),
        })?;
    Ok(Account {
        username: str_field(root, "username"),
        subscription_active: bool_field(root, "subscriptionActive"),
    })
}

/// A body parsed as JSON.
fn json(path: &str, body: &str) -> Result<Value, ApiError> {
    serde_json::from_str(body).map_err(|e| ApiError::Parse {
        path: path.to_string(),
        detail: format!("{e}; body starts with {:?}", truncate(body, 200)),
    })
}

fn container<'a>(v: &'a Value, path: &str) -> Result<&'a Value, ApiError> {
    v.get("MediaContainer").ok_or_else(|| ApiError::Parse {
        path: path.to_string(),
        detail: "no `MediaContainer` object".to_string(),
    })
}

/// A child array; Plex omits the key entirely when it is empty.
fn array_field<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn str_field(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn int_field(v: &Value, key: &str) -> Option<i64> {
    match v.get(key)? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn bool_field(v: &Value, key: &str) -> bool {
    match v.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_i64().is_some_and(|i| i != 0),
        Some(Value::String(s)) => matches!(s.as_str(), "1" | "true"),
        _ => false,
    }
}

/// Render a pref value the way `PUT /:/prefs` takes it back: bools `true`/`false`, numbers as
/// written (`16.0` stays `16.0`), text as is.
fn render_value(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    //! Against a tiny HTTP server on 127.0.0.1 answering canned bodies (the real prefs dump and
    //! plex.md §4 shapes); the emulator-backed tests live in tests/it/plex_api.rs.
    use super::*;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;

    /// What the canned server saw for one request.
    #[derive(Debug)]
    struct Seen {
        request_line: String,
        headers: Vec<String>,
    }

    /// Serve `answers` (status, body) one connection each, in order, and report each request seen.
    fn serve(answers: Vec<(u16, String)>) -> (String, mpsc::Receiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for (status, body) in answers {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                let mut headers = Vec::new();
                let mut content_length = 0usize;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let line = line.trim_end().to_string();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        content_length = v.trim().parse().unwrap_or(0);
                    }
                    headers.push(line);
                }
                let mut sink = vec![0u8; content_length];
                reader.read_exact(&mut sink).unwrap();
                let mut stream = stream;
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(reply.as_bytes()).unwrap();
                tx.send(Seen {
                    request_line: request_line.trim_end().to_string(),
                    headers,
                })
                .unwrap();
            }
        });
        (format!("http://{addr}"), rx)
    }

    fn client(base: &str, token: Option<&str>) -> Client {
        Client::new(base, token.map(str::to_string), Duration::from_secs(5))
    }

    fn real_prefs_json() -> String {
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/real-pms-prefs.json"
        ))
        .expect("the real prefs dump is vendored in tests/fixtures")
    }

    #[test]
    fn prefs_parse_the_real_dump_with_values_plex_takes_back() {
        let (base, rx) = serve(vec![(200, real_prefs_json())]);
        let prefs = client(&base, Some("tok")).prefs().unwrap();
        assert_eq!(prefs.len(), 155);
        let get = |id: &str| prefs.iter().find(|p| p.id == id).unwrap().clone();
        let trash = get("autoEmptyTrash");
        assert_eq!(
            (
                trash.kind.as_str(),
                trash.value.as_str(),
                trash.default.as_str()
            ),
            ("bool", "true", "true")
        );
        assert_eq!(get("ScheduledLibraryUpdateInterval").value, "86400");
        assert_eq!(get("MusicAnalysisBehavior").value, "scheduled");
        assert_eq!(get("TranscoderH264MinimumCRF").value, "16.0");
        assert_eq!(get("CinemaTrailersPrerollID").value, "");
        let seen = rx.recv().unwrap();
        assert_eq!(seen.request_line, "GET /:/prefs HTTP/1.1");
        assert!(
            seen.headers
                .iter()
                .any(|h| h == "x-plex-token: tok" || h == "X-Plex-Token: tok")
        );
        assert!(
            seen.headers
                .iter()
                .any(|h| h.eq_ignore_ascii_case("accept: application/json"))
        );
    }

    #[test]
    fn no_token_header_when_unclaimed() {
        let (base, rx) = serve(vec![(200, r#"{"MediaContainer":{"size":0}}"#.into())]);
        client(&base, None).activities().unwrap();
        let seen = rx.recv().unwrap();
        assert!(
            !seen
                .headers
                .iter()
                .any(|h| h.to_ascii_lowercase().starts_with("x-plex-token"))
        );
    }

    #[test]
    fn set_prefs_sends_one_url_encoded_put() {
        let (base, rx) = serve(vec![(200, String::new())]);
        let values = vec![
            ("autoEmptyTrash".to_string(), "false".to_string()),
            (
                "customConnections".to_string(),
                "https://a b&c=d".to_string(),
            ),
        ];
        client(&base, None).set_prefs(&values).unwrap();
        let seen = rx.recv().unwrap();
        assert_eq!(
            seen.request_line,
            "PUT /:/prefs?autoEmptyTrash=false&customConnections=https%3A%2F%2Fa%20b%26c%3Dd HTTP/1.1"
        );
    }

    #[test]
    fn sections_parse_directories_with_locations() {
        let body = r#"{"MediaContainer":{"size":2,"allowSync":false,"Directory":[
            {"allowSync":true,"art":"/:/resources/movie-fanart.jpg","key":"1","type":"movie","title":"Movies",
             "agent":"tv.plex.agents.movie","scanner":"Plex Movie","language":"en-US","uuid":"u1",
             "refreshing":false,"Location":[{"id":1,"path":"/data/Movies"}]},
            {"key":"5","type":"artist","title":"Music","agent":"tv.plex.agents.music","scanner":"Plex Music",
             "language":"en-US","refreshing":true,
             "Location":[{"id":4,"path":"/data/Music"},{"id":7,"path":"/data/More Music"}]}]}}"#;
        let (base, _rx) = serve(vec![(200, body.into())]);
        let s = client(&base, None).sections().unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].id, s[0].kind.as_str(), s[0].refreshing),
            (1, "movie", false)
        );
        assert_eq!(s[0].locations, vec!["/data/Movies"]);
        assert_eq!(
            (s[1].id, s[1].title.as_str(), s[1].refreshing),
            (5, "Music", true)
        );
        assert_eq!(s[1].locations, vec!["/data/Music", "/data/More Music"]);
        assert_eq!(s[1].scanner, "Plex Music");
    }

    #[test]
    fn empty_library_has_no_directory_key() {
        let (base, _rx) = serve(vec![(200, r#"{"MediaContainer":{"size":0}}"#.into())]);
        assert!(client(&base, None).sections().unwrap().is_empty());
    }

    #[test]
    fn activities_carry_their_section() {
        let body = r#"{"MediaContainer":{"size":2,"Activity":[
            {"uuid":"a-1","type":"library.update.section","cancellable":true,"userID":1,
             "title":"Scanning Music","subtitle":"","progress":42,"Context":{"librarySectionID":"5"}},
            {"uuid":"a-2","type":"butler.task","title":"Sonic","progress":-1}]}}"#;
        let (base, _rx) = serve(vec![(200, body.into())]);
        let a = client(&base, None).activities().unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(
            (a[0].kind.as_str(), a[0].progress, a[0].section_id),
            ("library.update.section", 42, Some(5))
        );
        assert_eq!((a[1].uuid.as_str(), a[1].section_id), ("a-2", None));
    }

    #[test]
    fn identity_and_account() {
        let (base, _rx) = serve(vec![
            (
                200,
                r#"{"MediaContainer":{"size":0,"apiVersion":"1.1.1","claimed":true,"machineIdentifier":"abc","version":"1.41.6.9685-d301f511a"}}"#.into(),
            ),
            (
                200,
                r#"{"MyPlex":{"authToken":"x","username":"me","mappingState":"mapped","signInState":"ok","subscriptionActive":true}}"#.into(),
            ),
            (200, r#"{"MyPlex":{"username":"me","subscriptionActive":"0"}}"#.into()),
        ]);
        let c = client(&base, Some("t"));
        assert_eq!(
            c.identity().unwrap(),
            Identity {
                machine_identifier: "abc".into(),
                version: "1.41.6.9685-d301f511a".into(),
                claimed: true
            }
        );
        let acct = c.account().unwrap();
        assert_eq!(
            (acct.username.as_str(), acct.subscription_active),
            ("me", true)
        );
        assert!(!c.account().unwrap().subscription_active);
    }

    #[test]
    fn starting_up_is_reported_three_ways() {
        let (base, _rx) = serve(vec![
            (
                200,
                r#"{"MediaContainer":{"size":0,"startState":"startingPlugins"}}"#.into(),
            ),
            (503, "<html>Service Unavailable</html>".into()),
            (
                400,
                "The server is still starting up. Please retry later.".into(),
            ),
            (
                200,
                r#"{"MediaContainer":{"size":0,"machineIdentifier":"m"}}"#.into(),
            ),
        ]);
        let c = client(&base, None);
        assert!(matches!(c.ready(), Err(ApiError::Starting { .. })));
        assert!(matches!(
            c.refresh_all(true),
            Err(ApiError::Starting { .. })
        ));
        let e = c
            .create_section(&NewSection {
                name: "Music".into(),
                kind: "artist".into(),
                agent: "tv.plex.agents.music".into(),
                scanner: "Plex Music".into(),
                language: "en-US".into(),
                locations: vec!["/data/Music".into()],
            })
            .unwrap_err();
        assert!(matches!(e, ApiError::Starting { .. }), "{e:?}");
        assert!(e.is_retryable());
        c.ready().unwrap();
    }

    #[test]
    fn unauthorized_and_other_statuses_keep_the_body() {
        let (base, _rx) = serve(vec![
            (
                401,
                "<html><head><title>Unauthorized</title></head></html>".into(),
            ),
            (
                400,
                "Attempt to set a preferences that doesn't exist".into(),
            ),
        ]);
        let c = client(&base, Some("wrong"));
        let e = c.prefs().unwrap_err();
        assert!(matches!(e, ApiError::Unauthorized { .. }), "{e:?}");
        assert!(!e.is_retryable());
        let e = c
            .set_prefs(&[("NoSuchPref".into(), "1".into())])
            .unwrap_err();
        match e {
            ApiError::Status {
                method,
                path,
                status,
                body,
            } => {
                assert_eq!(
                    (method.as_str(), path.as_str(), status),
                    ("PUT", "/:/prefs", 400)
                );
                assert!(body.contains("doesn't exist"), "{body}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refused_connection_is_unreachable() {
        // Bind then drop: the port is free and nothing listens on it.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = client(&format!("http://127.0.0.1:{port}"), None)
            .identity()
            .unwrap_err();
        assert!(matches!(e, ApiError::Unreachable { .. }), "{e:?}");
        assert!(e.is_retryable());
    }

    #[test]
    fn a_silent_server_times_out_as_unreachable() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        // Accept and hold the connection without answering.
        let holder = std::thread::spawn(move || listener.accept().map(|(s, _)| s));
        let c = Client::new(&base, None, Duration::from_millis(300));
        let started = std::time::Instant::now();
        let e = c.identity().unwrap_err();
        assert!(matches!(e, ApiError::Unreachable { .. }), "{e:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(holder.join());
    }

    #[test]
    fn garbage_is_a_parse_error_naming_the_path() {
        let (base, _rx) = serve(vec![(200, "<MediaContainer/>".into())]);
        let e = client(&base, None).activities().unwrap_err();
        match e {
            ApiError::Parse { path, .. } => assert_eq!(path, "/activities"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn debug_output_hides_the_token() {
        let c = client("http://127.0.0.1:1", Some("sekrit-token"));
        assert!(!format!("{c:?}").contains("sekrit"));
    }
}
