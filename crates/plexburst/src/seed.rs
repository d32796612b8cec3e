//! A seeded run's database work, as shell text run through a `Remote`: where the seed comes
//! from, checking a Plex DB without touching its ICU objects, repairing it with `.recover`,
//! remapping media paths, and sampling its paths against the storage.
//!
//! A real Plex DB has an index with the `icu_root` collation and FTS tables with the `collating`
//! tokenizer (plex.md §1.3): stock `sqlite3` fails `PRAGMA integrity_check`, `quick_check` and any
//! UPDATE of `metadata_items` on it. So the check runs `quick_check(TABLE)` on each table without
//! an ICU index or trigger and reads every row of the others (no index, no trigger involved);
//! writes go through the plan's `sqlite` line, which on the docker runtime is the image's own
//! `Plex SQLite` (the build with those collations). The same scripts run on this machine (the
//! check of a local seed before anything is rented) and on the target.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::error::BadInput;
use crate::remote::{Cmd, Remote, quote};

/// Where the seed is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "on", rename_all = "lowercase")]
pub enum SeedSource {
    /// A file on this machine, copied to the target.
    Local { path: String },
    /// A file already on the target.
    Target { path: String },
    /// An object of the rclone storage's bucket (`bucket/key`), copied with the run's rclone.
    Bucket { object: String },
}

impl SeedSource {
    /// `target:/path`, `bucket:bucket/key` or a path on this machine.
    pub fn parse(s: &str) -> Result<SeedSource, BadInput> {
        let empty = |what: &str| {
            BadInput(format!(
                "--seed {s:?} names no {what}; give a file, e.g. --seed ./home.tar.zst, --seed target:/srv/home.db or --seed bucket:my-media/exports/x.tar.zst"
            ))
        };
        if let Some(p) = s.strip_prefix("target:") {
            if !p.starts_with('/') {
                return Err(BadInput(format!(
                    "--seed {s:?}: a path on the target must be absolute, e.g. target:/srv/home.db"
                )));
            }
            return Ok(SeedSource::Target { path: p.into() });
        }
        if let Some(o) = s.strip_prefix("bucket:") {
            let o = o.trim_start_matches('/');
            if o.is_empty() {
                return Err(empty("object"));
            }
            return Ok(SeedSource::Bucket { object: o.into() });
        }
        if s.is_empty() {
            return Err(empty("file"));
        }
        Ok(SeedSource::Local { path: s.into() })
    }

    pub fn describe(&self) -> String {
        match self {
            SeedSource::Local { path } => format!("{path} (this machine)"),
            SeedSource::Target { path } => format!("{path} (on the target)"),
            SeedSource::Bucket { object } => format!("{object} (in the bucket)"),
        }
    }

    pub fn file_name(&self) -> &str {
        let p = match self {
            SeedSource::Local { path } | SeedSource::Target { path } => path,
            SeedSource::Bucket { object } => object,
        };
        p.rsplit('/').next().unwrap_or(p)
    }
}

/// What the seed file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeedKind {
    /// A plexburst export (`.tar.zst` of the data folder).
    Archive,
    /// A bare `com.plexapp.plugins.library.db`.
    Db,
}

const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

impl SeedKind {
    /// From the first bytes of the file; `None`: neither an archive nor a SQLite DB.
    pub fn sniff(head: &[u8]) -> Option<SeedKind> {
        if head.starts_with(SQLITE_MAGIC) {
            Some(SeedKind::Db)
        } else if head.starts_with(ZSTD_MAGIC) {
            Some(SeedKind::Archive)
        } else {
            None
        }
    }

    /// From the name, for a seed this machine cannot read.
    pub fn from_name(name: &str) -> Option<SeedKind> {
        if name.ends_with(".tar.zst") {
            Some(SeedKind::Archive)
        } else if name.ends_with(".db") {
            Some(SeedKind::Db)
        } else {
            None
        }
    }
}

/// The tables a Plex library DB cannot be without (plex.md §1.3).
pub const CORE_TABLES: [&str; 6] = [
    "library_sections",
    "section_locations",
    "directories",
    "metadata_items",
    "media_items",
    "media_parts",
];

/// Prints one line per table: `TABLE<TAB>quick|read<TAB>result` (`ok`, or the error), or a
/// single `open<TAB>error` line when the file does not open as a SQLite DB.
pub fn check_script(db: &str) -> String {
    let db = quote(db);
    format!(
        r#"command -v sqlite3 >/dev/null 2>&1 || {{ echo "sqlite3 is not installed" >&2; exit 127; }}
db={db}
# writable_schema: a schema naming a root page past a truncated end still loads, so the tables
# that are whole can be told from those that are not.
ro() {{ sqlite3 -readonly -bail -cmd '.timeout 5000' -cmd 'PRAGMA writable_schema=ON' "$db" "$@"; }}
q() {{ ro "$1" 2>&1 | head -n 3 | tr '\t\n' '  '; }}
tables=$(ro "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' AND instr(name,'_icu')=0 AND sql NOT LIKE 'CREATE VIRTUAL%' ORDER BY name" 2>&1) || {{ printf 'open\t%s\n' "$(printf '%s' "$tables" | tr '\t\n' '  ')"; exit 0; }}
for t in $tables; do
  case "$t" in *[!A-Za-z0-9_]*) continue;; esac
  icu=$(ro "SELECT count(*) FROM sqlite_master WHERE tbl_name='$t' AND type IN ('index','trigger') AND sql LIKE '%icu%'" 2>/dev/null)
  if [ "$icu" = 0 ]; then
    printf '%s\tquick\t%s\n' "$t" "$(q "PRAGMA quick_check('$t')")"
  else
    r=$(q "SELECT count(*), sum(length(quote(rowid))) FROM \"$t\" NOT INDEXED WHERE rowid IS NOT NULL")
    case "$r" in *rror*|*malformed*|*corrupt*) ;; *) r=ok;; esac
    printf '%s\tread\t%s\n' "$t" "$r"
  fi
done
"#
    )
}

/// What `check_script` found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Tables checked with `quick_check`, and by reading every row (those with ICU objects).
    pub quick_checked: u32,
    pub read_checked: u32,
    /// `table: error`, and missing core tables.
    pub problems: Vec<String>,
}

impl CheckResult {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The tables the problems name (those a rebuild reads in id ranges).
    pub fn damaged_tables(&self) -> Vec<String> {
        self.problems
            .iter()
            .filter_map(|p| p.split_once(':').map(|(t, _)| t.to_string()))
            .collect()
    }
}

pub fn parse_check(out: &str) -> CheckResult {
    let mut r = CheckResult::default();
    let mut seen = Vec::new();
    for line in out.lines() {
        let f: Vec<&str> = line.splitn(3, '\t').collect();
        match f.as_slice() {
            ["open", err] => r.problems.push(format!("does not open: {}", err.trim())),
            [t, how, res] => {
                seen.push(t.to_string());
                match *how {
                    "quick" => r.quick_checked += 1,
                    _ => r.read_checked += 1,
                }
                if res.trim() != "ok" {
                    r.problems.push(format!("{t}: {}", res.trim()));
                }
            }
            _ => {}
        }
    }
    if !r.problems.iter().any(|p| p.starts_with("does not open")) {
        for t in CORE_TABLES {
            if !seen.iter().any(|s| s == t) {
                r.problems
                    .push(format!("{t}: missing (not a Plex library DB?)"));
            }
        }
    }
    r
}

/// Check `db` through `remote`.
pub fn check(remote: &dyn Remote, db: &str) -> anyhow::Result<CheckResult> {
    let out = remote
        .run(&Cmd::new(check_script(db)).timeout(std::time::Duration::from_secs(3600)))
        .with_context(|| format!("cannot check the seed DB {db}"))?;
    Ok(parse_check(&out.stdout_str()))
}

/// How a damaged DB was rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rebuilt {
    /// The shell's `.recover` (needs a sqlite3 built with `sqlite_dbpage`).
    Recover,
    /// Table by table: the schema, every table's rows read without its indexes (a damaged table in
    /// id ranges, so only the ranges on lost pages are lost), then indexes, FTS and triggers.
    Copy,
}

/// Rebuild `db` into `db.recovered` with `.recover`, written with `sqlite` (the plan's Plex SQLite
/// line); exits 3 when that yields no DB. Debian's sqlite3 3.40 is built without `sqlite_dbpage`,
/// which `.recover` needs: there `recover_by_copy` does the work.
pub fn recover_script(sqlite: &str, db: &str) -> String {
    let (d, new) = (quote(db), quote(&format!("{db}.recovered")));
    let sql = quote(&format!("{db}.recover.sql"));
    format!(
        "rm -f {new} {sql}\nsqlite3 {d} .recover > {sql} 2>/dev/null && grep -q 'CREATE TABLE' {sql} || {{ rm -f {sql}; exit 3; }}\n\
         {sqlite} {new} < {sql} >/dev/null 2>&1; rm -f {sql}\n[ -s {new} ] || exit 3\n"
    )
}

/// The SQL that rebuilds the DB attached as `o` into an empty main DB, table by table.
/// `schema`: (type, name, tbl_name, sql) of `sqlite_master`; `seqs`: AUTOINCREMENT high-water
/// marks, the id ranges a damaged table is read in.
pub fn copy_sql(
    db: &str,
    schema: &[(String, String, String, String)],
    seqs: &BTreeMap<String, i64>,
    damaged: &[String],
) -> String {
    let lit = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let id = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let virtuals: Vec<&str> = schema
        .iter()
        .filter(|(t, _, _, sql)| t == "table" && sql.starts_with("CREATE VIRTUAL"))
        .map(|(_, n, _, _)| n.as_str())
        .collect();
    // FTS shadow tables are made by their virtual table and refilled by its rebuild.
    let shadow = |n: &str| virtuals.iter().any(|v| n.starts_with(&format!("{v}_")));
    let plain: Vec<&(String, String, String, String)> = schema
        .iter()
        .filter(|(t, n, _, sql)| {
            t == "table"
                && !n.starts_with("sqlite_")
                && !sql.starts_with("CREATE VIRTUAL")
                && !shadow(n)
        })
        .collect();
    let mut out = String::from(
        ".bail off\nPRAGMA journal_mode=OFF;\nPRAGMA synchronous=OFF;\nPRAGMA writable_schema=ON;\n",
    );
    out.push_str(&format!("ATTACH {} AS o;\n", lit(db)));
    for (_, _, _, sql) in &plain {
        out.push_str(&format!("{sql};\n"));
    }
    for (_, n, _, _) in &plain {
        out.push_str(&format!(
            "INSERT OR IGNORE INTO main.{t} SELECT * FROM o.{t} NOT INDEXED;\n",
            t = id(n)
        ));
        if damaged.iter().any(|d| d == n)
            && let Some(top) = seqs.get(n.as_str())
        {
            let mut a = 0;
            while a <= *top {
                out.push_str(&format!(
                    "INSERT OR IGNORE INTO main.{t} SELECT * FROM o.{t} WHERE rowid BETWEEN {a} AND {b};\n",
                    t = id(n),
                    b = a + 499
                ));
                a += 500;
            }
        }
    }
    if !seqs.is_empty() {
        out.push_str("DELETE FROM main.sqlite_sequence;\nINSERT INTO main.sqlite_sequence SELECT * FROM o.sqlite_sequence;\n");
    }
    for (t, n, _, sql) in schema {
        if t == "table" && sql.starts_with("CREATE VIRTUAL") {
            out.push_str(&format!(
                "{sql};\nINSERT INTO main.{v}({v}) VALUES('rebuild');\n",
                v = id(n)
            ));
        }
    }
    for kind in ["index", "trigger"] {
        for (t, _, _, sql) in schema {
            if t == kind {
                out.push_str(&format!("{sql};\n"));
            }
        }
    }
    out.push_str("DETACH o;\nPRAGMA writable_schema=OFF;\n");
    out
}

/// Rebuild a damaged `db` into `db.recovered` (`.recover`, else table by table), check it, and
/// swap it in, keeping the original as `keep`. `Err` when no sound DB came out of either.
pub fn recover(
    remote: &dyn Remote,
    sqlite: &str,
    db: &str,
    keep: &str,
    damaged: &[String],
) -> anyhow::Result<(Rebuilt, CheckResult)> {
    let long = std::time::Duration::from_secs(6 * 3600);
    let new = format!("{db}.recovered");
    let mut how = Rebuilt::Recover;
    // `.recover`'s result, checked once: sound, it is the one swapped in.
    let mut after = match remote.run(&Cmd::new(recover_script(sqlite, db)).timeout(long)) {
        Ok(_) => Some(check(remote, &new)?),
        Err(_) => None,
    };
    if !after.as_ref().is_some_and(CheckResult::ok) {
        how = Rebuilt::Copy;
        let q = |sql: &str| {
            remote.run(
                &Cmd::new(format!(
                    "sqlite3 -readonly -json -cmd 'PRAGMA writable_schema=ON' {} {}",
                    quote(db),
                    quote(sql)
                ))
                .timeout(long),
            )
        };
        let rows = q("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid")
            .context("cannot read the damaged DB's schema: nothing to rebuild from")?
            .stdout_str();
        let rows: Vec<serde_json::Value> = serde_json::from_str(rows.trim()).unwrap_or_default();
        let field = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
        let schema: Vec<(String, String, String, String)> = rows
            .iter()
            .map(|r| {
                (
                    field(r, "type"),
                    field(r, "name"),
                    field(r, "tbl_name"),
                    field(r, "sql"),
                )
            })
            .collect();
        let seqs: BTreeMap<String, i64> = q("SELECT name, seq FROM sqlite_sequence")
            .ok()
            .and_then(|o| {
                serde_json::from_str::<Vec<serde_json::Value>>(o.stdout_str().trim()).ok()
            })
            .unwrap_or_default()
            .iter()
            .filter_map(|r| Some((r["name"].as_str()?.to_string(), r["seq"].as_i64()?)))
            .collect();
        remote
            .run(
                &Cmd::new(format!(
                    "rm -f {n}\n{sqlite} {n} >/dev/null 2>&1; [ -s {n} ]",
                    n = quote(&new)
                ))
                .stdin(copy_sql(db, &schema, &seqs, damaged))
                .timeout(long),
            )
            .context("the table-by-table rebuild wrote nothing")?;
    }
    let after = match after.take() {
        Some(a) if a.ok() => a,
        _ => check(remote, &new)?,
    };
    if after.ok() {
        remote.run(&Cmd::new(format!(
            "set -e\nmv -f {d} {k}\nrm -f {d}-wal {d}-shm\nmv -f {n} {d}\n",
            d = quote(db),
            k = quote(keep),
            n = quote(&new)
        )))?;
    } else {
        remote.run(&Cmd::new(format!("rm -f {}", quote(&new))))?;
    }
    Ok((how, after))
}

/// Extract the library DB (and its WAL) of a plexburst archive into `dir`; prints the DB's path.
pub fn extract_db_script(archive: &str, dir: &str) -> String {
    format!(
        "set -e\nzstd -dc {a} | tar -x -C {d} --wildcards --no-anchored '*{DB_NAME}*'\n\
         f=$(find {d} -name '{DB_NAME}' -type f | head -n 1)\n[ -n \"$f\" ] || {{ echo 'the archive holds no {DB_NAME}' >&2; exit 3; }}\nprintf '%s\\n' \"$f\"\n",
        a = quote(archive),
        d = quote(dir)
    )
}

pub const DB_NAME: &str = "com.plexapp.plugins.library.db";

/// The sections and counts of a seeded DB (plex.md §1.5, §2.2): items per section, tracks,
/// Sonic-analysed tracks, trashed items, and the highest leaf id (new items get higher ids).
pub const COUNTS_SQL: &str = "SELECT s.id, s.name, s.section_type, \
 (SELECT group_concat(root_path, '|') FROM section_locations l WHERE l.library_section_id = s.id), \
 (SELECT count(*) FROM metadata_items m WHERE m.library_section_id = s.id AND m.metadata_type IN (1,4,10,13) AND m.deleted_at IS NULL), \
 (SELECT count(*) FROM metadata_items m WHERE m.library_section_id = s.id AND m.metadata_type = 10 AND m.deleted_at IS NULL), \
 (SELECT count(*) FROM metadata_items m WHERE m.library_section_id = s.id AND m.metadata_type = 10 AND m.deleted_at IS NULL AND m.extra_data LIKE '%ms:musicAnalysisVersion%'), \
 (SELECT count(*) FROM metadata_items m WHERE m.library_section_id = s.id AND m.metadata_type IN (1,4,10,13) AND m.deleted_at IS NOT NULL), \
 (SELECT coalesce(max(id), 0) FROM metadata_items m WHERE m.library_section_id = s.id), \
 (SELECT count(*) FROM metadata_items m WHERE m.library_section_id = s.id AND m.metadata_type = 10 AND m.extra_data LIKE '%ms:musicAnalysisVersion%') \
 FROM library_sections s ORDER BY s.id";

/// One section of a seeded DB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedSection {
    pub id: i64,
    pub name: String,
    pub section_type: i64,
    pub locations: Vec<String>,
    pub items: i64,
    pub tracks: i64,
    pub sonic: i64,
    pub deleted: i64,
    /// Items with a higher id were made after the seed.
    pub max_id: i64,
    /// Sonic-analysed tracks, trashed ones included: analysis is never undone and the trash is
    /// not emptied during a run, so the growth of this count is what the run analysed.
    #[serde(default)]
    pub sonic_all: i64,
}

pub fn parse_counts(out: &str) -> anyhow::Result<Vec<SeedSection>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let [
                id,
                name,
                ty,
                locs,
                items,
                tracks,
                sonic,
                deleted,
                max_id,
                sonic_all,
            ] = f.as_slice()
            else {
                anyhow::bail!("unexpected line from the seed DB: {l:?}");
            };
            let n = |s: &str| s.trim().parse::<i64>().unwrap_or(0);
            Ok(SeedSection {
                id: n(id),
                name: name.to_string(),
                section_type: n(ty),
                locations: locs
                    .split('|')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
                items: n(items),
                tracks: n(tracks),
                sonic: n(sonic),
                deleted: n(deleted),
                max_id: n(max_id),
                sonic_all: n(sonic_all),
            })
        })
        .collect()
}

fn readonly_query(db: &str, sql: &str) -> String {
    format!(
        "sqlite3 -readonly -bail -separator \"$(printf '\\t')\" -cmd '.timeout 5000' {} {}",
        quote(db),
        quote(sql)
    )
}

pub fn counts(remote: &dyn Remote, db: &str) -> anyhow::Result<Vec<SeedSection>> {
    let out = remote
        .run(&Cmd::new(readonly_query(db, COUNTS_SQL)).timeout(std::time::Duration::from_secs(600)))
        .context("cannot count the seed DB's sections")?;
    parse_counts(&out.stdout_str())
}

/// The media path columns (plex.md §1.3, §1.5; the real fixture): locations, parts, and
/// directories whose path is absolute (Plex stores them relative to the location, mostly), and
/// external streams (`file://` URLs).
pub const PATH_COLUMNS: [(&str, &str, &str); 4] = [
    ("section_locations", "root_path", ""),
    ("media_parts", "file", ""),
    ("directories", "path", ""),
    ("media_streams", "url", "file://"),
];

/// One transaction rewriting every `old` prefix to `new` (rules longest first, so each row is
/// rewritten once), printing `table<TAB>rows changed` per column and rule.
pub fn remap_sql(rules: &[(String, String)]) -> String {
    let lit = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut sql = String::from(".bail on\nBEGIN IMMEDIATE;\n");
    // Each row is marked with the rule that rewrites it, so a shorter rule never rewrites a row
    // a longer one did.
    sql.push_str(
        "CREATE TEMP TABLE plexburst_remapped(t TEXT, id INTEGER, rule INTEGER, PRIMARY KEY(t, id));\n",
    );
    for (k, (old, new)) in rules.iter().enumerate() {
        for (table, col, scheme) in PATH_COLUMNS {
            let o = lit(&format!("{scheme}{old}"));
            let n = lit(&format!("{scheme}{new}"));
            let len = scheme.len() + old.len();
            let (from, l1) = (len + 1, len + 1);
            sql.push_str(&format!(
                "INSERT INTO plexburst_remapped SELECT '{table}', id, {k} FROM {table} \
                 WHERE ({col} = {o} OR substr({col}, 1, {l1}) = {o} || '/') \
                 AND id NOT IN (SELECT id FROM plexburst_remapped WHERE t = '{table}');\n\
                 UPDATE {table} SET {col} = {n} || substr({col}, {from}) \
                 WHERE id IN (SELECT id FROM plexburst_remapped WHERE t = '{table}' AND rule = {k});\n\
                 SELECT '{table}.{col}', changes();\n"
            ));
        }
    }
    sql.push_str("COMMIT;\n");
    sql
}

/// Rows changed per `table.column`, summed over the rules.
pub fn parse_remap(out: &str) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for l in out.lines() {
        if let Some((k, v)) = l.split_once('|').or_else(|| l.split_once('\t'))
            && let Ok(n) = v.trim().parse::<i64>()
        {
            // Saturating: a garbled line must not overflow the sum (found by fuzzing).
            let sum = m.entry(k.trim().to_string()).or_insert(0i64);
            *sum = sum.saturating_add(n);
        }
    }
    m
}

/// Back `db` up as `backup`, then remap through `sqlite` (Plex SQLite) in one transaction.
pub fn remap(
    remote: &dyn Remote,
    sqlite: &str,
    db: &str,
    backup: &str,
    rules: &[(String, String)],
) -> anyhow::Result<BTreeMap<String, i64>> {
    let script = format!(
        "set -e\ncp -f {d} {b}\n{sqlite} {d}\n",
        d = quote(db),
        b = quote(backup)
    );
    let out = remote
        .run(
            &Cmd::new(script)
                .stdin(remap_sql(rules))
                .timeout(std::time::Duration::from_secs(3600)),
        )
        .context("the remap of the seed DB's paths failed (the DB is unchanged: it ran in one transaction)")?;
    Ok(parse_remap(&out.stdout_str()))
}

/// What the look-up of a sample of the DB's paths found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PathSample {
    pub sampled: u64,
    pub missing: u64,
    /// Missing paths by top-level folder under their location (most first), at most 10.
    pub missing_by_folder: Vec<(String, u64)>,
}

impl PathSample {
    pub fn share_missing(&self) -> f64 {
        if self.sampled == 0 {
            0.0
        } else {
            self.missing as f64 / self.sampled as f64
        }
    }

    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} of {} sampled paths missing ({:.1} %)",
            self.missing,
            self.sampled,
            100.0 * self.share_missing()
        );
        if !self.missing_by_folder.is_empty() {
            let by: Vec<String> = self
                .missing_by_folder
                .iter()
                .map(|(f, n)| format!("{f}: {n}"))
                .collect();
            s.push_str(&format!(" [{}]", by.join(", ")));
        }
        s
    }
}

/// Look up `n` random live part paths of the DB on the target; prints `ok` or `missing<TAB>path`.
pub fn sample_script(db: &str, n: u32) -> String {
    let sql = format!(
        "SELECT file FROM media_parts WHERE deleted_at IS NULL AND file <> '' ORDER BY random() LIMIT {n}"
    );
    format!(
        "{} | while IFS= read -r f; do if [ -e \"$f\" ]; then echo ok; else printf 'missing\\t%s\\n' \"$f\"; fi; done",
        readonly_query(db, &sql)
    )
}

/// Group the sample's output by the top folder under the location each path belongs to.
pub fn parse_sample(out: &str, locations: &[String]) -> PathSample {
    let mut s = PathSample::default();
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    for l in out.lines() {
        if l == "ok" {
            s.sampled += 1;
        } else if let Some(p) = l.strip_prefix("missing\t") {
            s.sampled += 1;
            s.missing += 1;
            *by.entry(top_folder(p, locations)).or_insert(0) += 1;
        }
    }
    let mut v: Vec<(String, u64)> = by.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(10);
    s.missing_by_folder = v;
    s
}

/// `/srv/Music/Artist/Album/01.flac` under location `/srv/Music` → `/srv/Music/Artist`; a path
/// under no location → its parent folder.
fn top_folder(path: &str, locations: &[String]) -> String {
    for loc in locations {
        if let Some(rest) = path.strip_prefix(&format!("{}/", loc.trim_end_matches('/'))) {
            return match rest.split_once('/') {
                Some((top, _)) => format!("{}/{top}", loc.trim_end_matches('/')),
                None => loc.clone(),
            };
        }
    }
    path.rsplit_once('/')
        .map(|(d, _)| d.to_string())
        .unwrap_or_default()
}

pub fn sample(
    remote: &dyn Remote,
    db: &str,
    n: u32,
    locations: &[String],
) -> anyhow::Result<PathSample> {
    let out = remote
        .run(&Cmd::new(sample_script(db, n)).timeout(std::time::Duration::from_secs(3600)))
        .context("cannot look the seed DB's paths up on the storage")?;
    Ok(parse_sample(&out.stdout_str(), locations))
}

/// Files of items trashed at or after `since` (unix seconds) that still exist on the target:
/// a trash that grew only by files really gone is a delta run's removals, not a glitch.
pub fn trashed_but_present_script(db: &str, since: i64) -> String {
    let sql = format!(
        "SELECT p.file FROM media_parts p JOIN media_items i ON i.id = p.media_item_id \
         JOIN metadata_items m ON m.id = i.metadata_item_id \
         WHERE m.deleted_at IS NOT NULL AND m.deleted_at >= {since} AND p.file <> ''"
    );
    format!(
        "{} | while IFS= read -r f; do [ -e \"$f\" ] && printf '%s\\n' \"$f\"; done; true",
        readonly_query(db, &sql)
    )
}

/// What a seeded run did with its seed (kept in the state and the report).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeedRecord {
    pub source: String,
    /// Unix seconds when the seed was installed: items trashed after it were trashed by the run.
    pub installed_at: i64,
    pub check: CheckResult,
    /// Where the damaged original was kept when the DB was rebuilt, and how it was.
    pub recovered_from: Option<String>,
    #[serde(default)]
    pub rebuilt: Option<Rebuilt>,
    /// The sections as seeded (after the remap).
    pub sections: Vec<SeedSection>,
    /// Rows changed per `table.column` by `[remap]`, and the DB as it was before.
    pub remap: BTreeMap<String, i64>,
    pub remap_backup: Option<String>,
    pub sample: Option<PathSample>,
    /// Per section at the end: what the run added, removed and analysed.
    #[serde(default)]
    pub delta: Vec<SectionDelta>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionDelta {
    pub name: String,
    pub seeded_items: i64,
    pub items: i64,
    pub added: i64,
    pub removed: i64,
    pub seeded_sonic: i64,
    pub sonic: i64,
    pub newly_analysed: i64,
}

/// Per section now: live leaf items made after the seed (`id > max_id`), seeded leaves trashed
/// since, live leaves, Sonic-analysed tracks. `TAB`-separated, one line per seeded section.
pub fn delta_sql(seeded: &[SeedSection]) -> String {
    let mut parts = Vec::new();
    for s in seeded {
        parts.push(format!(
            "SELECT {id}, \
             (SELECT count(*) FROM metadata_items WHERE library_section_id = {id} AND metadata_type IN (1,4,10,13) AND deleted_at IS NULL AND id > {max}), \
             (SELECT count(*) FROM metadata_items WHERE library_section_id = {id} AND metadata_type IN (1,4,10,13) AND deleted_at IS NOT NULL AND id <= {max}), \
             (SELECT count(*) FROM metadata_items WHERE library_section_id = {id} AND metadata_type IN (1,4,10,13) AND deleted_at IS NULL), \
             (SELECT count(*) FROM metadata_items WHERE library_section_id = {id} AND metadata_type = 10 AND deleted_at IS NULL AND extra_data LIKE '%ms:musicAnalysisVersion%'), \
             (SELECT count(*) FROM metadata_items WHERE library_section_id = {id} AND metadata_type = 10 AND extra_data LIKE '%ms:musicAnalysisVersion%')",
            id = s.id,
            max = s.max_id
        ));
    }
    parts.join(" UNION ALL ")
}

pub fn parse_delta(out: &str, seeded: &[SeedSection]) -> Vec<SectionDelta> {
    let mut v = Vec::new();
    for l in out.lines() {
        let f: Vec<i64> = l
            .split('\t')
            .filter_map(|x| x.trim().parse().ok())
            .collect();
        let [id, added, trashed, items, sonic, sonic_all] = f.as_slice() else {
            continue;
        };
        let Some(s) = seeded.iter().find(|s| s.id == *id) else {
            continue;
        };
        v.push(SectionDelta {
            name: s.name.clone(),
            seeded_items: s.items,
            items: *items,
            added: *added,
            removed: trashed.saturating_sub(s.deleted).max(0),
            seeded_sonic: s.sonic,
            sonic: *sonic,
            newly_analysed: sonic_all.saturating_sub(s.sonic_all).max(0),
        });
    }
    v
}

pub fn delta(
    remote: &dyn Remote,
    db: &str,
    seeded: &[SeedSection],
) -> anyhow::Result<Vec<SectionDelta>> {
    if seeded.is_empty() {
        return Ok(Vec::new());
    }
    let out = remote
        .run(
            &Cmd::new(readonly_query(db, &delta_sql(seeded)))
                .timeout(std::time::Duration::from_secs(600)),
        )
        .context("cannot count what the run changed in the seeded library")?;
    Ok(parse_delta(&out.stdout_str(), seeded))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_with_their_prefix() {
        assert_eq!(
            SeedSource::parse("target:/srv/x.db").unwrap(),
            SeedSource::Target {
                path: "/srv/x.db".into()
            }
        );
        assert_eq!(
            SeedSource::parse("bucket:/b/k.tar.zst").unwrap(),
            SeedSource::Bucket {
                object: "b/k.tar.zst".into()
            }
        );
        assert!(SeedSource::parse("target:rel.db").is_err());
        assert!(SeedSource::parse("bucket:").is_err());
        assert_eq!(
            SeedSource::parse("./home.db").unwrap().file_name(),
            "home.db"
        );
    }

    #[test]
    fn kinds_from_magic_and_name() {
        assert_eq!(
            SeedKind::sniff(b"SQLite format 3\0rest"),
            Some(SeedKind::Db)
        );
        assert_eq!(
            SeedKind::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Some(SeedKind::Archive)
        );
        assert_eq!(SeedKind::sniff(b"PK\x03\x04"), None);
        assert_eq!(SeedKind::from_name("a.tar.zst"), Some(SeedKind::Archive));
        assert_eq!(SeedKind::from_name("a.zip"), None);
    }

    #[test]
    fn check_output_names_bad_and_missing_tables() {
        let out = "library_sections\tquick\tok\nmetadata_items\tread\tok\nmedia_parts\tquick\t*** in database main *** Page 7: btree\n";
        let r = parse_check(out);
        assert_eq!((r.quick_checked, r.read_checked), (2, 1));
        assert!(r.problems.iter().any(|p| p.starts_with("media_parts: ***")));
        assert!(
            r.problems
                .iter()
                .any(|p| p.starts_with("section_locations: missing"))
        );
        let open = parse_check("open\tfile is not a database\n");
        assert_eq!(open.problems, vec!["does not open: file is not a database"]);
    }

    #[test]
    fn sample_groups_missing_paths_by_top_folder() {
        let locs = vec!["/m/Music".to_string()];
        let out = "ok\nmissing\t/m/Music/A/x/1.flac\nmissing\t/m/Music/A/y/2.flac\nmissing\t/m/Music/B/3.flac\nok\nmissing\t/other/f.mp3\n";
        let s = parse_sample(out, &locs);
        assert_eq!((s.sampled, s.missing), (6, 4));
        assert_eq!(
            s.missing_by_folder,
            vec![
                ("/m/Music/A".to_string(), 2),
                ("/m/Music/B".to_string(), 1),
                ("/other".to_string(), 1)
            ]
        );
        assert!(
            s.summary()
                .starts_with("4 of 6 sampled paths missing (66.7 %)")
        );
    }

    #[test]
    fn remap_output_sums_per_column() {
        let m =
            parse_remap("media_parts.file|3\nsection_locations.root_path|1\nmedia_parts.file|2\n");
        assert_eq!(m["media_parts.file"], 5);
        assert_eq!(m["section_locations.root_path"], 1);
    }

    /// Found with the `seed_status` fuzz target (on an input written to test it, not in a run):
    /// huge counts in garbled output overflowed the sums and differences (a panic in a debug
    /// build, a wrong number in a release one).
    #[test]
    fn garbled_counts_do_not_overflow() {
        let m = parse_remap("media_parts.file|9223372036854775807\nmedia_parts.file|1\n");
        assert_eq!(m["media_parts.file"], i64::MAX);
        let seeded = parse_counts(
            "1\tMusic\t8\t/m\t5\t0\t0\t-9223372036854775808\t10\t-9223372036854775808\n",
        )
        .unwrap();
        let d = parse_delta("1\t2\t3\t4\t5\t6\n", &seeded);
        assert_eq!((d[0].removed, d[0].newly_analysed), (i64::MAX, i64::MAX));
    }
}
