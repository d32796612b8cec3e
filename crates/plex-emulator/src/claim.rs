//! The server's side of a claim: exchange a claim token at plex.tv for the server's own token,
//! as pms-docker's first run does (`POST https://plex.tv/api/claim/exchange?token=…`, then cut
//! `<authentication-token>…</authentication-token>` out of the XML answer; plex.md §4.5, §5).

use std::time::Duration;

/// What plex.tv answered to a successful exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// The server's token (`PlexOnlineToken`).
    pub token: String,
    pub username: Option<String>,
    pub email: Option<String>,
}

/// Why the exchange did not claim the server; the caller logs the two differently.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// plex.tv answered, but not with a token.
    #[error("HTTP {status}: {body}")]
    Rejected { status: u16, body: String },
    /// plex.tv could not be reached or the answer could not be read.
    #[error("{0}")]
    Transport(String),
}

/// `POST {plextv}/api/claim/exchange?token={claim}` with pms-docker's headers (the client
/// identifier is the server's `ProcessedMachineIdentifier`). Only a 200 carrying an
/// `<authentication-token>` is a success. No retry: pms-docker makes one attempt.
pub fn exchange(
    plextv: &str,
    claim: &str,
    client_identifier: &str,
    timeout: Duration,
) -> Result<Claimed, ExchangeError> {
    let url = format!(
        "{}/api/claim/exchange?token={}",
        plextv.trim_end_matches('/'),
        encode(claim)
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .into();
    let mut resp = agent
        .post(&url)
        .header("X-Plex-Client-Identifier", client_identifier)
        .header("X-Plex-Product", "Plex Media Server")
        .header("X-Plex-Version", "1.1")
        .header("X-Plex-Provides", "server")
        .header("X-Plex-Platform", "Linux")
        .header("X-Plex-Platform-Version", "1.0")
        .header("X-Plex-Device-Name", "PlexMediaServer")
        .header("X-Plex-Device", "Linux")
        .send_empty()
        .map_err(|e| ExchangeError::Transport(format!("POST {}: {e}", redact(&url))))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .read_to_string()
        .map_err(|e| ExchangeError::Transport(format!("reading the answer: {e}")))?;
    let token = element(&body, "authentication-token").filter(|t| !t.is_empty());
    match token {
        Some(token) if status == 200 => Ok(Claimed {
            token,
            username: element(&body, "username"),
            email: element(&body, "email"),
        }),
        _ => Err(ExchangeError::Rejected {
            status,
            body: body.split_whitespace().collect::<Vec<_>>().join(" "),
        }),
    }
}

/// The text of the first `<name>…</name>`, XML entities decoded.
fn element(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    let raw = &xml[start..start + len];
    Some(
        quick_xml::escape::unescape(raw)
            .map(|s| s.into_owned())
            .unwrap_or_else(|_| raw.to_string()),
    )
}

/// Percent-encode a query value (a claim is `claim-` and letters, but do not trust it).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The URL without its query, for error messages: the claim is a secret until it is used.
fn redact(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_decodes_entities_and_misses_cleanly() {
        let xml = "<user>\n  <username>a&amp;b</username>\n  <authentication-token>tok</authentication-token>\n</user>";
        assert_eq!(element(xml, "username").as_deref(), Some("a&b"));
        assert_eq!(element(xml, "authentication-token").as_deref(), Some("tok"));
        assert_eq!(element(xml, "email"), None);
    }

    #[test]
    fn claims_are_percent_encoded() {
        assert_eq!(encode("claim-Ab_9"), "claim-Ab_9");
        assert_eq!(encode("a b&c"), "a%20b%26c");
    }

    #[test]
    fn an_unreachable_plex_tv_is_a_transport_error_without_the_claim() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = exchange(
            &format!("http://{addr}"),
            "claim-secret",
            "id",
            Duration::from_secs(2),
        )
        .unwrap_err();
        assert!(matches!(err, ExchangeError::Transport(_)), "{err}");
        assert!(!err.to_string().contains("claim-secret"), "{err}");
    }
}
