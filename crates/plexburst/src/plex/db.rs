//! Progress from Plex's own library database, read with `sqlite3 -readonly` on the target through
//! the remote. A sample is a value or an error, never a silent zero.
//!
//! One sample is ONE `sqlite3` process running ONE `SELECT`, so every count comes from the same
//! read snapshot (WAL readers never block Plex's writer, and see a consistent state).
//!
//! What is counted, per section (plex.md §1.4-1.5, §2.2-2.3):
//! - leaf rows: `metadata_items` of the section's leaf type (movie 1, show -> episode 4,
//!   music -> track 10, photo -> photo 13), counted on the covering index
//!   `index_metadata_items_on_library_section_id_and_metadata_type_and_added_at`;
//! - deleted: leaf rows with `deleted_at` set, found through `index_metadata_items_on_deleted_at`
//!   (the section/type terms are kept off the index with unary `+`, so the plan walks only the
//!   trash, not the whole section);
//! - items = leaf rows - deleted;
//! - Sonic: non-deleted tracks whose `extra_data` holds `ms:musicAnalysisVersion` (JSON, since
//!   Plex 1.40) or `ms%3AmusicAnalysisVersion` (URL-encoded, older Plex). A cheap `LIKE` on the common
//!   part runs first; the exact key check runs only on the rows it lets through. This is the one
//!   term that reads every track row: see docs/benchmarks.md "Monitor sample" for its cost;
//! - thumbnailed: non-deleted photos whose `media_items.media_analysis_version > 0`. This is a
//!   documented guess: the real fixture's photos all carry 5 after Plex processed them, and the
//!   emulator writes the same marker; real Plex's exact thumbnail marker is unknown.

use std::time::Duration;

use crate::remote::{Cmd, Remote};

/// Counts for one library section at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SectionCounts {
    pub section_id: i64,
    pub name: String,
    /// 1 movie, 2 show, 8 music, 13 photo.
    pub section_type: i64,
    /// Items that are not deleted: movies, episodes, tracks or photos (the "leaf" type of the section).
    pub items: i64,
    /// Music only: tracks, and tracks with Sonic analysis (both `extra_data` formats).
    pub tracks: i64,
    pub sonic_analyzed: i64,
    /// Photo only: photos with a thumbnail generated.
    pub photos: i64,
    pub thumbnailed: i64,
    /// Items with `deleted_at` set (in Plex's trash).
    pub deleted: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DbSample {
    pub sections: Vec<SectionCounts>,
}

impl DbSample {
    pub fn section(&self, id: i64) -> Option<&SectionCounts> {
        self.sections.iter().find(|s| s.section_id == id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("sqlite3 is not installed on {target}; install it (Debian: apt-get install sqlite3)")]
    MissingSqlite { target: String },
    #[error("Plex's database {path} does not exist on {target} yet")]
    Missing { target: String, path: String },
    #[error("reading Plex's database failed: {0}")]
    Query(String),
}

/// How long one sample may take before it is an error (a wedged mount or a huge WAL replay).
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Listing a section's files reads one row per file; give big libraries time.
const FILES_TIMEOUT: Duration = Duration::from_secs(600);
/// Exit code the wrapper script uses for "no database file" (EX_NOINPUT).
const EXIT_NO_DB: i32 = 66;
/// POSIX shells exit 127 when a command is not found.
const EXIT_NOT_FOUND: i32 = 127;

/// `CASE` mapping a section type to its leaf metadata type; -1 never matches.
const LEAF_TYPE: &str =
    "CASE s.section_type WHEN 1 THEN 1 WHEN 2 THEN 4 WHEN 8 THEN 10 WHEN 13 THEN 13 ELSE -1 END";

/// The per-section counting query (one row per section).
fn sample_sql() -> String {
    format!(
        "SELECT s.id AS section_id, s.name AS name, s.section_type AS section_type,
  (SELECT count(*) FROM metadata_items m
     WHERE m.library_section_id = s.id AND m.metadata_type = {LEAF_TYPE}) AS leaf_rows,
  (SELECT count(*) FROM metadata_items m
     WHERE m.deleted_at IS NOT NULL AND +m.library_section_id = s.id
       AND +m.metadata_type = {LEAF_TYPE}) AS deleted,
  CASE WHEN s.section_type = 8 THEN
    (SELECT count(*) FROM metadata_items m
       WHERE m.library_section_id = s.id AND m.metadata_type = 10 AND m.deleted_at IS NULL
         AND m.extra_data LIKE '%musicAnalysisVersion%'
         AND (instr(m.extra_data, 'ms:musicAnalysisVersion') > 0
              OR instr(m.extra_data, 'ms%3AmusicAnalysisVersion') > 0))
  ELSE 0 END AS sonic_analyzed,
  CASE WHEN s.section_type = 13 THEN
    (SELECT count(*) FROM media_items mi JOIN metadata_items m ON m.id = mi.metadata_item_id
       WHERE mi.library_section_id = s.id AND mi.media_analysis_version > 0
         AND mi.deleted_at IS NULL AND m.metadata_type = 13 AND m.deleted_at IS NULL)
  ELSE 0 END AS thumbnailed
FROM library_sections s ORDER BY s.id;"
    )
}

#[derive(serde::Deserialize)]
struct Row {
    section_id: i64,
    name: Option<String>,
    section_type: Option<i64>,
    leaf_rows: i64,
    deleted: i64,
    sonic_analyzed: i64,
    thumbnailed: i64,
}

/// Take one sample of every section's counts from the database at `db_path` on the target.
pub fn sample(remote: &dyn Remote, db_path: &str) -> Result<DbSample, DbError> {
    let rows: Vec<Row> = query_json(remote, db_path, &sample_sql(), SAMPLE_TIMEOUT)?;
    Ok(DbSample {
        sections: rows.into_iter().map(counts_from_row).collect(),
    })
}

fn counts_from_row(r: Row) -> SectionCounts {
    let section_type = r.section_type.unwrap_or(0);
    let items = r.leaf_rows - r.deleted;
    SectionCounts {
        section_id: r.section_id,
        name: r.name.unwrap_or_default(),
        section_type,
        items,
        tracks: if section_type == 8 { items } else { 0 },
        sonic_analyzed: r.sonic_analyzed,
        photos: if section_type == 13 { items } else { 0 },
        thumbnailed: r.thumbnailed,
        deleted: r.deleted,
    }
}

/// Every non-deleted `media_parts.file` of a section (for warm-before-analysis).
pub fn section_files(
    remote: &dyn Remote,
    db_path: &str,
    section_id: i64,
) -> Result<Vec<String>, DbError> {
    #[derive(serde::Deserialize)]
    struct File {
        file: Option<String>,
    }
    let sql = format!(
        "SELECT mp.file AS file FROM media_parts mp JOIN media_items mi ON mi.id = mp.media_item_id
  WHERE mi.library_section_id = {section_id} AND mi.deleted_at IS NULL AND mp.deleted_at IS NULL
    AND mp.file IS NOT NULL AND mp.file != '' ORDER BY mp.id;"
    );
    let rows: Vec<File> = query_json(remote, db_path, &sql, FILES_TIMEOUT)?;
    Ok(rows.into_iter().filter_map(|f| f.file).collect())
}

/// The shell line that runs `sql` read-only on the target, distinguishing "no sqlite3" (127) and
/// "no database" (66) from a failing query.
pub fn sqlite_script(db_path: &str, sql: &str) -> String {
    let db = shell_escape::unix::escape(db_path.into());
    let sql = shell_escape::unix::escape(sql.into());
    // `.timeout` makes the rare moments when a reader must wait (WAL recovery, a checkpoint that
    // truncates) a short wait instead of "database is locked".
    format!(
        "command -v sqlite3 >/dev/null 2>&1 || exit {EXIT_NOT_FOUND}\n\
         [ -f {db} ] || exit {EXIT_NO_DB}\n\
         exec sqlite3 -readonly -bail -json -cmd '.timeout 5000' {db} {sql}"
    )
}

/// Run one query and parse sqlite3's `-json` output (nothing at all for zero rows).
fn query_json<T: serde::de::DeserializeOwned>(
    remote: &dyn Remote,
    db_path: &str,
    sql: &str,
    timeout: Duration,
) -> Result<Vec<T>, DbError> {
    let cmd = Cmd::new(sqlite_script(db_path, sql)).timeout(timeout);
    let out = remote
        .exec(&cmd)
        .map_err(|e| DbError::Query(e.to_string()))?;
    match out.status {
        0 => {}
        EXIT_NOT_FOUND => {
            return Err(DbError::MissingSqlite {
                target: remote.describe(),
            });
        }
        EXIT_NO_DB => {
            return Err(DbError::Missing {
                target: remote.describe(),
                path: db_path.to_string(),
            });
        }
        status => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(DbError::Query(format!(
                "sqlite3 on {} exited with status {status}: {}",
                remote.describe(),
                stderr.trim()
            )));
        }
    }
    let stdout = out.stdout_str();
    if stdout.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(&stdout).map_err(|e| {
        DbError::Query(format!(
            "cannot parse sqlite3's output ({e}); it starts with {:?}",
            stdout.chars().take(200).collect::<String>()
        ))
    })
}

#[cfg(test)]
mod tests {
    //! Contract tests against a copy of a real Plex 1.32 database, through the real local remote
    //! and the system `sqlite3`.
    use super::*;
    use crate::remote::local::Local;

    const FIXTURE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/real-pms-1.32-library.db"
    );

    /// A private copy: the database is in WAL mode and reading it may create `-shm`/`-wal` files.
    fn fixture_copy() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("com.plexapp.plugins.library.db");
        std::fs::copy(FIXTURE, &db).unwrap();
        for ext in ["-wal", "-shm"] {
            let side = format!("{FIXTURE}{ext}");
            if std::path::Path::new(&side).exists() {
                std::fs::copy(&side, format!("{}{ext}", db.display())).unwrap();
            }
        }
        (dir, db.to_str().unwrap().to_string())
    }

    #[test]
    fn real_database_counts() {
        let (_dir, db) = fixture_copy();
        let s = sample(&Local::new(), &db).unwrap();
        let by_name = |n: &str| s.sections.iter().find(|c| c.name == n).unwrap().clone();
        assert_eq!(s.sections.len(), 4);
        let movies = by_name("Movies");
        assert_eq!(
            (movies.section_id, movies.section_type, movies.items),
            (1, 1, 5)
        );
        let shows = by_name("TV Shows");
        assert_eq!((shows.section_type, shows.items), (2, 38));
        let music = by_name("Music");
        assert_eq!(
            (
                music.section_id,
                music.section_type,
                music.items,
                music.tracks
            ),
            (5, 8, 9, 9)
        );
        // The fixture's server had no Plex Pass: no Sonic data at all (plex.md §2.2).
        assert_eq!(music.sonic_analyzed, 0);
        let photos = by_name("Photos");
        assert_eq!(
            (
                photos.section_type,
                photos.items,
                photos.photos,
                photos.thumbnailed
            ),
            (13, 9, 9, 9)
        );
        assert!(s.sections.iter().all(|c| c.deleted == 0));
        assert_eq!(s.section(5).map(|c| c.tracks), Some(9));
    }

    /// Mark tracks as Plex would: two in the new JSON format (Plex >= 1.40), one in the old
    /// URL-encoded format, one decoy key that only looks similar, and soft-delete one analysed
    /// track and one photo.
    #[test]
    fn sonic_matches_both_extra_data_formats_and_ignores_the_trash() {
        let (_dir, db) = fixture_copy();
        {
            let c = rusqlite::Connection::open(&db).unwrap();
            // Stock SQLite cannot run the ICU full-text triggers (plex.md §1.3); this copy does
            // not need them.
            let triggers: Vec<String> = c
                .prepare("SELECT name FROM sqlite_master WHERE type='trigger' AND tbl_name='metadata_items'")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            for t in triggers {
                c.execute_batch(&format!("DROP TRIGGER \"{t}\";")).unwrap();
            }
            let tracks: Vec<i64> = c
                .prepare("SELECT id FROM metadata_items WHERE metadata_type = 10 ORDER BY id")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let set = |id: i64, extra: &str| {
                c.execute(
                    "UPDATE metadata_items SET extra_data = ?1 WHERE id = ?2",
                    rusqlite::params![extra, id],
                )
                .unwrap();
            };
            set(
                tracks[0],
                r#"{"ms:musicAnalysisVersion":"1","ld:gain":"-9.2"}"#,
            );
            set(tracks[1], r#"{"pv:x":"y","ms:musicAnalysisVersion":"1"}"#);
            set(
                tracks[2],
                "ld%3Again=-9%2E22&ms%3AmusicAnalysisVersion=1&pv%3AinstanceRatingKey=5d07",
            );
            set(tracks[3], r#"{"xx:musicAnalysisVersionHint":"1"}"#);
            set(tracks[4], r#"{"ms:musicAnalysisVersion":"1"}"#);
            c.execute(
                "UPDATE metadata_items SET deleted_at = 1700000000 WHERE id = ?1",
                [tracks[4]],
            )
            .unwrap();
            c.execute(
                "UPDATE metadata_items SET deleted_at = 1700000000
                   WHERE id = (SELECT min(id) FROM metadata_items WHERE metadata_type = 13)",
                [],
            )
            .unwrap();
        }
        let s = sample(&Local::new(), &db).unwrap();
        let music = s.section(5).unwrap();
        assert_eq!(
            (music.tracks, music.sonic_analyzed, music.deleted),
            (8, 3, 1)
        );
        let photos = s.section(3).unwrap();
        assert_eq!(
            (photos.photos, photos.thumbnailed, photos.deleted),
            (8, 8, 1)
        );
        assert_eq!(s.section(2).unwrap().items, 38);
    }

    #[test]
    fn section_files_are_absolute_paths() {
        let (_dir, db) = fixture_copy();
        let files = section_files(&Local::new(), &db, 5).unwrap();
        assert_eq!(files.len(), 9);
        assert!(
            files.iter().all(|f| f.starts_with("/data/Music/")),
            "{files:?}"
        );
        assert!(
            files
                .iter()
                .any(|f| f == "/data/Music/System of a Down - Aerials (2002)/01 - Aerials.aac"),
            "{files:?}"
        );
        assert!(section_files(&Local::new(), &db, 999).unwrap().is_empty());
    }

    #[test]
    fn missing_database_is_missing_not_zero() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("no such dir/library.db");
        match sample(&Local::new(), db.to_str().unwrap()) {
            Err(DbError::Missing { path, target }) => {
                assert!(path.ends_with("no such dir/library.db"));
                assert_eq!(target, "local");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_file_that_is_not_a_database_is_a_query_error_with_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("library.db");
        std::fs::write(
            &db,
            b"this is not a database, just text that is long enough",
        )
        .unwrap();
        match sample(&Local::new(), db.to_str().unwrap()) {
            Err(DbError::Query(msg)) => assert!(msg.contains("not a database"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }

    /// A target without sqlite3: `PATH` holds only a shell, so `command -v sqlite3` fails.
    struct NoSqlite;
    impl Remote for NoSqlite {
        fn describe(&self) -> String {
            "bare-host".into()
        }
        fn exec(&self, cmd: &Cmd) -> Result<crate::remote::Output, crate::remote::RemoteError> {
            let dir = tempfile::tempdir().unwrap();
            std::os::unix::fs::symlink("/bin/sh", dir.path().join("sh")).unwrap();
            let script = format!("PATH={}\n{}", dir.path().display(), cmd.script);
            Local::new().exec(&Cmd {
                script,
                ..cmd.clone()
            })
        }
        fn put_file(&self, _: &str, _: &[u8], _: u32) -> Result<(), crate::remote::RemoteError> {
            unreachable!()
        }
        fn get_file(&self, _: &str) -> Result<Vec<u8>, crate::remote::RemoteError> {
            unreachable!()
        }
        fn forward(
            &self,
            _: u16,
        ) -> Result<Box<dyn crate::remote::Forward>, crate::remote::RemoteError> {
            unreachable!()
        }
    }

    #[test]
    fn missing_sqlite3_is_reported_as_such() {
        let (_dir, db) = fixture_copy();
        match sample(&NoSqlite, &db) {
            Err(DbError::MissingSqlite { target }) => assert_eq!(target, "bare-host"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn paths_with_quotes_and_spaces_are_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("Plex Media Server's \"data\" $HOME");
        std::fs::create_dir(&sub).unwrap();
        let db = sub.join("com.plexapp.plugins.library.db");
        std::fs::copy(FIXTURE, &db).unwrap();
        let s = sample(&Local::new(), db.to_str().unwrap()).unwrap();
        assert_eq!(s.sections.len(), 4);
    }
}
