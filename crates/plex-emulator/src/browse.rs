//! The server's folder browser behind `GET /services/browse/{base64 path}`: clients (python-plexapi's
//! `isBrowsable`, which `Library.add` calls for every location) list a folder through it before they
//! create a section. Decoding the path and reading the folder live here; `http` renders the answer.

use std::path::{Path, PathBuf};

/// One entry of a listed folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The full path, no trailing slash (plexapi compares it with the location it was given).
    pub path: String,
    pub title: String,
    pub is_dir: bool,
}

/// Decode standard base64 (with or without `=` padding), the encoding plexapi's `base64str` uses
/// for the path. `None` for anything that is not base64 or not UTF-8.
pub fn decode_path(b64: &str) -> Option<String> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    };
    let s = b64.trim_end_matches('=').as_bytes();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut n: u32 = 0;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(val(*c)?) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    String::from_utf8(out).ok()
}

/// Encode `s` as standard padded base64 (the `key` of each listed entry points at its own listing).
pub fn encode_path(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut o = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let mut n = 0u32;
        for (i, x) in chunk.iter().enumerate() {
            n |= u32::from(*x) << (16 - 8 * i);
        }
        for i in 0..4 {
            if i <= chunk.len() {
                o.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                o.push('=');
            }
        }
    }
    o
}

/// The sorted entries of the folder `dir` (dot files left out, as the scanner skips them); files
/// only with `include_files`. `None` when `dir` is not an absolute path to a folder that lists.
pub fn list(dir: &str, include_files: bool) -> Option<Vec<Entry>> {
    let dir = Path::new(dir);
    if !dir.is_absolute() {
        return None;
    }
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let title = e.file_name().to_string_lossy().into_owned();
        if title.starts_with('.') {
            continue;
        }
        // Follow symlinks: a linked folder browses like a folder.
        let is_dir = std::fs::metadata(e.path()).is_ok_and(|m| m.is_dir());
        if !is_dir && !include_files {
            continue;
        }
        let path: PathBuf = dir.join(&title);
        out.push(Entry {
            path: path.to_string_lossy().into_owned(),
            title,
            is_dir,
        });
    }
    out.sort_by(|a, b| a.title.cmp(&b.title));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_paths_with_every_padding() {
        for s in [
            "/",
            "/a",
            "/ab",
            "/abc",
            "/tmp/media/Music",
            "/tmp/Bj\u{f6}rk & co/?",
        ] {
            let e = encode_path(s);
            assert_eq!(decode_path(&e).as_deref(), Some(s), "{e}");
            assert_eq!(decode_path(e.trim_end_matches('=')).as_deref(), Some(s));
        }
        // Known vectors (RFC 4648 §10).
        assert_eq!(encode_path("foob"), "Zm9vYg==");
        assert_eq!(encode_path("fooba"), "Zm9vYmE=");
        assert_eq!(decode_path("Zm9vYmFy").as_deref(), Some("foobar"));
        assert_eq!(decode_path("Zm9v!mFy"), None);
        assert_eq!(decode_path("Z"), None);
    }

    #[test]
    fn lists_folders_and_optionally_files_sorted_without_dot_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("b")).unwrap();
        std::fs::create_dir(d.path().join("a")).unwrap();
        std::fs::create_dir(d.path().join(".hidden")).unwrap();
        std::fs::write(d.path().join("f.flac"), b"x").unwrap();
        let root = d.path().to_string_lossy().into_owned();
        let dirs = list(&root, false).unwrap();
        let titles: Vec<&str> = dirs.iter().map(|e| e.title.as_str()).collect();
        assert_eq!(titles, ["a", "b"]);
        assert_eq!(dirs[0].path, format!("{root}/a"));
        let all = list(&root, true).unwrap();
        assert_eq!(all.len(), 3);
        assert!(all.iter().any(|e| e.title == "f.flac" && !e.is_dir));
        assert_eq!(list(&format!("{root}/missing"), true), None);
        assert_eq!(list("relative", true), None);
    }
}
