//! Which preferences plexburst changes and why: every background task off during the run, only the
//! analysis a section needs on during its turn, and the user's values restored at the end.
//!
//! Every function takes the server's current `GET /:/prefs` and only ever names ids the server has:
//! Plex answers 400 to a `PUT /:/prefs` naming one unknown id and applies none of it (plex.md §3.1),
//! and the set of ids depends on version and Plex Pass (plexapi gates `MusicAnalysisBehavior` on an
//! active subscription, plex.md §3.2). Values are rendered the way `GET` returned them, so a bool
//! read as `true`/`false` is written back as `false`, and one read as `1`/`0` as `0`.
//! Only values that differ from the current ones are returned, so an already quiet server gets an
//! empty list (the caller skips the PUT).
//!
//! What `background_off` turns off (plex.md §3.2, rclone-and-plex-ops.md "Plex-side settings"):
//!
//! | id | value | why |
//! |---|---|---|
//! | every `*Behavior` (`MusicAnalysisBehavior`, `LoudnessAnalysisBehavior`, `GenerateBIFBehavior`, `GenerateChapterThumbBehavior`, `GenerateIntroMarkerBehavior`, `GenerateCreditsMarkerBehavior`, `GenerateAdMarkerBehavior`, `GenerateVADBehavior`) | `never` | each `asap`/`scheduled` behaviour starts a full read of new media (plus CPU) as soon as the scan adds it, competing with the scan; analysis is started explicitly, one section at a time |
//! | every bool `Butler*` (`ButlerTaskDeepMediaAnalysis`, `ButlerTaskUpgradeMediaAnalysis`, `ButlerTaskRefreshLibraries`, `ButlerTaskBackupDatabase`, `ButlerTaskOptimizeDatabase`, `ButlerTaskGenerateMediaIndexFiles`, ...) | `false` | maintenance tasks run inside the butler window and would rescan, re-read files or rewrite the DB mid-run; deep analysis is "a full read of every file" (animosity22) |
//! | `autoEmptyTrash` | `false` | a mount that flaps makes files look missing; emptying the trash after a scan would delete those items for good (plex.md §7) |
//! | `FSEventLibraryUpdatesEnabled`, `FSEventLibraryPartialScanEnabled`, `watchMusicSections` | `false` | inotify scans "will not work on network mounted filesystems" and would start partial scans beside ours |
//! | `ScheduledLibraryUpdatesEnabled` | `false` | a periodic scan would start a second scan during the run |
//! | `GenerateIndexFilesDuringAnalysis` | `false` | makes analysis also write BIF index files (another full read) |
//! | `ScannerLowPriority` | `false` | nothing else runs on the box; a low-priority scanner only slows the scan |
//!
//! What `analysis_for` turns on: music (8) `LongRunningJobThreads` = the plan's worker count (the
//! target's vCPUs unless `plex.analysis_threads` says otherwise; Plex's default 0 is half the cores,
//! plex.md §3, so a rented machine would idle half its CPUs) and `MusicAnalysisBehavior=asap` —
//! Sonic analysis; the pipeline
//! then starts butler task [`butler_task_for`] = `MusicAnalysis`, since the behaviour alone did not
//! analyse existing tracks in the field (plex.md §3.4). Photo (13): no preference is known to gate
//! photo thumbnails (plex.md has none); they come from `PUT /library/sections/{id}/analyze`, so nothing
//! is turned on. Movie and show: nothing (their analysis is not part of plexburst's job).

use std::collections::BTreeMap;

use super::api::Pref;
use super::xml::Attrs;

/// The `*Behavior` value that disables a behaviour, and the one that runs it on new media too.
const NEVER: &str = "never";
const ASAP: &str = "asap";

/// Library-update and trash prefs turned off by `background_off` (bools).
const OFF_BOOLS: &[&str] = &[
    "autoEmptyTrash",
    "FSEventLibraryUpdatesEnabled",
    "FSEventLibraryPartialScanEnabled",
    "watchMusicSections",
    "ScheduledLibraryUpdatesEnabled",
    "GenerateIndexFilesDuringAnalysis",
    "ScannerLowPriority",
];

/// Section types as in `library_sections.section_type`.
pub const SECTION_MUSIC: i64 = 8;
pub const SECTION_PHOTO: i64 = 13;

/// How many Sonic analyses Plex runs at once: "how many threads can be used for long-running
/// jobs, such as Sonic Analysis (Default is half the total threads)" (plex.md §3, hidden int,
/// default 0).
pub const ANALYSIS_THREADS: &str = "LongRunningJobThreads";

/// Whether plexburst ever changes this pref (and so restores it at the end).
pub fn managed(p: &Pref) -> bool {
    is_behavior(p)
        || is_butler_bool(p)
        || OFF_BOOLS.contains(&p.id.as_str())
        || p.id == ANALYSIS_THREADS
}

/// Every background task off; see the module docs for each id and why.
pub fn background_off(current: &[Pref]) -> Vec<(String, String)> {
    current
        .iter()
        .filter_map(|p| {
            let want = if is_behavior(p) {
                NEVER.to_string()
            } else if is_butler_bool(p) || (OFF_BOOLS.contains(&p.id.as_str()) && p.kind == "bool")
            {
                bool_like(p, false)
            } else {
                return None;
            };
            changed(p, want)
        })
        .collect()
}

/// The prefs to set before analysing a section of `section_type` (1 movie, 2 show, 8 music,
/// 13 photo): only what that section needs. Music also gets `threads` Sonic workers
/// ([`ANALYSIS_THREADS`]), where Plex would use half the cores.
pub fn analysis_for(section_type: i64, threads: u32, current: &[Pref]) -> Vec<(String, String)> {
    let wanted: Vec<(&str, String)> = match section_type {
        SECTION_MUSIC => vec![
            (ANALYSIS_THREADS, threads.to_string()),
            ("MusicAnalysisBehavior", ASAP.to_string()),
        ],
        _ => Vec::new(),
    };
    wanted
        .into_iter()
        .filter_map(|(id, v)| {
            let p = current.iter().find(|p| p.id == id)?;
            changed(p, v)
        })
        .collect()
}

/// The butler task that starts the analysis a section of `section_type` needs, if any
/// (`POST /butler/{task}`).
pub fn butler_task_for(section_type: i64) -> Option<&'static str> {
    (section_type == SECTION_MUSIC).then_some("MusicAnalysis")
}

/// Put back the user's values of every pref plexburst manages that differs now; prefs the server no
/// longer has are skipped, and prefs plexburst never touches are left as Plex has them (Plex itself
/// updates some, e.g. `LastAutomaticMappedPort`, and an old value must not overwrite them).
pub fn restore(saved: &[Pref], current: &[Pref]) -> Vec<(String, String)> {
    saved
        .iter()
        .filter(|s| managed(s))
        .filter_map(|s| {
            let now = current.iter().find(|c| c.id == s.id)?;
            changed(now, s.value.clone())
        })
        .collect()
}

/// The managed prefs' attributes in Preferences.xml (`file`) as the run found them, by id: `None`
/// where the file has no attribute (Plex uses its default). Taken with the prefs saved in
/// configure, so `file_restore` can put the file back exactly as it was.
pub fn file_snapshot(current: &[Pref], file: &Attrs) -> BTreeMap<String, Option<String>> {
    current
        .iter()
        .filter(|p| managed(p))
        .map(|p| (p.id.clone(), file.get(&p.id).cloned()))
        .collect()
}

/// The edits that make Preferences.xml (whose attributes are `now`) hold the user's value of
/// every pref plexburst manages again, for writing the file with Plex stopped: `Some(v)` sets the
/// attribute, `None` removes it. The target is the attribute as `before` recorded it; without a
/// record, the saved value, or no attribute when that value is the default (Plex stores a pref
/// only when it differs from its default, plex.md §6). Attributes already right are not named.
pub fn file_restore(
    saved: &[Pref],
    before: Option<&BTreeMap<String, Option<String>>>,
    now: &Attrs,
) -> Vec<(String, Option<String>)> {
    saved
        .iter()
        .filter(|s| managed(s))
        .filter_map(|s| {
            let want = match before.and_then(|b| b.get(&s.id)) {
                Some(recorded) => recorded.clone(),
                None if same_value(s, &s.value, &s.default) => None,
                None => Some(file_value(s, &s.value)),
            };
            (now.get(&s.id) != want.as_ref()).then(|| (s.id.clone(), want))
        })
        .collect()
}

/// `id=value` for each of `ids` as the user had it (what to set in Plex's settings, or send in a
/// `PUT /:/prefs`), for a restore that could not be done.
pub fn put_back_list(saved: &[Pref], ids: &[&str]) -> Vec<String> {
    saved
        .iter()
        .filter(|s| ids.contains(&s.id.as_str()))
        .map(|s| format!("{}={}", s.id, s.value))
        .collect()
}

/// A value as Plex writes it in Preferences.xml: bools as `1`/`0`, everything else as text.
fn file_value(p: &Pref, value: &str) -> String {
    if p.kind == "bool" {
        if matches!(value, "1" | "true") {
            "1"
        } else {
            "0"
        }
        .to_string()
    } else {
        value.to_string()
    }
}

fn is_behavior(p: &Pref) -> bool {
    p.id.ends_with("Behavior") && p.kind == "text"
}

fn is_butler_bool(p: &Pref) -> bool {
    p.id.starts_with("Butler") && p.kind == "bool"
}

/// `false`/`true`, unless the server renders this bool as `0`/`1`.
fn bool_like(p: &Pref, on: bool) -> String {
    let numeric = matches!(p.value.as_str(), "0" | "1");
    match (numeric, on) {
        (true, true) => "1",
        (true, false) => "0",
        (false, true) => "true",
        (false, false) => "false",
    }
    .to_string()
}

fn changed(p: &Pref, want: String) -> Option<(String, String)> {
    (!same_value(p, &p.value, &want)).then(|| (p.id.clone(), want))
}

/// Bools compare by meaning (`1` == `true`), everything else by text.
fn same_value(p: &Pref, a: &str, b: &str) -> bool {
    if p.kind == "bool" {
        let truthy = |v: &str| matches!(v, "1" | "true");
        truthy(a) == truthy(b)
    } else {
        a == b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The real `GET /:/prefs` dump, rendered as `api::Client::prefs` renders it.
    fn real() -> Vec<Pref> {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/real-pms-prefs.json"
        ))
        .unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let render = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        v["MediaContainer"]["Setting"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| Pref {
                id: s["id"].as_str().unwrap().to_string(),
                kind: s["type"].as_str().unwrap().to_string(),
                value: render(&s["value"]),
                default: render(&s["default"]),
            })
            .collect()
    }

    fn apply(prefs: &mut [Pref], changes: &[(String, String)]) {
        for (k, v) in changes {
            prefs.iter_mut().find(|p| &p.id == k).unwrap().value = v.clone();
        }
    }

    fn get<'a>(changes: &'a [(String, String)], id: &str) -> Option<&'a str> {
        changes
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn background_off_on_the_real_server() {
        let prefs = real();
        let off = background_off(&prefs);
        // Only ids the server has, each once.
        for (k, _) in &off {
            assert!(prefs.iter().any(|p| &p.id == k), "unknown id {k}");
        }
        let mut ids: Vec<_> = off.iter().map(|(k, _)| k.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), off.len());

        assert_eq!(get(&off, "autoEmptyTrash"), Some("false"));
        assert_eq!(get(&off, "FSEventLibraryUpdatesEnabled"), Some("false"));
        assert_eq!(get(&off, "ScheduledLibraryUpdatesEnabled"), Some("false"));
        assert_eq!(get(&off, "ButlerTaskDeepMediaAnalysis"), Some("false"));
        assert_eq!(get(&off, "ButlerTaskRefreshLibraries"), Some("false"));
        assert_eq!(get(&off, "ScannerLowPriority"), Some("false"));
        for b in [
            "MusicAnalysisBehavior",
            "LoudnessAnalysisBehavior",
            "GenerateBIFBehavior",
            "GenerateChapterThumbBehavior",
            "GenerateIntroMarkerBehavior",
        ] {
            assert_eq!(get(&off, b), Some("never"), "{b}");
        }
        // Already off on this server: not sent.
        assert_eq!(get(&off, "watchMusicSections"), None);
        assert_eq!(get(&off, "ButlerTaskGenerateMediaIndexFiles"), None);
        // Never touched: the butler window (ints), its update channel (text), unrelated prefs.
        for untouched in [
            "ButlerStartHour",
            "ButlerUpdateChannel",
            "ButlerDatabaseBackupPath",
            "FriendlyName",
            "allowMediaDeletion",
        ] {
            assert_eq!(get(&off, untouched), None, "{untouched}");
        }
        // The pufky-only behaviours are absent from this 2022 server, so they are not named.
        assert_eq!(get(&off, "GenerateCreditsMarkerBehavior"), None);
    }

    #[test]
    fn background_off_is_idempotent() {
        let mut prefs = real();
        let off = background_off(&prefs);
        apply(&mut prefs, &off);
        assert!(background_off(&prefs).is_empty());
    }

    #[test]
    fn numeric_bools_stay_numeric() {
        let prefs = vec![
            Pref {
                id: "autoEmptyTrash".into(),
                kind: "bool".into(),
                value: "1".into(),
                default: "1".into(),
            },
            Pref {
                id: "ButlerTaskBackupDatabase".into(),
                kind: "bool".into(),
                value: "0".into(),
                default: "1".into(),
            },
        ];
        assert_eq!(
            background_off(&prefs),
            vec![("autoEmptyTrash".to_string(), "0".to_string())]
        );
    }

    #[test]
    fn analysis_for_music_enables_sonic_only() {
        let mut prefs = real();
        apply(&mut prefs, &background_off(&real()));
        let on = analysis_for(SECTION_MUSIC, 4, &prefs);
        assert_eq!(
            on,
            vec![
                ("LongRunningJobThreads".to_string(), "4".to_string()),
                ("MusicAnalysisBehavior".to_string(), "asap".to_string())
            ]
        );
        assert_eq!(butler_task_for(SECTION_MUSIC), Some("MusicAnalysis"));
        for t in [1, 2, SECTION_PHOTO] {
            assert!(analysis_for(t, 4, &prefs).is_empty(), "type {t}");
            assert_eq!(butler_task_for(t), None);
        }
    }

    #[test]
    fn analysis_for_music_without_the_pref_names_nothing() {
        // A server without Plex Pass may not list MusicAnalysisBehavior (plex.md §3.2).
        let prefs: Vec<Pref> = real()
            .into_iter()
            .filter(|p| p.id != "MusicAnalysisBehavior" && p.id != ANALYSIS_THREADS)
            .collect();
        assert!(analysis_for(SECTION_MUSIC, 4, &prefs).is_empty());
    }

    #[test]
    fn restore_round_trips_to_the_saved_values() {
        let saved = real();
        let mut now = saved.clone();
        apply(&mut now, &background_off(&saved));
        let on = analysis_for(SECTION_MUSIC, 4, &now);
        apply(&mut now, &on);
        // Plex itself changed an unmanaged pref meanwhile: restore must not undo it.
        apply(
            &mut now,
            &[("LastAutomaticMappedPort".into(), "41234".into())],
        );

        let back = restore(&saved, &now);
        assert_eq!(get(&back, "autoEmptyTrash"), Some("true"));
        assert_eq!(get(&back, "MusicAnalysisBehavior"), Some("scheduled"));
        assert_eq!(get(&back, ANALYSIS_THREADS), Some("0"));
        assert_eq!(get(&back, "LastAutomaticMappedPort"), None);
        apply(&mut now, &back);
        for s in &saved {
            let n = now.iter().find(|p| p.id == s.id).unwrap();
            if s.id != "LastAutomaticMappedPort" {
                assert_eq!(n.value, s.value, "{}", s.id);
            }
        }
        assert!(restore(&saved, &now).is_empty());
    }

    /// Preferences.xml's attributes for `prefs` as Plex (and the emulator) writes them: only the
    /// values that differ from the default, bools as `1`/`0`; plus an identity and the token.
    fn file_of(prefs: &[Pref]) -> Attrs {
        let mut a: Attrs = prefs
            .iter()
            .filter(|p| !same_value(p, &p.value, &p.default))
            .map(|p| (p.id.clone(), file_value(p, &p.value)))
            .collect();
        a.insert("MachineIdentifier".into(), "m-1".into());
        a.insert("PlexOnlineToken".into(), "tok-1".into());
        a
    }

    fn apply_file(file: &mut Attrs, edits: &[(String, Option<String>)]) {
        for (k, v) in edits {
            match v {
                Some(v) => file.insert(k.clone(), v.clone()),
                None => file.remove(k),
            };
        }
    }

    #[test]
    fn file_restore_puts_the_file_back_as_it_was() {
        let saved = real();
        let before = file_of(&saved);
        let snapshot = file_snapshot(&saved, &before);
        assert_eq!(snapshot["autoEmptyTrash"], None, "true is its default");
        assert_eq!(
            snapshot["MusicAnalysisBehavior"], None,
            "scheduled is its default"
        );
        assert_eq!(
            snapshot["GenerateBIFBehavior"].as_deref(),
            Some("scheduled")
        );
        assert_eq!(snapshot["ScannerLowPriority"].as_deref(), Some("1"));
        assert!(
            !snapshot.contains_key("PlexOnlineToken"),
            "only managed ids"
        );
        // The run changed the managed prefs; Plex wrote them as it does.
        let mut during = saved.clone();
        apply(&mut during, &background_off(&saved));
        let on = analysis_for(SECTION_MUSIC, 4, &during);
        apply(&mut during, &on);
        let now = file_of(&during);
        assert_eq!(now["autoEmptyTrash"], "0");
        for recorded in [Some(&snapshot), None] {
            let edits = file_restore(&saved, recorded, &now);
            assert!(
                edits.contains(&("autoEmptyTrash".to_string(), None)),
                "{edits:?}"
            );
            let mut back = now.clone();
            apply_file(&mut back, &edits);
            assert_eq!(back, before, "recorded: {}", recorded.is_some());
            assert!(file_restore(&saved, recorded, &back).is_empty());
        }
        assert!(file_restore(&saved, Some(&snapshot), &before).is_empty());
    }

    #[test]
    fn file_restore_keeps_a_default_the_file_stated() {
        // Once set, Plex keeps a pref in the file even at its default (plex.md §6): the record
        // says so, and the file gets the attribute back rather than losing it.
        let saved = real();
        let mut before = file_of(&saved);
        before.insert("autoEmptyTrash".into(), "1".into());
        let snapshot = file_snapshot(&saved, &before);
        let mut now = before.clone();
        now.insert("autoEmptyTrash".into(), "0".into());
        assert_eq!(
            file_restore(&saved, Some(&snapshot), &now),
            vec![("autoEmptyTrash".to_string(), Some("1".to_string()))]
        );
        assert_eq!(
            put_back_list(&saved, &["autoEmptyTrash", "MusicAnalysisBehavior"]),
            vec![
                "autoEmptyTrash=true".to_string(),
                "MusicAnalysisBehavior=scheduled".to_string()
            ]
        );
    }

    #[test]
    fn restore_skips_ids_the_server_no_longer_has() {
        let saved = real();
        let now: Vec<Pref> = saved
            .iter()
            .filter(|p| p.id != "autoEmptyTrash")
            .cloned()
            .map(|mut p| {
                if p.id == "GenerateBIFBehavior" {
                    p.value = "never".into();
                }
                p
            })
            .collect();
        assert_eq!(
            restore(&saved, &now),
            vec![("GenerateBIFBehavior".to_string(), "scheduled".to_string())]
        );
    }
}
