//! The export's trash gate with the real binary: a run during which Plex marks items deleted is
//! refused before Plex is stopped or anything is archived, and `resume --allow-deleted` exports it.

use crate::harness::{Lab, LabOpts, TRACKS, text};

const TRASHED_TRACKS: &str =
    "SELECT count(*) FROM metadata_items WHERE metadata_type = 10 AND deleted_at IS NOT NULL";

fn export_files(lab: &Lab) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(lab.path("export"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn export_refuses_when_plex_trashed_items_during_the_run_until_allowed() {
    let mut lab = Lab::new(LabOpts::default());
    // A first run scans the library into the data folder, which stays for the next run (a delta
    // run on a seeded data folder, as a user re-running on the same machine does).
    let first = lab.plexburst(&["run", "--skip-analysis"]);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first));
    assert_eq!(lab.count(TRACKS), lab.counts.tracks);
    let exported_before = export_files(&lab);

    // The second run's server can list Music but not read it, as on a degraded mount: its rescan
    // moves every track to Plex's trash.
    let music = lab.path("media/Music").display().to_string();
    lab.opts.emulator_args = vec!["--unreadable".into(), music];
    std::fs::write(lab.config_path(), lab.config_toml()).unwrap();
    let refused = lab.plexburst(&["run", "--skip-analysis"]);
    let log = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{log}");
    let n = lab.counts.tracks;
    assert_eq!(
        lab.count(TRASHED_TRACKS),
        n,
        "the rescan trashed the tracks"
    );
    for want in [
        "refusing to export".to_string(),
        format!("Music: {n} items (0 -> {n})"),
        "degraded".into(),
        "export.allow_deleted = true".into(),
        "plexburst resume --allow-deleted".into(),
    ] {
        assert!(log.contains(&want), "missing {want:?}:\n{log}");
    }
    let refusal = log
        .lines()
        .find(|l| l.contains("refusing to export"))
        .unwrap_or_default();
    assert!(
        !refusal.contains("Movies:"),
        "only sections whose trash grew are named:\n{refusal}"
    );
    assert_eq!(
        export_files(&lab),
        exported_before,
        "nothing was archived by the refused run"
    );
    let export = lab.phase("export");
    assert_eq!(export["status"], "failed", "{export}");

    // The user looked, the deletions are what they want: the same run goes on and exports.
    let allowed = lab.plexburst(&["resume", "--allow-deleted"]);
    assert_eq!(allowed.status.code(), Some(0), "{}", text(&allowed));
    let state = lab.state();
    let archive = state["export"]["archive"].as_str().unwrap().to_string();
    assert!(std::path::Path::new(&archive).exists(), "{archive}");
    assert!(
        !exported_before.iter().any(|f| archive.ends_with(f)),
        "a new archive was written: {archive}"
    );
    let detail = lab.phase("export")["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains(&format!("allowed: Music: {n} items")),
        "{detail}"
    );
}
