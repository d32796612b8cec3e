//! The Docker image keeps pms-docker's contract: it runs as PLEX_UID (so media that uid cannot read
//! is invisible to the scan), turns healthy through `/identity`, scans, and stops cleanly.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use plex_emulator::container::{DATA_SUBDIR, chown_tree};

const IMAGE: &str = "plexburst/plex-emulator:dev";

/// Runs a program to completion. The one spawn point of this module (test code, not product code,
/// so the process chokepoint rule does not apply).
#[allow(clippy::disallowed_methods)]
fn run(program: &str, args: &[&str]) -> Output {
    std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("could not run {program}: {e}"))
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Removes the container even when the test panics.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = run("docker", &["rm", "-f", "-v", &self.0]);
    }
}

fn inspect(name: &str, format: &str) -> String {
    run_ok("docker", &["inspect", "--format", format, name])
}

/// Polls `check` until it returns Some, or panics with `what` and the last diagnostic.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

fn get_json(agent: &ureq::Agent, url: &str, token: &str) -> Result<serde_json::Value, String> {
    let mut resp = agent
        .get(url)
        .header("Accept", "application/json")
        .header("X-Plex-Token", token)
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    resp.body_mut()
        .read_json()
        .map_err(|e| format!("GET {url}: {e}"))
}

/// `PlexOnlineToken` from Preferences.xml (the claim exchanged by the server on first start).
fn online_token(prefs: &Path) -> Result<String, String> {
    let xml = std::fs::read_to_string(prefs).map_err(|e| format!("{}: {e}", prefs.display()))?;
    let start = xml
        .find("PlexOnlineToken=\"")
        .ok_or("no PlexOnlineToken yet")?
        + "PlexOnlineToken=\"".len();
    let end = xml[start..]
        .find('"')
        .ok_or("unterminated PlexOnlineToken")?;
    Ok(xml[start..start + end].replace("&amp;", "&"))
}

fn is_refreshing(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::Number(n) => n.as_i64() != Some(0),
        serde_json::Value::String(s) => s != "0" && s != "false",
        _ => false,
    }
}

#[test]
fn image_runs_as_plex_uid_hides_unreadable_media_and_stops_cleanly() {
    let info = run("docker", &["info"]);
    assert!(
        info.status.success(),
        "this test needs a running Docker daemon and `docker info` failed; start one with \
         scripts/start-dockerd.sh (as root). stderr:\n{}",
        String::from_utf8_lossy(&info.stderr)
    );

    let bin = env!("CARGO_BIN_EXE_plex-emulator");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/build-image.sh");
    let image_id = run_ok("bash", &[script.to_str().unwrap(), bin]);
    assert!(
        image_id.starts_with("sha256:"),
        "build-image.sh printed {image_id:?}, not an image id"
    );

    // Media owned by uid 1000, plus one directory of real tracks only another uid may read.
    let tmp = tempfile::tempdir().unwrap();
    let media = tmp.path().join("media");
    let config = tmp.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    let gen_out = run_ok(
        bin,
        &[
            "gen-library",
            "--out",
            media.to_str().unwrap(),
            "--artists",
            "3",
            "--albums",
            "6",
            "--tracks",
            "24",
            "--movies",
            "4",
            "--seed",
            "7",
        ],
    );
    let counts: serde_json::Value = serde_json::from_str(&gen_out)
        .unwrap_or_else(|e| panic!("gen-library printed {gen_out:?}: {e}"));
    let tracks = counts["tracks"]
        .as_i64()
        .expect("gen-library reports tracks");
    let movies = counts["movies"]
        .as_i64()
        .expect("gen-library reports movies");
    assert!(tracks > 0 && movies > 0, "{counts}");
    chown_tree(&media, 1000, 1000).unwrap();
    let some_track = find_file(&media.join("Music"), "flac").expect("a generated .flac");
    let hidden = media.join("Music/Zz Unreadable 0700 Artist");
    let hidden_album = hidden.join("Unreadable Album (2001)");
    std::fs::create_dir_all(&hidden_album).unwrap();
    for n in 1..=3 {
        std::fs::copy(
            &some_track,
            hidden_album.join(format!("0{n} - Unreadable Track {n}.flac")),
        )
        .unwrap();
    }
    chown_tree(&hidden, 2000, 2000).unwrap();
    set_mode(&hidden, 0o700);

    let name = format!("plexburst-it-image-{}", std::process::id());
    let _ = run("docker", &["rm", "-f", &name]);
    let config_bind = format!("{}:/config", config.display());
    let media_bind = format!("{}:/data:ro", media.display());
    run_ok(
        "docker",
        &[
            "run",
            "-d",
            "--name",
            &name,
            "-e",
            "PLEX_UID=1000",
            "-e",
            "PLEX_GID=1000",
            "-e",
            "TZ=Europe/Paris",
            "-e",
            "PLEX_CLAIM=claim-image-test",
            "-p",
            "127.0.0.1::32400",
            "-v",
            &config_bind,
            "-v",
            &media_bind,
            IMAGE,
        ],
    );
    let container = Container(name);
    let name = container.0.as_str();

    wait_for(
        "the container's HEALTHCHECK to report healthy",
        Duration::from_secs(120),
        || match inspect(name, "{{.State.Status}} {{.State.Health.Status}}").as_str() {
            "running healthy" => Ok(()),
            other if other.starts_with("running") => Err(other.to_owned()),
            other => panic!("container is {other}; logs:\n{}", logs(name)),
        },
    );

    // The server process (pid 1) runs as PLEX_UID, under Plex's own binary name.
    let status = run_ok("docker", &["exec", name, "cat", "/proc/1/status"]);
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        uid_line.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["1000"; 4],
        "{uid_line}"
    );
    let cmdline = run_ok("docker", &["exec", name, "cat", "/proc/1/cmdline"]);
    assert!(
        cmdline.contains("Plex Media Server"),
        "pid 1 cmdline is {cmdline:?}"
    );
    // TZ reaches the container and the image has the zoneinfo to honour it.
    let zone = run_ok("docker", &["exec", name, "date", "+%Z"]);
    assert!(
        zone == "CET" || zone == "CEST",
        "TZ=Europe/Paris gave the zone {zone:?}"
    );

    // /config was chowned to PLEX_UID and holds pms-docker's data folder.
    let data_folder = config.join(DATA_SUBDIR);
    let prefs = data_folder.join("Preferences.xml");
    let token = wait_for(
        "PlexOnlineToken in Preferences.xml",
        Duration::from_secs(30),
        || online_token(&prefs),
    );
    assert_eq!(owner(&config), 1000, "/config not chowned to PLEX_UID");
    assert_eq!(owner(&data_folder), 1000);

    let port = run_ok("docker", &["port", name, "32400/tcp"]);
    let base = format!("http://{}", port.lines().next().unwrap());
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(true)
        .build()
        .into();
    for (title, kind, agent_id, scanner, location) in [
        (
            "Music",
            "artist",
            "tv.plex.agents.music",
            "Plex Music",
            "/data/Music",
        ),
        (
            "Movies",
            "movie",
            "tv.plex.agents.movie",
            "Plex Movie",
            "/data/Movies",
        ),
    ] {
        let url = format!("{base}/library/sections");
        wait_for(
            &format!("creating section {title}"),
            Duration::from_secs(30),
            || {
                agent
                    .post(&url)
                    .header("X-Plex-Token", &token)
                    .query_pairs([
                        ("name", title),
                        ("type", kind),
                        ("agent", agent_id),
                        ("scanner", scanner),
                        ("language", "en-US"),
                        ("location", location),
                    ])
                    .send_empty()
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            },
        );
    }
    agent
        .get(format!("{base}/library/sections/all/refresh"))
        .header("X-Plex-Token", &token)
        .call()
        .expect("starting the scan");

    // Done = the API shows every generated item and no section is refreshing any more.
    wait_for(
        "the scan to finish with every readable item",
        Duration::from_secs(120),
        || {
            let sections = get_json(&agent, &format!("{base}/library/sections"), &token)?;
            let dirs = sections["MediaContainer"]["Directory"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if dirs.len() != 2 || dirs.iter().any(|d| is_refreshing(&d["refreshing"])) {
                return Err(format!("sections: {sections}"));
            }
            let mut seen = Vec::new();
            for d in &dirs {
                let key = d["key"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| d["key"].to_string());
                let (leaf, want) = if d["type"] == "artist" {
                    (10, tracks)
                } else {
                    (1, movies)
                };
                let url = format!(
                    "{base}/library/sections/{key}/all?type={leaf}&X-Plex-Container-Start=0&X-Plex-Container-Size=0"
                );
                let all = get_json(&agent, &url, &token)?;
                let total = all["MediaContainer"]["totalSize"].as_i64().unwrap_or(-1);
                // More than generated can only come from the directory PLEX_UID cannot read.
                assert!(
                    total <= want,
                    "section {} shows {total} items, only {want} are readable by uid 1000",
                    d["title"]
                );
                seen.push((total, want));
            }
            if seen.iter().all(|(total, want)| total == want) {
                Ok(())
            } else {
                Err(format!("(totalSize, want) per section: {seen:?}"))
            }
        },
    );

    // docker stop: SIGTERM -> checkpoint -> exit 0, within pms-docker's usual grace period.
    run_ok("docker", &["stop", "-t", "30", name]);
    let exit = inspect(name, "{{.State.ExitCode}} {{.State.OOMKilled}}");
    assert_eq!(
        exit,
        "0 false",
        "container did not exit cleanly; logs:\n{}",
        logs(name)
    );

    let db = data_folder.join("Plug-in Support/Databases/com.plexapp.plugins.library.db");
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(
        wal_len,
        0,
        "{} still holds {wal_len} bytes: the WAL was not checkpointed",
        wal.display()
    );
    assert_eq!(owner(&db), 1000, "the DB must be written by PLEX_UID");

    let copy = tmp.path().join("library.db");
    std::fs::copy(&db, &copy).unwrap();
    let conn = rusqlite::Connection::open(&copy).unwrap();
    let count = |sql: &str| -> i64 {
        conn.query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    };
    assert_eq!(
        count(
            "SELECT count(*) FROM metadata_items WHERE metadata_type = 10 AND deleted_at IS NULL"
        ),
        tracks
    );
    assert_eq!(
        count("SELECT count(*) FROM metadata_items WHERE metadata_type = 1 AND deleted_at IS NULL"),
        movies
    );
    assert_eq!(
        count("SELECT count(*) FROM media_parts WHERE file LIKE '%Zz Unreadable 0700%'"),
        0,
        "the scan saw a directory PLEX_UID cannot read"
    );
    assert_eq!(
        count("SELECT count(*) FROM media_parts WHERE file LIKE '/data/Music/%'"),
        tracks,
        "paths are the container's"
    );
}

#[test]
fn image_refuses_to_start_on_a_config_dir_it_cannot_write() {
    let info = run("docker", &["info"]);
    assert!(
        info.status.success(),
        "this test needs a running Docker daemon; run scripts/start-dockerd.sh"
    );
    let bin = env!("CARGO_BIN_EXE_plex-emulator");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/build-image.sh");
    run_ok("bash", &[script.to_str().unwrap(), bin]);

    // A root-owned /config and the chown switched off: the plex user cannot create its data
    // folder, so the server must stop with a message naming the fix, not run half-broken.
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    set_mode(&config, 0o755);
    let name = format!("plexburst-it-image-ro-{}", std::process::id());
    let _ = run("docker", &["rm", "-f", &name]);
    let config_bind = format!("{}:/config", config.display());
    run_ok(
        "docker",
        &[
            "run",
            "-d",
            "--name",
            &name,
            "-e",
            "PLEX_UID=1000",
            "-e",
            "CHANGE_CONFIG_DIR_OWNERSHIP=false",
            "-v",
            &config_bind,
            IMAGE,
        ],
    );
    let container = Container(name);
    let name = container.0.as_str();
    let code = wait_for(
        "the container to exit",
        Duration::from_secs(60),
        || match inspect(name, "{{.State.Status}} {{.State.ExitCode}}").split_once(' ') {
            Some(("exited", code)) => Ok(code.to_owned()),
            other => Err(format!("{other:?}")),
        },
    );
    let log = logs(name);
    assert_ne!(
        code, "0",
        "the server started on an unwritable /config; logs:\n{log}"
    );
    assert!(
        log.contains("CHANGE_CONFIG_DIR_OWNERSHIP=true fixes it"),
        "the error does not name the fix:\n{log}"
    );
    assert_eq!(
        owner(&config),
        0,
        "/config was chowned although CHANGE_CONFIG_DIR_OWNERSHIP=false"
    );
}

fn logs(name: &str) -> String {
    let out = run("docker", &["logs", "--tail", "50", name]);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn owner(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .uid()
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn find_file(dir: &Path, ext: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, ext) {
                return Some(found);
            }
        } else if path.extension().is_some_and(|e| e == ext) {
            return Some(path);
        }
    }
    None
}
