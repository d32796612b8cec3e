//! The line-oriented outputs of the seed's and the prefetcher's scripts (`seed.rs`,
//! `storage/rclone/prefetch.rs`): never a panic, and the seed's section counts and the
//! prefetcher's status, printed the way their scripts print them, read back equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use plexburst::seed;
use plexburst::storage::rclone::{parse_status, parse_stopped};

fuzz_target!(|data: &[u8]| {
    let Ok(out) = std::str::from_utf8(data) else {
        return;
    };
    let check = seed::parse_check(out);
    let _ = (check.ok(), check.damaged_tables());
    let _ = seed::parse_remap(out);

    // The delta's sections: the lines shaped like the counts' (ten fields); the rest, its lines.
    let counts: String = out
        .lines()
        .filter(|l| l.split('\t').count() == 10)
        .map(|l| format!("{l}\n"))
        .collect();
    if let Ok(seeded) = seed::parse_counts(&counts) {
        for d in seed::parse_delta(out, &seeded) {
            assert!(d.removed >= 0 && d.newly_analysed >= 0, "{d:?}");
        }
    }

    if let Ok(seeded) = seed::parse_counts(out) {
        let locations: Vec<String> = seeded.iter().flat_map(|s| s.locations.clone()).collect();
        let _ = seed::parse_sample(out, &locations).summary();
        // As sqlite3 prints COUNTS_SQL: tab-separated, the locations joined with `|`.
        let printed: String = seeded
            .iter()
            .map(|s| {
                format!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                    s.id,
                    s.name,
                    s.section_type,
                    s.locations.join("|"),
                    s.items,
                    s.tracks,
                    s.sonic,
                    s.deleted,
                    s.max_id,
                    s.sonic_all
                )
            })
            .collect();
        assert_eq!(seed::parse_counts(&printed).unwrap(), seeded, "{printed:?}");
    }

    if let Some(st) = parse_status(out) {
        // As the prefetcher's status line prints it.
        let line = format!(
            "{} {} {} {} {} {} {} {}\n",
            st.window_bytes,
            st.files,
            st.bytes,
            st.failed,
            st.read_bps,
            st.consume_bps,
            if st.finished { "finished" } else { "running" },
            st.ahead_bytes
        );
        assert_eq!(parse_status(&line), Some(st.clone()));
        let paths = ["/mnt/media/Music/a b.flac", "/mnt/media/Music/ü.mp3"];
        let stopped = parse_stopped(&format!("{line}\n{}\n", paths.join("\n")));
        assert_eq!(stopped.failed_paths, paths);
    }
    let _ = parse_stopped(out);
});
