//! The archive against its manifest, on this machine, before the home is touched.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::archive::{parse_read_back, read_back_script};
use crate::error::BadInput;
use crate::export::Manifest;
use crate::remote::{Cmd, Remote, quote};

/// The archive and its manifest, checked.
pub(super) struct Verified {
    pub(super) archive: PathBuf,
    pub(super) manifest: Manifest,
}

/// `<run id>.tar.zst` → `<run id>.manifest.json`, as the export names them.
pub(super) fn manifest_beside(archive: &Path) -> PathBuf {
    let name = archive
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let stem = name.strip_suffix(".tar.zst").unwrap_or(&name);
    archive.with_file_name(format!("{stem}.manifest.json"))
}

/// The archive must be what its manifest says: size, sha256 and entry count, and it must read
/// back whole (zstd's frame checksum, tar's listing). Any mismatch is bad input (exit 2).
pub(super) fn verify_archive(archive: &Path, manifest: Option<&Path>) -> anyhow::Result<Verified> {
    let manifest_path = manifest
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest_beside(archive));
    let meta = std::fs::metadata(archive).map_err(|e| {
        BadInput(format!(
            "ARCHIVE {}: {e}; give the .tar.zst the export wrote",
            archive.display()
        ))
    })?;
    let raw = std::fs::read(&manifest_path).map_err(|e| {
        BadInput(format!(
            "the manifest {}: {e}; it is written beside the archive by the export, or pass --manifest FILE",
            manifest_path.display()
        ))
    })?;
    let manifest: Manifest = serde_json::from_slice(&raw).map_err(|e| {
        BadInput(format!(
            "the manifest {} is not a plexburst manifest: {e}",
            manifest_path.display()
        ))
    })?;
    let refuse = |what: String| -> anyhow::Error {
        BadInput(format!(
            "{} does not match its manifest {}: {what}; nothing was changed at home (export again, or pass the right --manifest)",
            archive.display(),
            manifest_path.display()
        ))
        .into()
    };
    if meta.len() != manifest.bytes {
        return Err(refuse(format!(
            "{} bytes, the manifest says {}",
            meta.len(),
            manifest.bytes
        )));
    }
    let path = archive.to_string_lossy();
    let out = crate::remote::local::Local::new()
        .exec(
            &Cmd::new(read_back_script(&format!("cat {}", quote(&path))))
                .timeout(Duration::from_secs(12 * 3600)),
        )
        .context("cannot read the archive back")?;
    if out.status != 0 {
        return Err(refuse(format!(
            "it does not read back: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let (sha256, entries) = parse_read_back(&out.stdout_str(), &path)?;
    if sha256 != manifest.sha256 {
        return Err(refuse(format!(
            "sha256 {sha256}, the manifest says {}",
            manifest.sha256
        )));
    }
    if entries != manifest.entries {
        return Err(refuse(format!(
            "{entries} entries, the manifest says {}",
            manifest.entries
        )));
    }
    println!(
        "archive verified: {} ({} entries, sha256 {})",
        archive.display(),
        entries,
        sha256
    );
    Ok(Verified {
        archive: archive.to_path_buf(),
        manifest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_is_found_beside_the_archive_as_the_export_names_it() {
        assert_eq!(
            manifest_beside(Path::new("/x/20261127-abc.tar.zst")),
            Path::new("/x/20261127-abc.manifest.json")
        );
    }
}
