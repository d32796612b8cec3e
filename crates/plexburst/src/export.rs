//! Export of the Plex data folder: tar | zstd, checksum, verification, manifest.
//!
//! Everything runs on the target through the remote: the archive is written next to the data
//! (`export`), or streamed straight to the bucket of an rclone storage (`export_streamed`); it is
//! never streamed back to this machine. Plex must be stopped first so the DB and its WAL are consistent; the `-wal` and
//! `-shm` files are kept if present. Cache, Logs, Crash Reports, Diagnostics and Updates are left
//! out: Plex regenerates them and they can be most of the folder's size.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::archive::{
    EXPORT_EXCLUDES, WorkFiles, archive_path, list_command, parse_read_back, read_back_script,
    snapshot_command, tar_command, zstd_command,
};
use crate::plex::db::DbSample;
use crate::remote::{Cmd, Remote, quote};
use crate::storage::rclone::{Rclone, UploadSpec, upload_stream};

/// What an export produced (kept in the run state and the report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportRecord {
    pub archive: String,
    pub manifest: String,
    pub sha256: String,
    pub bytes: u64,
    pub files: u64,
}

/// Archiving a big data folder takes a while; this only guards against a hung pipeline.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(12 * 3600);

pub struct ExportJob {
    pub data_dir: String,
    pub destination: String,
    pub run_id: String,
    pub plex_version: Option<String>,
    pub counts: DbSample,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub manifest_version: u32,
    pub run_id: String,
    pub created_at: String,
    pub plexburst_version: String,
    pub plex_version: Option<String>,
    pub archive: String,
    pub sha256: String,
    pub bytes: u64,
    /// Entries (files and directories) in the archive, equal to those found in the data folder.
    pub entries: u64,
    pub excluded: Vec<String>,
    pub sections: Vec<crate::plex::db::SectionCounts>,
}

fn one_number(remote: &dyn Remote, script: String, what: &str) -> anyhow::Result<u64> {
    let out = remote
        .run(&Cmd::new(script).timeout(EXPORT_TIMEOUT))
        .with_context(|| format!("cannot {what}"))?;
    let text = out.stdout_str();
    text.split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .with_context(|| format!("cannot {what}: unexpected output {text:?}"))
}

fn mv_partial(remote: &dyn Remote, partial: &str, archive: &str) -> anyhow::Result<()> {
    remote
        .run(&Cmd::new(format!(
            "mv -f {} {}",
            quote(partial),
            quote(archive)
        )))
        .context("cannot move the archive into place")?;
    Ok(())
}

/// Plex is stopped: nothing may have changed the folder (names, sizes, mtimes) while tar read it.
/// The `-shm` wal-index is the exception: every SQLite reader (a monitor, a user's sqlite3)
/// touches it, and SQLite rebuilds it from the WAL; so tar's status 1 ("file changed as we read
/// it") is accepted and this comparison of the two snapshots is what decides.
fn check_unchanged(remote: &dyn Remote, before: &str, after: &str) -> anyhow::Result<()> {
    let changed = remote
        .run(&Cmd::new(format!(
            // A copy that cannot be written (a full destination) fails the comparison with
            // grep's own words instead of reading as a folder whose files all went (grep's 1
            // is "no line kept", not an error).
            "for f in {b} {rl}; do tr '\\0' '\\n' < \"$f\" | grep -v -e '-shm$' > \"$f.txt\" || [ $? -eq 1 ] || {{ rm -f {b}.txt {rl}.txt; exit 2; }}; done; diff {b}.txt {rl}.txt | head -n 10; rm -f {b}.txt {rl}.txt",
            b = quote(before),
            rl = quote(after)
        )))
        .context("cannot compare the data folder before and after the archive")?
        .stdout_str();
    if !changed.trim().is_empty() {
        bail!(
            "the data folder changed while it was archived (is a Plex process still running?); first differences:\n{}",
            changed.trim_end()
        );
    }
    Ok(())
}

/// Entries in a NUL-separated list written by `list_command`.
fn count_list(remote: &dyn Remote, list: &str) -> anyhow::Result<u64> {
    one_number(
        remote,
        format!("tr -cd '\\0' < {} | wc -c", quote(list)),
        "count the archived entries",
    )
}

fn write_manifest(
    remote: &dyn Remote,
    path: &str,
    job: &ExportJob,
    archive: &str,
    sha256: &str,
    bytes: u64,
    entries: u64,
) -> anyhow::Result<()> {
    let manifest = Manifest {
        manifest_version: 1,
        run_id: job.run_id.clone(),
        created_at: jiff::Timestamp::now().to_string(),
        plexburst_version: env!("CARGO_PKG_VERSION").into(),
        plex_version: job.plex_version.clone(),
        archive: archive.to_string(),
        sha256: sha256.to_string(),
        bytes,
        entries,
        excluded: EXPORT_EXCLUDES.iter().map(|s| s.to_string()).collect(),
        sections: job.counts.sections.clone(),
    };
    remote
        .put_file(path, &serde_json::to_vec_pretty(&manifest)?, 0o644)
        .context("cannot write the manifest")
}

/// Stream the data folder to the bucket (`tar | zstd -T0 | rclone rcat`, nothing staged on the
/// target), then verify the object: its size in the bucket against zstd's output, and one read
/// back that must decompress (zstd's frame checksum, written at the source) and list as many tar
/// entries as the folder had. The sha256 of the object as read back goes into the manifest. The
/// manifest is written to `job.destination` and uploaded beside the archive. `prefix` is
/// `bucket/path`.
pub fn export_streamed(
    remote: &dyn Remote,
    job: &ExportJob,
    rc: &Rclone,
    prefix: &str,
) -> anyhow::Result<ExportRecord> {
    let dest = job.destination.trim_end_matches('/');
    let prefix = prefix.trim_end_matches('/');
    let object = format!("{prefix}/{}.tar.zst", job.run_id);
    let obj = rc.object(&object);
    let WorkFiles {
        list,
        before,
        after: relist,
    } = WorkFiles::of_stream(dest, &job.run_id);
    let streamed = (|| -> anyhow::Result<(crate::storage::rclone::UploadReport, String, u64)> {
        remote
            .run(
                &Cmd::new(format!(
                    "set -e; mkdir -p {}; {}",
                    quote(dest),
                    list_command(&job.data_dir, &list, &before),
                ))
                .timeout(EXPORT_TIMEOUT),
            )
            .context("cannot list the data folder for the export")?;
        tracing::info!("streaming {} to {obj}", job.data_dir);
        let up = upload_stream(
            rc,
            remote,
            &UploadSpec {
                src_dir: job.data_dir.clone(),
                list: list.clone(),
                object: object.clone(),
                zstd_level: 3,
            },
        )?;
        remote
            .run(
                &Cmd::new(format!(
                    "{} > {}",
                    snapshot_command(&job.data_dir),
                    quote(&relist)
                ))
                .timeout(EXPORT_TIMEOUT),
            )
            .context("cannot list the data folder after the export")?;
        check_unchanged(remote, &before, &relist)?;
        let expected = count_list(remote, &list)?;
        let (sha256, listed) = rc.read_back_archive(remote, &up.object)?;
        if listed != expected || listed == 0 {
            bail!(
                "{} lists {listed} entries but the data folder has {expected}; the export is incomplete",
                up.object
            );
        }
        Ok((up, sha256, listed))
    })();
    let temps = [&list, &before, &relist].map(|p| quote(p)).join(" ");
    if let Err(e) = remote.run(&Cmd::new(format!("rm -f {temps}"))) {
        tracing::warn!("cannot remove the export's temporary files: {e}");
    }
    let (up, sha256, entries) = match streamed {
        Ok(v) => v,
        Err(e) => {
            // Whatever reached the bucket is not a verified archive: do not leave it there.
            if let Err(de) = rc.delete_object(remote, &obj) {
                tracing::warn!("cannot delete the failed export {obj}: {de:#}");
            }
            return Err(e.context(format!("streaming the export to {obj} failed")));
        }
    };
    let manifest_path = format!("{dest}/{}.manifest.json", job.run_id);
    write_manifest(
        remote,
        &manifest_path,
        job,
        &up.object,
        &sha256,
        up.bytes,
        entries,
    )?;
    let manifest_object = format!("{prefix}/{}.manifest.json", job.run_id);
    let m = rc
        .upload_file(remote, &manifest_path, &manifest_object, None)
        .with_context(|| format!("uploading the manifest to {manifest_object}"))?;
    tracing::info!(
        "streamed and verified {}: {entries} entries, {} bytes, sha256 {}",
        up.object,
        up.bytes,
        sha256
    );
    Ok(ExportRecord {
        archive: up.object,
        manifest: m.object,
        sha256,
        bytes: up.bytes,
        files: entries,
    })
}

/// Archive, checksum, verify (decompress + list, count against `find`), write the manifest.
pub fn export(remote: &dyn Remote, job: &ExportJob) -> anyhow::Result<ExportRecord> {
    let dest = job.destination.trim_end_matches('/');
    let archive = archive_path(dest, &job.run_id);
    let partial = format!("{archive}.partial");
    let manifest_path = format!("{dest}/{}.manifest.json", job.run_id);
    let tar_status = format!("{archive}.tar-status");
    let WorkFiles {
        list,
        before,
        after: relist,
    } = WorkFiles::beside(&archive);
    // One walk takes the snapshot and the list, and tar archives exactly the list, so the
    // archive's content is known; POSIX sh has no pipefail, so tar's status goes through a file
    // and a failure is not hidden.
    let script = format!(
        "set -e; mkdir -p {d}; rm -f {p} {st}; {walk}; ({tar} && echo 0 > {st} || echo $? > {st}) | {zstd}; test \"$(cat {st})\" -le 1 || {{ echo \"tar failed with status $(cat {st})\" >&2; exit 1; }}; rm -f {st}; {snap} > {rl}",
        d = quote(dest),
        p = quote(&partial),
        st = quote(&tar_status),
        rl = quote(&relist),
        walk = list_command(&job.data_dir, &list, &before),
        snap = snapshot_command(&job.data_dir),
        tar = tar_command(&job.data_dir, &list),
        zstd = zstd_command(&partial),
    );
    // Build and check the archive; the temp files go whatever happens, the partial archive too
    // when something failed.
    let built = (|| -> anyhow::Result<u64> {
        tracing::info!("archiving {} to {archive}", job.data_dir);
        remote
            .run(&Cmd::new(script).timeout(EXPORT_TIMEOUT))
            .context("archiving the data folder failed")?;
        check_unchanged(remote, &before, &relist)?;
        count_list(remote, &list)
    })();
    let mut leftovers = vec![
        quote(&before),
        quote(&relist),
        quote(&list),
        quote(&tar_status),
    ];
    if built.is_err() {
        leftovers.push(quote(&partial));
    }
    if let Err(e) = remote.run(&Cmd::new(format!("rm -f {}", leftovers.join(" ")))) {
        tracing::warn!("cannot remove the export's temporary files: {e}");
    }
    let expected = built?;
    mv_partial(remote, &partial, &archive)?;

    // One read of the finished archive: decompressed (frame checksum), listed and hashed.
    let out = remote
        .run(
            &Cmd::new(read_back_script(&format!("cat {}", quote(&archive))))
                .timeout(EXPORT_TIMEOUT),
        )
        .context("the archive does not read back (decompress, list, checksum)")?;
    let (sha256, listed) = parse_read_back(&out.stdout_str(), &archive)?;
    if listed != expected || listed == 0 {
        bail!(
            "the archive lists {listed} entries but the data folder has {expected}; the export is incomplete"
        );
    }
    let bytes = one_number(
        remote,
        format!("wc -c < {}", quote(&archive)),
        "size the archive",
    )?;
    write_manifest(
        remote,
        &manifest_path,
        job,
        &archive,
        &sha256,
        bytes,
        listed,
    )?;
    tracing::info!("archive verified: {listed} entries, {bytes} bytes, sha256 {sha256}");
    Ok(ExportRecord {
        archive,
        manifest: manifest_path,
        sha256,
        bytes,
        files: listed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::local::Local;

    /// The export's one walk: the list tar reads is the snapshot's names, in its order (by name),
    /// whole even with spaces and newlines, and Plex's regenerable folders are in neither.
    #[test]
    fn one_walk_lists_exactly_the_names_of_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("Library");
        let pms = lib.join("Application Support/Plex Media Server");
        for (path, body) in [
            ("a b/c  d/f 1.txt", "1"),
            ("x/new\nline", "22"),
            ("B", "333"),
            ("Application Support/Plex Media Server/Cache/skip", "c"),
            ("Application Support/Plex Media Server/Preferences.xml", "p"),
        ] {
            let f = lib.join(path);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, body).unwrap();
        }
        assert!(pms.join("Cache/skip").exists());
        let (list, snapshot) = (dir.path().join("files"), dir.path().join("before"));
        let r = Local::new();
        r.run(&Cmd::new(list_command(
            dir.path().to_str().unwrap(),
            list.to_str().unwrap(),
            snapshot.to_str().unwrap(),
        )))
        .unwrap();
        let split = |p: &std::path::Path| -> Vec<String> {
            std::fs::read(p)
                .unwrap()
                .split(|b| *b == 0)
                .filter(|r| !r.is_empty())
                .map(|r| String::from_utf8(r.to_vec()).unwrap())
                .collect()
        };
        let names = split(&list);
        let snapped: Vec<String> = split(&snapshot)
            .iter()
            .map(|rec| rec.splitn(3, ' ').nth(2).unwrap().to_string())
            .collect();
        assert_eq!(names, snapped);
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "in name order");
        assert!(names.contains(&"Library/a b/c  d/f 1.txt".to_string()));
        assert!(names.contains(&"Library/x/new\nline".to_string()));
        assert!(names.iter().any(|n| n.ends_with("Preferences.xml")));
        assert!(!names.iter().any(|n| n.contains("Cache")), "{names:?}");
        assert_eq!(
            count_list(&r, list.to_str().unwrap()).unwrap(),
            names.len() as u64
        );
    }
}
