//! `plexburst.toml`: `Config::parse` (TOML read, then validated) never panics, every rejection
//! names at least one problem, and the meaning does not depend on the layout: the same document
//! re-written by the TOML library parses to the same config (or is rejected again).
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexburst::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = Config::parse(text);
    if let Err(e) = &first {
        assert!(
            !e.problems.is_empty() && e.problems.iter().all(|p| !p.trim().is_empty()),
            "a rejection without a problem: {e:?}"
        );
    }
    let Ok(table) = text.parse::<toml::Table>() else {
        return;
    };
    let again = Config::parse(&table.to_string());
    match (&first, &again) {
        (Ok(a), Ok(b)) => assert_eq!(format!("{a:?}"), format!("{b:?}"), "re-written TOML"),
        (Err(_), Err(_)) => {}
        _ => panic!(
            "accepted once and not the other time:\n{text}\n---\n{table}\n{first:?}\n{again:?}"
        ),
    }
});
