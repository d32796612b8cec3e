//! The emulated plex.tv's state: accounts and their tokens, PINs, claim tokens, the emulated clock
//! and the counters `/_emulator/stats` reports. No I/O; `plextv` serves it over HTTP.
//!
//! Time is the emulated clock: the real clock plus an offset that tests push forward
//! (`/_emulator/clock/advance`), so a 4-minute claim or a 15-minute PIN expires without waiting.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

/// Everything the emulated plex.tv needs; the `plextv` subcommand and [`crate::plextv::spawn`]
/// callers build it.
#[derive(Debug, Clone)]
pub struct PlexTvOptions {
    /// `127.0.0.1:0` picks a free port.
    pub listen: SocketAddr,
    /// One account per token, in order; the first is the one `link_after` links PINs to. With
    /// none, one account exists whose only way in is a PIN linked by `link_after`.
    pub account_tokens: Vec<String>,
    /// The first account's username (later ones get `-2`, `-3`, ...).
    pub username: String,
    /// Every account's `subscription.active` (Plex Pass).
    pub plex_pass: bool,
    /// Link each new PIN to the first account this long after it was created (emulated clock),
    /// as if the user typed its code at plex.tv/link.
    pub link_after: Option<Duration>,
    /// How long a claim token can be exchanged after it was issued (plex.md §5: 4 minutes).
    pub claim_ttl: Duration,
    /// PIN lifetime; `None` = real plex.tv's 900 s (4-character codes) and 1800 s (strong codes).
    pub pin_ttl: Option<Duration>,
}

impl Default for PlexTvOptions {
    fn default() -> Self {
        PlexTvOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            account_tokens: Vec::new(),
            username: "plexburst".into(),
            plex_pass: true,
            link_after: None,
            claim_ttl: Duration::from_secs(240),
            pin_ttl: None,
        }
    }
}

/// A plex.tv account.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: i64,
    pub uuid: String,
    pub username: String,
    pub email: String,
    /// Unix seconds.
    pub joined_at: i64,
}

/// A PIN of the link flow (`/api/v2/pins`).
#[derive(Debug, Clone)]
pub struct Pin {
    pub id: i64,
    pub code: String,
    pub strong: bool,
    pub client_identifier: String,
    pub product: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    /// Set once the PIN is linked to an account: a fresh token of that account.
    pub auth_token: Option<String>,
}

#[derive(Debug, Clone)]
struct Claim {
    account: usize,
    issued_ms: i64,
    used: bool,
}

/// Why a claim exchange was refused; the text goes into the response body and the stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No `token` parameter.
    Missing,
    /// Not issued by this plex.tv.
    Unknown,
    /// Already exchanged once.
    Used,
    /// Older than the claim TTL on the emulated clock.
    Expired,
}

impl Rejection {
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Missing => "missing",
            Rejection::Unknown => "unknown",
            Rejection::Used => "used",
            Rejection::Expired => "expired",
        }
    }
    pub fn message(self) -> &'static str {
        match self {
            Rejection::Missing => "no claim token given (token=...)",
            Rejection::Unknown => "claim token unknown: it was not issued by this plex.tv",
            Rejection::Used => "claim token already used: a claim token is single use",
            Rejection::Expired => "claim token expired: it is older than the claim lifetime",
        }
    }
}

/// A claim that was exchanged: what the stats show so a test can follow the token.
#[derive(Debug, Clone, Serialize)]
pub struct Exchange {
    pub claim: String,
    pub client_identifier: String,
    pub username: String,
    pub authentication_token: String,
}

/// `/_emulator/stats`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub pins_created: u64,
    pub pins_linked: u64,
    pub claims_issued: u64,
    pub exchanges_accepted: u64,
    /// Reason (`unknown`, `used`, `expired`, `missing`) -> count.
    pub exchanges_rejected: BTreeMap<String, u64>,
    pub user_lookups: u64,
    /// Token (an `X-Plex-Token`, or the claim of an exchange) -> `"METHOD /path"` -> requests.
    pub requests_by_token: BTreeMap<String, BTreeMap<String, u64>>,
    /// Every accepted exchange, in order.
    pub exchanges: Vec<Exchange>,
    /// How far `/_emulator/clock/advance` moved the emulated clock.
    pub clock_offset_secs: f64,
}

/// The whole emulated service. Callers hold it behind a mutex.
pub struct PlexTv {
    opts: PlexTvOptions,
    accounts: Vec<Account>,
    /// Every valid account token -> its account.
    tokens: HashMap<String, usize>,
    pins: BTreeMap<i64, Pin>,
    next_pin_id: i64,
    claims: HashMap<String, Claim>,
    offset_ms: i64,
    stats: Stats,
}

const UPPER_DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
const LOWER_DIGITS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const TOKEN_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn random_string(alphabet: &[u8], len: usize) -> String {
    (0..len)
        .map(|_| alphabet[rand::random_range(0..alphabet.len())] as char)
        .collect()
}

/// A token in plex.tv's shape: 20 letters and digits.
fn new_token() -> String {
    random_string(TOKEN_CHARS, 20)
}

fn real_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `2024-07-16T17:03:05Z`, as plex.tv's v2 API writes times.
pub fn iso8601(ms: i64) -> String {
    let mut s = crate::db::datetime(ms.div_euclid(1000)).replacen(' ', "T", 1);
    s.push('Z');
    s
}

impl PlexTv {
    pub fn new(opts: PlexTvOptions) -> PlexTv {
        let now_s = real_now_ms() / 1000;
        let mut tokens: Vec<String> = opts.account_tokens.clone();
        if tokens.is_empty() {
            tokens.push(new_token());
        }
        let accounts: Vec<Account> = (0..tokens.len())
            .map(|i| {
                let username = match i {
                    0 => opts.username.clone(),
                    _ => format!("{}-{}", opts.username, i + 1),
                };
                Account {
                    id: 10_000_001 + i as i64,
                    uuid: random_string(b"0123456789abcdef", 16),
                    email: format!("{username}@example.invalid"),
                    username,
                    // A year before start, so `joinedAt` is plausibly in the past.
                    joined_at: now_s - 365 * 86_400,
                }
            })
            .collect();
        PlexTv {
            tokens: tokens
                .into_iter()
                .enumerate()
                .map(|(i, t)| (t, i))
                .collect(),
            accounts,
            pins: BTreeMap::new(),
            // Real PIN ids are large integers (e.g. 308667304); any positive i64 will do.
            next_pin_id: rand::random_range(100_000_000..900_000_000),
            claims: HashMap::new(),
            offset_ms: 0,
            stats: Stats::default(),
            opts,
        }
    }

    pub fn opts(&self) -> &PlexTvOptions {
        &self.opts
    }

    /// The emulated clock, unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        real_now_ms() + self.offset_ms
    }

    /// Push the emulated clock forward (claims and PINs age by that much at once).
    pub fn advance(&mut self, by: Duration) {
        self.offset_ms += by.as_millis() as i64;
        self.settle();
    }

    /// Count a request that carried `token` (stats `requests_by_token`).
    pub fn record(&mut self, token: &str, what: &str) {
        *self
            .stats
            .requests_by_token
            .entry(token.to_string())
            .or_default()
            .entry(what.to_string())
            .or_default() += 1;
    }

    /// Link the PINs whose `link_after` has passed, as the user typing their codes would have.
    /// Called before every look at the PINs, so the link happens at the right emulated time
    /// without a timer.
    fn settle(&mut self) {
        let Some(after) = self.opts.link_after else {
            return;
        };
        let now = self.now_ms();
        let due: Vec<i64> = self
            .pins
            .values()
            .filter(|p| {
                p.auth_token.is_none()
                    && now < p.expires_ms
                    && now >= p.created_ms + after.as_millis() as i64
            })
            .map(|p| p.id)
            .collect();
        for id in due {
            self.link_pin(id, 0);
        }
    }

    fn link_pin(&mut self, id: i64, account: usize) {
        let token = new_token();
        self.tokens.insert(token.clone(), account);
        if let Some(p) = self.pins.get_mut(&id) {
            p.auth_token = Some(token);
            self.stats.pins_linked += 1;
        }
    }

    /// `POST /api/v2/pins`: a new PIN for this client.
    pub fn create_pin(&mut self, client_identifier: &str, product: &str, strong: bool) -> Pin {
        self.settle();
        let now = self.now_ms();
        let ttl = self.opts.pin_ttl.unwrap_or(if strong {
            Duration::from_secs(1800)
        } else {
            Duration::from_secs(900)
        });
        // A 4-character code is typed by a person, so it must not clash with a live PIN's.
        let code = loop {
            let code = if strong {
                random_string(LOWER_DIGITS, 25)
            } else {
                random_string(UPPER_DIGITS, 4)
            };
            if !self
                .pins
                .values()
                .any(|p| p.code == code && now < p.expires_ms)
            {
                break code;
            }
        };
        let id = self.next_pin_id;
        self.next_pin_id += 1;
        let pin = Pin {
            id,
            code,
            strong,
            client_identifier: client_identifier.to_string(),
            product: product.to_string(),
            created_ms: now,
            expires_ms: now + ttl.as_millis() as i64,
            auth_token: None,
        };
        self.pins.insert(id, pin.clone());
        self.stats.pins_created += 1;
        pin
    }

    /// `GET /api/v2/pins/{id}`: the PIN, unless unknown, another client's, or expired.
    pub fn pin(&mut self, id: i64, client_identifier: &str) -> Option<Pin> {
        self.settle();
        let now = self.now_ms();
        self.pins
            .get(&id)
            .filter(|p| p.client_identifier == client_identifier && now < p.expires_ms)
            .cloned()
    }

    /// `PUT /api/v2/pins/link`: the account of `token` links the live PIN with this code.
    /// `Err(401)` for an unknown token, `Err(404)` for no such live PIN.
    pub fn link(&mut self, code: &str, token: &str) -> Result<(), u16> {
        self.settle();
        let account = *self.tokens.get(token).ok_or(401u16)?;
        let now = self.now_ms();
        let pin = self
            .pins
            .values()
            .find(|p| p.code.eq_ignore_ascii_case(code.trim()) && now < p.expires_ms)
            .ok_or(404u16)?;
        // Linking twice keeps the first token, as a pin has one authToken.
        if pin.auth_token.is_none() {
            let id = pin.id;
            self.link_pin(id, account);
        }
        Ok(())
    }

    /// The account a token belongs to.
    pub fn account(&self, token: &str) -> Option<&Account> {
        self.tokens.get(token).map(|&i| &self.accounts[i])
    }

    /// `GET /api/v2/user`: counted, then the account.
    pub fn user(&mut self, token: &str) -> Option<Account> {
        self.stats.user_lookups += 1;
        self.account(token).cloned()
    }

    /// `GET /api/claim/token.json`: a fresh claim token of the token's account.
    pub fn issue_claim(&mut self, token: &str) -> Option<String> {
        let account = *self.tokens.get(token)?;
        let claim = format!("claim-{}", new_token());
        self.claims.insert(
            claim.clone(),
            Claim {
                account,
                issued_ms: self.now_ms(),
                used: false,
            },
        );
        self.stats.claims_issued += 1;
        Some(claim)
    }

    /// `POST /api/claim/exchange?token=`: a new token of the claim's account for the server, once,
    /// within the claim TTL.
    pub fn exchange(
        &mut self,
        claim: Option<&str>,
        client_identifier: &str,
    ) -> Result<(Account, String), Rejection> {
        let result = self.try_exchange(claim.filter(|c| !c.is_empty()), client_identifier);
        match &result {
            Ok(_) => self.stats.exchanges_accepted += 1,
            Err(r) => {
                *self
                    .stats
                    .exchanges_rejected
                    .entry(r.reason().to_string())
                    .or_default() += 1
            }
        }
        result
    }

    fn try_exchange(
        &mut self,
        claim: Option<&str>,
        client_identifier: &str,
    ) -> Result<(Account, String), Rejection> {
        let name = claim.ok_or(Rejection::Missing)?;
        let now = self.now_ms();
        let ttl = self.opts.claim_ttl.as_millis() as i64;
        let c = self.claims.get_mut(name).ok_or(Rejection::Unknown)?;
        if c.used {
            return Err(Rejection::Used);
        }
        if now - c.issued_ms > ttl {
            return Err(Rejection::Expired);
        }
        c.used = true;
        let account = c.account;
        let token = new_token();
        self.tokens.insert(token.clone(), account);
        let acc = self.accounts[account].clone();
        self.stats.exchanges.push(Exchange {
            claim: name.to_string(),
            client_identifier: client_identifier.to_string(),
            username: acc.username.clone(),
            authentication_token: token.clone(),
        });
        Ok((acc, token))
    }

    /// The counters, as `/_emulator/stats` answers them.
    pub fn stats(&mut self) -> Value {
        self.settle();
        self.stats.clock_offset_secs = self.offset_ms as f64 / 1000.0;
        serde_json::to_value(&self.stats).unwrap_or_else(|e| json!({ "error": e.to_string() }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tv(link_after: Option<Duration>) -> PlexTv {
        PlexTv::new(PlexTvOptions {
            account_tokens: vec!["acct-1".into(), "acct-2".into()],
            link_after,
            ..PlexTvOptions::default()
        })
    }

    #[test]
    fn iso8601_is_utc_with_a_z() {
        assert_eq!(iso8601(1_579_513_950_123), "2020-01-20T09:52:30Z");
    }

    #[test]
    fn pin_codes_have_plex_tv_lengths_and_expire() {
        let mut t = tv(None);
        let p = t.create_pin("client", "app", false);
        assert_eq!(p.code.len(), 4);
        assert!(
            p.code
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        );
        assert_eq!(p.expires_ms - p.created_ms, 900_000);
        let s = t.create_pin("client", "app", true);
        assert_eq!(s.code.len(), 25);
        assert_eq!(s.expires_ms - s.created_ms, 1_800_000);
        assert!(t.pin(p.id, "other client").is_none());
        assert!(t.pin(p.id, "client").is_some());
        t.advance(Duration::from_secs(901));
        assert!(t.pin(p.id, "client").is_none(), "expired");
        assert!(
            t.pin(s.id, "client").is_some(),
            "a strong pin lives 30 minutes"
        );
    }

    #[test]
    fn link_after_links_to_the_first_account_with_a_fresh_token() {
        let mut t = tv(Some(Duration::from_secs(30)));
        let p = t.create_pin("c", "app", false);
        assert_eq!(t.pin(p.id, "c").unwrap().auth_token, None);
        t.advance(Duration::from_secs(31));
        let token = t.pin(p.id, "c").unwrap().auth_token.unwrap();
        assert_ne!(token, "acct-1");
        assert_eq!(t.account(&token).unwrap().username, "plexburst");
        assert_eq!(t.stats()["pins_linked"], 1);
    }

    #[test]
    fn link_by_code_uses_the_token_s_account() {
        let mut t = tv(None);
        let p = t.create_pin("c", "app", false);
        assert_eq!(t.link(&p.code, "nobody"), Err(401));
        assert_eq!(t.link("ZZZZZZ", "acct-2"), Err(404));
        t.link(&p.code.to_lowercase(), "acct-2").unwrap();
        let token = t.pin(p.id, "c").unwrap().auth_token.unwrap();
        assert_eq!(t.account(&token).unwrap().username, "plexburst-2");
    }

    #[test]
    fn a_claim_is_single_use_and_expires_after_its_ttl() {
        let mut t = tv(None);
        assert_eq!(t.issue_claim("nobody"), None);
        let c = t.issue_claim("acct-1").unwrap();
        assert!(c.starts_with("claim-"));
        let (acc, token) = t.exchange(Some(&c), "server").unwrap();
        assert_eq!(acc.username, "plexburst");
        assert_eq!(t.account(&token).unwrap().id, acc.id);
        assert_eq!(t.exchange(Some(&c), "server").unwrap_err(), Rejection::Used);
        assert_eq!(
            t.exchange(Some("claim-x"), "server").unwrap_err(),
            Rejection::Unknown
        );
        assert_eq!(t.exchange(None, "server").unwrap_err(), Rejection::Missing);
        let old = t.issue_claim("acct-1").unwrap();
        t.advance(Duration::from_secs(241));
        assert_eq!(
            t.exchange(Some(&old), "server").unwrap_err(),
            Rejection::Expired
        );
        let s = t.stats();
        assert_eq!(s["exchanges_accepted"], 1);
        assert_eq!(s["exchanges_rejected"]["used"], 1);
        assert_eq!(s["exchanges_rejected"]["expired"], 1);
        assert_eq!(s["exchanges"][0]["authentication_token"], token.as_str());
    }

    #[test]
    fn without_account_tokens_one_account_exists_for_the_pin_flow() {
        let mut t = PlexTv::new(PlexTvOptions {
            link_after: Some(Duration::ZERO),
            ..PlexTvOptions::default()
        });
        let p = t.create_pin("c", "app", false);
        let token = t.pin(p.id, "c").unwrap().auth_token.unwrap();
        assert_eq!(t.account(&token).unwrap().username, "plexburst");
    }
}
