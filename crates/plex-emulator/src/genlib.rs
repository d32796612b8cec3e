//! `gen-library`: a media tree with real-looking names and small files with real magic bytes
//! (fLaC, EBML/Matroska, JPEG), fast enough for 500,000 tracks in well under a minute.

use std::path::{Path, PathBuf};

use anyhow::Context;

#[derive(Debug, Clone, clap::Args)]
pub struct GenArgs {
    /// Output directory (created).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub artists: u64,
    #[arg(long, default_value_t = 0)]
    pub albums: u64,
    #[arg(long, default_value_t = 0)]
    pub tracks: u64,
    #[arg(long, default_value_t = 0)]
    pub movies: u64,
    #[arg(long, default_value_t = 0)]
    pub shows: u64,
    /// Seasons in total (spread over the shows).
    #[arg(long, default_value_t = 0)]
    pub seasons: u64,
    /// Episodes in total (spread over the seasons).
    #[arg(long, default_value_t = 0)]
    pub episodes: u64,
    #[arg(long, default_value_t = 0)]
    pub photos: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Add unicode, apostrophes, quotes, spaces, very long names and one 5,000-file directory.
    #[arg(long)]
    pub tricky_names: bool,
}

const ADJ: &[&str] = &[
    "Velvet",
    "Silent",
    "Golden",
    "Broken",
    "Electric",
    "Hollow",
    "Crimson",
    "Distant",
    "Wild",
    "Paper",
    "Neon",
    "Quiet",
    "Restless",
    "Frozen",
    "Burning",
    "Gentle",
    "Midnight",
    "Silver",
    "Lonely",
    "Bright",
    "Northern",
    "Secret",
    "Wandering",
    "Painted",
    "Falling",
    "Sleeping",
    "Hidden",
    "Ancient",
    "Final",
    "Open",
    "Lost",
    "Blue",
];
const NOUN: &[&str] = &[
    "Harbor",
    "Engine",
    "Garden",
    "River",
    "Mirror",
    "Orchard",
    "Signal",
    "Lantern",
    "Highway",
    "Ocean",
    "Tower",
    "Forest",
    "Station",
    "Window",
    "Machine",
    "Island",
    "Canyon",
    "Letter",
    "Circle",
    "Meadow",
    "Thunder",
    "Echo",
    "Valley",
    "Parade",
    "Compass",
    "Satellite",
    "Avenue",
    "Harvest",
    "Shadow",
    "Horizon",
    "Kingdom",
    "Summer",
];

fn mix(mut x: u64) -> u64 {
    // splitmix64: deterministic, seedable, no dependency.
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A unique two-word name for index `i` (bijective in i; a numeric suffix past 1,024 combinations).
fn name(i: u64, salt: u64) -> String {
    let a = ADJ.len() as u64;
    let n = NOUN.len() as u64;
    let s = mix(salt) % (a * n);
    let j = i + s;
    let base = format!("{} {}", ADJ[(j % a) as usize], NOUN[((j / a) % n) as usize]);
    if i + s >= a * n || i >= a * n {
        format!("{base} {}", i / (a * n) + 2)
    } else {
        base
    }
}

fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    let mut x = seed;
    while out.len() < len {
        x = mix(x);
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn flac_bytes(seed: u64) -> Vec<u8> {
    let mut v = b"fLaC".to_vec();
    v.extend_from_slice(&[0x80, 0x00, 0x00, 0x22]); // last metadata block: STREAMINFO, 34 bytes
    v.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, 0x00, 0x00, 0x0e, 0x00, 0x10, 0x00]);
    v.extend_from_slice(&[0x0a, 0xc4, 0x42, 0xf0, 0x00, 0x00, 0x00, 0x00]); // 44.1 kHz, 2 ch, 16 bit
    v.extend_from_slice(&noise(seed, 16)); // MD5 of the audio
    v.extend_from_slice(&[0xff, 0xf8, 0x69, 0x08]); // a frame header sync
    v.extend_from_slice(&noise(seed ^ 0xf1ac, 96));
    v
}

fn mkv_bytes(seed: u64) -> Vec<u8> {
    let mut v = vec![0x1a, 0x45, 0xdf, 0xa3, 0xa3];
    v.extend_from_slice(&[
        0x42, 0x86, 0x81, 0x01, 0x42, 0xf7, 0x81, 0x01, 0x42, 0xf2, 0x81, 0x04, 0x42, 0xf3, 0x81,
        0x08,
    ]);
    v.extend_from_slice(&[0x42, 0x82, 0x88]);
    v.extend_from_slice(b"matroska");
    v.extend_from_slice(&[0x42, 0x87, 0x81, 0x04, 0x42, 0x85, 0x81, 0x02]);
    v.extend_from_slice(&[
        0x18, 0x53, 0x80, 0x67, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    ]); // Segment
    v.extend_from_slice(&noise(seed, 200));
    v
}

/// A JPEG-shaped blob (SOI, JFIF APP0, a comment segment with the payload, EOI).
pub fn jpeg_bytes(payload: &[u8]) -> Vec<u8> {
    let mut v = vec![
        0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01, 0x00, 0x00,
        0x48, 0x00, 0x48, 0x00, 0x00,
    ];
    let body = &payload[..payload.len().min(60_000)];
    v.extend_from_slice(&[0xff, 0xfe]);
    v.extend_from_slice(&((body.len() + 2) as u16).to_be_bytes());
    v.extend_from_slice(body);
    v.extend_from_slice(&[0xff, 0xd9]);
    v
}

#[derive(Clone, Copy)]
enum FileKind {
    Flac,
    Mkv,
    Jpeg,
}

#[derive(Default, serde::Serialize)]
pub struct Counts {
    pub artists: u64,
    pub albums: u64,
    pub tracks: u64,
    pub movies: u64,
    pub shows: u64,
    pub seasons: u64,
    pub episodes: u64,
    pub photos: u64,
    pub files: u64,
    pub bytes: u64,
}

struct Plan {
    files: Vec<(PathBuf, FileKind, u64)>,
    counts: Counts,
}

fn plan(a: &GenArgs) -> Plan {
    let mut files = Vec::new();
    let mut c = Counts::default();
    let out = &a.out;
    let s = a.seed;
    if a.tracks > 0 {
        let albums = if a.albums > 0 {
            a.albums
        } else {
            a.tracks.div_ceil(10)
        };
        let artists = if a.artists > 0 {
            a.artists
        } else {
            albums.div_ceil(4)
        }
        .min(albums);
        let artist_names: Vec<String> = (0..artists).map(|i| name(i, s)).collect();
        let album_dirs: Vec<PathBuf> = (0..albums)
            .map(|j| {
                let year = 1960 + mix(s ^ j) % 64;
                out.join("Music")
                    .join(&artist_names[(j % artists) as usize])
                    .join(format!("{} ({year})", name(j, s ^ 0xa1b)))
            })
            .collect();
        for k in 0..a.tracks {
            let album = (k % albums) as usize;
            let no = k / albums + 1;
            let f = album_dirs[album].join(format!("{no:02} - {}.flac", name(k, s ^ 0x7ac)));
            files.push((f, FileKind::Flac, mix(s ^ k)));
        }
        c.artists = artists;
        c.albums = albums;
        c.tracks = a.tracks;
    }
    for m in 0..a.movies {
        let t = format!(
            "The {} ({})",
            name(m, s ^ 0x30e),
            1950 + mix(s ^ m ^ 0x30e) % 75
        );
        files.push((
            out.join("Movies").join(&t).join(format!("{t}.mkv")),
            FileKind::Mkv,
            mix(s ^ m ^ 1),
        ));
        c.movies += 1;
    }
    if a.shows > 0 {
        let seasons = if a.seasons > 0 {
            a.seasons
        } else {
            a.shows * 2
        }
        .max(a.shows);
        let shows: Vec<String> = (0..a.shows).map(|i| name(i, s ^ 0x5e0)).collect();
        for e in 0..a.episodes {
            let season = e % seasons;
            let show = &shows[(season % a.shows) as usize];
            let sn = season / a.shows + 1;
            let en = e / seasons + 1;
            let f = out
                .join("TV Shows")
                .join(show)
                .join(format!("Season {sn:02}"))
                .join(format!("{show} - S{sn:02}E{en:02}.mkv"));
            files.push((f, FileKind::Mkv, mix(s ^ e ^ 2)));
        }
        c.shows = a.shows;
        c.seasons = seasons;
        c.episodes = a.episodes;
    }
    for p in 0..a.photos {
        let year = 2010 + p % 15;
        files.push((
            out.join("Photos")
                .join(year.to_string())
                .join(format!("IMG_{:04}.jpg", p + 1)),
            FileKind::Jpeg,
            mix(s ^ p ^ 3),
        ));
        c.photos += 1;
    }
    if a.tricky_names {
        tricky(a, &mut files, &mut c);
    }
    c.files = files.len() as u64;
    Plan { files, counts: c }
}

/// Names that break naive tools: unicode, apostrophes, quotes, runs of spaces, 200-byte names,
/// and one directory holding 5,000 files.
fn tricky(a: &GenArgs, files: &mut Vec<(PathBuf, FileKind, u64)>, c: &mut Counts) {
    let music = a.out.join("Music");
    let long = format!(
        "{} (2001)",
        "Extraordinarily Long Album Title ".repeat(5).trim_end()
    );
    let artists: [(&str, &str, &str); 5] = [
        ("Sigur Rós", "Ágætis byrjun (1999)", "Svefn-g-englar"),
        ("Guns N' Roses", "Appetite's End (1987)", "Don't Cry"),
        (
            "The \"Quoted\" Band",
            "Say \"Hello\" (2005)",
            "It's \"Fine\"",
        ),
        ("  Spaced   Out  ", " Space  Odyssey (1970)", "  Float  "),
        ("東京事変", &long, "閃光少女 — Flash Girl"),
    ];
    for (i, (artist, album, title)) in artists.iter().enumerate() {
        for t in 1..=3u64 {
            files.push((
                music
                    .join(artist)
                    .join(album)
                    .join(format!("{t:02} - {title}.flac")),
                FileKind::Flac,
                mix(0x7171 ^ i as u64 ^ t),
            ));
            c.tracks += 1;
        }
        c.artists += 1;
        c.albums += 1;
    }
    let big = music
        .join("Various Artists")
        .join("Huge Compilation (2020)");
    for t in 1..=5000u64 {
        files.push((
            big.join(format!("{t:04} - Track {t}.flac")),
            FileKind::Flac,
            mix(0xb16 ^ t),
        ));
    }
    c.artists += 1;
    c.albums += 1;
    c.tracks += 5000;
    if a.movies > 0 {
        let t = "Amélie's \"Dream\" (2001)";
        files.push((
            a.out.join("Movies").join(t).join(format!("{t}.mkv")),
            FileKind::Mkv,
            0xa3e,
        ));
        c.movies += 1;
    }
    if a.photos > 0 {
        files.push((
            a.out
                .join("Photos")
                .join("Été 2019 – Côte d'Azur")
                .join("IMG_0001 (copy).jpg"),
            FileKind::Jpeg,
            0xe7e,
        ));
        c.photos += 1;
    }
}

/// Write the tree and return the counts printed as JSON.
pub fn generate(a: &GenArgs) -> anyhow::Result<Counts> {
    let Plan { files, mut counts } = plan(a);
    let mut dirs: Vec<&Path> = files.iter().filter_map(|(p, _, _)| p.parent()).collect();
    dirs.dedup();
    for d in &dirs {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let threads = 4;
    let per = files.len().div_ceil(threads).max(1);
    let bytes: anyhow::Result<Vec<u64>> = std::thread::scope(|sc| {
        let hs: Vec<_> = files
            .chunks(per)
            .map(|chunk| {
                sc.spawn(move || -> anyhow::Result<u64> {
                    let mut n = 0u64;
                    for (p, kind, seed) in chunk {
                        let data = match kind {
                            FileKind::Flac => flac_bytes(*seed),
                            FileKind::Mkv => mkv_bytes(*seed),
                            FileKind::Jpeg => jpeg_bytes(&noise(*seed, 180)),
                        };
                        std::fs::write(p, &data)
                            .with_context(|| format!("writing {}", p.display()))?;
                        n += data.len() as u64;
                    }
                    Ok(n)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("writer thread panicked")))
            })
            .collect()
    });
    counts.bytes = bytes?.iter().sum();
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for i in 0..5000 {
            assert!(seen.insert(name(i, 7)), "duplicate name for {i}");
        }
    }
}
