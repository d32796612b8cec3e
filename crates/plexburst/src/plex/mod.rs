//! Everything plexburst knows about Plex Media Server: its HTTP API (`api`), its SQLite library
//! database read for progress (`db`), its preferences (`prefs`), and `Preferences.xml` (`xml`).

pub mod api;
pub mod db;
pub mod prefs;
pub mod xml;
