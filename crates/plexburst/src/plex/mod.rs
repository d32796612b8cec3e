//! Everything plexburst knows about Plex Media Server: its HTTP API (`api`), its SQLite library
//! database read for progress (`db`), its preferences (`prefs`), and `Preferences.xml` (`xml`).

pub mod api;
pub mod db;
pub mod prefs;
pub mod xml;

use serde::{Deserialize, Serialize};

/// The kinds of library section plexburst drives, with what Plex calls each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SectionType {
    Movie,
    Show,
    Music,
    Photo,
}

impl SectionType {
    pub const NAMES: &'static str = "movie, show, music, photo";

    pub fn parse(s: &str) -> Option<SectionType> {
        match s {
            "movie" => Some(SectionType::Movie),
            "show" => Some(SectionType::Show),
            "music" => Some(SectionType::Music),
            "photo" => Some(SectionType::Photo),
            _ => None,
        }
    }
    /// `library_sections.section_type` (plex.md §1.4).
    pub fn code(self) -> i64 {
        match self {
            SectionType::Movie => 1,
            SectionType::Show => 2,
            SectionType::Music => 8,
            SectionType::Photo => 13,
        }
    }
    /// The `type` the API takes when creating a section.
    pub fn api_kind(self) -> &'static str {
        match self {
            SectionType::Movie => "movie",
            SectionType::Show => "show",
            SectionType::Music => "artist",
            SectionType::Photo => "photo",
        }
    }
    /// Agent and scanner that work on a current server (plex.md §4, plexapi's bootstrap).
    pub fn default_agent(self) -> &'static str {
        match self {
            SectionType::Movie => "tv.plex.agents.movie",
            SectionType::Show => "tv.plex.agents.series",
            SectionType::Music => "tv.plex.agents.music",
            SectionType::Photo => "com.plexapp.agents.none",
        }
    }
    pub fn default_scanner(self) -> &'static str {
        match self {
            SectionType::Movie => "Plex Movie",
            SectionType::Show => "Plex TV Series",
            SectionType::Music => "Plex Music",
            SectionType::Photo => "Plex Photo Scanner",
        }
    }
    /// The file extensions a section of this type scans (lower case), for the preflight's count
    /// of media files. A guess from Plex's support pages on media formats, not a list Plex
    /// publishes; `sections[].extensions` overrides it.
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            SectionType::Movie | SectionType::Show => &[
                "mkv", "mp4", "m4v", "avi", "mov", "ts", "m2ts", "mts", "wmv", "mpg", "mpeg",
                "webm", "flv", "divx", "3gp", "ogv",
            ],
            SectionType::Music => &[
                "flac", "mp3", "m4a", "aac", "ogg", "oga", "opus", "wav", "aif", "aiff", "alac",
                "wma", "ape", "wv", "dsf", "dff", "mka",
            ],
            SectionType::Photo => &[
                "jpg", "jpeg", "png", "gif", "heic", "heif", "tif", "tiff", "bmp", "webp", "cr2",
                "cr3", "nef", "arw", "dng", "orf", "rw2", "raf",
            ],
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            SectionType::Movie => "movie",
            SectionType::Show => "show",
            SectionType::Music => "music",
            SectionType::Photo => "photo",
        }
    }
}
