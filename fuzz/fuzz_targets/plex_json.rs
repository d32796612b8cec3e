//! Plex's JSON answers (`Accept: application/json`): each endpoint's reader never panics on any
//! body, and what it reads, written back the way Plex writes it, reads back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexburst::plex::api;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    let _ = api::identity_from(body);
    let _ = api::started_from(body);
    let _ = api::total_size_from("/library/sections/1/all", body);
    let _ = api::activities_from(body);
    let _ = api::account_from(body);

    if let Ok(sections) = api::sections_from(body) {
        let dirs: Vec<_> = sections
            .iter()
            .map(|s| {
                // Plex writes `key` as a string (plex.md §4).
                json!({
                    "key": s.id.to_string(), "title": s.title, "type": s.kind, "agent": s.agent,
                    "scanner": s.scanner, "language": s.language, "refreshing": s.refreshing,
                    "Location": s.locations.iter().map(|p| json!({"path": p})).collect::<Vec<_>>(),
                })
            })
            .collect();
        let again = json!({"MediaContainer": {"size": dirs.len(), "Directory": dirs}}).to_string();
        let back = api::sections_from(&again).expect("sections written back");
        assert_eq!(format!("{sections:?}"), format!("{back:?}"));
    }
    if let Ok(prefs) = api::prefs_from(body) {
        assert!(prefs.iter().all(|p| !p.id.is_empty()));
        let settings: Vec<_> = prefs
            .iter()
            .map(|p| json!({"id": p.id, "type": p.kind, "value": p.value, "default": p.default}))
            .collect();
        let again = json!({"MediaContainer": {"Setting": settings}}).to_string();
        let back = api::prefs_from(&again).expect("prefs written back");
        assert_eq!(format!("{prefs:?}"), format!("{back:?}"));
    }
});
