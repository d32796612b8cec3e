//! Schema contract: every column of the tables plexburst reads exists in the emulator's DB with the
//! declared type of the real PMS 1.32 database; the JSON extra_data migration is present.

use std::collections::BTreeMap;

use crate::harness::*;

const TABLES: [&str; 8] = [
    "library_sections",
    "section_locations",
    "directories",
    "metadata_items",
    "media_items",
    "media_parts",
    "media_streams",
    "schema_migrations",
];

/// The real DDL, copied from the shared fixtures (`real-pms-1.32-schema.sql`).
const REAL_SCHEMA: &str = include_str!("fixtures/real-pms-1.32-schema.sql");
/// The real DB itself (`real-pms-1.32-library.db` from the shared fixtures, vendored once in the
/// repository beside plexburst's DB contract tests so a clean clone has it).
const REAL_DB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../plexburst/tests/fixtures/real-pms-1.32-library.db"
);

fn columns(c: &rusqlite::Connection, table: &str) -> BTreeMap<String, String> {
    let mut q = c.prepare(&format!("PRAGMA table_info('{table}')")).unwrap();
    q.query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn assert_superset(real: &rusqlite::Connection, emu: &rusqlite::Connection, source: &str) {
    for t in TABLES {
        let want = columns(real, t);
        assert!(!want.is_empty(), "{source} has no table {t}");
        let have = columns(emu, t);
        for (col, ty) in &want {
            assert_eq!(
                have.get(col),
                Some(ty),
                "{t}.{col} in the emulator vs {source}"
            );
        }
    }
}

#[test]
fn emulator_tables_have_every_real_column_with_the_same_type() {
    let e = Emu::start(&[]);
    let emu = rusqlite::Connection::open_with_flags(
        e.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    // From the real DDL text: only the CREATE TABLE statements (stock SQLite cannot build the ICU parts).
    let real = rusqlite::Connection::open_in_memory().unwrap();
    let wanted = |l: &&str| {
        TABLES
            .iter()
            .any(|t| l.starts_with(&format!("CREATE TABLE IF NOT EXISTS \"{t}\"")))
    };
    for stmt in REAL_SCHEMA.lines().filter(wanted) {
        real.execute_batch(stmt).unwrap();
    }
    assert_superset(&real, &emu, "real-pms-1.32-schema.sql");
    // From the real DB file (copied first: it is in WAL mode, and the original stays untouched).
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("real.db");
    std::fs::copy(REAL_DB, &copy).unwrap_or_else(|e| panic!("copying {REAL_DB}: {e}"));
    let real = rusqlite::Connection::open(&copy).unwrap();
    assert_superset(&real, &emu, REAL_DB);
    let jm: String = emu
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(jm, "wal");
    assert_eq!(
        e.count("SELECT count(*) FROM schema_migrations WHERE version='202309200901'"),
        1
    );
    assert_eq!(
        e.count("SELECT count(*) FROM sqlite_master WHERE sql LIKE '%icu%'"),
        0
    );
    // Every real index on these tables is there too, except the ICU one.
    for l in REAL_SCHEMA
        .lines()
        .filter(|l| l.starts_with("CREATE INDEX") || l.starts_with("CREATE UNIQUE INDEX"))
    {
        let on_ours = TABLES
            .iter()
            .any(|t| l.contains(&format!("ON '{t}'")) || l.contains(&format!("ON \"{t}\"")));
        if !on_ours || l.contains("icu") {
            continue;
        }
        let name = l
            .split_whitespace()
            .find(|w| {
                w.starts_with("'index") || w.starts_with("\"index") || w.starts_with("\"unique")
            })
            .unwrap();
        let name = name.trim_matches(|c| c == '\'' || c == '"');
        assert_eq!(
            e.count(&format!(
                "SELECT count(*) FROM sqlite_master WHERE type='index' AND name='{name}'"
            )),
            1,
            "index {name}"
        );
    }
    assert!(
        e.app_dir()
            .join("Plug-in Support/Databases/com.plexapp.plugins.library.blobs.db")
            .exists()
    );
    for d in ["Metadata", "Media/localhost", "Logs"] {
        assert!(e.app_dir().join(d).is_dir(), "{d} missing");
    }
    assert!(e.app_dir().join("Logs/Plex Media Server.log").exists());
}
