//! The preflight's look at the section folders on the target: does each path exist, is it a
//! folder, how many media files of the section's type (and bytes) does it hold.
//!
//! One remote command walks every path once (`find -printf` piped into `awk`), so on rclone
//! storage the walk is served by the prewarmed directory cache and on a plain disk it is one
//! `find` per folder. The counts are the scan's denominator; the problems (`problems`) stop a run
//! before Plex starts, with the nearest existing sibling of a missing folder as the likely fix.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::plex::SectionType;
use crate::remote::{Cmd, Remote, quote};

/// A section as the survey needs it.
#[derive(Debug, Clone)]
pub struct Wanted<'a> {
    pub name: &'a str,
    pub kind: SectionType,
    pub paths: &'a [String],
    /// Lower-case extensions without the dot.
    pub extensions: &'a [String],
}

/// What one section path turned out to be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PathState {
    /// Nothing there. `siblings`: the folders beside where it should be (empty when the parent
    /// does not exist either: `parent_missing`).
    Missing {
        siblings: Vec<String>,
        parent_missing: bool,
    },
    /// Something that is not a folder (a file, a dangling link).
    NotDir,
    /// A folder: every regular file under it, those of the section's type, and their bytes.
    Dir { files: u64, media: u64, bytes: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathSurvey {
    pub path: String,
    #[serde(flatten)]
    pub state: PathState,
}

/// One section's survey: its paths, and the sums over them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SectionSurvey {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: SectionType,
    pub paths: Vec<PathSurvey>,
    /// Media files of the section's type under all its paths.
    pub media_files: u64,
    pub media_bytes: u64,
}

/// Siblings listed for a "did you mean": enough for any real folder, bounded for a huge one.
const MAX_SIBLINGS: usize = 2000;

/// The awk program: input lines `SIZE/NAME` from `find -printf '%s/%f\n'`, output one line
/// `FILES MEDIA BYTES`. `exts` is ` ext1 ext2 … ` (spaces around each). A line without the size
/// prefix is the tail of a name with a newline in it: skipped, so such a file counts once.
const COUNT_AWK: &str = r#"!/^[0-9]+\// { next } { n++; s = $0; sub(/\/.*/, "", s); f = $0; sub(/^[^\/]*\//, "", f); e = tolower(f); if (match(e, /\.[^.]*$/)) { e = substr(e, RSTART + 1) } else { e = "" } if (e != "" && index(exts, " " e " ")) { m++; b += s } } END { printf "%d %d %.0f\n", n, m, b }"#;

/// The one command that surveys every path: for path number `i`, lines `D i FILES MEDIA BYTES`,
/// `F i` (not a folder), or `M i` followed by `S i NAME` per sibling folder (`N i`: no parent).
pub fn script(sections: &[Wanted]) -> String {
    let mut s = String::from("set -u\n");
    let mut i = 0usize;
    for w in sections {
        let exts = format!(" {} ", w.extensions.join(" "));
        for p in w.paths {
            let q = quote(p);
            s.push_str(&format!(
                "if [ -d {q} ]; then printf 'D {i} '; find {q} -type f -printf '%s/%f\\n' 2>/dev/null | awk -v exts={} {}; \
                 elif [ -e {q} ] || [ -L {q} ]; then echo 'F {i}'; \
                 else echo 'M {i}'; d=$(dirname {q}); if [ -d \"$d\" ]; then find \"$d\" -mindepth 1 -maxdepth 1 -type d -printf 'S {i} %f\\n' 2>/dev/null | head -n {MAX_SIBLINGS}; else echo 'N {i}'; fi; fi\n",
                quote(&exts),
                quote(COUNT_AWK),
            ));
            i += 1;
        }
    }
    s
}

/// Parse `script`'s output into one survey per section.
pub fn parse(sections: &[Wanted], out: &str) -> anyhow::Result<Vec<SectionSurvey>> {
    let all: Vec<&String> = sections.iter().flat_map(|w| w.paths.iter()).collect();
    let mut states: Vec<Option<PathState>> = vec![None; all.len()];
    for line in out.lines() {
        let mut parts = line.splitn(3, ' ');
        let (tag, idx, rest) = (parts.next(), parts.next(), parts.next().unwrap_or(""));
        let Some(i) = idx
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|i| *i < all.len())
        else {
            continue;
        };
        match tag {
            Some("D") => {
                let n: Vec<u64> = rest
                    .split_whitespace()
                    .map(|x| x.parse::<u64>())
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("bad survey line {line:?}"))?;
                let [files, media, bytes] = n[..] else {
                    bail!("bad survey line {line:?}");
                };
                states[i] = Some(PathState::Dir {
                    files,
                    media,
                    bytes,
                });
            }
            Some("F") => states[i] = Some(PathState::NotDir),
            Some("M") => {
                states[i] = Some(PathState::Missing {
                    siblings: Vec::new(),
                    parent_missing: false,
                })
            }
            Some("S") => {
                if let Some(PathState::Missing { siblings, .. }) = &mut states[i] {
                    siblings.push(rest.to_string());
                }
            }
            Some("N") => {
                if let Some(PathState::Missing { parent_missing, .. }) = &mut states[i] {
                    *parent_missing = true;
                }
            }
            _ => {}
        }
    }
    let mut states = states.into_iter();
    let mut out = Vec::new();
    for w in sections {
        let mut paths = Vec::new();
        for p in w.paths {
            let Some(state) = states.next().flatten() else {
                bail!("the survey of {p} printed nothing; the target's shell, find or awk failed");
            };
            paths.push(PathSurvey {
                path: p.clone(),
                state,
            });
        }
        let (media_files, media_bytes) = paths.iter().fold((0, 0), |(f, b), p| match p.state {
            PathState::Dir { media, bytes, .. } => (f + media, b + bytes),
            _ => (f, b),
        });
        out.push(SectionSurvey {
            name: w.name.to_string(),
            kind: w.kind,
            paths,
            media_files,
            media_bytes,
        });
    }
    Ok(out)
}

/// Survey every section's paths on the target with one command.
pub fn survey(r: &dyn Remote, sections: &[Wanted]) -> anyhow::Result<Vec<SectionSurvey>> {
    let out = r
        .run(&Cmd::new(script(sections)).timeout(std::time::Duration::from_secs(6 * 3600)))
        .with_context(|| format!("cannot survey the section folders on {}", r.describe()))?;
    parse(sections, &out.stdout_str())
}

/// Edit distance, case-insensitive (`Musik` is one edit from `music`).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The sibling closest to the missing folder's name, when it is close enough to be a typo.
pub fn nearest<'a>(missing: &str, siblings: &'a [String]) -> Option<&'a str> {
    let name = missing
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(missing);
    let limit = (name.chars().count() / 3).max(2);
    siblings
        .iter()
        .map(|s| (distance(name, s), s))
        .filter(|(d, _)| *d <= limit)
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)))
        .map(|(_, s)| s.as_str())
}

/// What is wrong with the surveyed folders, one message per path, naming the section and the fix.
pub fn problems(surveys: &[SectionSurvey], wanted: &[Wanted]) -> Vec<String> {
    let mut out = Vec::new();
    for (s, w) in surveys.iter().zip(wanted) {
        for p in &s.paths {
            let at = format!("section {:?}: `{}`", s.name, p.path);
            match &p.state {
                PathState::Missing {
                    siblings,
                    parent_missing,
                } => {
                    let parent = p.path.trim_end_matches('/').rsplit_once('/').map(|x| x.0);
                    let hint = match nearest(&p.path, siblings) {
                        Some(n) => format!(
                            "; did you mean `{}/{n}`?",
                            parent.unwrap_or("").trim_end_matches('/')
                        ),
                        None if *parent_missing => format!(
                            "; its parent `{}` does not exist either: check the storage root and the path",
                            parent.unwrap_or("/")
                        ),
                        None => String::new(),
                    };
                    out.push(format!("{at} does not exist{hint}"));
                }
                PathState::NotDir => out.push(format!(
                    "{at} is not a folder; a section path names the folder that holds the media"
                )),
                PathState::Dir { files: 0, .. } => {
                    out.push(format!("{at} is empty; nothing in it for Plex to scan"))
                }
                PathState::Dir {
                    files, media: 0, ..
                } => out.push(format!(
                    "{at} holds {files} files but none of them is {} media ({}); check the section's type and path, or list its extensions in `extensions`",
                    s.kind.as_str(),
                    w.extensions
                        .iter()
                        .take(6)
                        .map(|e| format!(".{e}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                        + if w.extensions.len() > 6 { ", …" } else { "" }
                )),
                PathState::Dir { .. } => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exts() -> Vec<String> {
        vec!["flac".into(), "mp3".into()]
    }

    #[test]
    fn the_survey_finds_the_typo_the_file_the_empty_and_the_wrong_type_on_a_real_tree() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().to_str().unwrap();
        std::fs::create_dir_all(format!("{root}/Music/A/B")).unwrap();
        std::fs::write(format!("{root}/Music/A/B/01 x.FLAC"), vec![0u8; 1000]).unwrap();
        std::fs::write(format!("{root}/Music/A/B/02.mp3"), vec![0u8; 24]).unwrap();
        std::fs::write(format!("{root}/Music/A/B/cover.jpg"), b"j").unwrap();
        std::fs::write(format!("{root}/Music/A/B/with\nnewline.flac"), b"x").unwrap();
        std::fs::create_dir_all(format!("{root}/Empty")).unwrap();
        std::fs::create_dir_all(format!("{root}/Docs")).unwrap();
        std::fs::write(format!("{root}/Docs/readme.txt"), b"t").unwrap();
        std::fs::write(format!("{root}/afile"), b"t").unwrap();
        let paths: Vec<String> = ["Music", "Musik", "afile", "Empty", "Docs", "nope/deeper"]
            .iter()
            .map(|p| format!("{root}/{p}"))
            .collect();
        let e = exts();
        let wanted = [Wanted {
            name: "Music",
            kind: SectionType::Music,
            paths: &paths,
            extensions: &e,
        }];
        let r = crate::remote::local::Local::new();
        let s = survey(&r, &wanted).unwrap();
        assert_eq!(
            s[0].paths[0].state,
            PathState::Dir {
                files: 4,
                media: 2,
                bytes: 1024
            },
            "a name with a newline counts once, as a file of no known type"
        );
        assert_eq!(s[0].media_files, 2);
        assert_eq!(s[0].media_bytes, 1024);
        let p = problems(&s, &wanted);
        assert_eq!(p.len(), 5, "{p:#?}");
        assert!(
            p[0].ends_with(&format!(
                "`{root}/Musik` does not exist; did you mean `{root}/Music`?"
            )),
            "{}",
            p[0]
        );
        assert!(p[1].contains("is not a folder"), "{}", p[1]);
        assert!(p[2].contains("is empty"), "{}", p[2]);
        assert!(
            p[3].contains("holds 1 files but none of them is music media (.flac, .mp3)"),
            "{}",
            p[3]
        );
        assert!(p[4].contains("does not exist either"), "{}", p[4]);
    }

    #[test]
    fn nearest_takes_typos_and_case_but_not_strangers() {
        let sib: Vec<String> = ["Music", "Movies", "Photos"].map(String::from).to_vec();
        assert_eq!(nearest("/m/Musik", &sib), Some("Music"));
        assert_eq!(nearest("/m/music", &sib), Some("Music"));
        assert_eq!(nearest("/m/Movie/", &sib), Some("Movies"));
        assert_eq!(nearest("/m/Audiobooks", &sib), None);
    }
}
