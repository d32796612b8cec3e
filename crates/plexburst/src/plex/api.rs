//! Blocking HTTP client for the Plex Media Server API (JSON via `Accept: application/json`).
//!
//! CONTRACT STUB: signatures agreed between the pipeline and the Plex client; bodies are filled in
//! by the Plex-client work. Do not change a signature without updating both sides.

use std::time::Duration;

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
    Status { method: String, path: String, status: u16, body: String },
    #[error("cannot parse Plex's answer to {path}: {detail}")]
    Parse { path: String, detail: String },
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

pub struct Client {
    _private: (),
}

impl Client {
    /// `base` is `http://127.0.0.1:PORT`; `token` is sent as `X-Plex-Token` when present.
    pub fn new(base: &str, token: Option<String>, timeout: Duration) -> Client {
        let _ = (base, token, timeout);
        unimplemented!("plex::api::Client::new")
    }
    pub fn set_token(&mut self, token: Option<String>) {
        let _ = token;
        unimplemented!()
    }
    pub fn identity(&self) -> Result<Identity, ApiError> {
        unimplemented!()
    }
    /// `GET /`: `Err(ApiError::Starting)` while the server reports a `startState`.
    pub fn ready(&self) -> Result<(), ApiError> {
        unimplemented!()
    }
    pub fn sections(&self) -> Result<Vec<Section>, ApiError> {
        unimplemented!()
    }
    pub fn create_section(&self, s: &NewSection) -> Result<(), ApiError> {
        let _ = s;
        unimplemented!()
    }
    /// `GET /library/sections/all/refresh?force=0|1`.
    pub fn refresh_all(&self, force: bool) -> Result<(), ApiError> {
        let _ = force;
        unimplemented!()
    }
    /// `DELETE /library/sections/all/refresh`.
    pub fn cancel_refresh_all(&self) -> Result<(), ApiError> {
        unimplemented!()
    }
    /// `PUT /library/sections/{id}/analyze`.
    pub fn analyze_section(&self, id: i64) -> Result<(), ApiError> {
        let _ = id;
        unimplemented!()
    }
    pub fn activities(&self) -> Result<Vec<Activity>, ApiError> {
        unimplemented!()
    }
    pub fn prefs(&self) -> Result<Vec<Pref>, ApiError> {
        unimplemented!()
    }
    /// One `PUT /:/prefs?k=v&...`; Plex rejects the whole request when one id is unknown.
    pub fn set_prefs(&self, values: &[(String, String)]) -> Result<(), ApiError> {
        let _ = values;
        unimplemented!()
    }
    /// `POST /butler/{task}`.
    pub fn start_butler_task(&self, task: &str) -> Result<(), ApiError> {
        let _ = task;
        unimplemented!()
    }
    pub fn account(&self) -> Result<Account, ApiError> {
        unimplemented!()
    }
}
