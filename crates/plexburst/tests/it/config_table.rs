//! Bad configs, run through the real binary's `plan` and `run`: each one exits 2, names the
//! field and a fix in stderr, and starts nothing (no state dir is created). Bad arguments,
//! credentials and files are `bad_input`'s table, asserted the same way.

use std::path::Path;
use std::process::Output;

use crate::harness::{plexburst_bin, run, text};

pub const GOOD: &str = r#"
[target]
kind = "local"

[storage]
kind = "path"
path = "/srv/media"

[plex]
runtime = "command"
command = "plex-emulator serve --data-dir {data_dir} --listen 127.0.0.1:{port}"
data_dir = "/var/lib/plexburst/plex"

[timeouts]
scan = "1h"

[monitor]
poll_interval = "10s"
stall_window = "10m"

[export]
destination = "/var/backups/plexburst"

[[sections]]
name = "Music"
type = "music"
paths = ["/srv/media/Music"]

[[sections]]
name = "Movies"
type = "movie"
paths = ["/srv/media/Movies"]
"#;

/// (case name, config text, text stderr must contain).
fn cases() -> Vec<(&'static str, String, &'static str)> {
    let r = |from: &str, to: &str| {
        assert!(GOOD.contains(from), "{from:?} not in the base config");
        GOOD.replacen(from, to, 1)
    };
    vec![
        (
            "a scaleway key on a local target",
            r("kind = \"local\"", "kind = \"local\"\nzone = \"fr-par-1\""),
            "target.zone is only used with target.kind = \"scaleway\"",
        ),
        (
            "an ssh key on a scaleway target",
            r(
                "kind = \"local\"",
                "kind = \"scaleway\"\nhost = \"10.0.0.5\"",
            ),
            "target.host is not used with target.kind = \"scaleway\"",
        ),
        (
            "a scaleway target without export_path",
            r("kind = \"local\"", "kind = \"scaleway\""),
            "storage.export_path is needed with target.kind = \"scaleway\"",
        ),
        (
            "a bad zone name",
            r(
                "kind = \"local\"",
                "kind = \"scaleway\"\nzones = [\"paris\"]",
            ),
            "target.zones[0] \"paris\" is not a zone name",
        ),
        (
            "section type",
            r("type = \"movie\"", "type = \"film\""),
            "sections[1].type \"film\" is not one of movie, show, music, photo",
        ),
        (
            "section type missing",
            r("type = \"movie\"\n", ""),
            "sections[1].type is missing",
        ),
        (
            "section name missing",
            r("name = \"Movies\"\n", ""),
            "sections[1].name is missing",
        ),
        (
            "duplicate section",
            r("name = \"Movies\"", "name = \"Music\""),
            "sections[1].name \"Music\" is used by another section",
        ),
        (
            "section paths empty",
            r("paths = [\"/srv/media/Movies\"]", "paths = []"),
            "sections[1].paths is empty",
        ),
        (
            "section path relative",
            r("\"/srv/media/Movies\"", "\"Movies\""),
            "sections[1].paths[0] \"Movies\" is not an absolute path",
        ),
        (
            "section path outside storage",
            r("\"/srv/media/Movies\"", "\"/mnt/other/Movies\""),
            "sections[1].paths[0] \"/mnt/other/Movies\" is not under the storage root",
        ),
        (
            "section path outside the rclone mount",
            r(
                "kind = \"path\"\npath = \"/srv/media\"",
                "kind = \"rclone\"\nbucket = \"media\"\nmount_point = \"/mnt/media\"\nendpoint = \"http://127.0.0.1:9\"\naccess_key_id = \"AK\"",
            ),
            "sections[0].paths[0] \"/srv/media/Music\" is not under the storage root \"/mnt/media\"",
        ),
        (
            "section agent empty",
            r("name = \"Movies\"", "name = \"Movies\"\nagent = \"\""),
            "sections[1].agent is empty",
        ),
        (
            "section timeout",
            r(
                "name = \"Movies\"",
                "name = \"Movies\"\ntimeout = \"forever\"",
            ),
            "sections[1].timeout",
        ),
        (
            "no sections",
            GOOD[..GOOD.find("[[sections]]").unwrap()].to_string(),
            "sections is empty",
        ),
        (
            "target kind",
            r("kind = \"local\"", "kind = \"aws\""),
            "target.kind \"aws\" is not one of local, ssh",
        ),
        (
            "ssh without host",
            r("kind = \"local\"", "kind = \"ssh\""),
            "target.host is missing",
        ),
        (
            "ssh port zero",
            r("kind = \"local\"", "kind = \"ssh\"\nhost = \"h\"\nport = 0"),
            "target.port is 0",
        ),
        (
            "ssh identity relative",
            r(
                "kind = \"local\"",
                "kind = \"ssh\"\nhost = \"h\"\nidentity = \"id_ed25519\"",
            ),
            "target.identity",
        ),
        (
            "host on local target",
            r("kind = \"local\"", "kind = \"local\"\nhost = \"h\""),
            "target.host is only used with target.kind = \"ssh\"",
        ),
        (
            "ssh option not k=v",
            r(
                "kind = \"local\"",
                "kind = \"ssh\"\nhost = \"h\"\nssh_options = [\"Compression\"]",
            ),
            "target.ssh_options[0]",
        ),
        (
            "profile",
            r("kind = \"local\"", "kind = \"local\"\nprofile = \"huge\""),
            "target.profile \"huge\"",
        ),
        (
            "storage missing",
            r("[storage]\nkind = \"path\"\npath = \"/srv/media\"\n", ""),
            "storage is missing",
        ),
        (
            "storage path relative",
            r("path = \"/srv/media\"", "path = \"srv/media\""),
            "storage.path",
        ),
        (
            "storage kind",
            r("kind = \"path\"", "kind = \"s4\""),
            "storage.kind: unknown variant `s4`",
        ),
        (
            "plex missing",
            r(
                "[plex]\nruntime = \"command\"\ncommand = \"plex-emulator serve --data-dir {data_dir} --listen 127.0.0.1:{port}\"\ndata_dir = \"/var/lib/plexburst/plex\"\n",
                "",
            ),
            "plex is missing",
        ),
        (
            "runtime",
            r("runtime = \"command\"", "runtime = \"podman\""),
            "plex.runtime \"podman\" is not one of docker, command",
        ),
        (
            "command missing",
            r(
                "command = \"plex-emulator serve --data-dir {data_dir} --listen 127.0.0.1:{port}\"\n",
                "",
            ),
            "plex.command is missing",
        ),
        (
            "image with command runtime",
            r(
                "runtime = \"command\"",
                "runtime = \"command\"\nimage = \"x\"",
            ),
            "plex.image is only used with runtime = \"docker\"",
        ),
        (
            "data dir relative",
            r(
                "data_dir = \"/var/lib/plexburst/plex\"",
                "data_dir = \"plex\"",
            ),
            "plex.data_dir \"plex\" is not an absolute path",
        ),
        (
            "data dir missing",
            r("data_dir = \"/var/lib/plexburst/plex\"\n", ""),
            "plex.data_dir is missing",
        ),
        (
            "plex port zero",
            r(
                "data_dir = \"/var/lib/plexburst/plex\"",
                "data_dir = \"/var/lib/plexburst/plex\"\nport = 0",
            ),
            "plex.port is 0",
        ),
        (
            "no analysis workers",
            r(
                "data_dir = \"/var/lib/plexburst/plex\"",
                "data_dir = \"/var/lib/plexburst/plex\"\nanalysis_threads = 0",
            ),
            "plex.analysis_threads is 0; use 1 to 1024 Sonic workers",
        ),
        (
            "a Sonic cost per track of zero",
            r(
                "data_dir = \"/var/lib/plexburst/plex\"",
                "data_dir = \"/var/lib/plexburst/plex\"\nsonic_cpu_seconds_per_track = 0",
            ),
            "plex.sonic_cpu_seconds_per_track is 0; give the CPU seconds one track's Sonic analysis takes",
        ),
        (
            "claim in config",
            r(
                "data_dir = \"/var/lib/plexburst/plex\"",
                "data_dir = \"/var/lib/plexburst/plex\"\nenv = { PLEX_CLAIM = \"claim-x\" }",
            ),
            "plex.env.PLEX_CLAIM must not be in the config file",
        ),
        (
            "bad duration",
            r("scan = \"1h\"", "scan = \"1 fortnight\""),
            "timeouts.scan",
        ),
        (
            "duration without unit",
            r("scan = \"1h\"", "scan = \"60\""),
            "timeouts.scan \"60\" has no unit",
        ),
        (
            "zero poll",
            r("poll_interval = \"10s\"", "poll_interval = \"0s\""),
            "monitor.poll_interval \"0s\" is zero",
        ),
        (
            "stall shorter than poll",
            r("stall_window = \"10m\"", "stall_window = \"5s\""),
            "monitor.stall_window",
        ),
        (
            "stable samples zero",
            r(
                "stall_window = \"10m\"",
                "stall_window = \"10m\"\nstable_samples = 0",
            ),
            "monitor.stable_samples is 0",
        ),
        (
            "export relative",
            r(
                "destination = \"/var/backups/plexburst\"",
                "destination = \"backups\"",
            ),
            "export.destination \"backups\" is not an absolute path",
        ),
        (
            "export inside the data folder",
            r(
                "destination = \"/var/backups/plexburst\"",
                "destination = \"/var/lib/plexburst/plex/Library/backups\"",
            ),
            "export.destination \"/var/lib/plexburst/plex/Library/backups\" is inside the Plex data folder",
        ),
        (
            "export missing",
            r("[export]\ndestination = \"/var/backups/plexburst\"\n", ""),
            "export.destination is missing",
        ),
        (
            "export staged without an upload",
            r(
                "destination = \"/var/backups/plexburst\"",
                "destination = \"/var/backups/plexburst\"\nstaged = true",
            ),
            "export.staged only applies when the archive is uploaded",
        ),
        (
            "export allow_deleted not a bool",
            r(
                "destination = \"/var/backups/plexburst\"",
                "destination = \"/var/backups/plexburst\"\nallow_deleted = \"yes\"",
            ),
            "export.allow_deleted: invalid type: string \"yes\", expected a boolean",
        ),
        (
            "unknown key",
            r(
                "data_dir = \"/var/lib/plexburst/plex\"",
                "data_dir = \"/var/lib/plexburst/plex\"\nprot = 32400",
            ),
            "plex.prot: unknown field `prot`",
        ),
        (
            "toml syntax",
            r("[timeouts]", "[timeouts"),
            "unclosed table, expected `]` (line 14)",
        ),
        (
            "wrong value type",
            r("data_dir = \"/var/lib/plexburst/plex\"", "data_dir = 7"),
            "plex.data_dir: invalid type",
        ),
        (
            "a section's paths not a list",
            r(
                "paths = [\"/srv/media/Movies\"]",
                "paths = \"/srv/media/Movies\"",
            ),
            "sections[1].paths: invalid type",
        ),
        (
            "absurd duration",
            r("scan = \"1h\"", "scan = \"400d\""),
            "timeouts.scan \"400d\" is more than a year",
        ),
        (
            "duration too big for a number",
            r(
                "scan = \"1h\"",
                "scan = \"1000000000000000000000000000000d\"",
            ),
            "timeouts.scan \"1000000000000000000000000000000d\" is too long",
        ),
        (
            "negative duration",
            r("stall_window = \"10m\"", "stall_window = \"-10m\""),
            "monitor.stall_window \"-10m\" is not a duration",
        ),
        (
            "absurd poll interval",
            r("poll_interval = \"10s\"", "poll_interval = \"5000h\""),
            "monitor.stall_window",
        ),
    ]
}

/// Write `toml` to `<dir>/<file>` and run `plexburst plan <args> --config <that file>`.
fn plan_of(dir: &Path, file: &str, toml: &str, args: &[&str]) -> Output {
    let cfg = dir.join(file);
    std::fs::write(&cfg, toml).unwrap();
    run(crate::harness::command(plexburst_bin())
        .args(["plan", "--offline"])
        .args(args)
        .arg("--config")
        .arg(&cfg))
}

#[test]
fn bad_configs_exit_2_naming_the_field_and_start_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let cases = cases();
    assert!(cases.len() >= 40);
    for (i, (name, toml, want)) in cases.iter().enumerate() {
        for sub in ["plan", "run"] {
            let state = dir.path().join(format!("state{i}-{sub}"));
            let cfg = dir.path().join(format!("case{i}.toml"));
            std::fs::write(&cfg, toml).unwrap();
            let mut cmd = crate::harness::command(plexburst_bin());
            cmd.arg(sub);
            if sub == "plan" {
                cmd.arg("--offline");
            }
            let out = run(cmd
                .arg("--state-dir")
                .arg(&state)
                .arg("--config")
                .arg(&cfg)
                .env_remove("PLEX_CLAIM"));
            // A config problem is `config: FIELD ...; FIX`.
            let field = format!("config: {}", want.split(' ').next().unwrap_or(want));
            let case = format!("{name} ({sub})");
            failures.extend(crate::bad_input::rejected(
                &case, &out, &field, "; ", &state,
            ));
            if !String::from_utf8_lossy(&out.stderr).contains(want) {
                failures.push(format!("case {case:?}: {want:?} not in {}", text(&out)));
            }
        }
    }
    eprintln!(
        "bad input: {} config cases through plan and run, all exit 2 with the field and the fix, nothing created",
        cases.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn all_problems_are_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let bad = GOOD
        .replace("type = \"movie\"", "type = \"film\"")
        .replace("scan = \"1h\"", "scan = \"x\"")
        .replace("runtime = \"command\"", "runtime = \"podman\"");
    let out = plan_of(dir.path(), "p.toml", &bad, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    for want in ["sections[1].type", "timeouts.scan", "plex.runtime"] {
        assert!(stderr.contains(want), "{want} missing: {stderr}");
    }
}

#[test]
fn analysis_threads_from_the_config_is_in_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let toml = GOOD.replace(
        "data_dir = \"/var/lib/plexburst/plex\"",
        "data_dir = \"/var/lib/plexburst/plex\"\nanalysis_threads = 12",
    );
    let out = plan_of(dir.path(), "p.toml", &toml, &["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["plex"]["analysis_threads"], 12);
    let music = plan["sections"][0]["analysis"][0].as_str().unwrap();
    assert!(
        music.contains("LongRunningJobThreads") && music.contains("to 12 (plex.analysis_threads)"),
        "{music}"
    );
    let text_plan = plan_of(dir.path(), "p.toml", &toml, &[]);
    assert!(
        String::from_utf8_lossy(&text_plan.stdout).contains("to 12 (plex.analysis_threads)"),
        "{}",
        text(&text_plan)
    );
}

#[test]
fn good_config_plans_every_phase_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = plan_of(dir.path(), "p.toml", GOOD, &["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let phases: Vec<&str> = plan["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        [
            "prepare",
            "preflight",
            "start-plex",
            "configure",
            "scan",
            "analyze",
            "restore",
            "export",
            "teardown"
        ]
    );
    assert_eq!(plan["sections"][1]["agent"], "tv.plex.agents.movie");
    assert!(
        plan["plex"]["db_path"]
            .as_str()
            .unwrap()
            .ends_with("Databases/com.plexapp.plugins.library.db")
    );
    assert!(
        !dir.path().join(".plexburst").exists(),
        "plan must not create the state dir"
    );
}

#[test]
fn init_writes_a_config_that_plans() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("plexburst.toml");
    let out = run(crate::harness::command(plexburst_bin())
        .args(["init", "--config"])
        .arg(&cfg));
    assert!(out.status.success(), "{}", text(&out));
    let again = run(crate::harness::command(plexburst_bin())
        .args(["init", "--config"])
        .arg(&cfg));
    assert_eq!(
        again.status.code(),
        Some(2),
        "init must not overwrite: {}",
        text(&again)
    );
    let plan = run(crate::harness::command(plexburst_bin())
        .args(["plan", "--offline", "--config"])
        .arg(&cfg));
    assert!(plan.status.success(), "{}", text(&plan));
}

/// `plan --json` of the base config, compared with a checked-in snapshot (`cli::assert_snapshot`).
#[test]
fn plan_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let out = plan_of(dir.path(), "p.toml", GOOD, &["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    crate::cli::assert_snapshot("plan.json", &String::from_utf8(out.stdout).unwrap());
}

/// `plexburst ssh` with no command prints the line for a shell on the target: the same identity
/// (`~/` expanded), port and options the run's own connection uses.
#[test]
fn ssh_without_a_command_prints_the_targets_login_line() {
    let dir = tempfile::tempdir().unwrap();
    let toml = GOOD.replacen(
        "kind = \"local\"",
        "kind = \"ssh\"\nhost = \"10.0.0.5\"\nport = 2222\nuser = \"root\"\nidentity = \"~/.ssh/id_ed25519\"\nssh_options = [\"StrictHostKeyChecking=accept-new\"]",
        1,
    );
    let cfg = dir.path().join("p.toml");
    std::fs::write(&cfg, toml).unwrap();
    let out = run(crate::harness::command(plexburst_bin())
        .args(["ssh", "--config"])
        .arg(&cfg)
        .env("HOME", dir.path()));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "ssh -i {}/.ssh/id_ed25519 -o IdentitiesOnly=yes -p 2222 -o StrictHostKeyChecking=accept-new 'root@10.0.0.5'\n",
            dir.path().display()
        )
    );
}
