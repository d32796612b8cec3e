//! HTTP API: identity, root, auth once claimed, sections, formats, butler, account.

use crate::harness::*;

#[test]
fn claimed_server_requires_the_token_except_on_identity() {
    let mut e = Emu::start(&["--claim", "claim-abc", "--claim-delay", "300ms"]);
    let token = e.wait_token();
    e.token = None;
    let id = e.req("GET", "/identity", true);
    assert_eq!(id.status, 200);
    assert_eq!(id.json()["MediaContainer"]["claimed"], true);
    assert_eq!(e.req("GET", "/library/sections", true).status, 401);
    assert_eq!(e.req("GET", "/", true).status, 401);
    assert_eq!(
        e.req(
            "GET",
            &format!("/library/sections?X-Plex-Token={token}"),
            true
        )
        .status,
        200
    );
    e.token = Some("wrong".into());
    assert_eq!(e.req("GET", "/:/prefs", true).status, 401);
    e.token = Some(token);
    assert_eq!(e.req("GET", "/:/prefs", true).status, 200);
    let acct = e.get("/myplex/account");
    assert_eq!(acct["MyPlex"]["subscriptionActive"], true);
    assert_eq!(acct["MyPlex"]["signInState"], "ok");
}

#[test]
fn claim_token_is_read_from_plex_claim_env() {
    let d = tempfile::tempdir().unwrap();
    let child = command(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--claim-delay",
            "100ms",
            "--data-dir",
        ])
        .arg(d.path())
        .env("PLEX_CLAIM", "claim-from-env")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut e = Emu::attach(child, d.path(), 15);
    e.wait_token();
    assert_eq!(e.req("GET", "/library/sections", true).status, 200);
    e.token = None;
    assert_eq!(e.req("GET", "/library/sections", true).status, 401);
}

#[test]
fn unclaimed_server_accepts_tokenless_calls_and_has_no_subscription() {
    let e = Emu::start(&[]);
    let id = e.get("/identity");
    assert_eq!(id["MediaContainer"]["claimed"], false);
    let root = e.get("/");
    assert_eq!(
        root["MediaContainer"]["machineIdentifier"],
        id["MediaContainer"]["machineIdentifier"]
    );
    assert!(root["MediaContainer"].get("startState").is_none());
    assert_eq!(
        e.get("/myplex/account")["MyPlex"]["subscriptionActive"],
        false
    );
    assert!(!e.prefs_xml().contains("PlexOnlineToken"));
}

#[test]
fn plex_pass_false_means_no_subscription() {
    let mut e = Emu::start(&[
        "--claim",
        "c",
        "--claim-delay",
        "100ms",
        "--plex-pass",
        "false",
    ]);
    e.wait_token();
    assert_eq!(
        e.get("/myplex/account")["MyPlex"]["subscriptionActive"],
        false
    );
}

#[test]
fn identity_machine_id_is_derived_like_pms_docker() {
    let e = Emu::start(&[]);
    let xml = e.prefs_xml();
    let mid = xml_attr(&xml, "MachineIdentifier").unwrap();
    let processed = xml_attr(&xml, "ProcessedMachineIdentifier").unwrap();
    assert_eq!(processed.len(), 40);
    assert_eq!(
        e.get("/identity")["MediaContainer"]["machineIdentifier"],
        processed.as_str()
    );
    // sha1("${MachineIdentifier}- Plex Media Server"), via the sha1sum tool.
    let mut child = command("sha1sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{mid}- Plex Media Server").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with(&processed));
}

#[test]
fn sections_are_created_listed_and_served_in_xml_and_json() {
    let lib = gen_library(&[
        "--tracks",
        "3",
        "--photos",
        "2",
        "--movies",
        "1",
        "--shows",
        "1",
        "--episodes",
        "1",
    ]);
    let e = Emu::start(&[]);
    let music = e.add_section("Music", "artist", &lib.path("Music"));
    let photos = e.add_section("Photos", "photo", &lib.path("Photos"));
    let movies = e.add_section("Movies", "movie", &lib.path("Movies"));
    let tv = e.add_section("TV", "show", &lib.path("TV Shows"));
    let list = e.get("/library/sections");
    let dirs = list["MediaContainer"]["Directory"].as_array().unwrap();
    assert_eq!(dirs.len(), 4);
    let expect = [
        (
            music,
            "artist",
            "tv.plex.agents.music",
            "Plex Music",
            "Music",
        ),
        (
            photos,
            "photo",
            "com.plexapp.agents.none",
            "Plex Photo Scanner",
            "Photos",
        ),
        (
            movies,
            "movie",
            "tv.plex.agents.movie",
            "Plex Movie",
            "Movies",
        ),
        (
            tv,
            "show",
            "tv.plex.agents.series",
            "Plex TV Series",
            "TV Shows",
        ),
    ];
    for (id, kind, agent, scanner, dir) in expect {
        let d = dirs
            .iter()
            .find(|d| d["key"] == id.to_string().as_str())
            .unwrap();
        assert_eq!(d["type"], kind);
        assert_eq!(d["agent"], agent);
        assert_eq!(d["scanner"], scanner);
        assert_eq!(d["refreshing"], false);
        assert_eq!(
            d["Location"][0]["path"],
            lib.path(dir).to_string_lossy().as_ref()
        );
    }
    assert_eq!(
        e.count("SELECT section_type FROM library_sections WHERE id=1"),
        8
    );
    assert_eq!(
        e.count("SELECT section_type FROM library_sections WHERE id=2"),
        13
    );
    let one = e.get(&format!("/library/sections/{tv}"));
    assert_eq!(one["MediaContainer"]["Directory"][0]["title"], "TV");
    let xml = e.req("GET", "/library/sections", false);
    assert!(xml.body.starts_with("<?xml"), "{}", xml.body);
    assert!(
        xml.body.contains("<Directory ")
            && xml.body.contains("type=\"photo\"")
            && xml.body.contains("<Location ")
    );
    assert_eq!(e.req("GET", "/library/sections/99", true).status, 404);
    assert_eq!(
        e.req(
            "POST",
            "/library/sections?name=X&type=podcast&location=/tmp",
            true
        )
        .status,
        400
    );
}

#[test]
fn butler_lists_tasks_and_rejects_unknown_ones() {
    let e = Emu::start(&[]);
    let b = e.get("/butler");
    let tasks = b["ButlerTasks"]["ButlerTask"].as_array().unwrap();
    for name in [
        "MusicAnalysis",
        "DeepMediaAnalysis",
        "ButlerTaskGenerateIntroMarkers",
        "LoudnessAnalysis",
    ] {
        assert!(tasks.iter().any(|t| t["name"] == name), "{name} missing");
    }
    assert_eq!(e.req("POST", "/butler/NoSuchTask", true).status, 404);
    assert_eq!(
        e.req("DELETE", "/butler/MusicAnalysis", true).status,
        404,
        "nothing running"
    );
    e.ok("POST", "/butler/OptimizeDatabase");
    e.ok("POST", "/butler");
    e.ok("DELETE", "/butler");
}

#[test]
fn activity_cancel_of_unknown_uuid_is_404() {
    let e = Emu::start(&[]);
    assert_eq!(e.req("DELETE", "/activities/nope", true).status, 404);
    assert_eq!(e.get("/activities")["MediaContainer"]["size"], 0);
}
