//! SIGTERM: clean exit 0 with the WAL checkpointed, even mid-scan; a restart keeps DB, prefs,
//! identity and token.

use crate::harness::*;

fn wal_len(e: &Emu) -> u64 {
    std::fs::metadata(e.db_path().with_extension("db-wal"))
        .map(|m| m.len())
        .unwrap_or(0)
}

#[test]
fn sigterm_checkpoints_and_a_restart_keeps_everything() {
    let lib = gen_library(&["--tracks", "10"]);
    let mut e = Emu::start(&["--claim", "c", "--claim-delay", "100ms"]);
    let token = e.wait_token();
    e.add_section("Music", "artist", &lib.path("Music"));
    e.scan_all();
    let id = e.get("/identity")["MediaContainer"]["machineIdentifier"].clone();
    assert!(e.stop().success());
    assert_eq!(wal_len(&e), 0, "WAL checkpointed (TRUNCATE) at shutdown");
    let mut e2 = Emu::start_in(&e.data, &[]);
    assert_eq!(
        e2.get("/identity")["MediaContainer"]["machineIdentifier"],
        id
    );
    assert_eq!(
        e2.req("GET", "/library/sections", true).status,
        401,
        "still claimed"
    );
    e2.token = Some(token.clone());
    assert_eq!(
        xml_attr(&e2.prefs_xml(), "PlexOnlineToken").as_deref(),
        Some(token.as_str())
    );
    assert_eq!(e2.get("/library/sections")["MediaContainer"]["size"], 1);
    assert_eq!(
        e2.count("SELECT count(*) FROM metadata_items WHERE metadata_type=10"),
        10
    );
}

#[test]
fn sigterm_during_a_scan_exits_zero_with_a_consistent_db() {
    let lib = gen_library(&["--tracks", "400", "--albums", "20"]);
    let mut e = Emu::start(&["--scan-rate", "200"]);
    e.add_section("Music", "artist", &lib.path("Music"));
    e.ok("GET", "/library/sections/all/refresh");
    wait_until(20, "scan under way", || {
        e.count("SELECT count(*) FROM metadata_items WHERE metadata_type=10") > 0
    });
    let st = e.stop();
    assert!(st.success(), "{st:?}");
    assert_eq!(wal_len(&e), 0);
    let c = rusqlite::Connection::open(e.db_path()).unwrap();
    let ok: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    // Every track written has its media item and part (transactions were not cut in half).
    let orphans: i64 = c
        .query_row("SELECT count(*) FROM metadata_items md WHERE metadata_type=10 AND NOT EXISTS (SELECT 1 FROM media_items mi JOIN media_parts mp ON mp.media_item_id=mi.id WHERE mi.metadata_item_id=md.id)", [], |r| r.get(0))
        .unwrap();
    assert_eq!(orphans, 0);
}
