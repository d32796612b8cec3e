//! The claim at the right moment, against the emulated plex.tv (`plex-emulator plextv`): a run
//! that cannot claim its server stops before anything starts; `plexburst login` links a PIN and
//! stores the account token 0600; a run with it gets a fresh claim the server accepts; a claim
//! left 5 minutes (emulated clock) is never handed to a server; the account token reaches
//! nothing but plex.tv.

use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use plexburst::plextv::{AccountToken, PlexTv, fresh_claim};

use crate::harness::{Lab, LabOpts, TRACKS, command, emulator_bin, text};

/// A distinctive account token: it must show up at plex.tv and nowhere else.
pub(crate) const ACCOUNT: &str = "acct-tok-Zq81xPlanted";

/// `plex-emulator plextv` as a child process, stopped on drop.
pub(crate) struct PlexTvEmu {
    child: Child,
    pub(crate) url: String,
}

impl PlexTvEmu {
    pub(crate) fn start(extra: &[&str]) -> PlexTvEmu {
        let (child, url) = crate::harness::spawn_listening(
            command(emulator_bin())
                .args([
                    "plextv",
                    "--listen",
                    "127.0.0.1:0",
                    "--account-token",
                    ACCOUNT,
                ])
                .args(extra)
                .stderr(Stdio::null()),
        );
        PlexTvEmu { child, url }
    }

    pub(crate) fn stats(&self) -> serde_json::Value {
        let body = ureq::get(&format!("{}/_emulator/stats", self.url))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        serde_json::from_str(&body).unwrap()
    }

    fn advance(&self, secs: u64) {
        ureq::post(&format!("{}/_emulator/clock/advance?secs={secs}", self.url))
            .send_empty()
            .unwrap();
    }

    /// What a server does with a claim (pms-docker's first run): the status of the exchange.
    fn exchange(&self, claim: &str) -> u16 {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        agent
            .post(&format!("{}/api/claim/exchange?token={claim}", self.url))
            .send_empty()
            .unwrap()
            .status()
            .as_u16()
    }
}

impl Drop for PlexTvEmu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every file under `dir` that contains `needle` (binary files included).
pub(crate) fn files_containing(dir: &std::path::Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file()
                && let Ok(bytes) = std::fs::read(&p)
                && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

#[test]
fn no_claim_and_no_account_stops_the_run_before_anything_starts() {
    let lab = Lab::new(LabOpts::default());
    let out = crate::harness::run(lab.cmd(&["run"]).env_remove("PLEX_CLAIM"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("plexburst login") && stderr.contains("--skip-analysis"),
        "the message names the ways out: {stderr}"
    );
    assert_eq!(lab.phase("prepare")["status"], "failed");
    assert_eq!(lab.phase("start-plex")["status"], "pending");
    assert!(
        lab.server_pid().is_none(),
        "Plex must not have been started"
    );
    assert!(!lab.db_path().exists(), "no Plex ever ran on the data dir");
}

#[test]
fn a_rejected_account_token_stops_the_run_before_anything_starts() {
    let tv = PlexTvEmu::start(&[]);
    let lab = Lab::new(LabOpts {
        plex: vec![format!("plextv_url = \"{}\"", tv.url)],
        ..Default::default()
    });
    let out = crate::harness::run(
        lab.cmd(&["run"])
            .env_remove("PLEX_CLAIM")
            .env("PLEX_TOKEN", "not-an-account-token"),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("plex.tv refused the account token") && stderr.contains("env PLEX_TOKEN"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("not-an-account-token"),
        "token echoed: {stderr}"
    );
    assert!(lab.server_pid().is_none());
    assert_eq!(tv.stats()["claims_issued"], 0);
}

#[test]
fn login_then_run_claims_the_server_with_a_fresh_token_and_the_account_token_stays_home() {
    let tv = PlexTvEmu::start(&["--link-after", "300ms"]);
    let lab = Lab::new(LabOpts {
        plex: vec![format!("plextv_url = \"{}\"", tv.url)],
        emulator_args: vec!["--plextv-url".into(), tv.url.clone()],
        ..Default::default()
    });
    // `plexburst login`: a PIN, linked by "the user" (the emulator, after 300 ms), then stored.
    let login = crate::harness::run(&mut lab.cmd(&["login"]));
    assert!(login.status.success(), "{}", text(&login));
    let said = String::from_utf8_lossy(&login.stderr);
    assert!(
        said.contains(&format!("open {}/link and enter the code", tv.url)),
        "{said}"
    );
    assert!(
        said.contains("signed in as \"plexburst\" (Plex Pass: active)"),
        "{said}"
    );
    let stored = lab.path("xdg/plexburst/plex-token");
    let mode = std::fs::metadata(&stored).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the stored token is private");
    let account = std::fs::read_to_string(&stored).unwrap();
    assert_eq!(tv.stats()["pins_linked"], 1);
    assert!(!said.contains(account.trim()), "login printed the token");

    // A run with the stored token and no PLEX_CLAIM: plexburst fetches the claim itself. The
    // secrets audit looks at every command line on the target (this machine) meanwhile.
    let probe = crate::audit::probe_script("/nonexistent");
    let sampler = crate::audit::Sampler::start(move || {
        let o = crate::harness::run(command("sh").arg("-c").arg(&probe));
        Some(String::from_utf8_lossy(&o.stdout).into_owned())
    });
    let out = crate::harness::run(lab.cmd(&["run"]).env_remove("PLEX_CLAIM"));
    let samples = sampler.finish();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        lab.count(
            "SELECT count(*) FROM metadata_items WHERE metadata_type = 10 AND extra_data LIKE '%musicAnalysisVersion%'"
        ),
        lab.count(TRACKS),
        "Sonic analysis ran on the server claimed this way"
    );
    let stats = tv.stats();
    assert_eq!(stats["claims_issued"], 1, "{stats:#}");
    assert_eq!(stats["exchanges_accepted"], 1, "{stats:#}");
    let by_token = &stats["requests_by_token"][account.trim()];
    assert!(
        by_token["GET /api/claim/token.json"].as_u64() == Some(1),
        "{stats:#}"
    );
    let server_token = stats["exchanges"][0]["authentication_token"]
        .as_str()
        .unwrap()
        .to_string();
    let prefs = std::fs::read_to_string(
        lab.data_dir()
            .join("Library/Application Support/Plex Media Server/Preferences.xml"),
    )
    .unwrap();
    assert!(
        prefs.contains(&server_token),
        "the exchanged token signed the server in"
    );
    // The account token went to plex.tv and nowhere else: not the state, the journal, the
    // logs, the report, the data dir, the archive.
    for dir in [lab.state_dir(), lab.data_dir(), lab.path("export")] {
        let hits = files_containing(&dir, account.trim());
        assert!(hits.is_empty(), "the account token leaked into {hits:?}");
    }
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(account.trim()),
        "the account token was printed"
    );
    // Neither the account token nor the claim fetched with it is on a command line, and the
    // claim is in no file the run wrote either.
    let claim = stats["exchanges"][0]["claim"].as_str().unwrap().to_string();
    let secrets = [
        ("the account token", account.trim()),
        ("the claim token", claim.as_str()),
    ];
    let texts = [
        ("the target's command lines", samples.join("\n")),
        ("run output", text(&out)),
    ];
    let texts: Vec<(&str, &str)> = texts.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let leaks = crate::audit::leaks(
        &secrets,
        &texts,
        &[&lab.state_dir(), &lab.path("export")],
        &[],
    );
    assert!(leaks.is_empty(), "secrets leaked: {leaks:#?}");
    assert!(
        samples.len() >= 3,
        "the sampler looked {} times",
        samples.len()
    );
    eprintln!(
        "secrets audit (login and claim): 2 secrets, {} looks at the target's command lines and every file of the run: 0 found",
        samples.len()
    );
    let state = lab.state();
    assert!(
        state["claim"]
            .as_str()
            .is_some_and(|c| c.contains("a claim token from") && c.contains("plex-token")),
        "{state:#}"
    );
}

#[test]
fn a_claim_left_five_minutes_is_never_used() {
    let tv = PlexTvEmu::start(&[]);
    let client = PlexTv::new(&tv.url, "plexburst-test");
    let token = AccountToken::new(ACCOUNT.into(), "test");
    let mut held = None;
    let t0 = Instant::now();
    let first = fresh_claim(&client, &token, &mut held, t0).unwrap();
    let again = fresh_claim(&client, &token, &mut held, t0 + Duration::from_secs(30)).unwrap();
    assert_eq!(first, again, "a fresh claim is reused, not wasted");
    // Five minutes pass, on plex.tv's clock and on ours.
    tv.advance(300);
    let later = fresh_claim(&client, &token, &mut held, t0 + Duration::from_secs(300)).unwrap();
    assert_ne!(
        later, first,
        "the stale claim must not be handed to a server"
    );
    assert_eq!(tv.stats()["claims_issued"], 2);
    assert_eq!(tv.exchange(&first), 404, "plex.tv refuses the stale claim");
    assert_eq!(tv.exchange(&later), 200, "and takes the fresh one");
}
