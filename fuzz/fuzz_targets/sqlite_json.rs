//! `sqlite3` output as plexburst reads it: the monitor's full sample (one JSON text from `-list`)
//! and `-json` rows never panic, a sample's sections come out in id order with the per-type
//! counts only where they belong, and `-json` file rows written back read back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexburst::plex::db;

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct File {
    file: Option<String>,
}

fuzz_target!(|data: &[u8]| {
    let Ok(out) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sample) = db::full_sample_from(out) {
        let ids: Vec<i64> = sample.sections.iter().map(|s| s.section_id).collect();
        assert!(ids.is_sorted(), "sections out of order: {ids:?}");
        for s in &sample.sections {
            if s.section_type != 8 {
                assert_eq!((s.tracks, s.sonic_analyzed), (0, 0), "{s:?}");
            }
            if s.section_type != 13 {
                assert_eq!((s.photos, s.thumbnailed), (0, 0), "{s:?}");
            }
        }
    }
    let _ = db::parse_rows::<serde_json::Value>(out);
    if let Ok(rows) = db::parse_rows::<File>(out) {
        let again = serde_json::to_string(&rows).unwrap();
        assert_eq!(db::parse_rows::<File>(&again).unwrap(), rows);
    }
});
