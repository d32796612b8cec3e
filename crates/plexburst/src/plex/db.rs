//! Progress from Plex's own library database, read with `sqlite3 -readonly` on the target through
//! the remote. A sample is a value or an error, never a silent zero.
//!
//! CONTRACT STUB: signatures agreed between the monitor and the DB work.

use crate::remote::Remote;

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

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("sqlite3 is not installed on {target}; install it (Debian: apt-get install sqlite3)")]
    MissingSqlite { target: String },
    #[error("Plex's database {path} does not exist on {target} yet")]
    Missing { target: String, path: String },
    #[error("reading Plex's database failed: {0}")]
    Query(String),
}

/// Take one sample of every section's counts from the database at `db_path` on the target.
pub fn sample(remote: &dyn Remote, db_path: &str) -> Result<DbSample, DbError> {
    let _ = (remote, db_path);
    unimplemented!()
}

/// Every non-deleted `media_parts.file` of a section (for warm-before-analysis).
pub fn section_files(remote: &dyn Remote, db_path: &str, section_id: i64) -> Result<Vec<String>, DbError> {
    let _ = (remote, db_path, section_id);
    unimplemented!()
}
