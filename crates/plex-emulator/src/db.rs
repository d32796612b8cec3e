//! The library database: the real PMS column DDL (plex.md §1.3) in WAL mode, opened the same way
//! by the scanner, the analysis writer and the HTTP handlers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rusqlite::Connection;

const SCHEMA: &str = include_str!("../data/schema.sql");
/// Every `schema_migrations.version` of the real 1.32 DB plus `202309200901` (JSON extra_data, §2.3).
const MIGRATIONS: &str = include_str!("../data/schema_migrations.txt");

/// Where pms-docker keeps everything under `/config` (plex.md §1.1, §5).
#[derive(Debug, Clone)]
pub struct DataDir {
    pub config: PathBuf,
    pub root: PathBuf,
}

impl DataDir {
    pub fn new(config: &Path) -> DataDir {
        DataDir {
            config: config.to_path_buf(),
            root: config.join("Library/Application Support/Plex Media Server"),
        }
    }
    pub fn prefs(&self) -> PathBuf {
        self.root.join("Preferences.xml")
    }
    pub fn databases(&self) -> PathBuf {
        self.root.join("Plug-in Support/Databases")
    }
    pub fn library_db(&self) -> PathBuf {
        self.databases().join("com.plexapp.plugins.library.db")
    }
    pub fn blobs_db(&self) -> PathBuf {
        self.databases()
            .join("com.plexapp.plugins.library.blobs.db")
    }
    pub fn metadata(&self) -> PathBuf {
        self.root.join("Metadata")
    }
    pub fn media(&self) -> PathBuf {
        self.root.join("Media/localhost")
    }
    pub fn log(&self) -> PathBuf {
        self.root.join("Logs/Plex Media Server.log")
    }

    pub fn create(&self) -> anyhow::Result<()> {
        for d in [
            self.databases(),
            self.metadata(),
            self.media(),
            self.root.join("Logs"),
        ] {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        Ok(())
    }
}

/// Open with the settings every writer and reader here uses: WAL (so another process can read
/// during a scan), synchronous=NORMAL, and a busy timeout instead of immediate SQLITE_BUSY.
pub fn open(path: &Path) -> anyhow::Result<Connection> {
    let c = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
    c.busy_timeout(Duration::from_secs(30))?;
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    c.pragma_update(None, "cache_size", -65536)?;
    stamp_changes(&c)?;
    Ok(c)
}

/// Give every inserted or changed `metadata_items` row the next value of a database-wide change
/// stamp in `changed_at`, as real Plex does (in the real 1.32 fixture every row carries a distinct,
/// increasing `changed_at`). plexburst's incremental progress sampler relies on it.
///
/// TEMP triggers live in this connection only, so the database file's schema stays the real one.
/// Recursive triggers are off (SQLite's default), so the stamping UPDATE does not fire them again;
/// an UPDATE that sets `changed_at` itself is left alone.
fn stamp_changes(c: &Connection) -> anyhow::Result<()> {
    let has_table: i64 = c.query_row(
        "SELECT count(*) FROM main.sqlite_master WHERE type='table' AND name='metadata_items'",
        [],
        |r| r.get(0),
    )?;
    if has_table == 0 {
        return Ok(());
    }
    c.execute_batch(
        "CREATE TEMP TRIGGER IF NOT EXISTS emulator_stamp_insert AFTER INSERT ON main.metadata_items
         BEGIN
           UPDATE main.metadata_items SET changed_at =
             (SELECT coalesce(max(changed_at), 0) + 1 FROM main.metadata_items) WHERE id = new.id;
         END;
         CREATE TEMP TRIGGER IF NOT EXISTS emulator_stamp_update AFTER UPDATE ON main.metadata_items
         WHEN new.changed_at IS old.changed_at
         BEGIN
           UPDATE main.metadata_items SET changed_at =
             (SELECT coalesce(max(changed_at), 0) + 1 FROM main.metadata_items) WHERE id = new.id;
         END;",
    )
    .context("installing the changed_at stamp triggers")?;
    Ok(())
}

/// Create both databases if missing (idempotent: a restart keeps everything).
pub fn init(dd: &DataDir) -> anyhow::Result<()> {
    let c = open(&dd.library_db())?;
    let exists: i64 = c.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='metadata_items'",
        [],
        |r| r.get(0),
    )?;
    // The real DDL has no IF NOT EXISTS on its indexes: create it once, in one transaction.
    if exists == 0 {
        c.execute_batch(&format!("BEGIN;\n{SCHEMA}\nCOMMIT;"))
            .context("creating the library schema")?;
        stamp_changes(&c)?;
    }
    let tx = c.unchecked_transaction()?;
    {
        let mut ins = tx.prepare(
            "INSERT INTO schema_migrations(version) SELECT ?1 WHERE NOT EXISTS \
             (SELECT 1 FROM schema_migrations WHERE version = ?1)",
        )?;
        for v in MIGRATIONS.lines().filter(|l| !l.trim().is_empty()) {
            ins.execute([v.trim()])?;
        }
    }
    tx.commit()?;
    let b = open(&dd.blobs_db())?;
    b.execute_batch(
        "CREATE TABLE IF NOT EXISTS 'blobs' ('id' INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, 'blob' blob, \
         'linked_type' varchar(255), 'linked_id' integer, 'linked_guid' varchar(255), 'created_at' datetime, \
         'blob_type' integer);
         CREATE INDEX IF NOT EXISTS 'index_blobs_on_linked_type' ON 'blobs' ('linked_type');
         CREATE UNIQUE INDEX IF NOT EXISTS 'index_blobs_on_linked_type_linked_id_and_blob_type' ON 'blobs' ('linked_type', 'linked_id', 'blob_type');",
    )?;
    Ok(())
}

/// Fold the WAL back into the main file (what a clean Plex shutdown leaves behind).
pub fn checkpoint(dd: &DataDir) -> anyhow::Result<()> {
    for p in [dd.library_db(), dd.blobs_db()] {
        let c = open(&p)?;
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    }
    Ok(())
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM:SS` (UTC), the text form of Plex's `datetime` columns.
pub fn datetime(ts: i64) -> String {
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn datetime_formats_utc() {
        assert_eq!(super::datetime(1_579_513_950), "2020-01-20 09:52:30");
    }
}
