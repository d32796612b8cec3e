//! The export to the bucket: an archive streamed (`tar | zstd | rclone rcat`) or staged and
//! copied, a finished file uploaded, and every object checked (size, read back) or deleted.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::Rclone;
use crate::archive::{SHA256, number_and_sha256, parse_read_back, read_back_script, tar_command};
use crate::remote::{Remote, quote};

/// The result of an export upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadReport {
    /// `remote:bucket/path` of the object.
    pub object: String,
    /// Bytes sent, equal to the object's size in the bucket (checked).
    pub bytes: u64,
    /// The sha256 of the object: of the staged file before upload, or of the object as read
    /// back. `None` for a stream that was not read back: the stream carries no hash tap (see
    /// `Rclone::upload`).
    pub sha256: Option<String>,
    /// The object was downloaded again and checked: the staged file's sha256 matched, or the
    /// stream decompressed with its zstd frame checksum intact (false: size check only).
    pub checksum_verified: bool,
}

/// What to archive and where to put it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSpec {
    /// Directory on the target that the entries of `list` are relative to (`tar -C`).
    pub src_dir: String,
    /// A NUL-separated list of entries (relative to `src_dir`) on the target, as
    /// `archive::list_command` writes it: tar archives exactly these (`--null --no-recursion -T`).
    pub list: String,
    /// Object path under the remote, e.g. `media/plexburst-exports/run-1.tar.zst`.
    pub object: String,
    pub zstd_level: i32,
}

/// Archive `spec` on the target and stream it to the bucket of `rc`, then check the object's
/// size. tar's status 1 ("file changed as we read it") is accepted: the caller compares the
/// source before and after and decides (the export, where SQLite readers touch `-shm`). The
/// content is checked by the caller's read back (`Rclone::read_back_archive`).
pub fn upload_stream(
    rc: &Rclone,
    r: &dyn Remote,
    spec: &UploadSpec,
) -> anyhow::Result<UploadReport> {
    rc.upload(r, spec)
}

/// The `<size> <sha256>` line an upload script printed, checked.
fn parse_size_sum(said: &str, what: &str) -> anyhow::Result<(u64, String)> {
    number_and_sha256(said, what, "size")
}

/// The compressed size from the summary `zstd -vv` prints last on stderr: `(IN B => OUT B, …)`
/// (zstd 1.5) or `(IN => OUT bytes, …)` (1.4). A size in rounded units is refused, not guessed.
fn parse_zstd_out_bytes(summary: &str) -> anyhow::Result<u64> {
    let line = summary
        .lines()
        .rev()
        .find(|l| l.contains("=>"))
        .with_context(|| format!("zstd printed no size summary: {summary:?}"))?;
    let after = line.split("=>").nth(1).unwrap_or("");
    let mut words = after.split_whitespace();
    let n = words.next().unwrap_or("");
    let unit = words.next().unwrap_or("").trim_end_matches(',');
    match (n.parse::<u64>(), unit) {
        (Ok(n), "B" | "bytes") => Ok(n),
        _ => bail!("zstd printed no exact compressed size: {line:?}"),
    }
}

impl Rclone {
    /// Check the object in the bucket: its size, and with `sha256` its content, read back whole
    /// and hashed.
    fn verify_object(
        &self,
        r: &dyn Remote,
        obj: &str,
        bytes: u64,
        sha256: Option<&str>,
    ) -> anyhow::Result<()> {
        let stat = r
            .run(&self.cmd(format!("{} lsjson --stat {}", self.rclone(), quote(obj))))
            .with_context(|| format!("looking up {obj} after upload"))?;
        let v: serde_json::Value =
            serde_json::from_slice(&stat.stdout).context("parsing rclone lsjson --stat")?;
        let size = v.get("Size").and_then(|s| s.as_u64()).unwrap_or(u64::MAX);
        if size != bytes {
            bail!(
                "{obj} has {size} bytes in the bucket but {bytes} were sent; the export is incomplete"
            );
        }
        let Some(sent) = sha256 else {
            return Ok(());
        };
        let out = r
            .run(
                &self
                    .cmd(format!(
                        "{} cat {} | {SHA256} | cut -d' ' -f1",
                        self.rclone(),
                        quote(obj)
                    ))
                    .timeout(Duration::from_secs(48 * 3600)),
            )
            .with_context(|| format!("downloading {obj} to verify it"))?;
        let got = out.stdout_str().trim().to_string();
        if got != sent {
            bail!(
                "{obj} in the bucket has sha256 {got} but {sent} was sent; the export is corrupt"
            );
        }
        Ok(())
    }

    fn upload_flags(&self) -> String {
        self.spec.upload_flags()
    }

    /// `remote:path` of an object given as `bucket/path`.
    pub fn object(&self, object: &str) -> String {
        self.spec.object(object)
    }

    /// Read a `.tar.zst` object back once: its sha256 and the number of entries tar lists in it
    /// (`crate::archive::read_back_script`); zstd's decompression checks the frame checksum the
    /// compressor wrote at the source, so a byte changed anywhere between `zstd` and the bucket
    /// fails here.
    pub fn read_back_archive(&self, r: &dyn Remote, obj: &str) -> anyhow::Result<(String, u64)> {
        let source = format!("{} cat {}", self.rclone(), quote(obj));
        let out = r
            .run(
                &self
                    .cmd(read_back_script(&source))
                    .timeout(Duration::from_secs(48 * 3600)),
            )
            .with_context(|| format!("reading {obj} back to verify it"))?;
        parse_read_back(&out.stdout_str(), obj)
    }

    /// Remove an object (a failed or unverified export must not be left looking complete).
    pub fn delete_object(&self, r: &dyn Remote, obj: &str) -> anyhow::Result<()> {
        r.run(&self.cmd(format!(
            "{} deletefile {} 2>/dev/null || true",
            self.rclone(),
            quote(obj)
        )))
        .with_context(|| format!("deleting {obj}"))?;
        Ok(())
    }

    /// Upload a finished file on the target (e.g. the verified export archive) to `object`
    /// (`bucket/path`) with `rclone copyto` and its retries, then verify its size and, read back
    /// whole, its sha256.
    /// `sha256`: the file's, when the caller has it already (the verified archive), so the file
    /// is not read once more to hash it.
    pub fn upload_file(
        &self,
        r: &dyn Remote,
        path: &str,
        object: &str,
        sha256: Option<&str>,
    ) -> anyhow::Result<UploadReport> {
        let obj = self.object(object);
        let f = quote(path);
        let sum = match sha256 {
            Some(known) => quote(known),
            None => format!("$({SHA256} < {f} | cut -d' ' -f1)"),
        };
        let script = format!(
            "set -e; {rc} copyto {flags} {f} {o}; echo \"$(wc -c < {f}) {sum}\"",
            flags = self.upload_flags(),
            rc = self.rclone(),
            o = quote(&obj)
        );
        let out = r
            .run(&self.cmd(script).timeout(Duration::from_secs(48 * 3600)))
            .with_context(|| format!("uploading {path} to {obj}"))?;
        let (bytes, sha256) = parse_size_sum(&out.stdout_str(), "upload")?;
        self.verify_object(r, &obj, bytes, Some(&sha256))?;
        Ok(UploadReport {
            object: obj,
            bytes,
            sha256: Some(sha256),
            checksum_verified: true,
        })
    }

    fn upload(&self, r: &dyn Remote, spec: &UploadSpec) -> anyhow::Result<UploadReport> {
        let obj = self.object(&spec.object);
        let tar = tar_command(&spec.src_dir, &spec.list);
        // The planned stage itself (`RcloneSpec::rcat_line`), so the plan shows what streams.
        let rcat = self.spec.rcat_line(&spec.object);
        // `--check` (zstd's default, spelled out): the frame checksum is what a read back verifies.
        let zstd = format!("zstd -T0 -{} --check", spec.zstd_level.clamp(1, 19));
        // Each stage records its own failure: `sh` has no pipefail, and a pipeline's status is
        // only the last command's. Nothing but the three stages touches the stream: a `tee` to
        // hash taps cost 1.5-2.3 s per GB on 2 cores (8 KB pipe copies, a second hash), 69 % of
        // the ceiling instead of 84 % (docs/benchmarks.md). The size comes from zstd's own
        // summary; the content is checked on the read back, by zstd's frame checksum.
        let script = format!(
            "set -e; d=$(mktemp -d); trap 'rm -rf \"$d\"' EXIT
{{ {tar} || {{ [ $? -le 1 ] || echo tar >> \"$d/fail\"; }}; }} | {{ {zstd} -vv --no-progress 2> \"$d/z\" || echo zstd >> \"$d/fail\"; }} | {{ {rcat} || echo rcat >> \"$d/fail\"; }}
if [ -s \"$d/fail\" ]; then echo \"failed stages: $(cat \"$d/fail\")\" >&2; tail -n 5 \"$d/z\" >&2; exit 1; fi
cat \"$d/z\""
        );
        let out = r
            .run(&self.cmd(script).timeout(Duration::from_secs(48 * 3600)))
            .with_context(|| format!("exporting {} to {obj}", spec.src_dir))?;
        let bytes = parse_zstd_out_bytes(&out.stdout_str())?;
        self.verify_object(r, &obj, bytes, None)?;
        Ok(UploadReport {
            object: obj,
            bytes,
            sha256: None,
            checksum_verified: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_without_a_full_sha256_is_an_error() {
        let sum = "ab".repeat(32);
        assert_eq!(
            parse_size_sum(&format!("12 {sum}\n"), "export").unwrap(),
            (12, sum.clone())
        );
        // A hash tap that died prints an empty sum: that must not pass as an unchecked export.
        let err = parse_size_sum("12 \n", "export").unwrap_err().to_string();
        assert!(err.contains("no sha256"), "{err}");
        assert!(parse_size_sum(&format!("12 {}", &sum[1..]), "export").is_err());
        assert!(parse_size_sum("", "upload").is_err());
    }

    #[test]
    fn a_stream_size_is_zstds_exact_byte_count_or_an_error() {
        // zstd 1.5 -vv, with the lines it prints before the summary.
        let v15 = "Note: 2 physical core(s) detected \n*** Zstandard CLI (64-bit) v1.5.4 ***\n\
                   /*stdin*\\            : 99.92%   (5000000 B => 4996160 B, /*stdout*\\) \n";
        assert_eq!(parse_zstd_out_bytes(v15).unwrap(), 4_996_160);
        let v14 = "/*stdin*\\  : 41.02%   (3000000 => 1230600 bytes, /*stdout*\\) \n";
        assert_eq!(parse_zstd_out_bytes(v14).unwrap(), 1_230_600);
        // `-v` alone rounds: a size that is not exact must not pass as the byte count.
        let rounded = "/*stdin*\\ : 99.92%   (  4.77 MiB =>   4.76 MiB, /*stdout*\\) \n";
        let err = parse_zstd_out_bytes(rounded).unwrap_err().to_string();
        assert!(err.contains("no exact"), "{err}");
        assert!(parse_zstd_out_bytes("").is_err());
    }
}
