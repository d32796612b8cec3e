//! Progress from Plex's own library database, read with `sqlite3 -readonly` on the target through
//! the remote. A sample is a value or an error, never a silent zero.
//!
//! One sample is ONE `sqlite3` process running ONE `SELECT`, so every count comes from the same
//! read snapshot (WAL readers never block Plex's writer, and see a consistent state).
//!
//! [`sample`] counts everything from scratch (about 0.5 s on 1,000,000 tracks). The monitor keeps
//! a [`Sampler`] instead: after its first sample it reads only what changed (about 10 ms at that
//! size, see docs/benchmarks.md "Monitor sample"), and proves itself against full samples.
//!
//! What is counted, per section (plex.md §1.4-1.5, §2.2-2.3):
//! - leaf rows: `metadata_items` of the section's leaf type (movie 1, show -> episode 4,
//!   music -> track 10, photo -> photo 13), counted on the covering index
//!   `index_metadata_items_on_library_section_id_and_metadata_type_and_added_at`;
//! - deleted: leaf rows with `deleted_at > 0`, found through `index_metadata_items_on_deleted_at`
//!   (the section/type terms are kept off the index with unary `+`, so the plan walks only the
//!   trash, not the whole section);
//! - items = leaf rows - deleted;
//! - Sonic: non-deleted tracks whose `extra_data` holds `ms:musicAnalysisVersion` (JSON, since
//!   Plex 1.40) or `ms%3AmusicAnalysisVersion` (URL-encoded, older Plex). A cheap `LIKE` on the common
//!   part runs first; the exact key check runs only on the rows it lets through. A full count
//!   reads every track row for this;
//! - thumbnailed: non-deleted photos whose `media_items.media_analysis_version > 0`. This is a
//!   documented guess: the real fixture's photos all carry 5 after Plex processed them, and the
//!   emulator writes the same marker; real Plex's exact thumbnail marker is unknown.

use std::collections::HashMap;
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

/// The leaf metadata types: movie, episode, track, photo.
const LEAF_TYPES: &str = "(1, 4, 10, 13)";

/// The leaf metadata type of a section type.
fn leaf_type(section_type: i64) -> i64 {
    match section_type {
        1 => 1,
        2 => 4,
        8 => 10,
        13 => 13,
        _ => -1,
    }
}

/// True for a track row carrying the Sonic marker in either `extra_data` format. The `LIKE` on
/// the common part rejects most rows cheaply; the exact keys are checked only on what it passes.
const SONIC: &str = "(extra_data LIKE '%musicAnalysisVersion%' \
    AND (instr(extra_data, 'ms:musicAnalysisVersion') > 0 \
    OR instr(extra_data, 'ms%3AmusicAnalysisVersion') > 0))";

/// Parts both queries share: the change signals, the trash and the photo thumbnails.
///
/// Planner notes (checked with EXPLAIN QUERY PLAN on a 1,000,000-track DB without sqlite_stat1):
/// `GROUP BY sid + 0` stops SQLite from walking a whole index just to get grouped order; unary `+`
/// keeps a term off an index so the selective one is used (`deleted_at > 0` on
/// index_metadata_items_on_deleted_at walks only the trash); `CROSS JOIN` pins the join order so
/// thumbnails are found from the photo sections through index_media_items_on_library_section_id.
fn common_parts() -> String {
    format!(
        "'max_id', (SELECT coalesce(max(id), 0) FROM metadata_items),
 'max_changed', (SELECT coalesce(max(changed_at), 0) FROM metadata_items),
 'trash', (SELECT json_group_array(json_array(sid, mt, n, sonic)) FROM (
    SELECT library_section_id AS sid, metadata_type AS mt, count(*) AS n,
      sum(metadata_type = 10 AND {SONIC}) AS sonic
    FROM metadata_items WHERE deleted_at > 0 GROUP BY sid + 0, mt + 0)),
 'thumbs', (SELECT json_group_array(json_array(sid, n)) FROM (
    SELECT mi.library_section_id AS sid, count(*) AS n FROM library_sections s
      CROSS JOIN media_items mi ON mi.library_section_id = s.id
      CROSS JOIN metadata_items m ON m.id = mi.metadata_item_id
    WHERE s.section_type = 13 AND +mi.media_analysis_version > 0 AND +mi.deleted_at IS NULL
      AND +m.metadata_type = 13 AND +m.deleted_at IS NULL
    GROUP BY sid + 0))"
    )
}

/// A full, exact sample: every count from scratch, plus the analysed track ids as ranges so later
/// samples can be incremental. The leaf counts walk the covering section/type index once (the
/// unary `+` keeps SQLite from using the type index and looking up every row instead: 480 ms
/// instead of 120 ms on 1,000,000 tracks). Reads every track row once (the Sonic marker lives in
/// `extra_data`, which no index covers).
fn full_sql() -> String {
    format!(
        "SELECT json_object(
 {common},
 'sections', (SELECT json_group_array(json_array(s.id, s.name, s.section_type))
    FROM library_sections s),
 'leaves', (SELECT json_group_array(json_array(sid, mt, n)) FROM (
    SELECT library_section_id AS sid, metadata_type AS mt, count(*) AS n FROM metadata_items
    WHERE +metadata_type IN {LEAF_TYPES} GROUP BY library_section_id, metadata_type)),
 'sonic_ranges', (SELECT json_group_array(json_array(sid, lo, hi)) FROM (
    SELECT sid, min(id) AS lo, max(id) AS hi FROM (
      SELECT id, library_section_id AS sid,
        id - row_number() OVER (PARTITION BY library_section_id ORDER BY id) AS g
      FROM metadata_items NOT INDEXED WHERE metadata_type = 10 AND {SONIC})
    GROUP BY sid, g))
);",
        common = common_parts()
    )
}

/// An incremental sample after `max_id` / `max_changed`: rows inserted since (AUTOINCREMENT ids
/// only grow) and track rows changed since (Plex stamps every change with a new, increasing
/// `changed_at`: in the real fixture each row has a distinct one), both on indexes.
fn incremental_sql(max_id: i64, max_changed: i64) -> String {
    format!(
        "SELECT json_object(
 {common},
 'sections', (SELECT json_group_array(json_array(s.id, s.name, s.section_type))
    FROM library_sections s),
 'new_rows', (SELECT json_group_array(json_array(sid, mt, n)) FROM (
    SELECT library_section_id AS sid, metadata_type AS mt, count(*) AS n
    FROM metadata_items WHERE id > {max_id} GROUP BY sid + 0, mt + 0)),
 'changed', (SELECT json_group_array(json_array(id, library_section_id, coalesce({SONIC}, 0)))
    FROM metadata_items WHERE changed_at > {max_changed} AND +metadata_type = 10)
);",
        common = common_parts()
    )
}

/// (id, name, section type)
type SectionRow = (i64, Option<String>, Option<i64>);
/// (section, metadata type, rows, of which Sonic-analysed)
type TrashRow = (Option<i64>, Option<i64>, i64, Option<i64>);

/// What both queries return (`sections` rows carry the leaf count only in a full sample).
#[derive(serde::Deserialize)]
struct Answer {
    max_id: i64,
    max_changed: i64,
    sections: Vec<SectionRow>,
    trash: Vec<TrashRow>,
    thumbs: Vec<(Option<i64>, i64)>,
    /// Full samples only: (section, leaf metadata type, rows).
    #[serde(default)]
    leaves: Vec<(Option<i64>, Option<i64>, i64)>,
    #[serde(default)]
    sonic_ranges: Vec<(Option<i64>, i64, i64)>,
    #[serde(default)]
    new_rows: Vec<(Option<i64>, Option<i64>, i64)>,
    #[serde(default)]
    changed: Vec<(i64, Option<i64>, i64)>,
}

/// The DB's change signals: if none moved, nothing that plexburst counts changed either (as long
/// as Plex stamps its changes, which `Sampler` verifies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Signals {
    max_id: i64,
    max_changed: i64,
}

impl Answer {
    fn signals(&self) -> Signals {
        Signals {
            max_id: self.max_id,
            max_changed: self.max_changed,
        }
    }
}

/// A full sample at least this often, to bound how long a hard delete that did not go through
/// the trash can go unnoticed during a long busy stretch (100 polls: about 17 min at 10 s).
const FULL_EVERY: u32 = 100;

/// Ids above this are not tracked in the bitset (memory); such a DB is always sampled in full.
const MAX_TRACKED_ID: i64 = 1 << 33;

/// Analysed-track ids: one bit per id (1,000,000 ids = 125 KB).
#[derive(Debug, Default, Clone)]
struct Bits(Vec<u64>);

impl Bits {
    fn get(&self, id: i64) -> bool {
        if id < 0 {
            return false;
        }
        let (w, b) = ((id / 64) as usize, id % 64);
        self.0.get(w).is_some_and(|x| x & (1 << b) != 0)
    }
    fn set(&mut self, id: i64, on: bool) {
        if id < 0 {
            return;
        }
        let (w, b) = ((id / 64) as usize, id % 64);
        if w >= self.0.len() {
            if !on {
                return;
            }
            self.0.resize(w + 1, 0);
        }
        if on {
            self.0[w] |= 1 << b;
        } else {
            self.0[w] &= !(1 << b);
        }
    }
}

/// What the incremental path carries from one sample to the next.
#[derive(Debug, Clone)]
struct Baseline {
    signals: Signals,
    /// Rows per (section, leaf metadata type) with id <= signals.max_id, deleted or not. Kept
    /// per type, not per section, so rows counted before their section row appears still count.
    leaf_rows: HashMap<(i64, i64), i64>,
    /// Sonic-analysed tracks per section, deleted or not, and which ids they are.
    sonic_rows: HashMap<i64, i64>,
    analysed: Bits,
    /// Rows in the trash per (section, metadata type), and the sections, as last seen.
    trash: HashMap<(i64, i64), i64>,
    sections: Vec<i64>,
    sample: DbSample,
}

/// Which way a sample was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleKind {
    Full,
    Incremental,
}

/// Samples one database over and over, cheaply: the first sample is full; later ones read only
/// what changed since (new row ids, rows with a newer `changed_at`, the trash, photo thumbnails),
/// so a sample costs about the same on a 1,000,000-track library as on a small one.
///
/// Exactness is kept by construction and checked at run time:
/// - if rows may have been deleted for good (a trash count dropped, a section vanished), the
///   sample is recounted in full; a full sample also comes every 100 samples regardless;
/// - after a sample where the DB looked quiet (no new id, no newer `changed_at`),
///   the next sample is full, and is compared with the incremental counts. A difference means
///   this Plex (or emulator) changes rows without stamping `changed_at`; from then on every
///   sample is full. A phase ends on counts that stayed still for several samples, so it always
///   ends on a full, exact count.
#[derive(Debug, Clone)]
pub struct Sampler {
    db_path: String,
    base: Option<Baseline>,
    trust_changed_at: bool,
    /// The last sample was quiet: the next one is full (and checks the incremental state).
    full_next: bool,
    /// Incremental samples since the last full one.
    since_full: u32,
    last_kind: Option<SampleKind>,
}

impl Sampler {
    pub fn new(db_path: impl Into<String>) -> Sampler {
        Sampler {
            db_path: db_path.into(),
            base: None,
            trust_changed_at: true,
            full_next: false,
            since_full: 0,
            last_kind: None,
        }
    }

    pub fn db_path(&self) -> &str {
        &self.db_path
    }

    /// How the last successful sample was taken.
    pub fn last_kind(&self) -> Option<SampleKind> {
        self.last_kind
    }

    /// False once a full sample contradicted the incremental counts (every sample is then full).
    pub fn trusts_changed_at(&self) -> bool {
        self.trust_changed_at
    }

    /// Take one sample: a value or an error, never a silent zero. One `sqlite3` run, except
    /// when the trash shrank or a section vanished (the sample is then recounted in full).
    pub fn sample(&mut self, remote: &dyn Remote) -> Result<DbSample, DbError> {
        let Some(base) = self.base.as_ref().filter(|_| self.trust_changed_at) else {
            return self.full(remote);
        };
        if self.full_next || self.since_full >= FULL_EVERY {
            // The last sample was quiet (or it is time): count from scratch, and check the
            // incremental state against it if the DB still has the same signals.
            let incremental = base.clone();
            let full = self.full(remote)?;
            let contradicted = self.base.as_ref().is_some_and(|b| {
                b.signals == incremental.signals
                    && (nonzero(&b.leaf_rows) != nonzero(&incremental.leaf_rows)
                        || nonzero(&b.sonic_rows) != nonzero(&incremental.sonic_rows))
            });
            if contradicted {
                tracing::warn!(
                    db = %self.db_path,
                    "the database changed without new changed_at stamps; sampling in full from now on"
                );
                self.trust_changed_at = false;
            }
            return Ok(full);
        }
        let sql = incremental_sql(base.signals.max_id, base.signals.max_changed);
        let a: Answer = query_one(remote, &self.db_path, &sql, SAMPLE_TIMEOUT)?;
        let quiet = a.signals() == base.signals;
        let Some(next) = apply_incremental(base, &a) else {
            // Rows were hard-deleted (trash emptied): recount everything.
            return self.full(remote);
        };
        // Nothing stamped a change: either nothing changed, or this server changes rows without
        // stamping them. Only a full count can tell, so the next sample is one. A phase ends on
        // several stable samples in a row, so it always ends on a full, checked count.
        self.full_next = quiet;
        self.since_full += 1;
        let sample = next.sample.clone();
        self.base = Some(next);
        self.last_kind = Some(SampleKind::Incremental);
        Ok(sample)
    }

    fn full(&mut self, remote: &dyn Remote) -> Result<DbSample, DbError> {
        let a: Answer = query_one(remote, &self.db_path, &full_sql(), SAMPLE_TIMEOUT)?;
        let base = baseline_from_full(&a);
        if a.max_id > MAX_TRACKED_ID {
            self.trust_changed_at = false;
        }
        let sample = base.sample.clone();
        self.base = Some(base);
        self.full_next = false;
        self.since_full = 0;
        self.last_kind = Some(SampleKind::Full);
        Ok(sample)
    }
}

fn nonzero<K: Ord + Copy>(m: &HashMap<K, i64>) -> Vec<(K, i64)> {
    let mut v: Vec<(K, i64)> = m
        .iter()
        .filter(|(_, n)| **n != 0)
        .map(|(k, n)| (*k, *n))
        .collect();
    v.sort_unstable();
    v
}

fn baseline_from_full(a: &Answer) -> Baseline {
    let mut leaf_rows = HashMap::new();
    for (sid, mt, n) in &a.leaves {
        *leaf_rows
            .entry((sid.unwrap_or(0), mt.unwrap_or(0)))
            .or_default() += n;
    }
    let mut sonic_rows: HashMap<i64, i64> = HashMap::new();
    let mut analysed = Bits::default();
    if a.max_id <= MAX_TRACKED_ID {
        for (sid, lo, hi) in &a.sonic_ranges {
            *sonic_rows.entry(sid.unwrap_or(0)).or_default() += hi - lo + 1;
            for id in *lo..=*hi {
                analysed.set(id, true);
            }
        }
    } else {
        for (sid, lo, hi) in &a.sonic_ranges {
            *sonic_rows.entry(sid.unwrap_or(0)).or_default() += hi - lo + 1;
        }
    }
    let sample = build_sample(a, &leaf_rows, &sonic_rows);
    Baseline {
        signals: a.signals(),
        leaf_rows,
        sonic_rows,
        analysed,
        trash: trash_map(a),
        sections: a.sections.iter().map(|s| s.0).collect(),
        sample,
    }
}

fn trash_map(a: &Answer) -> HashMap<(i64, i64), i64> {
    let mut m = HashMap::new();
    for (sid, mt, n, _) in &a.trash {
        *m.entry((sid.unwrap_or(0), mt.unwrap_or(0))).or_default() += n;
    }
    m
}

/// The next baseline after an incremental answer; `None` when rows may have been deleted for good.
///
/// Plex deletes rows for good when it empties the trash (rows leave the trash: a trash count
/// drops) or removes a section (a section disappears). Counting the whole table to catch any
/// other hard delete would cost more than the rest of the sample (a `count(*)` walks an index of
/// every row), so any other vanished row is caught by the next full sample instead.
fn apply_incremental(base: &Baseline, a: &Answer) -> Option<Baseline> {
    let trash = trash_map(a);
    if base
        .trash
        .iter()
        .any(|(k, n)| trash.get(k).copied().unwrap_or(0) < *n)
    {
        return None;
    }
    if base
        .sections
        .iter()
        .any(|id| !a.sections.iter().any(|s| s.0 == *id))
    {
        return None;
    }
    let mut next = base.clone();
    next.trash = trash;
    next.sections = a.sections.iter().map(|s| s.0).collect();
    for (sid, mt, n) in &a.new_rows {
        let mt = mt.unwrap_or(0);
        if [1, 4, 10, 13].contains(&mt) {
            *next.leaf_rows.entry((sid.unwrap_or(0), mt)).or_default() += n;
        }
    }
    for (id, sid, now) in &a.changed {
        if !(0..=MAX_TRACKED_ID).contains(id) {
            return None;
        }
        let now = *now != 0;
        if next.analysed.get(*id) != now {
            next.analysed.set(*id, now);
            *next.sonic_rows.entry(sid.unwrap_or(0)).or_default() += if now { 1 } else { -1 };
        }
    }
    next.signals = a.signals();
    next.sample = build_sample(a, &next.leaf_rows, &next.sonic_rows);
    Some(next)
}

fn build_sample(
    a: &Answer,
    leaf_rows: &HashMap<(i64, i64), i64>,
    sonic_rows: &HashMap<i64, i64>,
) -> DbSample {
    let mut sections = Vec::new();
    for (id, name, t) in &a.sections {
        let section_type = t.unwrap_or(0);
        let leaf = leaf_type(section_type);
        let mut deleted = 0;
        let mut deleted_sonic = 0;
        for (sid, mt, n, sonic) in &a.trash {
            if *sid == Some(*id) {
                if *mt == Some(leaf) {
                    deleted += n;
                }
                deleted_sonic += sonic.unwrap_or(0);
            }
        }
        let items = leaf_rows.get(&(*id, leaf)).copied().unwrap_or(0) - deleted;
        let thumbnailed = a
            .thumbs
            .iter()
            .filter(|(sid, _)| *sid == Some(*id))
            .map(|(_, n)| n)
            .sum();
        sections.push(SectionCounts {
            section_id: *id,
            name: name.clone().unwrap_or_default(),
            section_type,
            items,
            tracks: if section_type == 8 { items } else { 0 },
            sonic_analyzed: if section_type == 8 {
                sonic_rows.get(id).copied().unwrap_or(0) - deleted_sonic
            } else {
                0
            },
            photos: if section_type == 13 { items } else { 0 },
            thumbnailed: if section_type == 13 { thumbnailed } else { 0 },
            deleted,
        });
    }
    sections.sort_by_key(|s| s.section_id);
    DbSample { sections }
}

/// Take one full, exact sample of every section's counts from the database at `db_path` on the
/// target. The monitor keeps a [`Sampler`] instead, which makes repeated samples cheap.
pub fn sample(remote: &dyn Remote, db_path: &str) -> Result<DbSample, DbError> {
    Sampler::new(db_path).sample(remote)
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
    let rows: Vec<File> = query_rows(remote, db_path, &sql, FILES_TIMEOUT)?;
    Ok(rows.into_iter().filter_map(|f| f.file).collect())
}

/// The counts of a full sample from the full query's output (what [`sample`] parses); public so
/// the fuzz targets (fuzz/) reach it without a database.
pub fn full_sample_from(stdout: &str) -> Result<DbSample, DbError> {
    let a: Answer = parse_one(stdout)?;
    Ok(baseline_from_full(&a).sample)
}

/// The shell line that runs `sql` read-only on the target in output `mode` (`-json`, `-list`),
/// distinguishing "no sqlite3" (127) and "no database" (66) from a failing query.
pub fn sqlite_script(db_path: &str, sql: &str, mode: &str) -> String {
    let db = crate::remote::quote(db_path);
    let sql = crate::remote::quote(sql);
    // `.timeout` makes the rare moments when a reader must wait (WAL recovery, a checkpoint that
    // truncates) a short wait instead of "database is locked".
    format!(
        "command -v sqlite3 >/dev/null 2>&1 || exit {EXIT_NOT_FOUND}\n\
         [ -f {db} ] || exit {EXIT_NO_DB}\n\
         exec sqlite3 -readonly -bail {mode} -cmd '.timeout 5000' {db} {sql}"
    )
}

/// Run one query through the remote; return its stdout or the classified failure.
fn run_sqlite(
    remote: &dyn Remote,
    db_path: &str,
    sql: &str,
    mode: &str,
    timeout: Duration,
) -> Result<String, DbError> {
    let cmd = Cmd::new(sqlite_script(db_path, sql, mode)).timeout(timeout);
    let out = remote
        .exec(&cmd)
        .map_err(|e| DbError::Query(e.to_string()))?;
    match out.status {
        0 => Ok(out.stdout_str()),
        EXIT_NOT_FOUND => Err(DbError::MissingSqlite {
            target: remote.describe(),
        }),
        EXIT_NO_DB => Err(DbError::Missing {
            target: remote.describe(),
            path: db_path.to_string(),
        }),
        status => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            // JSON functions (3.38, or JSON1 built in), window functions (3.25) and `-json` (3.33)
            // are what an old sqlite3 lacks; say so instead of leaving a bare SQL error.
            let hint = if [
                "no such function: json",
                "unknown option: -json",
                "near \"OVER\"",
            ]
            .iter()
            .any(|m| stderr.contains(m))
            {
                "; this sqlite3 is too old: plexburst needs 3.38 or newer (or JSON1 built in)"
            } else {
                ""
            };
            Err(DbError::Query(format!(
                "sqlite3 on {} exited with status {status}: {}{hint}",
                remote.describe(),
                stderr.trim()
            )))
        }
    }
}

fn parse_error(e: serde_json::Error, stdout: &str) -> DbError {
    DbError::Query(format!(
        "cannot parse sqlite3's output ({e}); it starts with {:?}",
        stdout.chars().take(200).collect::<String>()
    ))
}

/// Run one query whose single row is one JSON text (sqlite3 `-list` prints it as is).
fn query_one<T: serde::de::DeserializeOwned>(
    remote: &dyn Remote,
    db_path: &str,
    sql: &str,
    timeout: Duration,
) -> Result<T, DbError> {
    parse_one(&run_sqlite(remote, db_path, sql, "-list", timeout)?)
}

/// The one JSON text a `-list` query printed.
fn parse_one<T: serde::de::DeserializeOwned>(stdout: &str) -> Result<T, DbError> {
    serde_json::from_str(stdout.trim()).map_err(|e| parse_error(e, stdout))
}

/// Run one query and parse sqlite3's `-json` output (nothing at all for zero rows).
fn query_rows<T: serde::de::DeserializeOwned>(
    remote: &dyn Remote,
    db_path: &str,
    sql: &str,
    timeout: Duration,
) -> Result<Vec<T>, DbError> {
    parse_rows(&run_sqlite(remote, db_path, sql, "-json", timeout)?)
}

/// sqlite3's `-json` output: an array of row objects, or nothing at all for zero rows.
pub fn parse_rows<T: serde::de::DeserializeOwned>(stdout: &str) -> Result<Vec<T>, DbError> {
    if stdout.trim().is_empty() {
        return Ok(Vec::new());
    }
    serde_json::from_str(stdout).map_err(|e| parse_error(e, stdout))
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

    /// A writable copy of the fixture for stock SQLite: the ICU triggers and index go (plex.md §1.3).
    fn writable_copy() -> (tempfile::TempDir, String, rusqlite::Connection) {
        let (dir, db) = fixture_copy();
        let c = rusqlite::Connection::open(&db).unwrap();
        let icu: Vec<(String, String)> = c
            .prepare(
                "SELECT type, name FROM sqlite_master WHERE tbl_name = 'metadata_items'
                   AND (type = 'trigger' OR name = 'index_title_sort_icu')",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for (kind, name) in icu {
            c.execute_batch(&format!("DROP {kind} \"{name}\";"))
                .unwrap();
        }
        (dir, db, c)
    }

    /// What Plex does on every write: stamp the row with the next `changed_at`.
    const STAMP: &str = "(SELECT max(changed_at) + 1 FROM metadata_items)";

    fn analyse(c: &rusqlite::Connection, id: i64, stamp: bool) {
        let set_stamp = if stamp {
            format!(", changed_at = {STAMP}")
        } else {
            String::new()
        };
        c.execute(
            &format!(
                "UPDATE metadata_items SET extra_data = '{{\"ms:musicAnalysisVersion\":\"1\"}}'{set_stamp}
                 WHERE id = ?1"
            ),
            [id],
        )
        .unwrap();
    }

    fn track_ids(c: &rusqlite::Connection) -> Vec<i64> {
        c.prepare("SELECT id FROM metadata_items WHERE metadata_type = 10 ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn incremental_samples_follow_inserts_analysis_and_trash_exactly() {
        let (_dir, db, c) = writable_copy();
        let local = Local::new();
        let mut sampler = Sampler::new(&db);
        let first = sampler.sample(&local).unwrap();
        assert_eq!(sampler.last_kind(), Some(SampleKind::Full));
        assert_eq!(first.section(5).unwrap().tracks, 9);

        // Plex scans in 3 new tracks and a photo, analyses 4 tracks, trashes one analysed track.
        for i in 0..3 {
            c.execute(
                &format!(
                    "INSERT INTO metadata_items(library_section_id, metadata_type, title, changed_at)
                     VALUES (5, 10, 'new {i}', {STAMP})"
                ),
                [],
            )
            .unwrap();
        }
        c.execute(
            &format!(
                "INSERT INTO metadata_items(library_section_id, metadata_type, title, changed_at)
                 VALUES (3, 13, 'IMG_0001', {STAMP})"
            ),
            [],
        )
        .unwrap();
        let tracks = track_ids(&c);
        for id in &tracks[..4] {
            analyse(&c, *id, true);
        }
        // Analysed twice (e.g. loudness after Sonic): counted once.
        analyse(&c, tracks[0], true);
        c.execute(
            &format!("UPDATE metadata_items SET deleted_at = 1700000000, changed_at = {STAMP} WHERE id = ?1"),
            [tracks[1]],
        )
        .unwrap();

        let second = sampler.sample(&local).unwrap();
        assert_eq!(sampler.last_kind(), Some(SampleKind::Incremental));
        let music = second.section(5).unwrap();
        assert_eq!(
            (music.tracks, music.sonic_analyzed, music.deleted),
            (11, 3, 1)
        );
        assert_eq!(second.section(3).unwrap().photos, 10);
        // The incremental sample equals a from-scratch one.
        assert_eq!(second, sample(&local, &db).unwrap());

        // Nothing changed since: a quiet incremental sample, then a full one that confirms it.
        let third = sampler.sample(&local).unwrap();
        assert_eq!(sampler.last_kind(), Some(SampleKind::Incremental));
        let fourth = sampler.sample(&local).unwrap();
        assert_eq!(sampler.last_kind(), Some(SampleKind::Full));
        assert_eq!((&third, &fourth), (&second, &second));
        assert!(sampler.trusts_changed_at());
    }

    #[test]
    fn unstamped_changes_are_caught_and_sampling_turns_full() {
        let (_dir, db, c) = writable_copy();
        let local = Local::new();
        let mut sampler = Sampler::new(&db);
        sampler.sample(&local).unwrap();
        let tracks = track_ids(&c);
        // A writer that does not stamp changed_at (an emulator, or a future Plex).
        analyse(&c, tracks[0], false);
        analyse(&c, tracks[1], false);
        // The DB looks quiet, so this incremental sample cannot see the change...
        let s = sampler.sample(&local).unwrap();
        assert_eq!(sampler.last_kind(), Some(SampleKind::Incremental));
        assert_eq!(s.section(5).unwrap().sonic_analyzed, 0);
        // ...but the next one is full, sees it, and stops trusting changed_at.
        let s = sampler.sample(&local).unwrap();
        assert_eq!(sampler.last_kind(), Some(SampleKind::Full));
        assert_eq!(s.section(5).unwrap().sonic_analyzed, 2);
        assert!(!sampler.trusts_changed_at());
        analyse(&c, tracks[2], false);
        c.execute(
            &format!(
                "INSERT INTO metadata_items(library_section_id, metadata_type, title, changed_at)
                 VALUES (5, 10, 'new', {STAMP})"
            ),
            [],
        )
        .unwrap();
        let s = sampler.sample(&local).unwrap();
        assert_eq!(sampler.last_kind(), Some(SampleKind::Full));
        let music = s.section(5).unwrap();
        assert_eq!((music.tracks, music.sonic_analyzed), (10, 3));
    }

    #[test]
    fn a_section_created_after_the_first_sample_is_counted() {
        let (_dir, db, c) = writable_copy();
        let local = Local::new();
        let mut sampler = Sampler::new(&db);
        sampler.sample(&local).unwrap();
        c.execute_batch(&format!(
            "INSERT INTO library_sections(id, name, section_type, language, agent, scanner)
               VALUES (9, 'More Music', 8, 'en-US', 'tv.plex.agents.music', 'Plex Music');
             INSERT INTO metadata_items(library_section_id, metadata_type, title, changed_at)
               VALUES (9, 10, 'a', {STAMP});
             INSERT INTO metadata_items(library_section_id, metadata_type, title, changed_at,
                 extra_data)
               VALUES (9, 10, 'b', {STAMP}, '{{\"ms:musicAnalysisVersion\":\"1\"}}');"
        ))
        .unwrap();
        let s = sampler.sample(&local).unwrap();
        assert_eq!(sampler.last_kind(), Some(SampleKind::Incremental));
        let more = s.section(9).unwrap();
        assert_eq!(
            (more.name.as_str(), more.tracks, more.sonic_analyzed),
            ("More Music", 2, 1)
        );
        assert_eq!(s, sample(&local, &db).unwrap());
    }

    #[test]
    fn emptying_the_trash_forces_a_full_recount() {
        let (_dir, db, c) = writable_copy();
        let local = Local::new();
        let mut sampler = Sampler::new(&db);
        sampler.sample(&local).unwrap();
        let tracks = track_ids(&c);
        analyse(&c, tracks[0], true);
        // A rescan finds two files gone: Plex moves their tracks to the trash (stamped).
        c.execute(
            &format!(
                "UPDATE metadata_items SET deleted_at = 1700000000, changed_at = {STAMP}
                 WHERE id IN (?1, ?2)"
            ),
            [tracks[0], tracks[5]],
        )
        .unwrap();
        let s = sampler.sample(&local).unwrap();
        assert_eq!(sampler.last_kind(), Some(SampleKind::Incremental));
        let music = s.section(5).unwrap();
        assert_eq!(
            (music.tracks, music.sonic_analyzed, music.deleted),
            (7, 0, 2)
        );
        // Then it empties the trash: the rows vanish without a stamp, while a new movie moves
        // max(id) so the sample is not quiet. The shrinking trash gives it away.
        c.execute(
            "DELETE FROM metadata_items WHERE id IN (?1, ?2)",
            [tracks[0], tracks[5]],
        )
        .unwrap();
        c.execute(
            &format!(
                "INSERT INTO metadata_items(library_section_id, metadata_type, title, changed_at)
                 VALUES (1, 1, 'Movie', {STAMP})"
            ),
            [],
        )
        .unwrap();
        let s = sampler.sample(&local).unwrap();
        assert_eq!(sampler.last_kind(), Some(SampleKind::Full));
        let music = s.section(5).unwrap();
        assert_eq!(
            (music.tracks, music.sonic_analyzed, music.deleted),
            (7, 0, 0)
        );
        assert_eq!(s.section(1).unwrap().items, 6);
        assert!(sampler.trusts_changed_at());
    }

    #[test]
    fn a_row_deleted_outside_the_trash_is_caught_by_the_next_full_sample() {
        let (_dir, db, c) = writable_copy();
        let local = Local::new();
        let mut sampler = Sampler::new(&db);
        sampler.sample(&local).unwrap();
        let tracks = track_ids(&c);
        c.execute("DELETE FROM metadata_items WHERE id = ?1", [tracks[3]])
            .unwrap();
        // Quiet (nothing stamped): the incremental sample still counts 9...
        let s = sampler.sample(&local).unwrap();
        assert_eq!(s.section(5).unwrap().tracks, 9);
        // ...and the full one right after it is exact, and no longer trusts the stamps.
        let s = sampler.sample(&local).unwrap();
        assert_eq!(sampler.last_kind(), Some(SampleKind::Full));
        assert_eq!(s.section(5).unwrap().tracks, 8);
        assert!(!sampler.trusts_changed_at());
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

    /// A local target whose scripts run with a different `PATH`: `path` is the first line of
    /// every script (e.g. `PATH=/only/a/shell`), `dir` holds what that `PATH` points at.
    struct OtherPath {
        name: &'static str,
        path: String,
        _dir: tempfile::TempDir,
    }
    impl Remote for OtherPath {
        fn describe(&self) -> String {
            self.name.into()
        }
        fn exec(&self, cmd: &Cmd) -> Result<crate::remote::Output, crate::remote::RemoteError> {
            Local::new().exec(&Cmd {
                script: format!("{}\n{}", self.path, cmd.script),
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

    /// A target without sqlite3: `PATH` holds only a shell, so `command -v sqlite3` fails.
    fn no_sqlite() -> OtherPath {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/bin/sh", dir.path().join("sh")).unwrap();
        OtherPath {
            name: "bare-host",
            path: format!("PATH={}", dir.path().display()),
            _dir: dir,
        }
    }

    #[test]
    fn missing_sqlite3_is_reported_as_such() {
        let (_dir, db) = fixture_copy();
        match sample(&no_sqlite(), &db) {
            Err(DbError::MissingSqlite { target }) => assert_eq!(target, "bare-host"),
            other => panic!("{other:?}"),
        }
    }

    /// A target whose `sqlite3` is too old for `-json` (an sqlite3 3.31 answers like this).
    fn old_sqlite() -> OtherPath {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("sqlite3");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'sqlite3: Error: unknown option: -json' >&2\nexit 1\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        OtherPath {
            name: "old-host",
            path: format!("PATH={}:$PATH", dir.path().display()),
            _dir: dir,
        }
    }

    #[test]
    fn an_old_sqlite3_is_named_as_the_problem() {
        let (_dir, db) = fixture_copy();
        match section_files(&old_sqlite(), &db, 5) {
            Err(DbError::Query(msg)) => {
                assert!(msg.contains("old-host"), "{msg}");
                assert!(msg.contains("too old"), "{msg}");
            }
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
