//! Export of the Plex data folder: tar | zstd, checksum, verification, manifest.
//!
//! Everything runs on the target through the remote (the archive is written next to the data, not
//! streamed back). Plex must be stopped first so the DB and its WAL are consistent; the `-wal` and
//! `-shm` files are kept if present. Cache, Logs, Crash Reports, Diagnostics and Updates are left
//! out: Plex regenerates them and they can be most of the folder's size.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::plan::{
    EXPORT_EXCLUDES, find_command, quote, snapshot_command, tar_command, zstd_command,
};
use crate::plex::db::DbSample;
use crate::remote::{Cmd, Remote};
use crate::state::ExportRecord;

/// Archiving a big data folder takes a while; this only guards against a hung pipeline.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(12 * 3600);

pub struct ExportJob {
    pub data_dir: String,
    pub destination: String,
    pub run_id: String,
    pub plex_version: Option<String>,
    pub counts: DbSample,
}

#[derive(Debug, Serialize)]
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

/// Archive, checksum, verify (decompress + list, count against `find`), write the manifest.
pub fn export(remote: &dyn Remote, job: &ExportJob) -> anyhow::Result<ExportRecord> {
    let dest = job.destination.trim_end_matches('/');
    let archive = format!("{dest}/{}.tar.zst", job.run_id);
    let partial = format!("{archive}.partial");
    let manifest_path = format!("{dest}/{}.manifest.json", job.run_id);
    let tar_status = format!("{archive}.tar-status");
    let list = format!("{archive}.files");
    let before = format!("{archive}.before");
    let relist = format!("{archive}.after");
    // The list is taken first and tar archives exactly it, so the archive's content is known;
    // POSIX sh has no pipefail, so tar's status goes through a file and a failure is not hidden.
    let script = format!(
        "set -e; mkdir -p {d}; rm -f {p} {st}; {snap} > {b}; {find} > {l}; ({tar} && echo 0 > {st} || echo $? > {st}) | {zstd}; test \"$(cat {st})\" -le 1 || {{ echo \"tar failed with status $(cat {st})\" >&2; exit 1; }}; rm -f {st}; {snap} > {rl}",
        d = quote(dest),
        p = quote(&partial),
        st = quote(&tar_status),
        l = quote(&list),
        b = quote(&before),
        rl = quote(&relist),
        snap = snapshot_command(&job.data_dir),
        find = find_command(&job.data_dir),
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
        // Plex is stopped: nothing may have changed the folder (names, sizes, mtimes) while tar read it.
        // The `-shm` wal-index is the exception: every SQLite reader (a monitor, a user's sqlite3)
        // touches it, and SQLite rebuilds it from the WAL; so tar's status 1 ("file changed as we read
        // it") is accepted above and this comparison is what decides.
        let changed = remote
            .run(&Cmd::new(format!(
                "tr '\\0' '\\n' < {b} | grep -v -e '-shm$' > {b}.txt; tr '\\0' '\\n' < {rl} | grep -v -e '-shm$' > {rl}.txt; diff {b}.txt {rl}.txt | head -n 10; rm -f {b}.txt {rl}.txt",
                b = quote(&before),
                rl = quote(&relist)
            )))
            .context("cannot compare the data folder before and after the archive")?
            .stdout_str();
        if !changed.trim().is_empty() {
            bail!(
                "the data folder changed while it was archived (is a Plex process still running?); first differences:\n{}",
                changed.trim_end()
            );
        }
        let expected = one_number(
            remote,
            format!("tr -cd '\\0' < {} | wc -c", quote(&list)),
            "count the archived entries",
        )?;
        Ok(expected)
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

    remote
        .run(&Cmd::new(format!("zstd -t -q {}", quote(&archive))).timeout(EXPORT_TIMEOUT))
        .context("the archive does not decompress (zstd -t failed)")?;
    let listed = one_number(
        remote,
        format!("zstd -dc {} | tar -tf - | wc -l", quote(&archive)),
        "list the archive",
    )?;
    if listed != expected || listed == 0 {
        bail!(
            "the archive lists {listed} entries but the data folder has {expected}; the export is incomplete"
        );
    }
    let sha_out = remote
        .run(&Cmd::new(format!("sha256sum {}", quote(&archive))).timeout(EXPORT_TIMEOUT))
        .context("cannot checksum the archive")?
        .stdout_str();
    let sha256 = sha_out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    if sha256.len() != 64 {
        bail!("unexpected sha256sum output {sha_out:?}");
    }
    let bytes = one_number(
        remote,
        format!("wc -c < {}", quote(&archive)),
        "size the archive",
    )?;
    let manifest = Manifest {
        manifest_version: 1,
        run_id: job.run_id.clone(),
        created_at: crate::state::now(),
        plexburst_version: env!("CARGO_PKG_VERSION").into(),
        plex_version: job.plex_version.clone(),
        archive: archive.clone(),
        sha256: sha256.clone(),
        bytes,
        entries: listed,
        excluded: EXPORT_EXCLUDES.iter().map(|s| s.to_string()).collect(),
        sections: job.counts.sections.clone(),
    };
    remote
        .put_file(
            &manifest_path,
            &serde_json::to_vec_pretty(&manifest)?,
            0o644,
        )
        .context("cannot write the manifest")?;
    tracing::info!("archive verified: {listed} entries, {bytes} bytes, sha256 {sha256}");
    Ok(ExportRecord {
        archive,
        manifest: manifest_path,
        sha256,
        bytes,
        files: listed,
    })
}
