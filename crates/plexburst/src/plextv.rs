//! plex.tv, the account side of Plex (plex.md §4, §5): the user's account token, the PIN link
//! flow of `plexburst login`, the account's Plex Pass, and a fresh claim token right before Plex
//! starts.
//!
//! The account token is the user's key to their Plex account. It is read here (`PLEX_TOKEN`, else
//! the file `plexburst login` wrote), sent only to plex.tv in the `X-Plex-Token` header (never in
//! a URL, so never in an error message), and never goes to the target, a log or the state.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The environment variable with the user's account token.
pub const TOKEN_ENV: &str = "PLEX_TOKEN";

/// How long plex.tv keeps a claim token valid (plex.md §5: 4 minutes).
pub const CLAIM_LIFETIME: Duration = Duration::from_secs(240);
/// A claim older than this is not handed to a server: Plex exchanges it a few seconds after
/// start, and the rest of the 4 minutes is margin for a slow start.
pub const CLAIM_USE_WITHIN: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum PlexTvError {
    #[error("plex.tv at {base} is unreachable: {detail}")]
    Unreachable { base: String, detail: String },
    #[error(
        "plex.tv refused the account token (401); sign in again with `plexburst login`, or set {TOKEN_ENV} to a valid token"
    )]
    Rejected,
    #[error("plex.tv answered {status} to {what}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    #[error("cannot read plex.tv's answer to {what}: {detail}")]
    Parse { what: String, detail: String },
}

/// The user's account token and where it came from (for messages; never the value).
#[derive(Clone)]
pub struct AccountToken {
    value: String,
    pub origin: String,
}

impl std::fmt::Debug for AccountToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AccountToken(from {}, value masked)", self.origin)
    }
}

impl AccountToken {
    pub fn new(value: String, origin: impl Into<String>) -> AccountToken {
        AccountToken {
            value,
            origin: origin.into(),
        }
    }
    /// The value, for the one place that sends it (a request to plex.tv) and for masking.
    pub fn expose(&self) -> &str {
        &self.value
    }
}

/// A claim token and when it was fetched, so a stale one is never handed to a server.
#[derive(Clone)]
pub struct Claim {
    pub token: String,
    pub fetched: Instant,
}

impl Claim {
    /// Still good to hand to a server starting at `now`.
    pub fn usable_at(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.fetched) < CLAIM_USE_WITHIN
    }
}

/// The account as plex.tv describes it.
#[derive(Debug, Clone)]
pub struct Account {
    pub username: String,
    pub plex_pass: bool,
}

/// A PIN of the link flow: the user enters `code` at `<plex.tv>/link`.
#[derive(Debug, Clone)]
pub struct Pin {
    pub id: i64,
    pub code: String,
    pub expires_in: Duration,
}

/// `$XDG_CONFIG_HOME/plexburst/plex-token`, else `~/.config/plexburst/plex-token`.
pub fn token_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("plexburst").join("plex-token"))
}

/// The user's account token: `PLEX_TOKEN`, else the file `plexburst login` stored.
pub fn account_token() -> anyhow::Result<Option<AccountToken>> {
    if let Ok(v) = std::env::var(TOKEN_ENV)
        && !v.trim().is_empty()
    {
        return Ok(Some(AccountToken::new(
            v.trim().to_string(),
            format!("env {TOKEN_ENV}"),
        )));
    }
    let Some(path) = token_file() else {
        return Ok(None);
    };
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Ok(Some(AccountToken::new(
            t.trim().to_string(),
            path.display().to_string(),
        ))),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// Store the account token 0600 in a 0700 directory (written to a temp file, then renamed).
pub fn store_token(token: &AccountToken) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let path = token_file().ok_or_else(|| {
        anyhow::anyhow!("neither XDG_CONFIG_HOME nor HOME is set; cannot store the token")
    })?;
    let dir = path.parent().expect("token_file has a parent");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let tmp = dir.join(".plex-token.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(token.expose().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// The account behind `token`, fit for Sonic analysis: a token plex.tv refuses, or an account
/// without Plex Pass, is the user's to fix (exit 2); plex.tv unreachable is not.
pub fn checked_account(tv: &PlexTv, token: &AccountToken) -> anyhow::Result<Account> {
    use anyhow::Context;
    let account = match tv.account(token) {
        Ok(a) => a,
        Err(e @ PlexTvError::Rejected) => {
            return Err(crate::error::BadInput(format!(
                "{e} (the token came from {})",
                token.origin
            ))
            .into());
        }
        Err(e) => return Err(e).context("cannot check the Plex account with plex.tv"),
    };
    if !account.plex_pass {
        return Err(crate::error::BadInput(format!(
            "the Plex account {:?} has no active Plex Pass, which Sonic analysis needs; subscribe, or run with --skip-analysis",
            account.username
        ))
        .into());
    }
    Ok(account)
}

/// A blocking plex.tv client. `base` is `https://plex.tv`, or an emulator's address in tests.
pub struct PlexTv {
    base: String,
    client_id: String,
    agent: ureq::Agent,
}

impl PlexTv {
    pub fn new(base: &str, client_id: &str) -> PlexTv {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into();
        PlexTv {
            base: base.trim_end_matches('/').to_string(),
            client_id: client_id.to_string(),
            agent,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&AccountToken>,
    ) -> Result<Value, PlexTvError> {
        let url = format!("{}{path}", self.base);
        let what = format!("{method} {}", path.split('?').next().unwrap_or(path));
        fn headers<B>(
            r: ureq::RequestBuilder<B>,
            client_id: &str,
            token: Option<&AccountToken>,
        ) -> ureq::RequestBuilder<B> {
            let r = r
                .header("Accept", "application/json")
                .header("X-Plex-Client-Identifier", client_id)
                .header("X-Plex-Product", "plexburst")
                .header("X-Plex-Version", env!("CARGO_PKG_VERSION"));
            match token {
                Some(t) => r.header("X-Plex-Token", t.expose()),
                None => r,
            }
        }
        let resp = match method {
            "GET" => headers(self.agent.get(&url), &self.client_id, token).call(),
            _ => headers(self.agent.post(&url), &self.client_id, token).send_empty(),
        };
        let mut resp = resp.map_err(|e| PlexTvError::Unreachable {
            base: self.base.clone(),
            detail: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        match status {
            200..=299 => {
                if body.trim().is_empty() {
                    return Ok(Value::Null);
                }
                serde_json::from_str(&body).map_err(|e| PlexTvError::Parse {
                    what,
                    detail: e.to_string(),
                })
            }
            401 if token.is_some() => Err(PlexTvError::Rejected),
            _ => Err(PlexTvError::Status {
                what,
                status,
                body: body.chars().take(300).collect(),
            }),
        }
    }

    /// The account behind `token` (`GET /api/v2/user`).
    pub fn account(&self, token: &AccountToken) -> Result<Account, PlexTvError> {
        let v = self.call("GET", "/api/v2/user", Some(token))?;
        let plex_pass = v["subscription"]["active"]
            .as_bool()
            .or_else(|| v["subscriptionActive"].as_bool())
            .unwrap_or(false);
        Ok(Account {
            username: v["username"]
                .as_str()
                .or_else(|| v["title"].as_str())
                .unwrap_or("?")
                .to_string(),
            plex_pass,
        })
    }

    /// A fresh claim token for this account (`GET /api/claim/token.json`).
    pub fn claim(&self, token: &AccountToken) -> Result<Claim, PlexTvError> {
        let v = self.call("GET", "/api/claim/token.json", Some(token))?;
        match v["token"].as_str() {
            Some(t) if t.starts_with("claim-") => Ok(Claim {
                token: t.to_string(),
                fetched: Instant::now(),
            }),
            _ => Err(PlexTvError::Parse {
                what: "GET /api/claim/token.json".into(),
                detail: "no claim-… token in the answer".into(),
            }),
        }
    }

    /// Start the link flow (`POST /api/v2/pins`): a short code for `<plex.tv>/link`.
    pub fn create_pin(&self) -> Result<Pin, PlexTvError> {
        let v = self.call("POST", "/api/v2/pins", None)?;
        let what = "POST /api/v2/pins";
        Ok(Pin {
            id: v["id"].as_i64().ok_or_else(|| PlexTvError::Parse {
                what: what.into(),
                detail: "no pin id".into(),
            })?,
            code: v["code"]
                .as_str()
                .ok_or_else(|| PlexTvError::Parse {
                    what: what.into(),
                    detail: "no pin code".into(),
                })?
                .to_string(),
            expires_in: Duration::from_secs(v["expiresIn"].as_u64().unwrap_or(900)),
        })
    }

    /// The account token once the user linked the PIN, `None` while not yet.
    pub fn pin_token(&self, pin: &Pin) -> Result<Option<AccountToken>, PlexTvError> {
        let v = self.call("GET", &format!("/api/v2/pins/{}", pin.id), None)?;
        Ok(v["authToken"]
            .as_str()
            .filter(|t| !t.is_empty())
            .map(|t| AccountToken::new(t.to_string(), "plexburst login")))
    }
}

/// The claim to hand a server starting at `now`: the one `held`, while fresh, else a new one from
/// plex.tv (kept in `held`). A claim fetched and then left past `CLAIM_USE_WITHIN` (a slow start,
/// a retry after a crash) is never used.
pub fn fresh_claim(
    tv: &PlexTv,
    token: &AccountToken,
    held: &mut Option<Claim>,
    now: Instant,
) -> Result<String, PlexTvError> {
    match held {
        Some(c) if c.usable_at(now) => Ok(c.token.clone()),
        _ => {
            let mut c = tv.claim(token)?;
            c.fetched = now;
            tracing::info!("fetched a fresh claim token from {}", tv.base());
            let t = c.token.clone();
            *held = Some(c);
            Ok(t)
        }
    }
}

/// A client identifier for this machine's plexburst, kept beside the token so plex.tv sees one
/// device across logins (`X-Plex-Client-Identifier`).
pub fn client_id() -> String {
    let Some(path) = token_file().map(|p| p.with_file_name("client-id")) else {
        return format!("plexburst-{}", uuid::Uuid::new_v4().simple());
    };
    if let Ok(id) = std::fs::read_to_string(&path)
        && !id.trim().is_empty()
    {
        return id.trim().to_string();
    }
    let id = format!("plexburst-{}", uuid::Uuid::new_v4().simple());
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
        let _ = std::fs::write(&path, &id);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_is_handed_out_only_while_fresh() {
        let c = Claim {
            token: "claim-x".into(),
            fetched: Instant::now(),
        };
        assert!(c.usable_at(c.fetched + Duration::from_secs(30)));
        assert!(!c.usable_at(c.fetched + CLAIM_USE_WITHIN));
        assert!(!c.usable_at(c.fetched + Duration::from_secs(300)));
    }

    #[test]
    fn the_token_is_masked_in_debug_output() {
        let t = AccountToken::new("secret-token-value".into(), "env PLEX_TOKEN");
        let shown = format!("{t:?}");
        assert!(!shown.contains("secret-token-value"), "{shown}");
        assert!(shown.contains("env PLEX_TOKEN"), "{shown}");
    }
}
