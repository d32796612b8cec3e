//! The emulated plex.tv (`plex-emulator plextv`): the PIN link flow, the account, claim tokens,
//! their exchange by the server emulator (`serve --plextv-url`), the in-process `spawn`, and
//! python-plexapi (the reference client) driving it.

use std::process::{Child, Stdio};

use serde_json::Value;

use crate::harness::*;

const ACCT: &str = "acct-token-1";
const CLIENT: &str = "plexburst-test-client";

/// A running `plex-emulator plextv`, killed on drop.
struct Tv {
    child: Child,
    base: String,
    agent: ureq::Agent,
}

impl Tv {
    fn start(args: &[&str]) -> Tv {
        let mut child = command(BIN)
            .args(["plextv", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let base = listening_url(&mut child, 15);
        Tv {
            child,
            base,
            agent: agent(),
        }
    }

    fn call(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        request(
            &self.agent,
            method,
            &format!("{}{path}", self.base),
            headers,
        )
    }

    /// A JSON call with the client identifier and, when given, an account token.
    fn json(&self, method: &str, path: &str, token: Option<&str>) -> Resp {
        let mut h = vec![
            ("Accept", "application/json"),
            ("X-Plex-Client-Identifier", CLIENT),
            ("X-Plex-Product", "plexburst"),
        ];
        if let Some(t) = token {
            h.push(("X-Plex-Token", t));
        }
        self.call(method, path, &h)
    }

    fn stats(&self) -> Value {
        let r = self.call("GET", "/_emulator/stats", &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }

    fn advance(&self, secs: u64) {
        let r = self.call(
            "POST",
            &format!("/_emulator/clock/advance?secs={secs}"),
            &[],
        );
        assert_eq!(r.status, 200, "{}", r.body);
    }

    fn claim(&self) -> String {
        let r = self.json("GET", "/api/claim/token.json", Some(ACCT));
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["token"].as_str().unwrap().to_string()
    }

    fn exchange(&self, claim: &str) -> Resp {
        self.call(
            "POST",
            &format!("/api/claim/exchange?token={}", enc(claim)),
            &[("X-Plex-Client-Identifier", "a-server")],
        )
    }
}

impl Drop for Tv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server emulator exchanging `claim` at `tv` after 100 ms.
fn server_with_claim(tv: &Tv, claim: &str) -> Emu {
    Emu::start(&[
        "--claim",
        claim,
        "--claim-delay",
        "100ms",
        "--plextv-url",
        &tv.base,
    ])
}

fn log_text(e: &Emu) -> String {
    std::fs::read_to_string(e.app_dir().join("Logs/Plex Media Server.log")).unwrap_or_default()
}

#[test]
fn pin_flow_links_after_the_delay_and_the_pin_token_is_an_account_token() {
    let tv = Tv::start(&[
        "--account-token",
        ACCT,
        "--username",
        "alice",
        "--link-after",
        "500ms",
    ]);
    let no_client = tv.call("POST", "/api/v2/pins", &[("Accept", "application/json")]);
    assert_eq!(no_client.status, 400, "{}", no_client.body);

    let r = tv.json("POST", "/api/v2/pins", None);
    assert_eq!(r.status, 201, "{}", r.body);
    let pin = r.json();
    let id = pin["id"].as_i64().expect("integer id");
    assert_eq!(pin["code"].as_str().unwrap().len(), 4);
    assert_eq!(pin["clientIdentifier"], CLIENT);
    assert_eq!(pin["authToken"], Value::Null);
    assert_eq!(pin["expiresIn"], 900);
    assert!(pin["expiresAt"].as_str().unwrap().ends_with('Z'));

    let other = tv.call(
        "GET",
        &format!("/api/v2/pins/{id}"),
        &[("X-Plex-Client-Identifier", "someone-else")],
    );
    assert_eq!(other.status, 404, "another client's pin is not visible");
    assert_eq!(tv.json("GET", "/api/v2/pins/1", None).status, 404);

    let mut token = String::new();
    wait_until(10, "the pin is linked", || {
        let r = tv.json("GET", &format!("/api/v2/pins/{id}"), None);
        assert_eq!(r.status, 200, "{}", r.body);
        token = r.json()["authToken"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        !token.is_empty()
    });
    assert_ne!(token, ACCT, "a linked pin carries a fresh token");

    let user = tv.json("GET", "/api/v2/user", Some(&token));
    assert_eq!(user.status, 200, "{}", user.body);
    let u = user.json();
    assert_eq!(u["username"], "alice");
    assert_eq!(u["email"], "alice@example.invalid");
    assert_eq!(u["authToken"], token.as_str());
    assert_eq!(u["subscription"]["active"], true);
    // XML by default, with the token also accepted as a query parameter.
    let xml = tv.call("GET", &format!("/api/v2/user?X-Plex-Token={token}"), &[]);
    assert_eq!(xml.status, 200);
    assert!(xml.body.contains("<user "), "{}", xml.body);
    assert!(
        xml.body.contains("<subscription active=\"1\""),
        "{}",
        xml.body
    );
    assert_eq!(tv.json("GET", "/api/v2/user", Some("nope")).status, 401);
    assert_eq!(tv.json("GET", "/api/v2/user", None).status, 401);

    let s = tv.stats();
    assert_eq!(s["pins_created"], 1);
    assert_eq!(s["pins_linked"], 1);
    assert_eq!(s["user_lookups"], 4);
    assert_eq!(s["requests_by_token"][&token]["GET /api/v2/user"], 2);
    assert_eq!(
        s["requests_by_token"].get(ACCT),
        None,
        "ACCT was never sent"
    );
}

#[test]
fn strong_pins_link_by_code_and_pins_expire_on_the_emulated_clock() {
    let tv = Tv::start(&["--account-token", ACCT, "--account-token", "acct-token-2"]);
    let r = tv.json("POST", "/api/v2/pins?strong=true", None);
    assert_eq!(r.status, 201, "{}", r.body);
    let pin = r.json();
    let code = pin["code"].as_str().unwrap().to_string();
    assert_eq!(code.len(), 25);
    assert_eq!(pin["expiresIn"], 1800);
    let link = |token: Option<&str>, code: &str| {
        tv.json("PUT", &format!("/api/v2/pins/link?code={code}"), token)
            .status
    };
    assert_eq!(link(None, &code), 401);
    assert_eq!(link(Some("nope"), &code), 401);
    assert_eq!(link(Some("acct-token-2"), "NOSUCHCODE"), 404);
    assert_eq!(link(Some("acct-token-2"), &code), 204);
    let got = tv.json("GET", &format!("/api/v2/pins/{}", pin["id"]), None);
    let token = got.json()["authToken"].as_str().unwrap().to_string();
    let u = tv.json("GET", "/api/v2/user", Some(&token)).json();
    assert_eq!(u["username"], "plexburst-2", "linked to the second account");

    let short = tv.json("POST", "/api/v2/pins", None).json();
    let path = format!("/api/v2/pins/{}", short["id"]);
    assert_eq!(tv.json("GET", &path, None).status, 200);
    tv.advance(901);
    assert_eq!(tv.json("GET", &path, None).status, 404, "expired");
    let code = short["code"].as_str().unwrap();
    assert_eq!(
        link(Some(ACCT), code),
        404,
        "an expired pin cannot be linked"
    );
}

#[test]
fn claim_tokens_need_an_account_token() {
    let tv = Tv::start(&["--account-token", ACCT]);
    assert_eq!(tv.json("GET", "/api/claim/token.json", None).status, 401);
    assert_eq!(
        tv.json("GET", "/api/claim/token.json", Some("nope")).status,
        401
    );
    let a = tv.claim();
    let q = tv.call(
        "GET",
        &format!("/api/claim/token.json?X-Plex-Token={ACCT}"),
        &[],
    );
    assert_eq!(q.status, 200, "{}", q.body);
    let b = q.json()["token"].as_str().unwrap().to_string();
    for c in [&a, &b] {
        assert!(c.starts_with("claim-") && c.len() > 20, "{c}");
    }
    assert_ne!(a, b, "every call issues a new claim");
    let s = tv.stats();
    assert_eq!(s["claims_issued"], 2);
    assert_eq!(s["requests_by_token"][ACCT]["GET /api/claim/token.json"], 2);
}

/// pms-docker's `40-plex-first-run` cuts the token out of the answer with this sed.
fn sed_token(body: &str) -> String {
    use std::io::Write;
    let mut child = command("sed")
        .args([
            "-n",
            r"s/.*<authentication-token>\(.*\)<\/authentication-token>.*/\1/p",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn exchange_answers_what_pms_docker_reads_once_and_only_within_the_ttl() {
    let tv = Tv::start(&["--account-token", ACCT, "--username", "bob"]);
    let claim = tv.claim();
    let r = tv.exchange(&claim);
    assert_eq!(r.status, 200, "{}", r.body);
    let token = sed_token(&r.body);
    assert_eq!(
        token.len(),
        20,
        "pms-docker's sed finds the token: {}",
        r.body
    );
    assert!(r.body.contains("<username>bob</username>"), "{}", r.body);
    assert!(
        r.body.contains("<email>bob@example.invalid</email>"),
        "{}",
        r.body
    );
    let u = tv.json("GET", "/api/v2/user", Some(&token));
    assert_eq!(u.status, 200, "the server token is a token of the account");
    assert_eq!(u.json()["username"], "bob");

    let again = tv.exchange(&claim);
    assert_eq!(again.status, 404);
    assert!(again.body.contains("already used"), "{}", again.body);
    assert_eq!(
        sed_token(&again.body),
        "",
        "no token for pms-docker to find"
    );
    let unknown = tv.exchange("claim-NotIssuedHere12345");
    assert_eq!(unknown.status, 404);
    assert!(unknown.body.contains("unknown"), "{}", unknown.body);
    let missing = tv.call("POST", "/api/claim/exchange", &[]);
    assert_eq!(missing.status, 400);

    let fresh = tv.claim();
    tv.advance(239);
    let late = tv.claim();
    tv.advance(2);
    let expired = tv.exchange(&fresh);
    assert_eq!(expired.status, 404);
    assert!(expired.body.contains("expired"), "{}", expired.body);
    assert_eq!(tv.exchange(&late).status, 200, "2 s old, well inside 4 m");

    let s = tv.stats();
    assert_eq!(s["exchanges_accepted"], 2);
    let rejected = &s["exchanges_rejected"];
    assert_eq!(
        (
            &rejected["used"],
            &rejected["unknown"],
            &rejected["expired"],
            &rejected["missing"]
        ),
        (&1.into(), &1.into(), &1.into(), &1.into())
    );
    assert_eq!(s["exchanges"][0]["claim"], claim.as_str());
    assert_eq!(s["exchanges"][0]["authentication_token"], token.as_str());
    assert_eq!(s["exchanges"][0]["client_identifier"], "a-server");
    assert_eq!(
        s["requests_by_token"][&claim]["POST /api/claim/exchange"], 2,
        "the claim was presented twice"
    );
    assert_eq!(s["clock_offset_secs"], 241.0);
}

#[test]
fn server_with_plextv_url_is_claimed_with_the_exchanged_token() {
    let tv = Tv::start(&["--account-token", ACCT, "--username", "carol"]);
    let claim = tv.claim();
    let mut e = server_with_claim(&tv, &claim);
    let token = e.wait_token();
    let s = tv.stats();
    assert_eq!(s["exchanges_accepted"], 1);
    let ex = &s["exchanges"][0];
    assert_eq!(ex["authentication_token"], token.as_str());
    assert_eq!(ex["claim"], claim.as_str());
    let id = e.get("/identity")["MediaContainer"].clone();
    assert_eq!(id["claimed"], true);
    assert_eq!(
        ex["client_identifier"], id["machineIdentifier"],
        "the server identifies itself as pms-docker does (ProcessedMachineIdentifier)"
    );
    let prefs = e.prefs_xml();
    assert_eq!(
        xml_attr(&prefs, "PlexOnlineUsername").as_deref(),
        Some("carol")
    );
    assert_eq!(
        xml_attr(&prefs, "PlexOnlineMail").as_deref(),
        Some("carol@example.invalid")
    );
    assert_eq!(
        e.get("/myplex/account")["MyPlex"]["username"],
        "carol",
        "the account the claim came from"
    );
}

#[test]
fn server_stays_unclaimed_when_its_claim_expired() {
    let tv = Tv::start(&["--account-token", ACCT]);
    let claim = tv.claim();
    tv.advance(300);
    let e = server_with_claim(&tv, &claim);
    wait_until(15, "the rejection in the server log", || {
        log_text(&e).contains("claim rejected by plex.tv")
    });
    let log = log_text(&e);
    assert!(log.contains("expired"), "the reason is logged: {log}");
    assert!(!log.contains(&claim), "the claim itself is not logged");
    assert_eq!(e.get("/identity")["MediaContainer"]["claimed"], false);
    assert_eq!(xml_attr(&e.prefs_xml(), "PlexOnlineToken"), None);
    assert_eq!(
        e.req("GET", "/library/sections", true).status,
        200,
        "unclaimed: no token needed"
    );
    assert_eq!(tv.stats()["exchanges_rejected"]["expired"], 1);
}

#[test]
fn a_claim_claims_one_server_only() {
    let tv = Tv::start(&["--account-token", ACCT]);
    let claim = tv.claim();
    let mut first = server_with_claim(&tv, &claim);
    first.wait_token();
    // The second server reads plex.tv's URL from its environment, as the container does.
    let d = tempfile::tempdir().unwrap();
    let child = command(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--claim-delay", "100ms"])
        .arg("--data-dir")
        .arg(d.path())
        .env("PLEX_CLAIM", &claim)
        .env("PLEX_EMULATOR_PLEXTV_URL", &tv.base)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let second = Emu::attach(child, d.path(), 15);
    wait_until(15, "the second server's rejection", || {
        log_text(&second).contains("claim rejected by plex.tv")
    });
    assert!(log_text(&second).contains("already used"));
    assert_eq!(second.get("/identity")["MediaContainer"]["claimed"], false);
    let s = tv.stats();
    assert_eq!(s["exchanges_accepted"], 1);
    assert_eq!(s["exchanges_rejected"]["used"], 1);
}

#[test]
fn server_stays_unclaimed_when_plextv_is_unreachable() {
    // A port nobody listens on: the exchange fails, nothing claims the server.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let e = Emu::start(&[
        "--claim",
        "claim-abc",
        "--claim-delay",
        "100ms",
        "--plextv-url",
        &format!("http://{dead}"),
    ]);
    wait_until(15, "the failed exchange in the server log", || {
        log_text(&e).contains("claim exchange with plex.tv failed")
    });
    assert_eq!(e.get("/identity")["MediaContainer"]["claimed"], false);
}

#[test]
fn in_process_spawn_serves_until_dropped() {
    let handle = plex_emulator::plextv::spawn(plex_emulator::plextv::PlexTvOptions {
        account_tokens: vec![ACCT.into()],
        username: "dave".into(),
        plex_pass: false,
        ..Default::default()
    })
    .unwrap();
    let url = handle.url();
    let a = agent();
    let r = request(
        &a,
        "GET",
        &format!("{url}/api/v2/user"),
        &[("X-Plex-Token", ACCT), ("Accept", "application/json")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["username"], "dave");
    assert_eq!(r.json()["subscription"]["active"], false);
    let addr = handle.addr();
    drop(handle);
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "nothing listens after the handle is dropped"
    );
}

#[test]
fn python_plexapi_logs_in_with_a_pin_and_gets_a_claim_that_exchanges() {
    let probe = command("python3")
        .args(["-c", "import plexapi"])
        .output()
        .expect("python3 runs");
    assert!(
        probe.status.success(),
        "python-plexapi is not importable ({}); scripts/install-deps.sh installs it \
         (pip install plexapi)",
        String::from_utf8_lossy(&probe.stderr).trim()
    );
    let tv = Tv::start(&["--account-token", ACCT, "--username", "erin"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/plexapi_contract.py");
    let out = command("python3")
        .arg(script)
        .arg(&tv.base)
        .arg(ACCT)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "plexapi against the emulator failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(got["pin"].as_str().unwrap().len(), 4);
    assert_eq!(got["oauthCode"].as_str().unwrap().len(), 25);
    assert_eq!(got["username"], "erin");
    assert_eq!(got["email"], "erin@example.invalid");
    assert_eq!(got["subscriptionActive"], true);
    assert_eq!(got["roles"], serde_json::json!(["plexpass"]));
    assert!(
        got["subscriptionFeatures"]
            .as_array()
            .unwrap()
            .contains(&"sonic-analysis".into())
    );
    assert_eq!(got["staleExpired"], true);
    let token = got["token"].as_str().unwrap();
    assert_ne!(token, ACCT);
    assert_ne!(got["oauthToken"].as_str().unwrap(), token);

    let s = tv.stats();
    assert_eq!(s["pins_created"], 3);
    assert_eq!(s["pins_linked"], 2);
    assert_eq!(s["requests_by_token"][token]["GET /api/v2/user"], 1);
    assert_eq!(
        s["requests_by_token"][token]["GET /api/claim/token.json"],
        1
    );
    assert_eq!(s["requests_by_token"][ACCT]["PUT /api/v2/pins/link"], 2);

    // The claim plexapi fetched is a real one: a server exchanges it.
    let claim = got["claim"].as_str().unwrap();
    let r = tv.exchange(claim);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!sed_token(&r.body).is_empty());
}
