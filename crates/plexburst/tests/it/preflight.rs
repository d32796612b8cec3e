//! Fail before paying, say how far along it is: the preflight of the section folders (through
//! `plan` and `run`, local and SSH), the scan's total and ETA, and "done with warnings".

use crate::harness::{Lab, LabOpts, pids_with_cmdline, text};

/// Point the Music section of the lab's config at `path` instead of `<media>/Music`.
fn music_at(lab: &Lab, path: &str) {
    let media = lab.path("media").display().to_string();
    let toml = lab.config_toml().replacen(
        &format!("paths = [\"{media}/Music\"]"),
        &format!("paths = [\"{path}\"]"),
        1,
    );
    assert!(toml.contains(path), "the lab's config changed shape");
    std::fs::write(lab.config_path(), toml).unwrap();
}

/// The four ways a section folder can be wrong, each with what the user must read.
fn bad_folders(lab: &Lab) -> Vec<(String, String)> {
    let media = lab.path("media");
    let m = media.display();
    std::fs::write(media.join("notes.txt"), "a file, not a folder").unwrap();
    std::fs::create_dir_all(media.join("Empty")).unwrap();
    std::fs::create_dir_all(media.join("Docs")).unwrap();
    std::fs::write(media.join("Docs/readme.txt"), "no music here").unwrap();
    vec![
        (
            format!("{m}/Musik"),
            format!("`{m}/Musik` does not exist; did you mean `{m}/Music`?"),
        ),
        (format!("{m}/notes.txt"), "is not a folder".into()),
        (format!("{m}/Empty"), "is empty".into()),
        (
            format!("{m}/Docs"),
            "holds 1 files but none of them is music media (.flac, .mp3".into(),
        ),
    ]
}

#[test]
fn a_wrong_section_folder_stops_plan_and_run_before_plex_starts() {
    let lab = Lab::new(LabOpts::default());
    for (path, message) in bad_folders(&lab) {
        music_at(&lab, &path);
        let plan = lab.plexburst(&["plan"]);
        assert_eq!(plan.status.code(), Some(2), "plan, {path}: {}", text(&plan));
        assert!(
            String::from_utf8_lossy(&plan.stderr).contains(&message),
            "plan, {path}: want {message:?}: {}",
            text(&plan)
        );
        assert!(
            String::from_utf8_lossy(&plan.stderr).contains("section \"Music\""),
            "{}",
            text(&plan)
        );

        let out = lab.plexburst(&["run"]);
        assert_eq!(out.status.code(), Some(2), "run, {path}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&message),
            "run, {path}: want {message:?}: {}",
            text(&out)
        );
        assert_eq!(lab.phase("preflight")["status"], "failed");
        for later in ["start-plex", "configure", "scan"] {
            assert_eq!(lab.phase(later)["status"], "pending", "{later}, {path}");
        }
        assert!(
            lab.server_pid().is_none(),
            "Plex must not have been started ({path})"
        );
        assert!(pids_with_cmdline(&lab.data_dir().display().to_string()).is_empty());
        assert!(
            !lab.db_path().exists(),
            "no Plex ever ran on the data dir ({path})"
        );
    }
    // Fixed: a new `run` replaces the run that stopped in its preflight (nothing to resume).
    music_at(&lab, &lab.path("media/Music").display().to_string());
    let out = lab.plexburst(&["run", "--skip-analysis"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(lab.state()["status"], "done");
}

#[test]
fn plan_runs_the_same_preflight_over_ssh() {
    let sshd = crate::sshd::Sshd::start();
    let lab = Lab::new(LabOpts {
        target_toml: Some(sshd.config_toml()),
        ..Default::default()
    });
    let good = lab.plexburst(&["plan"]);
    assert!(good.status.success(), "{}", text(&good));
    let stdout = String::from_utf8_lossy(&good.stdout);
    let c = &lab.counts;
    assert!(
        stdout.contains(&format!("preflight: ok (Music: {} files", c.tracks)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("Movies: {} files", c.movies)),
        "{stdout}"
    );
    // The analysis forecast sizes the music the survey found, on the target's own cores.
    assert!(
        stdout.contains(&format!(
            "forecast: Sonic analysis of {} tracks, ",
            c.tracks
        )),
        "{stdout}"
    );
    let nproc =
        String::from_utf8(crate::harness::run(&mut crate::harness::command("nproc")).stdout)
            .unwrap()
            .trim()
            .to_string();
    let line = stdout
        .lines()
        .find(|l| l.starts_with("  this target (ssh "))
        .unwrap_or_else(|| panic!("no forecast line for the target: {stdout}"));
    assert!(
        line.contains("CPU-bound (CPU ")
            && line.contains(&format!(" on {nproc} worker"))
            && line.ends_with("media on the target's disk)"),
        "{line}"
    );
    let (path, message) = bad_folders(&lab).remove(0);
    music_at(&lab, &path);
    let bad = lab.plexburst(&["plan"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains(&message),
        "{}",
        text(&bad)
    );
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("ssh "),
        "the message names the target: {}",
        text(&bad)
    );
    assert!(!lab.state_dir().exists(), "plan leaves no state dir");
}

#[test]
fn the_scan_counts_against_the_files_found_with_a_rate_and_an_eta() {
    // Slow enough for several samples: 22 files at 4 files/s.
    let lab = Lab::new(LabOpts {
        emulator_args: vec!["--scan-rate".into(), "4".into()],
        ..Default::default()
    });
    let out = lab.plexburst(&["run", "--skip-analysis"]);
    assert!(out.status.success(), "{}", text(&out));
    let c = &lab.counts;
    let files = c.tracks + c.movies + c.photos;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let scan_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(" scan: ") && l.contains(" items, "))
        .collect();
    assert!(!scan_lines.is_empty(), "{stderr}");
    for l in &scan_lines {
        assert!(
            l.contains(&format!("/{files} items")),
            "every scan line counts against the {files} files found: {l}"
        );
    }
    let with_eta = scan_lines
        .iter()
        .filter(|l| {
            l.split("ETA ")
                .nth(1)
                .is_some_and(|e| e.starts_with(|ch: char| ch.is_ascii_digit()))
        })
        .count();
    assert!(
        with_eta >= 1,
        "the ETA is a number after the first samples: {scan_lines:#?}"
    );
    let survey = &lab.state()["survey"];
    assert_eq!(survey[0]["media_files"], c.tracks, "{survey:#}");
    let report = std::fs::read_to_string(lab.journal().with_file_name("report.md")).unwrap();
    assert!(
        report.contains(&format!("| Music | {} |", c.tracks)),
        "the report shows files against items: {report}"
    );
}

#[test]
fn a_section_plex_makes_nothing_of_ends_done_with_warnings_and_strict_fails() {
    let lab = Lab::new(LabOpts::default());
    // WavPack files: counted as music by the preflight, not scanned by this server.
    let extra = lab.path("media/Extra/Artist/Album");
    std::fs::create_dir_all(&extra).unwrap();
    for i in 1..=3 {
        std::fs::write(extra.join(format!("{i:02} - Track.wv")), vec![7u8; 512]).unwrap();
    }
    let toml = format!(
        "{}\n[[sections]]\nname = \"Extra\"\ntype = \"music\"\npaths = [\"{}\"]\n",
        lab.config_toml(),
        lab.path("media/Extra").display()
    );
    std::fs::write(lab.config_path(), toml).unwrap();
    let out = lab.plexburst(&["run", "--skip-analysis"]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = "section \"Extra\" has 0 items from 3 media files";
    assert!(stderr.contains("done with warnings"), "{stderr}");
    assert!(stderr.contains(want), "{stderr}");
    let status = lab.plexburst(&["status"]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("Done with 1 warning"), "{status}");
    assert!(status.contains(want), "{status}");
    let report = std::fs::read_to_string(lab.journal().with_file_name("report.md")).unwrap();
    assert!(report.contains("**Done with 1 warning**"), "{report}");
    assert!(report.contains(want), "{report}");
    assert!(report.contains("| Extra | 3 | 1.5 KiB | 0 |"), "{report}");

    let strict = lab.plexburst(&["run", "--skip-analysis", "--strict"]);
    assert_eq!(strict.status.code(), Some(1), "{}", text(&strict));
    assert!(
        String::from_utf8_lossy(&strict.stderr).contains("--strict makes that a failure"),
        "{}",
        text(&strict)
    );
}
