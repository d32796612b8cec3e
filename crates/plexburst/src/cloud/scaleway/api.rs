//! A blocking client for the parts of the Scaleway APIs a run uses (scaleway.md §2): Instance
//! (products, servers, actions, user data, volumes, IPs), Block (SBS volumes), Marketplace (image
//! labels) and IAM (a per-run application, policy and key).
//!
//! Retries (§3.2): 429, 409 `transient_state`, 5xx and network errors are retried with backoff and
//! jitter, except the one call that could make a second server (`create_server`): after a failed
//! create, the caller looks for the server by its run tag instead. Errors read the body's `type`
//! and `message` into plain words.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::credentials::SecretKey;

/// An API error callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the Scaleway API at {base} is unreachable: {detail}")]
    Unreachable { base: String, detail: String },
    #[error("Scaleway answered {status} to {what}: {message} ({kind})")]
    Http {
        what: String,
        status: u16,
        /// The body's `type` (`not_found`, `out_of_stock`, `quotas_exceeded`, ...), or `http`.
        kind: String,
        message: String,
    },
    #[error("cannot read Scaleway's answer to {what}: {detail}")]
    Parse { what: String, detail: String },
}

impl ApiError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
    fn kind(&self) -> &str {
        match self {
            ApiError::Http { kind, .. } => kind,
            _ => "",
        }
    }
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }
    /// No capacity for this type in this zone now: try another zone or type.
    pub fn is_out_of_stock(&self) -> bool {
        self.kind() == "out_of_stock"
    }
    /// A quota of the account: explained, never retried.
    pub fn is_quota(&self) -> bool {
        self.kind() == "quotas_exceeded"
            || matches!(self, ApiError::Http { message, .. } if message.to_ascii_lowercase().contains("quota exceeded"))
    }
    /// The key was refused (401) or may not do this (403 `permissions_denied`).
    pub fn is_auth(&self) -> bool {
        matches!(self.kind(), "denied_authentication" | "permissions_denied")
            || self.status() == Some(401)
    }
    pub fn is_retryable(&self) -> bool {
        match self {
            ApiError::Unreachable { .. } => true,
            ApiError::Http { status, kind, .. } => {
                *status == 429
                    || (*status == 409 && kind == "transient_state")
                    || (*status >= 500 && *status != 501 && kind != "out_of_stock")
            }
            ApiError::Parse { .. } => false,
        }
    }
}

/// A server type of `products/servers`, with its availability.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerType {
    pub ncpus: u32,
    pub ram_bytes: u64,
    pub hourly_price: f64,
    pub end_of_service: bool,
    /// Largest total local (l_ssd) size; 0: block storage only.
    pub local_max_bytes: u64,
    pub internet_bandwidth_bps: u64,
}

/// What a run needs of a server.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    pub id: String,
    pub state: String,
    pub state_detail: String,
    /// IPv4 addresses, in the API's order.
    pub ipv4: Vec<String>,
    /// (volume id, volume type) of every attached volume.
    pub volumes: Vec<(String, String)>,
    pub tags: Vec<String>,
    pub commercial_type: String,
    pub zone: String,
}

impl Server {
    /// A `server` object of the Instance API; absent fields read as empty.
    pub fn from_json(v: &Value) -> Server {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let ipv4 = v["public_ips"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|ip| ip["family"].as_str().is_none_or(|f| f == "inet"))
                    .filter_map(|ip| ip["address"].as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let volumes = v["volumes"]
            .as_object()
            .map(|m| {
                m.values()
                    .filter_map(|vol| {
                        Some((
                            vol["id"].as_str()?.to_string(),
                            vol["volume_type"].as_str().unwrap_or_default().to_string(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Server {
            id: s("id"),
            state: s("state"),
            state_detail: s("state_detail"),
            ipv4,
            volumes,
            tags: v["tags"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            commercial_type: s("commercial_type"),
            zone: s("zone"),
        }
    }
}

/// What `create_server` sends.
#[derive(Debug, Clone)]
pub struct NewServer {
    pub name: String,
    pub commercial_type: String,
    pub image_id: String,
    pub project_id: String,
    pub tags: Vec<String>,
    /// `l_ssd` or `sbs_volume`, and bytes (base 10).
    pub root_volume_type: String,
    pub root_volume_bytes: u64,
}

pub struct Api {
    base: String,
    secret: SecretKey,
    agent: ureq::Agent,
    /// Attempts for a retryable error, and the first backoff.
    attempts: u32,
    backoff: Duration,
}

struct Reply {
    body: Value,
    total: Option<u64>,
}

enum Body<'a> {
    None,
    Json(&'a Value),
    Text(&'a str),
}

impl Api {
    pub fn new(base: &str, secret: SecretKey) -> Api {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(60)))
            .http_status_as_error(false)
            .build()
            .into();
        Api {
            base: base.trim_end_matches('/').to_string(),
            secret,
            agent,
            attempts: 6,
            backoff: Duration::from_millis(500),
        }
    }

    /// Fewer, shorter retries (tests of the retry policy).
    pub fn with_retries(mut self, attempts: u32, backoff: Duration) -> Api {
        self.attempts = attempts.max(1);
        self.backoff = backoff;
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn once(&self, method: &str, path: &str, body: &Body) -> Result<Reply, ApiError> {
        let url = format!("{}{path}", self.base);
        let what = format!("{method} {}", path.split('?').next().unwrap_or(path));
        fn headers<B>(r: ureq::RequestBuilder<B>, secret: &SecretKey) -> ureq::RequestBuilder<B> {
            r.header("X-Auth-Token", secret.expose()).header(
                "User-Agent",
                concat!("plexburst/", env!("CARGO_PKG_VERSION")),
            )
        }
        let a = &self.agent;
        let resp = match (method, body) {
            ("GET", _) => headers(a.get(&url), &self.secret).call(),
            ("DELETE", _) => headers(a.delete(&url), &self.secret).call(),
            (m, Body::Json(v)) => {
                let r = if m == "PATCH" {
                    a.patch(&url)
                } else {
                    a.post(&url)
                };
                headers(r, &self.secret)
                    .header("Content-Type", "application/json")
                    .send(v.to_string())
            }
            (m, Body::Text(t)) => {
                let r = if m == "PATCH" {
                    a.patch(&url)
                } else {
                    a.post(&url)
                };
                headers(r, &self.secret)
                    .header("Content-Type", "text/plain")
                    .send(t.to_string())
            }
            (m, Body::None) => {
                let r = if m == "PATCH" {
                    a.patch(&url)
                } else {
                    a.post(&url)
                };
                headers(r, &self.secret).send_empty()
            }
        };
        let mut resp = resp.map_err(|e| ApiError::Unreachable {
            base: self.base.clone(),
            detail: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let total = resp
            .headers()
            .get("X-Total-Count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        if (200..300).contains(&status) {
            return Ok(Reply {
                body: body_from(text),
                total,
            });
        }
        Err(error_from(what, status, &text))
    }

    /// One call, retried while the error says it may pass (429, 409 transient, 5xx, network).
    fn call(&self, method: &str, path: &str, body: Body) -> Result<Reply, ApiError> {
        let mut wait = self.backoff;
        let mut attempt = 1;
        loop {
            match self.once(method, path, &body) {
                Err(e) if e.is_retryable() && attempt < self.attempts => {
                    // Full jitter: spread retries of concurrent clients.
                    let jitter = rand_fraction();
                    let pause = wait.mul_f64(0.5 + jitter / 2.0);
                    tracing::debug!("{e}; retrying in {pause:?} ({attempt}/{})", self.attempts);
                    std::thread::sleep(pause);
                    wait = (wait * 2).min(Duration::from_secs(30));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn instance(zone: &str, rest: &str) -> String {
        format!("/instance/v1/zones/{zone}{rest}")
    }

    /// Every server type of the zone (`products/servers`, paged).
    pub fn server_types(&self, zone: &str) -> Result<BTreeMap<String, ServerType>, ApiError> {
        let mut out = BTreeMap::new();
        for page in 1..=20 {
            let r = self.call(
                "GET",
                &Self::instance(zone, &format!("/products/servers?page={page}&per_page=100")),
                Body::None,
            )?;
            let Some(m) = server_types_from(&r.body) else {
                break;
            };
            let empty = m.is_empty();
            out.extend(m);
            if empty || r.total.is_none_or(|t| out.len() as u64 >= t) {
                break;
            }
        }
        Ok(out)
    }

    /// `available`, `scarce` or `shortage` per type.
    pub fn availability(&self, zone: &str) -> Result<BTreeMap<String, String>, ApiError> {
        let mut out = BTreeMap::new();
        for page in 1..=20 {
            let r = self.call(
                "GET",
                &Self::instance(
                    zone,
                    &format!("/products/servers/availability?page={page}&per_page=100"),
                ),
                Body::None,
            )?;
            let Some(m) = availability_from(&r.body) else {
                break;
            };
            let empty = m.is_empty();
            out.extend(m);
            if empty || r.total.is_none_or(|t| out.len() as u64 >= t) {
                break;
            }
        }
        Ok(out)
    }

    /// The image id of `label` for this zone, type and root volume (§2.8: the first local image
    /// whose compatible types hold the type).
    pub fn image_for(
        &self,
        zone: &str,
        label: &str,
        commercial_type: &str,
        root_volume_type: &str,
    ) -> Result<Option<String>, ApiError> {
        let kind = if root_volume_type == "l_ssd" {
            "instance_local"
        } else {
            "instance_sbs"
        };
        let label = label.replace('-', "_");
        let r = self.call(
            "GET",
            &format!(
                "/marketplace/v2/local-images?image_label={label}&zone={zone}&type={kind}&order_by=type_asc&page_size=100"
            ),
            Body::None,
        )?;
        Ok(image_from(&r.body, commercial_type))
    }

    /// Create a stopped server. Never retried: a lost answer is resolved by `servers_tagged`.
    pub fn create_server(&self, zone: &str, s: &NewServer) -> Result<Server, ApiError> {
        let body = json!({
            "name": s.name,
            "commercial_type": s.commercial_type,
            "image": s.image_id,
            "project": s.project_id,
            "tags": s.tags,
            // A dynamic IPv4 lives and dies with the server; a flexible IP would bill on.
            "dynamic_ip_required": true,
            "boot_type": "local",
            "volumes": {"0": {"size": s.root_volume_bytes, "volume_type": s.root_volume_type}},
        });
        let r = self.once(
            "POST",
            &Self::instance(zone, "/servers"),
            &Body::Json(&body),
        )?;
        Ok(Server::from_json(&r.body["server"]))
    }

    /// The servers of the zone carrying `tag` (every page).
    pub fn servers_tagged(&self, zone: &str, tag: &str) -> Result<Vec<Server>, ApiError> {
        let mut out = Vec::new();
        for page in 1..=50 {
            let r = self.call(
                "GET",
                &Self::instance(
                    zone,
                    &format!("/servers?tags={tag}&page={page}&per_page=50"),
                ),
                Body::None,
            )?;
            let list = servers_from(&r.body);
            let n = list.len();
            out.extend(list);
            if n == 0 || r.total.is_none_or(|t| out.len() as u64 >= t) {
                break;
            }
        }
        Ok(out)
    }

    /// The server, or `None` once it is gone (404).
    pub fn server(&self, zone: &str, id: &str) -> Result<Option<Server>, ApiError> {
        match self.call(
            "GET",
            &Self::instance(zone, &format!("/servers/{id}")),
            Body::None,
        ) {
            Ok(r) => Ok(Some(Server::from_json(&r.body["server"]))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `PATCH …/user_data/{key}` with a text/plain body.
    pub fn set_user_data(
        &self,
        zone: &str,
        id: &str,
        key: &str,
        text: &str,
    ) -> Result<(), ApiError> {
        self.call(
            "PATCH",
            &Self::instance(zone, &format!("/servers/{id}/user_data/{key}")),
            Body::Text(text),
        )?;
        Ok(())
    }

    /// `poweron`, `poweroff`, `terminate`, ...
    pub fn action(&self, zone: &str, id: &str, action: &str) -> Result<(), ApiError> {
        self.call(
            "POST",
            &Self::instance(zone, &format!("/servers/{id}/action")),
            Body::Json(&json!({ "action": action })),
        )?;
        Ok(())
    }

    /// Delete a stopped server (its volumes stay: delete them after).
    pub fn delete_server(&self, zone: &str, id: &str) -> Result<(), ApiError> {
        gone_ok(self.call(
            "DELETE",
            &Self::instance(zone, &format!("/servers/{id}")),
            Body::None,
        ))
    }

    /// Delete a volume by id, whichever API holds it (an l_ssd through the Instance API, an SBS
    /// volume through the Block API). Gone already counts as done.
    pub fn delete_volume(&self, zone: &str, id: &str, volume_type: &str) -> Result<(), ApiError> {
        let path = if volume_type == "l_ssd" || volume_type == "scratch" {
            Self::instance(zone, &format!("/volumes/{id}"))
        } else {
            format!("/block/v1alpha1/zones/{zone}/volumes/{id}")
        };
        gone_ok(self.call("DELETE", &path, Body::None))
    }

    /// Whether a volume still exists (either API).
    pub fn volume_exists(&self, zone: &str, id: &str, volume_type: &str) -> Result<bool, ApiError> {
        let path = if volume_type == "l_ssd" || volume_type == "scratch" {
            Self::instance(zone, &format!("/volumes/{id}"))
        } else {
            format!("/block/v1alpha1/zones/{zone}/volumes/{id}")
        };
        match self.call("GET", &path, Body::None) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Flexible IPs of the zone carrying `tag`: (id, address).
    pub fn ips_tagged(&self, zone: &str, tag: &str) -> Result<Vec<(String, String)>, ApiError> {
        let r = self.call(
            "GET",
            &Self::instance(zone, &format!("/ips?tags={tag}&per_page=100")),
            Body::None,
        )?;
        Ok(ips_from(&r.body))
    }

    pub fn delete_ip(&self, zone: &str, id: &str) -> Result<(), ApiError> {
        gone_ok(self.call(
            "DELETE",
            &Self::instance(zone, &format!("/ips/{id}")),
            Body::None,
        ))
    }
}

/// The per-run IAM objects of the self-termination deadline (scaleway.md §2.12).
#[derive(Debug, Clone)]
pub struct DeadlineKey {
    pub application_id: String,
    pub policy_id: String,
    pub access_key: String,
    pub secret_key: SecretKey,
}

impl Api {
    /// An application whose only grant is `InstancesFullAccess` on `project`, and an API key of it
    /// that expires at `expires_at` (RFC 3339). `journal` gets each id as soon as it exists, so a
    /// crash between the calls leaves nothing unnamed.
    pub fn create_deadline_key(
        &self,
        name: &str,
        organization_id: &str,
        project_id: &str,
        expires_at: &str,
        journal: &mut dyn FnMut(&str, &str),
    ) -> Result<DeadlineKey, ApiError> {
        let app = self.call(
            "POST",
            "/iam/v1alpha1/applications",
            Body::Json(&json!({
                "name": name,
                "organization_id": organization_id,
                "description": "plexburst: lets one run's instance delete itself at its deadline",
                "tags": [super::TAG],
            })),
        )?;
        let application_id = app.body["id"].as_str().unwrap_or_default().to_string();
        journal("application", &application_id);
        let policy = self.call(
            "POST",
            "/iam/v1alpha1/policies",
            Body::Json(&json!({
                "name": name,
                "organization_id": organization_id,
                "application_id": application_id,
                "description": "plexburst: Instances in the run's project only",
                "tags": [super::TAG],
                "rules": [{"permission_set_names": ["InstancesFullAccess"], "project_ids": [project_id]}],
            })),
        )?;
        let policy_id = policy.body["id"].as_str().unwrap_or_default().to_string();
        journal("policy", &policy_id);
        let key = self.call(
            "POST",
            "/iam/v1alpha1/api-keys",
            Body::Json(&json!({
                "application_id": application_id,
                "description": "plexburst: the instance's deadline",
                "expires_at": expires_at,
                "default_project_id": project_id,
            })),
        )?;
        let access_key = key.body["access_key"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        journal("api_key", &access_key);
        let secret = key.body["secret_key"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if secret.is_empty() {
            return Err(ApiError::Parse {
                what: "POST /iam/v1alpha1/api-keys".into(),
                detail: "no secret_key in the answer".into(),
            });
        }
        Ok(DeadlineKey {
            application_id,
            policy_id,
            access_key,
            secret_key: SecretKey(secret),
        })
    }

    /// Delete an IAM object (`application`, `policy`, `api_key`); gone already counts as done.
    pub fn delete_iam(&self, kind: &str, id: &str) -> Result<(), ApiError> {
        let path = match kind {
            "application" => format!("/iam/v1alpha1/applications/{id}"),
            "policy" => format!("/iam/v1alpha1/policies/{id}"),
            _ => format!("/iam/v1alpha1/api-keys/{id}"),
        };
        gone_ok(self.call("DELETE", &path, Body::None))
    }

    /// The IAM applications and policies carrying `tag`: (kind, id, name).
    pub fn iam_tagged(&self, tag: &str) -> Result<Vec<(String, String, String)>, ApiError> {
        let mut out = Vec::new();
        for (kind, path, key) in [
            ("policy", "/iam/v1alpha1/policies?page_size=100", "policies"),
            (
                "application",
                "/iam/v1alpha1/applications?page_size=100",
                "applications",
            ),
        ] {
            let r = match self.call("GET", path, Body::None) {
                Ok(r) => r,
                Err(e) if e.status() == Some(403) => continue,
                Err(e) => return Err(e),
            };
            for (id, name) in tagged_from(&r.body, key, tag) {
                out.push((kind.to_string(), id, name));
            }
        }
        Ok(out)
    }

    /// Whether this key may read IAM applications (a key that may not cannot make the deadline's).
    pub fn can_read_iam(&self) -> Result<bool, ApiError> {
        match self.call("GET", "/iam/v1alpha1/applications?page_size=1", Body::None) {
            Ok(_) => Ok(true),
            Err(e) if e.status() == Some(403) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

// The answers read: a body in, what the calls above need out. Public so the fuzz targets (fuzz/)
// reach them without a server.

/// A 2xx body: JSON, `Null` when empty, the text itself when it is not JSON.
pub fn body_from(text: String) -> Value {
    if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }
}

/// The error of a non-2xx answer to `what`: the body's `type` and `message` (scaleway.md §3),
/// its details and resource, or the start of the text when it is not JSON.
pub fn error_from(what: String, status: u16, text: &str) -> ApiError {
    let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let kind = v["type"].as_str().unwrap_or("http").to_string();
    let mut message = v["message"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| text.chars().take(200).collect());
    // The structured details say what the generic message does not.
    if let Some(d) = v["details"].as_array().filter(|d| !d.is_empty()) {
        message.push_str(&format!(" {}", Value::Array(d.clone())));
    }
    if let Some(r) = v["resource"].as_str() {
        message.push_str(&format!(" (resource {r})"));
    }
    ApiError::Http {
        what,
        status,
        kind,
        message,
    }
}

/// One page of `products/servers`; `None` when it has no `servers` object.
pub fn server_types_from(body: &Value) -> Option<BTreeMap<String, ServerType>> {
    let m = body["servers"].as_object()?;
    Some(
        m.iter()
            .map(|(name, t)| {
                let t = ServerType {
                    ncpus: t["ncpus"].as_u64().unwrap_or(0) as u32,
                    ram_bytes: t["ram"].as_u64().unwrap_or(0),
                    hourly_price: t["hourly_price"].as_f64().unwrap_or(0.0),
                    end_of_service: t["end_of_service"].as_bool().unwrap_or(false),
                    local_max_bytes: t["volumes_constraint"]["max_size"].as_u64().unwrap_or(0),
                    internet_bandwidth_bps: t["network"]["sum_internet_bandwidth"]
                        .as_u64()
                        .unwrap_or(0),
                };
                (name.clone(), t)
            })
            .collect(),
    )
}

/// One page of `products/servers/availability`; `None` when it has no `servers` object.
pub fn availability_from(body: &Value) -> Option<BTreeMap<String, String>> {
    let m = body["servers"].as_object()?;
    Some(
        m.iter()
            .map(|(name, a)| {
                let a = a["availability"].as_str().unwrap_or("unknown").to_string();
                (name.clone(), a)
            })
            .collect(),
    )
}

/// The first local image whose compatible types hold `commercial_type` (§2.8).
pub fn image_from(body: &Value, commercial_type: &str) -> Option<String> {
    let wanted = commercial_type.to_ascii_uppercase();
    body["local_images"].as_array().and_then(|a| {
        a.iter()
            .find(|i| {
                i["compatible_commercial_types"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|x| x.as_str() == Some(wanted.as_str())))
            })
            .and_then(|i| i["id"].as_str().map(String::from))
    })
}

/// One page of `GET /servers`.
pub fn servers_from(body: &Value) -> Vec<Server> {
    body["servers"]
        .as_array()
        .map(|a| a.iter().map(Server::from_json).collect())
        .unwrap_or_default()
}

/// `GET /ips`: (id, address) of each IP that has an id.
pub fn ips_from(body: &Value) -> Vec<(String, String)> {
    body["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|ip| {
                    Some((
                        ip["id"].as_str()?.to_string(),
                        ip["address"].as_str().unwrap_or_default().to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// (id, name) of the objects in list `key` (IAM `policies`, `applications`) that carry `tag`.
pub fn tagged_from(body: &Value, key: &str, tag: &str) -> Vec<(String, String)> {
    body[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|o| {
                    o["tags"]
                        .as_array()
                        .is_some_and(|t| t.iter().any(|x| x.as_str() == Some(tag)))
                })
                .map(|o| {
                    (
                        o["id"].as_str().unwrap_or_default().to_string(),
                        o["name"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A DELETE whose target is already gone has done its job.
fn gone_ok(r: Result<Reply, ApiError>) -> Result<(), ApiError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// A number in [0, 1) for jitter, from the clock (no need for a generator here).
fn rand_fraction() -> f64 {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(n % 1000) / 1000.0
}
