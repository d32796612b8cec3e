//! plex::api, plex::xml, plex::prefs and plex::db against the real emulator binary on loopback:
//! claim and token, sections, one-PUT prefs, scan, Sonic analysis and photo thumbnails as the
//! monitor sees them in the DB, and restoring the user's prefs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plexburst::plex::api::{ApiError, Client, NewSection};
use plexburst::plex::db::{self, DbSample, Sampler};
use plexburst::plex::{prefs, xml};
use plexburst::remote::local::Local;

use crate::harness::emulator_bin;

/// A running emulator, killed on drop (even when the test panics).
struct Emulator {
    child: Child,
    base: String,
    data_dir: PathBuf,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Emulator {
    /// Start `plex-emulator serve` on a free port and wait for its `listening on` line.
    // Test code spawns the emulator directly; the product never does (it goes through `remote`).
    #[allow(clippy::disallowed_methods)]
    fn start(data_dir: &Path, extra: &[&str]) -> Emulator {
        let mut child = Command::new(emulator_bin())
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("PLEX_CLAIM")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        // Keep reading so a later line never hits a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Emulator {
            child,
            base,
            data_dir: data_dir.to_path_buf(),
        }
    }

    fn support(&self) -> PathBuf {
        self.data_dir
            .join("Library/Application Support/Plex Media Server")
    }

    fn db_path(&self) -> String {
        self.support()
            .join("Plug-in Support/Databases/com.plexapp.plugins.library.db")
            .to_str()
            .unwrap()
            .to_string()
    }
}

fn gen_library(out: &Path) -> serde_json::Value {
    gen_media(
        out,
        &[
            "--artists",
            "2",
            "--albums",
            "3",
            "--tracks",
            "12",
            "--photos",
            "5",
        ],
    )
}

#[allow(clippy::disallowed_methods)]
fn gen_media(out: &Path, args: &[&str]) -> serde_json::Value {
    let o = Command::new(emulator_bin())
        .arg("gen-library")
        .args(args)
        .args(["--seed", "7", "--out"])
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Poll until `cond` returns Some, or fail after `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn counts(sampler: &mut Sampler, kind: i64) -> Option<db::SectionCounts> {
    let s: DbSample = sampler.sample(&Local::new()).ok()?;
    s.sections.into_iter().find(|c| c.section_type == kind)
}

#[test]
fn full_cycle_against_the_emulator() {
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().join("media");
    let lib = gen_library(&media);
    let (tracks, photos) = (
        lib["tracks"].as_i64().unwrap(),
        lib["photos"].as_i64().unwrap(),
    );
    assert_eq!((tracks, photos), (12, 5));

    let emu = Emulator::start(
        &tmp.path().join("config"),
        &["--claim", "claim-test", "--claim-delay", "300ms"],
    );
    let mut client = Client::new(&emu.base, None, Duration::from_secs(10));

    // The token appears in Preferences.xml a moment after the claim; read it with the parser.
    let prefs_xml = emu.support().join("Preferences.xml");
    let token = wait_for("PlexOnlineToken", Duration::from_secs(20), || {
        let text = std::fs::read_to_string(&prefs_xml).ok()?;
        xml::online_token(&text).ok().flatten()
    });
    // /identity needs no token; everything else does once claimed.
    let id = client.identity().unwrap();
    assert!(id.claimed);
    assert!(!id.machine_identifier.is_empty());
    assert!(matches!(
        client.sections(),
        Err(ApiError::Unauthorized { .. })
    ));
    client.set_token(Some(token));
    client.ready().unwrap();
    assert!(client.account().unwrap().subscription_active);

    // Background work off in ONE PUT naming only ids the server has; read back as sent.
    let saved = client.prefs().unwrap();
    assert!(saved.len() >= 155, "{}", saved.len());
    let off = prefs::background_off(&saved);
    assert!(!off.is_empty());
    client.set_prefs(&off).unwrap();
    let now = client.prefs().unwrap();
    assert!(
        prefs::background_off(&now).is_empty(),
        "still on: {:?}",
        prefs::background_off(&now)
    );
    let value = |ps: &[plexburst::plex::api::Pref], id: &str| {
        ps.iter().find(|p| p.id == id).map(|p| p.value.clone())
    };
    assert_eq!(value(&now, "autoEmptyTrash").as_deref(), Some("false"));
    assert_eq!(
        value(&now, "MusicAnalysisBehavior").as_deref(),
        Some("never")
    );
    // An unknown id is refused as a whole (plex.md §3.1), and the error says so.
    let e = client
        .set_prefs(&[
            ("autoEmptyTrash".into(), "true".into()),
            ("NoSuchPref".into(), "1".into()),
        ])
        .unwrap_err();
    assert!(matches!(e, ApiError::Status { status: 400, .. }), "{e:?}");
    assert_eq!(
        value(&client.prefs().unwrap(), "autoEmptyTrash").as_deref(),
        Some("false")
    );

    // Sections, with every location.
    let music_dir = media.join("Music").to_str().unwrap().to_string();
    let photo_dir = media.join("Photos").to_str().unwrap().to_string();
    for (name, kind, agent, scanner, dir) in [
        (
            "Music",
            "artist",
            "tv.plex.agents.music",
            "Plex Music",
            &music_dir,
        ),
        (
            "Photos",
            "photo",
            "com.plexapp.agents.none",
            "Plex Photo Scanner",
            &photo_dir,
        ),
    ] {
        client
            .create_section(&NewSection {
                name: name.into(),
                kind: kind.into(),
                agent: agent.into(),
                scanner: scanner.into(),
                language: "en-US".into(),
                locations: vec![dir.clone()],
            })
            .unwrap();
    }
    let sections = client.sections().unwrap();
    assert_eq!(sections.len(), 2);
    let music = sections
        .iter()
        .find(|s| s.kind == "artist")
        .unwrap()
        .clone();
    let photo = sections.iter().find(|s| s.kind == "photo").unwrap().clone();
    assert_eq!(music.locations, vec![music_dir.clone()]);
    assert_eq!(photo.scanner, "Plex Photo Scanner");

    // One global scan; the monitor's sampler sees every item once Plex is idle.
    let mut sampler = Sampler::new(emu.db_path());
    client.refresh_all(true).unwrap();
    wait_for("the scan", Duration::from_secs(60), || {
        let idle = client.sections().ok()?.iter().all(|s| !s.refreshing);
        let m = counts(&mut sampler, 8)?;
        let p = counts(&mut sampler, 13)?;
        (idle && m.tracks == tracks && p.photos == photos).then_some(())
    });
    // Nothing analysed yet: every background task was off.
    let m = counts(&mut sampler, 8).unwrap();
    assert_eq!(m.sonic_analyzed, 0);
    assert_eq!(counts(&mut sampler, 13).unwrap().thumbnailed, 0);

    // Sonic for the music section only, then thumbnails for the photos.
    let on = prefs::analysis_for(8, 2, &client.prefs().unwrap());
    assert_eq!(
        on,
        vec![
            ("LongRunningJobThreads".to_string(), "2".to_string()),
            ("MusicAnalysisBehavior".to_string(), "asap".to_string())
        ]
    );
    client.set_prefs(&on).unwrap();
    client
        .start_butler_task(prefs::butler_task_for(8).unwrap())
        .unwrap();
    wait_for("Sonic analysis", Duration::from_secs(60), || {
        (counts(&mut sampler, 8)?.sonic_analyzed == tracks).then_some(())
    });
    client.analyze_section(photo.id).unwrap();
    wait_for("photo thumbnails", Duration::from_secs(60), || {
        (counts(&mut sampler, 13)?.thumbnailed == photos).then_some(())
    });
    // The exact, from-scratch count agrees with the sampler.
    let exact = db::sample(&Local::new(), &emu.db_path()).unwrap();
    let m = exact.section(music.id).unwrap();
    assert_eq!((m.tracks, m.sonic_analyzed, m.deleted), (tracks, tracks, 0));
    let files = db::section_files(&Local::new(), &emu.db_path(), music.id).unwrap();
    assert_eq!(files.len() as i64, tracks);
    assert!(files.iter().all(|f| f.starts_with(&music_dir)));

    // Activities parse (whatever is running now), then the user's prefs come back.
    client.activities().unwrap();
    let back = prefs::restore(&saved, &client.prefs().unwrap());
    assert!(!back.is_empty());
    client.set_prefs(&back).unwrap();
    let after = client.prefs().unwrap();
    for p in saved.iter().filter(|p| prefs::managed(p)) {
        assert_eq!(value(&after, &p.id), Some(p.value.clone()), "{}", p.id);
    }
}

#[test]
fn starting_up_then_ready() {
    let tmp = tempfile::tempdir().unwrap();
    let emu = Emulator::start(&tmp.path().join("config"), &["--startup-delay", "1500ms"]);
    let client = Client::new(&emu.base, None, Duration::from_secs(5));
    let first = client.ready();
    assert!(matches!(first, Err(ApiError::Starting { .. })), "{first:?}");
    assert!(first.unwrap_err().is_retryable());
    wait_for("ready", Duration::from_secs(20), || client.ready().ok());
    assert!(client.sections().unwrap().is_empty());
}

/// The sampler's incremental path against the emulator's own writer: while a scan inserts rows,
/// every sample is a plausible count (never above the library, never going back), and the last
/// one is exact.
#[test]
fn sampler_follows_a_live_scan() {
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().join("media");
    let lib = gen_media(
        &media,
        &["--artists", "10", "--albums", "40", "--tracks", "1500"],
    );
    let tracks = lib["tracks"].as_i64().unwrap();
    let emu = Emulator::start(&tmp.path().join("config"), &["--scan-rate", "500"]);
    let client = Client::new(&emu.base, None, Duration::from_secs(10));
    let dir = media.join("Music").to_str().unwrap().to_string();
    client
        .create_section(&NewSection {
            name: "Music".into(),
            kind: "artist".into(),
            agent: "tv.plex.agents.music".into(),
            scanner: "Plex Music".into(),
            language: "en-US".into(),
            locations: vec![dir],
        })
        .unwrap();
    let mut sampler = Sampler::new(emu.db_path());
    client.refresh_all(true).unwrap();
    let mut seen: Vec<i64> = Vec::new();
    wait_for("the scan", Duration::from_secs(60), || {
        let n = counts(&mut sampler, 8)?.tracks;
        assert!(n <= tracks, "{n} > {tracks}");
        assert!(
            seen.last().is_none_or(|l| *l <= n),
            "went back: {seen:?} then {n}"
        );
        seen.push(n);
        let idle = client.sections().ok()?.iter().all(|s| !s.refreshing);
        (idle && n == tracks).then_some(())
    });
    // The scan was watched while it ran, not only at the end.
    assert!(
        seen.iter().any(|n| *n > 0 && *n < tracks),
        "no sample saw the scan in progress: {seen:?}"
    );
    assert_eq!(
        db::sample(&Local::new(), &emu.db_path()).unwrap().sections[0].tracks,
        tracks
    );
}
