//! The library scan: walk each section location on the real filesystem, stat and read the first
//! bytes of every media file (so a broken mount looks to us as it looks to Plex), and write
//! artist/album/track, movie, show/season/episode and photo rows; a rescan updates, adds and
//! soft-deletes (`deleted_at`), plex.md §1.5 and §7.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use sha2::Digest;

use crate::db::unix_now;
use crate::faults::Phase;
use crate::state::{ActivityGuard, State};

/// Files read per transaction: big enough for throughput, small enough to keep readers and
/// SIGTERM responsive.
const BATCH: usize = 2000;
const READ_THREADS: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Movie,
    Show,
    Music,
    Photo,
}

impl Kind {
    pub fn from_section_type(t: i64) -> Option<Kind> {
        match t {
            1 => Some(Kind::Movie),
            2 => Some(Kind::Show),
            8 => Some(Kind::Music),
            13 => Some(Kind::Photo),
            _ => None,
        }
    }
    fn extensions(self) -> &'static [&'static str] {
        match self {
            Kind::Movie | Kind::Show => &["mkv", "mp4", "avi", "m4v", "mov", "ts", "webm"],
            Kind::Music => &[
                "flac", "mp3", "m4a", "aac", "ogg", "opus", "wav", "alac", "wma",
            ],
            Kind::Photo => &["jpg", "jpeg", "png", "heic", "gif", "tif", "tiff", "webp"],
        }
    }
    fn leaf_type(self) -> i64 {
        match self {
            Kind::Movie => 1,
            Kind::Show => 4,
            Kind::Music => 10,
            Kind::Photo => 13,
        }
    }
}

pub struct Section {
    pub id: i64,
    pub kind: Kind,
    pub locations: Vec<(i64, PathBuf)>,
}

pub fn load_section(c: &Connection, id: i64) -> anyhow::Result<Option<Section>> {
    let t: Option<i64> = c
        .query_row(
            "SELECT section_type FROM library_sections WHERE id=?",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    let Some(kind) = t.and_then(Kind::from_section_type) else {
        return Ok(None);
    };
    let mut st = c.prepare(
        "SELECT id, root_path FROM section_locations WHERE library_section_id=? ORDER BY id",
    )?;
    let locations = st
        .query_map([id], |r| {
            Ok((r.get::<_, i64>(0)?, PathBuf::from(r.get::<_, String>(1)?)))
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some(Section {
        id,
        kind,
        locations,
    }))
}

/// How the scan ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Done {
        added: u64,
        updated: u64,
        deleted: u64,
    },
    Cancelled,
    Stopped,
}

/// What reading a file's first bytes told us.
struct Probe {
    size: i64,
    mtime: i64,
    header: [u8; 16],
}

/// Stat the file and read its first bytes, non-blocking so a FIFO (a file that lists but never
/// delivers data) fails instead of hanging, like a dead FUSE mount's EIO.
fn probe(path: &Path, unreadable: &[PathBuf]) -> std::io::Result<Probe> {
    if unreadable.iter().any(|p| path.starts_with(p)) {
        return Err(std::io::Error::other("unreadable by --unreadable knob"));
    }
    let meta = std::fs::metadata(path)?;
    if meta.is_dir() {
        return Err(std::io::Error::other("is a directory"));
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let mut header = [0u8; 16];
    let n = f.read(&mut header)?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "no data",
        ));
    }
    Ok(Probe {
        size: meta.len() as i64,
        mtime: meta.mtime(),
        header,
    })
}

/// A known part from the previous scan.
struct Known {
    part_id: i64,
    media_id: i64,
    meta_id: i64,
    size: i64,
    mtime: i64,
    deleted: bool,
}

struct Ctx<'a> {
    st: &'a State,
    sec: &'a Section,
    now: i64,
    known: HashMap<String, Known>,
    /// `directories` ids by path relative to the location root.
    dirs: HashMap<String, i64>,
    parents: HashMap<(i64, i64, String), i64>,
    seen: HashSet<String>,
    added: u64,
    updated: u64,
}

fn short_hash(s: &str) -> String {
    hex::encode(&sha2::Sha256::digest(s.as_bytes())[..12])
}

/// Scan one section (all locations, or only `only` when given).
pub fn scan_section(
    st: &State,
    c: &mut Connection,
    sec: &Section,
    force: bool,
    only: Option<&Path>,
    act: &ActivityGuard<'_>,
    items_done: &mut u64,
) -> anyhow::Result<Outcome> {
    let now = unix_now();
    let mut ctx = Ctx {
        st,
        sec,
        now,
        known: HashMap::new(),
        dirs: HashMap::new(),
        parents: HashMap::new(),
        seen: HashSet::new(),
        added: 0,
        updated: 0,
    };
    load_known(c, &mut ctx)?;
    // Phase 1: list every candidate file (cheap; gives the progress total).
    let mut files: Vec<(i64, PathBuf, PathBuf)> = Vec::new(); // (location, root, file)
    let mut listed_dirs: Vec<(i64, PathBuf, PathBuf)> = Vec::new();
    let mut unavailable: Vec<PathBuf> = Vec::new();
    for (loc_id, root) in &sec.locations {
        let start = match only {
            Some(p) if p.starts_with(root) => p.to_path_buf(),
            Some(_) => continue,
            None => root.clone(),
        };
        // A root that cannot be listed at all (missing mount point, dead mount) marks the
        // location unavailable and protects its items; a root that lists (even empty) does not.
        let available = std::fs::read_dir(root).is_ok();
        c.execute(
            "UPDATE section_locations SET available=? WHERE id=?",
            params![available, loc_id],
        )?;
        if !available {
            st.log(&format!(
                "Scanner: location {} is unavailable; its items are kept",
                root.display()
            ));
            unavailable.push(root.clone());
            continue;
        }
        // An incremental scan (force=0) of a location scanned before revisits the folders it
        // knows and nothing else (plex.md §7: "only revisits known paths; after S3
        // restructuring use force=1"): a folder that is new or moved stays unseen.
        let scanned_before: bool = c.query_row(
            "SELECT scanned_at IS NOT NULL FROM section_locations WHERE id=?",
            [loc_id],
            |r| r.get(0),
        )?;
        let incremental = !force && scanned_before;
        let mut skipped = 0u64;
        walk(
            &start,
            sec.kind,
            &mut |dir| {
                let rel = dir.strip_prefix(root).unwrap_or(dir).to_string_lossy();
                let known = !incremental || ctx.dirs.contains_key(rel.as_ref());
                skipped += u64::from(!known);
                known
            },
            &mut |dir| listed_dirs.push((*loc_id, root.clone(), dir.to_path_buf())),
            &mut |f| files.push((*loc_id, root.clone(), f)),
        );
        if skipped > 0 {
            st.log(&format!(
                "Scanner: incremental scan of {} did not enter {skipped} folders it does not know (force=1 does)",
                root.display()
            ));
        }
    }
    let total = files.len() as u64;
    st.log(&format!("Scanner: section {} listed {total} files", sec.id));
    let fault = st.faults.armed(Phase::Scan, &st.dd.config);
    let rate = st.opts.scan_rate;
    let t0 = Instant::now();
    let mut done = 0u64;
    // Directories first, so parts can point at them.
    {
        let tx = c.transaction()?;
        for (_, root, dir) in &listed_dirs {
            ensure_dir(&tx, &mut ctx, root, dir)?;
        }
        tx.commit()?;
    }
    let batch = if rate.is_some() { 50 } else { BATCH };
    // Reading files happens in a `Plex Media Scanner` child, as real scans do (plex.md §5).
    let mut prober = ProbeChild::start(st, sec.id)?;
    let chunks: Vec<&[(i64, PathBuf, PathBuf)]> = files.chunks(batch).collect();
    if let Some(first) = chunks.first() {
        prober.send(first)?;
    }
    for (k, chunk) in chunks.iter().enumerate() {
        let probes = prober.recv(chunk.len())?;
        if let Some(next) = chunks.get(k + 1) {
            prober.send(next)?;
        }
        let tx = c.transaction()?;
        let mut stop = None;
        for ((loc, root, file), pr) in chunk.iter().zip(probes) {
            if let Ok(pr) = pr {
                upsert(&tx, &mut ctx, *loc, root, file, &pr, force)?;
            }
            done += 1;
            *items_done += 1;
            if let Some((crash, after)) = fault
                && *items_done >= after
            {
                stop = Some(crash);
                break;
            }
        }
        tx.commit()?;
        act.progress(done, total);
        if let Some(crash) = stop {
            st.fire_fault(crash, Phase::Scan);
            return Ok(Outcome::Stopped);
        }
        if act.cancelled() {
            return Ok(if st.stopping() {
                Outcome::Stopped
            } else {
                Outcome::Cancelled
            });
        }
        if let Some(r) = rate {
            let due = Duration::from_secs_f64(done as f64 / r.max(0.001));
            let el = t0.elapsed();
            if due > el {
                std::thread::sleep(due - el);
            }
        }
    }
    drop(prober);
    // Phase 3: everything known under the scanned scope that we did not read is gone.
    let deleted = soft_delete_unseen(c, &ctx, only, &unavailable)?;
    let tx = c.transaction()?;
    let dt = crate::db::datetime(now);
    tx.execute(
        "UPDATE library_sections SET scanned_at=?1, updated_at=?1, changed_at=changed_at+1, \
         content_changed_at=content_changed_at+1 WHERE id=?2",
        params![dt, sec.id],
    )?;
    tx.execute(
        "UPDATE section_locations SET scanned_at=?1, updated_at=?1 WHERE library_section_id=?2",
        params![dt, sec.id],
    )?;
    tx.commit()?;
    st.log(&format!(
        "Scanner: section {} done: {} added, {} updated, {deleted} deleted",
        sec.id, ctx.added, ctx.updated
    ));
    Ok(Outcome::Done {
        added: ctx.added,
        updated: ctx.updated,
        deleted,
    })
}

fn walk(
    dir: &Path,
    kind: Kind,
    enter: &mut dyn FnMut(&Path) -> bool,
    on_dir: &mut dyn FnMut(&Path),
    on_file: &mut dyn FnMut(PathBuf),
) {
    if !enter(dir) {
        return;
    }
    on_dir(dir);
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let path = e.path();
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let media_ext = path
            .extension()
            .map(|x| {
                kind.extensions()
                    .contains(&x.to_string_lossy().to_ascii_lowercase().as_str())
            })
            .unwrap_or(false);
        if is_dir {
            walk(&path, kind, enter, on_dir, on_file);
        } else if media_ext {
            on_file(path);
        }
    }
}

fn probe_parallel(paths: &[PathBuf], unreadable: &[PathBuf]) -> Vec<std::io::Result<Probe>> {
    let per = paths.len().div_ceil(READ_THREADS).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .chunks(per)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|f| probe(f, unreadable))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    })
}

/// The scan child (`Plex Media Scanner media-scanner --scan`): read NUL-separated paths on stdin,
/// probe them in parallel batches, answer one line per path in order:
/// `ok\tSIZE\tMTIME\tHEADER_HEX` or `err\tMESSAGE`. Exits on EOF or when the server is gone.
pub fn probe_main(unreadable: &[PathBuf]) -> anyhow::Result<()> {
    use std::io::{BufRead, Write};
    use std::os::unix::ffi::OsStringExt;
    let parent = std::os::unix::process::parent_id();
    let mut input = std::io::stdin().lock();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    loop {
        // A batch ends with an empty record; EOF ends the scan.
        let mut batch = Vec::new();
        let mut eof = false;
        loop {
            let mut rec = Vec::new();
            if input.read_until(0, &mut rec)? == 0 {
                eof = true;
                break;
            }
            if rec.last() == Some(&0) {
                rec.pop();
            }
            if rec.is_empty() {
                break;
            }
            batch.push(PathBuf::from(std::ffi::OsString::from_vec(rec)));
        }
        for r in probe_parallel(&batch, unreadable) {
            let line = match r {
                Ok(p) => format!("ok\t{}\t{}\t{}\n", p.size, p.mtime, hex::encode(p.header)),
                Err(e) => format!("err\t{}\n", e.to_string().replace(['\t', '\n'], " ")),
            };
            if out.write_all(line.as_bytes()).is_err() {
                return Ok(());
            }
        }
        if out.flush().is_err() || eof || std::os::unix::process::parent_id() != parent {
            return Ok(());
        }
    }
}

fn parse_probe(line: &str) -> std::io::Result<Probe> {
    let f: Vec<&str> = line.trim_end().split('\t').collect();
    match f.as_slice() {
        ["ok", size, mtime, head] => {
            let mut header = [0u8; 16];
            let bytes = hex::decode(head).unwrap_or_default();
            header[..bytes.len().min(16)].copy_from_slice(&bytes[..bytes.len().min(16)]);
            Ok(Probe {
                size: size.parse().unwrap_or(0),
                mtime: mtime.parse().unwrap_or(0),
                header,
            })
        }
        _ => Err(std::io::Error::other(
            f.get(1).copied().unwrap_or("unreadable").to_string(),
        )),
    }
}

/// The running scan child, fed one batch ahead so it reads files while we write the DB; killed
/// when the scan ends, however it ends.
struct ProbeChild {
    child: std::process::Child,
    stdin: std::io::BufWriter<std::process::ChildStdin>,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

impl ProbeChild {
    fn start(st: &State, section: i64) -> anyhow::Result<ProbeChild> {
        use std::io::BufRead;
        let mut args = vec![
            "--scan".to_string(),
            "--section".into(),
            section.to_string(),
        ];
        for u in &st.opts.unreadable {
            args.extend(["--unreadable".into(), u.to_string_lossy().into_owned()]);
        }
        let mut child = crate::scanner::spawn(&args)?;
        let stdin = std::io::BufWriter::new(child.stdin.take().expect("piped stdin"));
        let lines = std::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        Ok(ProbeChild {
            child,
            stdin,
            lines,
        })
    }

    fn send(&mut self, batch: &[(i64, PathBuf, PathBuf)]) -> anyhow::Result<()> {
        use std::io::Write;
        use std::os::unix::ffi::OsStrExt;
        for (_, _, f) in batch {
            self.stdin.write_all(f.as_os_str().as_bytes())?;
            self.stdin.write_all(&[0])?;
        }
        self.stdin.write_all(&[0])?;
        self.stdin.flush()?;
        Ok(())
    }

    fn recv(&mut self, n: usize) -> anyhow::Result<Vec<std::io::Result<Probe>>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let line = self
                .lines
                .next()
                .ok_or_else(|| anyhow::anyhow!("the scanner child exited early"))??;
            out.push(parse_probe(&line));
        }
        Ok(out)
    }
}

impl Drop for ProbeChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn load_known(c: &Connection, ctx: &mut Ctx<'_>) -> anyhow::Result<()> {
    let mut q = c.prepare(
        "SELECT mp.id, mp.file, mp.size, mp.updated_at, mp.deleted_at, mi.id, mi.metadata_item_id \
         FROM media_parts mp JOIN media_items mi ON mi.id = mp.media_item_id WHERE mi.library_section_id = ?",
    )?;
    let rows = q.query_map([ctx.sec.id], |r| {
        Ok((
            r.get::<_, String>(1)?,
            Known {
                part_id: r.get(0)?,
                size: r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                mtime: r.get::<_, Option<i64>>(3)?.unwrap_or(0),
                deleted: r.get::<_, Option<i64>>(4)?.is_some(),
                media_id: r.get(5)?,
                meta_id: r.get(6)?,
            },
        ))
    })?;
    for r in rows {
        let (f, k) = r?;
        ctx.known.insert(f, k);
    }
    let mut q = c.prepare(
        "SELECT id, parent_directory_id, path FROM directories WHERE library_section_id=?",
    )?;
    let rows = q.query_map([ctx.sec.id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, Option<i64>>(1)?,
            r.get::<_, Option<String>>(2)?,
        ))
    })?;
    for r in rows {
        let (id, _parent, path) = r?;
        ctx.dirs.insert(path.unwrap_or_default(), id);
    }
    let mut q = c.prepare(
        "SELECT id, metadata_type, COALESCE(parent_id, 0), title FROM metadata_items \
         WHERE library_section_id=? AND metadata_type IN (2,3,8,9,14)",
    )?;
    let rows = q.query_map([ctx.sec.id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    for r in rows {
        let (id, t, parent, title) = r?;
        ctx.parents.insert((t, parent, title), id);
    }
    Ok(())
}

/// The `directories` row of a directory (relative path from the location root, "" for the root).
fn ensure_dir(
    tx: &Transaction<'_>,
    ctx: &mut Ctx<'_>,
    root: &Path,
    dir: &Path,
) -> anyhow::Result<i64> {
    let rel = dir
        .strip_prefix(root)
        .unwrap_or(dir)
        .to_string_lossy()
        .into_owned();
    if let Some(id) = ctx.dirs.get(&rel) {
        tx.execute(
            "UPDATE directories SET deleted_at=NULL WHERE id=? AND deleted_at IS NOT NULL",
            [id],
        )?;
        return Ok(*id);
    }
    let parent = if rel.is_empty() {
        None
    } else {
        let p = dir.parent().unwrap_or(root);
        Some(ensure_dir(tx, ctx, root, p)?)
    };
    let dt = crate::db::datetime(ctx.now);
    tx.prepare_cached(
        "INSERT INTO directories(library_section_id, parent_directory_id, path, created_at, updated_at) VALUES (?,?,?,?,?)",
    )?
    .execute(params![ctx.sec.id, parent, rel, dt, dt])?;
    let id = tx.last_insert_rowid();
    ctx.dirs.insert(rel, id);
    Ok(id)
}

/// Split "Name (1999)" into ("Name", Some(1999)).
fn title_year(s: &str) -> (String, Option<i64>) {
    if let Some(open) = s.rfind(" (")
        && s.ends_with(')')
        && let Ok(y) = s[open + 2..s.len() - 1].parse::<i64>()
    {
        return (s[..open].to_string(), Some(y));
    }
    (s.to_string(), None)
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn leading_number(s: &str) -> Option<i64> {
    let d: String = s.chars().take_while(char::is_ascii_digit).collect();
    d.parse().ok()
}

/// `S01E02` anywhere in a name.
fn season_episode(s: &str) -> Option<(i64, i64)> {
    let u = s.to_ascii_uppercase();
    let b = u.as_bytes();
    for i in 0..b.len() {
        if b[i] == b'S' && i + 1 < b.len() && b[i + 1].is_ascii_digit() {
            let rest = &u[i + 1..];
            let sn = leading_number(rest)?;
            let after = &rest[rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len())..];
            if let Some(e) = after.strip_prefix('E') {
                return Some((sn, leading_number(e)?));
            }
        }
    }
    None
}

#[allow(clippy::too_many_arguments)]
fn parent_item(
    tx: &Transaction<'_>,
    ctx: &mut Ctx<'_>,
    mtype: i64,
    parent: Option<i64>,
    title: &str,
    index: Option<i64>,
    year: Option<i64>,
    guid_kind: &str,
) -> anyhow::Result<i64> {
    let key = (mtype, parent.unwrap_or(0), title.to_string());
    if let Some(id) = ctx.parents.get(&key) {
        tx.prepare_cached(
            "UPDATE metadata_items SET deleted_at=NULL WHERE id=? AND deleted_at IS NOT NULL",
        )?
        .execute([id])?;
        return Ok(*id);
    }
    let guid = format!(
        "plex://{guid_kind}/{}",
        short_hash(&format!("{}/{title}", parent.unwrap_or(0)))
    );
    tx.prepare_cached(
        "INSERT INTO metadata_items(library_section_id, parent_id, metadata_type, guid, title, title_sort, \
         \"index\", year, added_at, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
    )?
    .execute(params![ctx.sec.id, parent, mtype, guid, title, title, index, year, ctx.now, ctx.now, ctx.now])?;
    let id = tx.last_insert_rowid();
    ctx.parents.insert(key, id);
    let folder = match mtype {
        8 => Some("Artists"),
        9 => Some("Albums"),
        2 => Some("TV Shows"),
        _ => None,
    };
    if let Some(folder) = folder {
        write_bundle(&ctx.st.dd.metadata().join(folder), &guid, title);
    }
    Ok(id)
}

/// A Metadata bundle shaped like the real data folder (real-pms-data-folder-layout.tsv).
pub fn write_bundle(base: &Path, guid: &str, title: &str) {
    let h = crate::prefs::sha1_hex(guid.as_bytes());
    let contents = base
        .join(&h[..1])
        .join(format!("{}.bundle", &h[1..]))
        .join("Contents");
    let info = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Info guid=\"{}\" title=\"{}\"/>\n",
        crate::xml::xml_escape(guid),
        crate::xml::xml_escape(title)
    );
    for sub in ["_combined", "com.plexapp.agents.localmedia"] {
        let d = contents.join(sub);
        if std::fs::create_dir_all(&d).is_ok() {
            let _ = std::fs::write(d.join("Info.xml"), &info);
        }
    }
}

/// container, video codec, audio codec, width, height, bitrate.
type MediaShape<'a> = (
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

fn upsert(
    tx: &Transaction<'_>,
    ctx: &mut Ctx<'_>,
    loc: i64,
    root: &Path,
    file: &Path,
    pr: &Probe,
    force: bool,
) -> anyhow::Result<()> {
    let key = file.to_string_lossy().into_owned();
    ctx.seen.insert(key.clone());
    if let Some(k) = ctx.known.get(&key) {
        let changed = k.size != pr.size || k.mtime != pr.mtime;
        if k.deleted || changed || force {
            let (part, media, meta) = (k.part_id, k.media_id, k.meta_id);
            tx.prepare_cached(
                "UPDATE media_parts SET size=?, updated_at=?, deleted_at=NULL WHERE id=?",
            )?
            .execute(params![pr.size, pr.mtime, part])?;
            tx.prepare_cached(
                "UPDATE media_items SET size=?, updated_at=?, deleted_at=NULL WHERE id=?",
            )?
            .execute(params![pr.size, ctx.now, media])?;
            tx.prepare_cached(
                "UPDATE metadata_items SET updated_at=?, deleted_at=NULL WHERE id=? OR id=(SELECT parent_id FROM \
                 metadata_items WHERE id=?) OR id=(SELECT parent_id FROM metadata_items WHERE id=(SELECT parent_id \
                 FROM metadata_items WHERE id=?))",
            )?
            .execute(params![ctx.now, meta, meta, meta])?;
            ctx.updated += 1;
        }
        return Ok(());
    }
    let rel = file.strip_prefix(root).unwrap_or(file);
    let comps: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let dir_id = ensure_dir(tx, ctx, root, file.parent().unwrap_or(root))?;
    let name = stem(file);
    let ext = file
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let leaf_type = ctx.sec.kind.leaf_type();
    let (parent, title, index, year, guid_kind) = match ctx.sec.kind {
        Kind::Music => {
            let (artist, album) = match comps.len() {
                0..=1 => (
                    "[Unknown Artist]".to_string(),
                    "[Unknown Album]".to_string(),
                ),
                2 => (comps[0].clone(), "[Unknown Album]".to_string()),
                n => (comps[0].clone(), comps[n - 2].clone()),
            };
            let (album_title, album_year) = title_year(&album);
            let artist_id = parent_item(tx, ctx, 8, None, &artist, None, None, "artist")?;
            let album_id = parent_item(
                tx,
                ctx,
                9,
                Some(artist_id),
                &album_title,
                None,
                album_year,
                "album",
            )?;
            let idx = leading_number(&name);
            let t = name
                .split_once(" - ")
                .map(|(_, t)| t.to_string())
                .unwrap_or(name.clone());
            (Some(album_id), t, idx, album_year, "track")
        }
        Kind::Show => {
            let show = comps.first().cloned().unwrap_or_else(|| name.clone());
            let (show_title, show_year) = title_year(&show);
            let se = season_episode(&name);
            let season = comps
                .get(comps.len().saturating_sub(2))
                .filter(|_| comps.len() >= 3)
                .and_then(|s| {
                    s.strip_prefix("Season ")
                        .and_then(|n| n.trim().parse().ok())
                })
                .or(se.map(|x| x.0))
                .unwrap_or(1);
            let show_id = parent_item(tx, ctx, 2, None, &show_title, None, show_year, "show")?;
            let season_id = parent_item(
                tx,
                ctx,
                3,
                Some(show_id),
                &format!("Season {season}"),
                Some(season),
                None,
                "season",
            )?;
            (
                Some(season_id),
                name.clone(),
                se.map(|x| x.1),
                show_year,
                "episode",
            )
        }
        Kind::Movie => {
            let (t, y) = title_year(&name);
            (None, t, None, y, "movie")
        }
        Kind::Photo => {
            let album = if comps.len() >= 2 {
                comps[comps.len() - 2].clone()
            } else {
                "Photos".into()
            };
            let album_id = parent_item(tx, ctx, 14, None, &album, None, None, "photoalbum")?;
            (Some(album_id), name.clone(), None, None, "photo")
        }
    };
    let guid = if leaf_type == 13 {
        format!("local://{}", short_hash(&key))
    } else {
        format!("plex://{guid_kind}/{}", short_hash(&key))
    };
    let duration: i64 = match leaf_type {
        10 => 180_000 + (pr.size % 120_000),
        1 => 5_400_000,
        4 => 2_400_000,
        _ => 0,
    };
    tx.prepare_cached(
        "INSERT INTO metadata_items(library_section_id, parent_id, metadata_type, guid, media_item_count, title, \
         title_sort, \"index\", duration, year, added_at, created_at, updated_at) VALUES (?,?,?,?,1,?,?,?,?,?,?,?,?)",
    )?
    .execute(params![
        ctx.sec.id, parent, leaf_type, guid, title, title, index, duration, year, ctx.now, ctx.now, ctx.now
    ])?;
    let meta = tx.last_insert_rowid();
    if leaf_type == 1 {
        write_bundle(&ctx.st.dd.metadata().join("Movies"), &guid, &title);
    }
    let (container, vcodec, acodec, w, h, bitrate): MediaShape<'_> = match leaf_type {
        10 => (
            ext.as_str(),
            None,
            Some(ext.as_str()),
            None,
            None,
            Some(900),
        ),
        13 => ("jpeg", None, None, Some(4032), Some(3024), None),
        _ => (
            ext.as_str(),
            Some("h264"),
            Some("aac"),
            Some(1920),
            Some(1080),
            Some(8000),
        ),
    };
    tx.prepare_cached(
        "INSERT INTO media_items(library_section_id, section_location_id, metadata_item_id, width, height, size, \
         duration, bitrate, container, video_codec, audio_codec, created_at, updated_at, media_analysis_version) \
         VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,0)",
    )?
    .execute(params![ctx.sec.id, loc, meta, w, h, pr.size, duration, bitrate, container, vcodec, acodec, ctx.now, ctx.now])?;
    let media = tx.last_insert_rowid();
    let hash = crate::prefs::sha1_hex(key.as_bytes());
    tx.prepare_cached(
        "INSERT INTO media_parts(media_item_id, directory_id, hash, open_subtitle_hash, file, size, duration, \
         created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
    )?
    .execute(params![media, dir_id, hash, hex::encode(&pr.header[..8]), key, pr.size, duration, ctx.now, pr.mtime])?;
    let part = tx.last_insert_rowid();
    let mut stream = tx.prepare_cached(
        "INSERT INTO media_streams(stream_type_id, media_item_id, codec, created_at, updated_at, \"index\", \
         media_part_id, channels, bitrate, \"default\") VALUES (?,?,?,?,?,?,?,?,?,1)",
    )?;
    if let Some(v) = vcodec {
        stream.execute(params![
            1,
            media,
            v,
            ctx.now,
            ctx.now,
            0,
            part,
            None::<i64>,
            bitrate
        ])?;
    }
    if let Some(a) = acodec {
        stream.execute(params![2, media, a, ctx.now, ctx.now, 1, part, 2, bitrate])?;
    }
    ctx.added += 1;
    Ok(())
}

/// Soft-delete every known, live part under the scanned scope that this scan did not read, then
/// the parents left without live children (the field-reported "degraded mount deletes" path).
fn soft_delete_unseen(
    c: &mut Connection,
    ctx: &Ctx<'_>,
    only: Option<&Path>,
    unavailable: &[PathBuf],
) -> anyhow::Result<u64> {
    let in_scope = |f: &str| {
        let p = Path::new(f);
        if unavailable.iter().any(|u| p.starts_with(u)) {
            return false;
        }
        match only {
            Some(o) => p.starts_with(o),
            None => true,
        }
    };
    let gone: Vec<&Known> = ctx
        .known
        .iter()
        .filter(|(f, k)| !k.deleted && !ctx.seen.contains(*f) && in_scope(f))
        .map(|(_, k)| k)
        .collect();
    let tx = c.transaction().context("soft delete")?;
    for k in &gone {
        tx.prepare_cached("UPDATE media_parts SET deleted_at=? WHERE id=?")?
            .execute([ctx.now, k.part_id])?;
        tx.prepare_cached("UPDATE media_items SET deleted_at=? WHERE id=?")?
            .execute([ctx.now, k.media_id])?;
        tx.prepare_cached("UPDATE metadata_items SET deleted_at=? WHERE id=?")?
            .execute([ctx.now, k.meta_id])?;
    }
    // Parents (albums/seasons/photo albums, then artists/shows) without a live child.
    for _ in 0..2 {
        tx.execute(
            "UPDATE metadata_items SET deleted_at=?1 WHERE library_section_id=?2 AND deleted_at IS NULL \
             AND metadata_type IN (2,3,8,9,14) AND NOT EXISTS (SELECT 1 FROM metadata_items c \
             WHERE c.parent_id = metadata_items.id AND c.deleted_at IS NULL)",
            params![ctx.now, ctx.sec.id],
        )?;
    }
    let dt = crate::db::datetime(ctx.now);
    if only.is_none() {
        tx.execute(
            "UPDATE directories SET deleted_at=?1 WHERE library_section_id=?2 AND deleted_at IS NULL AND NOT EXISTS \
             (SELECT 1 FROM media_parts p WHERE p.directory_id=directories.id AND p.deleted_at IS NULL) AND NOT EXISTS \
             (SELECT 1 FROM directories d WHERE d.parent_directory_id=directories.id AND d.deleted_at IS NULL) AND path<>''",
            params![dt, ctx.sec.id],
        )?;
    }
    tx.commit()?;
    Ok(gone.len() as u64)
}

/// `PUT /library/sections/{id}/emptyTrash`, and after a scan while `autoEmptyTrash` is on: delete
/// the rows of soft-deleted items for good.
pub fn empty_trash(c: &mut Connection, section: i64) -> anyhow::Result<u64> {
    let tx = c.transaction()?;
    tx.execute(
        "DELETE FROM media_streams WHERE media_item_id IN (SELECT id FROM media_items WHERE library_section_id=?1 AND deleted_at IS NOT NULL)",
        [section],
    )?;
    tx.execute(
        "DELETE FROM media_parts WHERE deleted_at IS NOT NULL AND media_item_id IN (SELECT id FROM media_items WHERE library_section_id=?1)",
        [section],
    )?;
    tx.execute(
        "DELETE FROM media_items WHERE library_section_id=?1 AND deleted_at IS NOT NULL",
        [section],
    )?;
    tx.execute("DELETE FROM taggings WHERE metadata_item_id IN (SELECT id FROM metadata_items WHERE library_section_id=?1 AND deleted_at IS NOT NULL)", [section])?;
    let n = tx.execute(
        "DELETE FROM metadata_items WHERE library_section_id=?1 AND deleted_at IS NOT NULL",
        [section],
    )?;
    tx.execute(
        "DELETE FROM directories WHERE library_section_id=?1 AND deleted_at IS NOT NULL",
        [section],
    )?;
    tx.commit()?;
    Ok(n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_like_the_generator_writes_them() {
        assert_eq!(
            title_year("Blue Harbor (1999)"),
            ("Blue Harbor".into(), Some(1999))
        );
        assert_eq!(title_year("No Year"), ("No Year".into(), None));
        assert_eq!(season_episode("The Show - S02E11"), Some((2, 11)));
        assert_eq!(leading_number("07 - Song"), Some(7));
    }
}
