//! gen-library: counts on stdout, the documented layout, real magic bytes, top dirs only when used.

use crate::harness::*;

fn first_bytes(p: &std::path::Path, n: usize) -> Vec<u8> {
    std::fs::read(p).unwrap().into_iter().take(n).collect()
}

#[test]
fn writes_the_documented_tree_with_real_magic_bytes() {
    let lib = gen_library(&[
        "--artists",
        "2",
        "--albums",
        "4",
        "--tracks",
        "12",
        "--movies",
        "2",
        "--shows",
        "2",
        "--seasons",
        "3",
        "--episodes",
        "6",
        "--photos",
        "5",
        "--seed",
        "9",
    ]);
    let c = &lib.counts;
    for (k, v) in [
        ("artists", 2),
        ("albums", 4),
        ("tracks", 12),
        ("movies", 2),
        ("shows", 2),
        ("seasons", 3),
        ("episodes", 6),
        ("photos", 5),
        ("files", 25),
    ] {
        assert_eq!(c[k], v, "{k}");
    }
    assert!(c["bytes"].as_u64().unwrap() > 25 * 64);
    let mut flac = Vec::new();
    let mut mkv = Vec::new();
    let mut jpg = Vec::new();
    for e in walk(lib.dir.path()) {
        let rel = e
            .strip_prefix(lib.dir.path())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        match e.extension().and_then(|x| x.to_str()) {
            Some("flac") => flac.push(rel),
            Some("mkv") => mkv.push(rel),
            Some("jpg") => jpg.push(rel),
            _ => panic!("unexpected file {rel}"),
        }
        let head = first_bytes(&e, 4);
        let want: &[u8] = match e.extension().and_then(|x| x.to_str()) {
            Some("flac") => b"fLaC",
            Some("mkv") => &[0x1a, 0x45, 0xdf, 0xa3],
            _ => &[0xff, 0xd8, 0xff, 0xe0],
        };
        assert_eq!(head, want, "{}", e.display());
    }
    assert_eq!((flac.len(), mkv.len(), jpg.len()), (12, 8, 5));
    // Artist/Album (Year)/NN - Title.flac
    assert!(
        flac.iter().all(|f| {
            let p: Vec<&str> = f.split('/').collect();
            p.len() == 4 && p[0] == "Music" && p[2].ends_with(')') && p[3].as_bytes()[2] == b' '
        }),
        "{flac:?}"
    );
    assert!(
        mkv.iter().any(|f| f.starts_with("TV Shows/")
            && f.contains("/Season 01/")
            && f.contains(" - S01E01.mkv")),
        "{mkv:?}"
    );
    assert!(
        mkv.iter()
            .any(|f| f.starts_with("Movies/") && f.matches(" (").count() == 2),
        "{mkv:?}"
    );
    assert!(
        jpg.iter()
            .all(|f| f.starts_with("Photos/20") && f.contains("/IMG_")),
        "{jpg:?}"
    );
}

#[test]
fn top_dirs_exist_only_for_requested_kinds_and_tricky_names_are_tricky() {
    let lib = gen_library(&["--tracks", "4", "--tricky-names"]);
    assert!(lib.path("Music").is_dir());
    for d in ["Movies", "TV Shows", "Photos"] {
        assert!(!lib.path(d).exists(), "{d} must not exist");
    }
    assert_eq!(lib.counts["tracks"], 4 + 15 + 5000);
    let big = lib.path("Music/Various Artists/Huge Compilation (2020)");
    assert_eq!(std::fs::read_dir(&big).unwrap().count(), 5000);
    let names: Vec<String> = walk(&lib.path("Music"))
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.contains("Sigur Rós")));
    assert!(names.iter().any(|n| n.contains("Guns N' Roses")));
    assert!(names.iter().any(|n| n.contains('"')));
    assert!(names.iter().any(|n| n.contains("  ")));
    assert!(names.iter().any(|n| n.split('/').any(|c| c.len() > 150)));
}

pub fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
