//! Bad arguments, credentials and files, through the real binary's `plan`, `run`, `resume` and
//! `apply`: each one exits 2, names the flag or field and the fix, and creates nothing (no state
//! dir; at Scaleway, no call but reads, checked in the emulator's request log). The config
//! cases are `config_table`'s; both tables assert the same three things with `rejected`.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::claim::PlexTvEmu;
use crate::config_table::GOOD;
use crate::harness::{command, plexburst_bin, run, text};
use crate::scaleway::ScwEmu;

/// The three things a rejected case shows, or what went wrong: exit 2; `field` in stderr and
/// `fix` after it; and `state` is no directory (nothing was made).
pub fn rejected(case: &str, out: &Output, field: &str, fix: &str, state: &Path) -> Option<String> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let named = stderr.find(field);
    let fixed = named.is_some_and(|at| stderr[at..].contains(fix));
    let mut wrong = Vec::new();
    if out.status.code() != Some(2) {
        wrong.push("exit code is not 2".to_string());
    }
    if named.is_none() {
        wrong.push(format!("{field:?} is not named"));
    } else if !fixed {
        wrong.push(format!("no fix {fix:?} after {field:?}"));
    }
    if state.is_dir() {
        wrong.push(format!("{} was created", state.display()));
    }
    (!wrong.is_empty()).then(|| format!("case {case:?}: {}\n{}", wrong.join("; "), text(out)))
}

/// One bad input: the subcommands it goes through, its flags, its environment, the config (if
/// any), and the field and fix its message must hold.
struct Case {
    name: &'static str,
    through: &'static [&'static str],
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    config: Option<String>,
    /// The state dir the case gives (else a fresh one per command).
    state_dir: Option<PathBuf>,
    field: &'static str,
    fix: &'static str,
}

fn case(
    name: &'static str,
    through: &'static [&'static str],
    field: &'static str,
    fix: &'static str,
) -> Case {
    Case {
        name,
        through,
        args: Vec::new(),
        env: Vec::new(),
        config: Some(GOOD.to_string()),
        state_dir: None,
        field,
        fix,
    }
}

impl Case {
    fn args(mut self, args: &[&str]) -> Case {
        self.args = args.iter().map(|a| a.to_string()).collect();
        self
    }
    fn env(mut self, k: &'static str, v: &str) -> Case {
        self.env.push((k, v.to_string()));
        self
    }
    fn config(mut self, toml: Option<String>) -> Case {
        self.config = toml;
        self
    }
    fn state_dir(mut self, dir: PathBuf) -> Case {
        self.state_dir = Some(dir);
        self
    }
}

/// Every variable that could hand a case a credential from the machine running the suite.
const AMBIENT: &[&str] = &[
    "SCW_SECRET_KEY",
    "SCW_ACCESS_KEY",
    "SCW_DEFAULT_PROJECT_ID",
    "SCW_DEFAULT_ORGANIZATION_ID",
    "SCW_DEFAULT_ZONE",
    "SCW_API_URL",
    "SCW_PROFILE",
    "SCW_CONFIG_PATH",
    "PLEX_TOKEN",
    "PLEX_CLAIM",
    "RCLONE_CONFIG",
    "PB_TEST_S3_SECRET",
];

/// The base config with rclone storage: the S3 secret from `PB_TEST_S3_SECRET`.
fn rclone_toml() -> String {
    let t = GOOD.replace(
        "[storage]\nkind = \"path\"\npath = \"/srv/media\"\n",
        "[storage]\nkind = \"rclone\"\nbucket = \"media\"\nmount_point = \"/mnt/media\"\nendpoint = \"http://127.0.0.1:9\"\naccess_key_id = \"AK\"\nsecret_access_key_env = \"PB_TEST_S3_SECRET\"\n",
    );
    assert!(
        t.contains("kind = \"rclone\""),
        "the base config changed shape"
    );
    t.replace("\"/srv/media/", "\"/mnt/media/")
}

/// The rclone config with a user rclone.conf at `conf` (remote `s3lib`).
fn user_conf_toml(conf: &Path) -> String {
    rclone_toml().replace(
        "endpoint = \"http://127.0.0.1:9\"\naccess_key_id = \"AK\"\nsecret_access_key_env = \"PB_TEST_S3_SECRET\"\n",
        &format!("remote = \"s3lib\"\nrclone_conf = \"{}\"\n", conf.display()),
    )
}

/// The rclone config on a Scaleway target.
fn scaleway_toml(extra_target: &str) -> String {
    rclone_toml()
        .replacen(
            "kind = \"local\"",
            &format!("kind = \"scaleway\"\nzone = \"fr-par-1\"\n{extra_target}"),
            1,
        )
        .replace(
            "bucket = \"media\"\n",
            "bucket = \"media\"\nexport_path = \"exports/plexburst\"\n",
        )
}

#[test]
fn bad_arguments_credentials_and_files_exit_2_naming_the_fix_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = |rel: &str| dir.path().join(rel);
    let s = |p: PathBuf| p.display().to_string();
    let scw = ScwEmu::start_with(&[], false);
    let tv = PlexTvEmu::start(&[]);
    let tv_no_pass = PlexTvEmu::start(&["--plex-pass", "false"]);

    // The files the cases point at.
    std::fs::write(d("text.txt"), "not a library\n").unwrap();
    let mut junk = vec![0x28, 0xb5, 0x2f, 0xfd];
    junk.extend_from_slice(b"garbage after a zstd magic");
    std::fs::write(d("junk.tar.zst"), junk).unwrap();
    let no_db = run(command("sh").arg("-c").arg(format!(
        "tar -C {} -cf - text.txt | zstd -q -o {}",
        dir.path().display(),
        d("no-db.tar.zst").display()
    )));
    assert!(no_db.status.success(), "{}", text(&no_db));
    std::fs::create_dir_all(d("a-dir")).unwrap();
    std::fs::write(d("a-file"), "").unwrap();
    std::fs::write(d("other.conf"), "[other]\ntype = s3\n").unwrap();
    std::fs::write(
        d("encrypted.conf"),
        "# Encrypted rclone configuration File\n\nRCLONE_ENCRYPT_V0:\nabc\n",
    )
    .unwrap();
    let home = d("home");
    std::fs::create_dir_all(&home).unwrap();
    // An archive its manifest does not describe.
    std::fs::write(d("run.tar.zst"), b"not an archive").unwrap();
    std::fs::write(
        d("run.manifest.json"),
        format!(
            r#"{{"manifest_version":1,"run_id":"r","created_at":"","plexburst_version":"","plex_version":null,"archive":"","sha256":"{}","bytes":14,"entries":1,"excluded":[],"sections":[]}}"#,
            "0".repeat(64)
        ),
    )
    .unwrap();
    std::fs::write(d("lone.tar.zst"), b"x").unwrap();

    let with_tv = |url: &str| {
        GOOD.replace(
            "data_dir = \"/var/lib/plexburst/plex\"",
            &format!("data_dir = \"/var/lib/plexburst/plex\"\nplextv_url = \"{url}\""),
        )
    };
    let scw_ok = |c: Case| {
        c.env("SCW_SECRET_KEY", crate::scaleway::SECRET)
            .env("SCW_ACCESS_KEY", "SCWPLEXBURSTTEST000")
            .env("SCW_DEFAULT_PROJECT_ID", crate::scaleway::PROJECT)
            .env("SCW_DEFAULT_ORGANIZATION_ID", crate::scaleway::ORGANIZATION)
            .env("SCW_DEFAULT_ZONE", "fr-par-1")
            .env("SCW_API_URL", &scw.url)
            .env("PB_TEST_S3_SECRET", "s3-secret")
    };
    let pr: &[&str] = &["plan", "run"];
    let apply = |c: Case, args: &[&str]| c.config(None).args(args);
    let h = s(home.clone());
    let cases = vec![
        case(
            "unknown --only-section",
            pr,
            "--only-section \"Nope\"",
            "use one of Music, Movies",
        )
        .args(&["--only-section", "Nope"]),
        case(
            "a seed that does not exist",
            pr,
            "--seed",
            "give an existing archive",
        )
        .args(&["--seed", &s(d("missing.tar.zst"))]),
        case(
            "a seed that is no archive",
            pr,
            "--seed",
            "give the archive",
        )
        .args(&["--seed", &s(d("text.txt"))]),
        case(
            "a seed that is not a zstd stream",
            pr,
            "--seed",
            "give the archive",
        )
        .args(&["--seed", &s(d("junk.tar.zst")), "--skip-analysis"]),
        case(
            "an archive without a library DB",
            pr,
            "--seed",
            "give the archive",
        )
        .args(&["--seed", &s(d("no-db.tar.zst")), "--skip-analysis"]),
        case(
            "a remote seed with no kind",
            pr,
            "--seed target:/srv/lib.txt",
            "must end in .tar.zst",
        )
        .args(&["--seed", "target:/srv/lib.txt"]),
        case(
            "a bucket seed with no kind",
            pr,
            "--seed bucket:b/lib",
            "must end in .tar.zst",
        )
        .args(&["--seed", "bucket:b/lib"]),
        case("an unknown flag", pr, "--frobnicate", "--help").args(&["--frobnicate"]),
        case("no config file", pr, "cannot read", "plexburst init")
            .config(None)
            .args(&["--config", &s(d("missing.toml"))]),
        case(
            "a config that is a directory",
            pr,
            "cannot read",
            "plexburst init",
        )
        .config(None)
        .args(&["--config", &s(d("a-dir"))]),
        case(
            "a state dir under a file",
            &["run"],
            "--state-dir",
            "a directory you can write",
        )
        .state_dir(d("a-file/state")),
        case(
            "a state dir that is a file",
            &["run"],
            "--state-dir",
            "a directory you can write",
        )
        .state_dir(d("a-file")),
        case(
            "resume with no run",
            &["resume"],
            "no run to resume",
            "plexburst run",
        ),
        case(
            "S3 secret env missing",
            pr,
            "storage.secret_access_key_env",
            "export PB_TEST_S3_SECRET",
        )
        .config(Some(rclone_toml())),
        case(
            "rclone.conf missing",
            pr,
            "storage.rclone_conf",
            "set storage.rclone_conf",
        )
        .config(Some(user_conf_toml(&d("missing.conf")))),
        case(
            "rclone.conf unreadable",
            pr,
            "storage.rclone_conf",
            "set storage.rclone_conf",
        )
        .config(Some(user_conf_toml(&d("a-dir")))),
        case(
            "rclone.conf without the remote",
            pr,
            "storage.remote",
            "fix storage.remote",
        )
        .config(Some(user_conf_toml(&d("other.conf")))),
        case(
            "rclone.conf encrypted",
            pr,
            "storage.remote",
            "plexburst needs a plain config",
        )
        .config(Some(user_conf_toml(&d("encrypted.conf")))),
        case(
            "PLEX_TOKEN rejected",
            &["run"],
            "plex.tv refused the account token",
            "plexburst login",
        )
        .config(Some(with_tv(&tv.url)))
        .env("PLEX_TOKEN", "not-an-account-token"),
        case(
            "PLEX_TOKEN without Plex Pass",
            &["run"],
            "no active Plex Pass",
            "--skip-analysis",
        )
        .config(Some(with_tv(&tv_no_pass.url)))
        .env("PLEX_TOKEN", crate::claim::ACCOUNT),
        scw_ok(case(
            "Scaleway key missing",
            pr,
            "no Scaleway secret key",
            "set SCW_SECRET_KEY",
        ))
        .config(Some(scaleway_toml("")))
        .env("SCW_SECRET_KEY", ""),
        scw_ok(case(
            "Scaleway key rejected",
            pr,
            "denied_authentication",
            "check the Scaleway key",
        ))
        .config(Some(scaleway_toml("")))
        .env("SCW_SECRET_KEY", "5ec2e7a1-b1a5-4e0d-9c1e-000000000bad"),
        scw_ok(case(
            "Scaleway project missing",
            pr,
            "no Scaleway project",
            "SCW_DEFAULT_PROJECT_ID",
        ))
        .config(Some(scaleway_toml("")))
        .env("SCW_DEFAULT_PROJECT_ID", ""),
        scw_ok(case(
            "Scaleway zone unknown",
            pr,
            "target.zone xx-abc-9",
            "use a zone Scaleway serves",
        ))
        .config(Some(
            scaleway_toml("").replace("zone = \"fr-par-1\"", "zone = \"xx-abc-9\""),
        )),
        scw_ok(case(
            "Scaleway type unknown",
            pr,
            "ZZ9-XL: not offered",
            "pick another type",
        ))
        .config(Some(scaleway_toml("type = \"ZZ9-XL\""))),
        apply(
            case(
                "apply --to not a path",
                &["apply"],
                "--to",
                "ssh://user@host",
            ),
            &[
                "x.tar.zst",
                "--to",
                "ssh://home/srv",
                "--service",
                "docker:plex",
            ],
        ),
        apply(
            case(
                "apply --service of an unknown kind",
                &["apply"],
                "--service",
                "systemd:",
            ),
            &["x.tar.zst", "--to", &h, "--service", "upstart:plex"],
        ),
        apply(
            case(
                "apply without --service",
                &["apply"],
                "--service",
                "systemd:",
            ),
            &["x.tar.zst", "--to", &h],
        ),
        apply(
            case(
                "apply --timeout not a duration",
                &["apply"],
                "--timeout",
                "--help",
            ),
            &[
                "x.tar.zst",
                "--to",
                &h,
                "--service",
                "docker:plex",
                "--timeout",
                "soon",
            ],
        ),
        apply(
            case("apply of a missing archive", &["apply"], "ARCHIVE", "give"),
            &[
                &s(d("missing.tar.zst")),
                "--to",
                &h,
                "--service",
                "docker:plex",
            ],
        ),
        apply(
            case(
                "apply of an archive without its manifest",
                &["apply"],
                "manifest",
                "--manifest",
            ),
            &[
                &s(d("lone.tar.zst")),
                "--to",
                &h,
                "--service",
                "docker:plex",
            ],
        ),
        apply(
            case(
                "apply of an archive its manifest does not match",
                &["apply"],
                "does not match its manifest",
                "export again",
            ),
            &[
                &s(d("run.tar.zst")),
                "--to",
                &h,
                "--service",
                "command:false",
            ],
        ),
    ];

    let mut failures = Vec::new();
    let mut ran = 0;
    for (i, c) in cases.iter().enumerate() {
        for (j, sub) in c.through.iter().enumerate() {
            let state = c
                .state_dir
                .clone()
                .unwrap_or_else(|| d(&format!("state-{i}-{j}")));
            let mut cmd = command(plexburst_bin());
            cmd.arg(sub)
                .env("HOME", dir.path())
                .env("XDG_CONFIG_HOME", d("xdg"));
            for k in AMBIENT {
                cmd.env_remove(k);
            }
            // `plan` looks at the cloud (a scaleway target) but at no other target.
            let scaleway = c
                .config
                .as_deref()
                .is_some_and(|t| t.contains("\"scaleway\""));
            if *sub == "plan" && !scaleway {
                cmd.arg("--offline");
            }
            cmd.args(&c.args);
            if let Some(toml) = &c.config {
                let cfg = d(&format!("case-{i}.toml"));
                std::fs::write(&cfg, toml).unwrap();
                cmd.arg("--config").arg(cfg);
            }
            if *sub != "apply" {
                cmd.arg("--state-dir").arg(&state);
            }
            for (k, v) in &c.env {
                if v.is_empty() {
                    cmd.env_remove(k);
                } else {
                    cmd.env(k, v);
                }
            }
            let out = run(&mut cmd);
            ran += 1;
            let case = format!("{} ({sub})", c.name);
            failures.extend(rejected(&case, &out, c.field, c.fix, &state));
            if *sub == "apply" && std::fs::read_dir(&home).unwrap().next().is_some() {
                failures.push(format!("case {case:?}: the home data dir was written"));
            }
        }
    }
    // The cloud was only read: no call made, changed or deleted anything, and nothing is held.
    let log: serde_json::Value = ureq::get(&format!("{}/_emulator/requests", scw.url))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    let calls = log["requests"].as_array().unwrap();
    assert!(!calls.is_empty(), "the Scaleway cases reached the emulator");
    let writes: Vec<&serde_json::Value> = calls.iter().filter(|r| r["method"] != "GET").collect();
    assert!(
        writes.is_empty(),
        "calls that change something: {writes:#?}"
    );
    assert_eq!(scw.left(), 0, "{:#}", scw.resources());
    assert_eq!(tv.stats()["claims_issued"], 0);
    eprintln!(
        "bad input: {} argument/credential/file cases, {ran} commands, all exit 2 with the field and the fix, nothing created",
        cases.len()
    );
    assert!(cases.len() >= 30);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
