//! python-plexapi's everyday library workflow against the PMS emulator (`plexapi_library.py`):
//! connect with the token, the library root, `library.add` (through `/services/browse`), sections
//! and locations, update and cancel, paged listings of every item kind, search, settings, butler
//! tasks, activities, analyze and empty trash. What plexapi got is checked here against the library
//! DB, `Preferences.xml`, `GET /:/prefs` and the counts `gen-library` printed.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::harness::*;

const PAGE: i64 = 7;

/// Rows of one read-only query, every column as text (NULL as "").
fn rows(e: &Emu, sql: &str) -> Vec<Vec<String>> {
    let c = rusqlite::Connection::open_with_flags(
        e.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut q = c.prepare(sql).unwrap();
    let n = q.column_count();
    q.query_map([], |r| {
        (0..n)
            .map(|i| {
                Ok(match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => String::new(),
                    rusqlite::types::ValueRef::Integer(v) => v.to_string(),
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    v => format!("{v:?}"),
                })
            })
            .collect()
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// The ids of live items of one metadata type.
fn ids(e: &Emu, mtype: i64) -> BTreeSet<i64> {
    rows(
        e,
        &format!(
            "SELECT id FROM metadata_items WHERE metadata_type={mtype} AND deleted_at IS NULL"
        ),
    )
    .into_iter()
    .map(|r| r[0].parse().unwrap())
    .collect()
}

fn int_list(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn run_script(e: &Emu, token: &str, media: &std::path::Path) -> Value {
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
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/plexapi_library.py");
    let out = command("python3")
        .arg(script)
        .arg(&e.base)
        .arg(token)
        .arg(media)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "plexapi's library workflow against the emulator failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|err| panic!("{err}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn python_plexapi_runs_the_library_workflow_against_a_claimed_server() {
    let lib = gen_library(&[
        "--artists",
        "6",
        "--albums",
        "15",
        "--tracks",
        "300",
        "--movies",
        "9",
        "--shows",
        "3",
        "--seasons",
        "5",
        "--episodes",
        "23",
        "--photos",
        "17",
        "--seed",
        "12",
    ]);
    let n = |k: &str| lib.counts[k].as_i64().unwrap();
    // A scan rate (3 s for the tracks) keeps the first scan running long enough for plexapi to
    // see and cancel it, even on a loaded machine.
    let mut e = Emu::start(&[
        "--claim",
        "claim-plexapi",
        "--claim-delay",
        "100ms",
        "--scan-rate",
        "100",
        "--analysis-cost",
        "0ms",
    ]);
    let token = e.wait_token();
    let got = run_script(&e, &token, lib.dir.path());

    // Connect: the token's server; another token is refused.
    let identity = e.get("/identity");
    assert_eq!(
        got["connect"]["machineIdentifier"],
        identity["MediaContainer"]["machineIdentifier"]
    );
    assert_eq!(got["connect"]["myPlex"], true);
    assert_eq!(got["connect"]["wrongToken"], "Unauthorized");
    assert_eq!(got["library"]["title1"], "Plex Library");
    assert_eq!(got["library"]["identifier"], "com.plexapp.plugins.library");

    // Settings: the defaults read, the saved values in GET /:/prefs and Preferences.xml.
    let s = &got["settings"];
    assert!(s["count"].as_i64().unwrap() >= 155, "{s}");
    assert_eq!(s["before"]["FriendlyName"], "");
    assert_eq!(s["before"]["autoEmptyTrash"], true);
    assert_eq!(s["before"]["ButlerStartHour"], 2);
    assert_eq!(s["before"]["GenerateIntroMarkerBehavior"], "asap");
    assert_eq!(s["outOfRange"], "BadRequest", "plexapi checks enumValues");
    assert_eq!(s["after"]["FriendlyName"], "plexapi emulated");
    assert_eq!(s["after"]["autoEmptyTrash"], false);
    assert_eq!(s["after"]["ButlerStartHour"], 0);
    assert_eq!(s["after"]["GenerateIntroMarkerBehavior"], "never");
    assert_eq!(
        s["friendlyName"], "plexapi emulated",
        "the server root's name"
    );
    let prefs = e.get("/:/prefs");
    let value = |id: &str| {
        prefs["MediaContainer"]["Setting"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id)
            .unwrap_or_else(|| panic!("no setting {id}"))["value"]
            .clone()
    };
    assert_eq!(value("FriendlyName"), "plexapi emulated");
    assert_eq!(value("autoEmptyTrash"), false);
    assert_eq!(value("ButlerEndHour"), 0);
    assert_eq!(value("GenerateCreditsMarkerBehavior"), "never");
    let xml = e.prefs_xml();
    assert_eq!(
        xml_attr(&xml, "FriendlyName").as_deref(),
        Some("plexapi emulated")
    );
    assert_eq!(xml_attr(&xml, "autoEmptyTrash").as_deref(), Some("0"));
    assert_eq!(xml_attr(&xml, "ButlerStartHour").as_deref(), Some("0"));

    // library.add: four sections through the browse check; a missing folder is refused by it.
    assert!(
        got["addMissing"]
            .as_str()
            .unwrap()
            .contains("Nowhere does not exist"),
        "{}",
        got["addMissing"]
    );
    assert_eq!(e.count("SELECT count(*) FROM library_sections"), 4);
    let media = lib.dir.path().to_string_lossy().into_owned();
    let browsed: Vec<String> = ["Movies", "Music", "Photos", "TV Shows"]
        .iter()
        .map(|d| format!("{media}/{d}"))
        .collect();
    assert_eq!(got["browse"], serde_json::json!(browsed));
    let sections = got["sections"].as_array().unwrap();
    let kinds: Vec<(&str, &str, &str)> = sections
        .iter()
        .map(|x| {
            (
                x["title"].as_str().unwrap(),
                x["type"].as_str().unwrap(),
                x["agent"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("Music", "artist", "tv.plex.agents.music"),
            ("Movies", "movie", "tv.plex.agents.movie"),
            ("TV Shows", "show", "tv.plex.agents.series"),
            ("Photos", "photo", "com.plexapp.agents.none"),
        ]
    );
    for x in sections {
        let loc = format!("{media}/{}", x["title"].as_str().unwrap());
        assert_eq!(x["locations"], serde_json::json!([loc]));
        let key = x["key"].as_i64().unwrap();
        assert_eq!(
            rows(
                &e,
                &format!("SELECT root_path FROM section_locations WHERE library_section_id={key}")
            ),
            [[loc]]
        );
    }

    // update() then cancelUpdate() mid-scan, then a full update().
    let u = &got["update"];
    let acts = u["activities"].as_array().unwrap();
    assert!(!acts.is_empty());
    for a in acts {
        assert_eq!(a["type"], "library.update.section", "{a}");
        assert_eq!(a["cancellable"], true);
    }
    let partial = u["tracksAfterCancel"].as_i64().unwrap();
    assert!(
        partial < n("tracks"),
        "the cancelled scan stopped early: {partial} of {}",
        n("tracks")
    );
    assert_eq!(u["tracks"], n("tracks"));
    assert_eq!(got["activitiesIdle"], 0);

    // Paged listings: every live item of the kind exactly once, in pages of PAGE.
    let expect = [
        ("artists", 8, n("artists"), "Artist"),
        ("albums", 9, n("albums"), "Album"),
        ("tracks", 10, n("tracks"), "Track"),
        ("movies", 1, n("movies"), "Movie"),
        ("shows", 2, n("shows"), "Show"),
        ("episodes", 4, n("episodes"), "Episode"),
        ("photos", 13, n("photos"), "Photo"),
        (
            "photoalbums",
            14,
            e.count("SELECT count(*) FROM metadata_items WHERE metadata_type=14"),
            "Photoalbum",
        ),
    ];
    for (name, mtype, count, class) in expect {
        let l = &got["lists"][name];
        let keys = int_list(&l["keys"]);
        let set: BTreeSet<i64> = keys.iter().copied().collect();
        assert_eq!(set.len(), keys.len(), "{name}: an item came twice");
        assert_eq!(keys.len() as i64, count, "{name}");
        // The DB is read after the trash step, which removed one movie for good.
        let gone = got["trash"]["gone"].as_i64().unwrap();
        let listed: BTreeSet<i64> = set.iter().copied().filter(|k| *k != gone).collect();
        assert_eq!(listed, ids(&e, mtype), "{name}: not the DB's items");
        assert_eq!(l["classes"], serde_json::json!([class]), "{name}");
        let pages: Vec<(i64, i64)> = l["pages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[1].as_i64().unwrap(), p[2].as_i64().unwrap()))
            .collect();
        let want: Vec<(i64, i64)> = (0..(count + PAGE - 1) / PAGE)
            .map(|i| (i * PAGE, PAGE))
            .collect();
        assert_eq!(pages, want, "{name}: the pages plexapi asked for");
    }
    assert!(
        got["lists"]["tracks"]["pages"].as_array().unwrap().len() > 40,
        "paging really happened"
    );

    assert_eq!(
        int_list(&got["albumsEndpoint"]),
        int_list(&got["lists"]["albums"]["keys"]),
        "MusicSection.albums() (…/albums) lists what searchAlbums() lists"
    );

    // Tracks carry their album and artist and the part's file, as the DB has them.
    let db: BTreeMap<String, Vec<String>> = rows(
        &e,
        "SELECT t.id, al.title, ar.title, mp.file FROM metadata_items t \
         JOIN metadata_items al ON al.id=t.parent_id JOIN metadata_items ar ON ar.id=al.parent_id \
         JOIN media_items mi ON mi.metadata_item_id=t.id JOIN media_parts mp ON mp.media_item_id=mi.id \
         WHERE t.metadata_type=10 AND t.deleted_at IS NULL",
    )
    .into_iter()
    .map(|mut r| (r.remove(0), r))
    .collect();
    let parents: BTreeMap<String, Vec<String>> =
        serde_json::from_value(got["trackParents"].clone()).unwrap();
    assert_eq!(parents, db);

    // Their Media: container, codecs, duration, bitrate and size as the scan recorded them.
    let none = |v: &str, zero: bool| {
        if v.is_empty() || (zero && v == "0") {
            "None".to_string()
        } else {
            v.to_string()
        }
    };
    let db: BTreeMap<String, Vec<String>> = rows(
        &e,
        "SELECT md.id, mi.container, mi.audio_codec, mi.video_codec, mi.duration, mi.bitrate, \
         mi.width, mi.height FROM metadata_items md JOIN media_items mi ON mi.metadata_item_id=md.id \
         WHERE md.metadata_type IN (1, 10)",
    )
    .into_iter()
    .map(|mut r| {
        let id = r.remove(0);
        let vals = r
            .iter()
            .enumerate()
            .map(|(i, v)| none(v, i >= 3))
            .collect();
        (id, vals)
    })
    .collect();
    let media: BTreeMap<String, Vec<String>> =
        serde_json::from_value(got["media"].clone()).unwrap();
    assert_eq!(media.len() as i64, n("tracks") + n("movies"));
    let gone = got["trash"]["gone"].to_string();
    for (id, m) in media.iter().filter(|(id, _)| **id != gone) {
        assert_eq!(Some(m), db.get(id), "item {id}: plexapi's Media vs the DB");
    }
    assert!(
        media.values().any(|m| m[1] != "None") && media.values().any(|m| m[2] != "None"),
        "audio and video codecs reach plexapi: {media:?}"
    );

    // maxresults stops after 10 tracks, in pages of 3 and a last one of 1.
    let first10: Vec<i64> = int_list(&got["lists"]["tracks"]["keys"])[..10].to_vec();
    assert_eq!(int_list(&got["maxresults"]["keys"]), first10);
    let pages: Vec<(i64, i64)> = got["maxresults"]["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[1].as_i64().unwrap(), p[2].as_i64().unwrap()))
        .collect();
    assert_eq!(pages, [(0, 3), (3, 3), (6, 3), (9, 1)]);

    // Search by a title word: the section, the library and hub search find the DB's matches.
    let sr = &got["search"];
    let word = sr["word"].as_str().unwrap();
    let matching: BTreeSet<i64> = rows(
        &e,
        &format!(
            "SELECT id FROM metadata_items WHERE metadata_type=10 AND deleted_at IS NULL \
             AND instr(lower(title), '{word}') > 0"
        ),
    )
    .into_iter()
    .map(|r| r[0].parse().unwrap())
    .collect();
    assert!(matching.len() > 2 && matching.len() < n("tracks") as usize);
    for how in ["section", "library", "hubs"] {
        let found: BTreeSet<i64> = int_list(&sr[how]).into_iter().collect();
        assert_eq!(found, matching, "search through {how}");
    }
    assert_eq!(sr["hubsLimited"], 2);
    assert!(
        int_list(&sr["movieUpper"]).contains(&sr["movie"].as_i64().unwrap()),
        "the title filter ignores case"
    );

    // Butler: the spec's tasks; LoudnessAnalysis analysed every track; a wrong name is refused.
    let tasks = got["butler"]["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 22);
    for t in ["LoudnessAnalysis", "MusicAnalysis", "DeepMediaAnalysis"] {
        assert!(tasks.contains(&t.into()), "{t}");
    }
    assert_eq!(got["butler"]["unknown"], "BadRequest");
    assert_eq!(
        e.count(
            "SELECT count(*) FROM media_streams WHERE stream_type_id=2 AND extra_data LIKE '%\"ld:gain\"%'"
        ),
        n("tracks")
    );

    // analyze(): the track and every movie are analysed (track 4, video 6, as in the fixture).
    let track = got["analyze"]["track"].as_i64().unwrap();
    assert_eq!(got["analyze"]["trackMediaAnalysisVersion"], 4);
    assert_eq!(
        e.count(&format!(
            "SELECT media_analysis_version FROM media_items WHERE metadata_item_id={track}"
        )),
        4
    );
    assert_eq!(
        e.count(
            "SELECT count(*) FROM media_items mi JOIN metadata_items md ON md.id=mi.metadata_item_id \
             WHERE md.metadata_type=1 AND mi.media_analysis_version=6"
        ),
        n("movies") - 1,
        "every movie left after the trash step"
    );

    // Trash: the removed movie was listed as deleted, then emptyTrash() removed it.
    let t = &got["trash"];
    let gone = t["gone"].as_i64().unwrap();
    let before = int_list(&t["listedBefore"]);
    assert_eq!(before.len() as i64, n("movies"));
    assert_eq!(int_list(&t["deletedAtBefore"]), [gone]);
    let after: Vec<i64> = before.iter().copied().filter(|k| *k != gone).collect();
    assert_eq!(int_list(&t["after"]), after);
    assert_eq!(
        e.count(&format!(
            "SELECT count(*) FROM metadata_items WHERE id={gone}"
        )),
        0
    );
    assert_eq!(
        e.count("SELECT count(*) FROM metadata_items WHERE deleted_at IS NOT NULL"),
        0
    );
    assert!(e.stop().success());
}
