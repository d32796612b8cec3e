//! The Scaleway target end to end: the real binary against the Scaleway emulator, whose power-on
//! boots a real container from a debootstrapped Debian root running Debian's cloud-init on the
//! user data plexburst sent (the instance stand-in, `scripts/instance/`), with the Plex emulator
//! inside and the library in `rclone serve s3`, mounted in the instance with FUSE.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};

use crate::harness::{LabOpts, command, emulator_bin, free_port, text};
use crate::rclone::RcloneLab;

/// A distinctive secret key, shaped as real ones are (a UUID: the official SDK checks).
pub(crate) const SECRET: &str = "5ec2e7a1-b1a5-4e0d-9c1e-7e57c0ffee01";
pub(crate) const PROJECT: &str = "11111111-2222-3333-4444-555555555555";
/// The emulator's default organization, owner of the projects it serves.
pub(crate) const ORGANIZATION: &str = "5ca1e000-0000-4000-8000-000000000000";

fn workspace_bin(name: &str) -> PathBuf {
    emulator_bin().with_file_name(name)
}

/// `scaleway-emulator serve` with the instance hook; stopped (and its instances halted) on drop.
pub struct ScwEmu {
    child: Child,
    pub url: String,
    pub ssh_port: u16,
}

impl ScwEmu {
    pub fn start(faults: &[&str]) -> ScwEmu {
        ScwEmu::start_with(faults, true)
    }

    /// With `instances` false, power-on boots nothing (an API-only emulator).
    pub fn start_with(faults: &[&str], instances: bool) -> ScwEmu {
        let ssh_port = free_port();
        let mut c = command(workspace_bin("scaleway-emulator"));
        c.args(["serve", "--listen", "127.0.0.1:0", "--secret-key", SECRET])
            .args(["--project-id", PROJECT])
            .stderr(Stdio::null());
        if instances {
            let image = instance_standin::ensure_image().expect("the instance image builds");
            c.arg("--instance-hook")
                .arg(instance_standin::hook())
                .env("PB_INSTANCE_SSH_PORT", ssh_port.to_string())
                .env("PB_INSTANCE_IMAGE", image)
                .env("PB_INSTANCE_BIND_EMULATOR", emulator_bin());
        } else {
            c.args(["--boot-delay", "1500ms"]);
        }
        for f in faults {
            c.args(["--fault", f]);
        }
        let (child, url) = crate::harness::spawn_listening(&mut c);
        ScwEmu {
            child,
            url,
            ssh_port,
        }
    }

    /// Every resource the emulator holds, in all zones.
    pub fn resources(&self) -> serde_json::Value {
        let body = ureq::get(&format!("{}/_emulator/resources", self.url))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        serde_json::from_str(&body).unwrap()
    }

    /// Every (method, path) the emulator was sent, ids replaced by `{id}`.
    pub fn request_templates(&self) -> std::collections::BTreeSet<String> {
        let text = ureq::get(&format!("{}/_emulator/requests", self.url))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let path: Vec<String> = r["path"]
                    .as_str()
                    .unwrap()
                    .split('/')
                    .map(|seg| {
                        // A uuid, or an IAM access key (SCW + 17 upper-case letters and digits).
                        let uuid =
                            seg.len() == 36 && seg.chars().filter(|c| *c == '-').count() == 4;
                        let access = seg.len() == 20 && seg.starts_with("SCW");
                        if uuid || access {
                            "{id}".to_string()
                        } else {
                            seg.to_string()
                        }
                    })
                    .collect();
                format!("{} {}", r["method"].as_str().unwrap(), path.join("/"))
            })
            .collect()
    }

    /// The instance hook's calls, for a failure message.
    pub fn hooks(&self) -> String {
        ureq::get(&format!("{}/_emulator/hooks", self.url))
            .call()
            .map(|mut r| r.body_mut().read_to_string().unwrap_or_default())
            .unwrap_or_default()
    }

    /// How many servers, volumes, IPs and IAM objects are left (the emulator's own total).
    pub fn left(&self) -> u64 {
        self.resources()["count"]
            .as_u64()
            .expect("resources has a count")
    }
}

/// The servers the emulator at `url` ever booted (from its hook log).
fn booted_at(url: &str) -> Vec<String> {
    let hooks = ureq::get(&format!("{url}/_emulator/hooks"))
        .call()
        .map(|mut r| r.body_mut().read_to_string().unwrap_or_default())
        .unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&hooks).unwrap_or_default();
    let mut ids: Vec<String> = v["calls"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["server_id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    ids.dedup();
    ids
}

/// A distinctive claim token for the secrets audit (the emulator claims itself with any).
const PLANTED_CLAIM: &str = "claim-Planted-Qx7Zk3Vw9";

/// Looks into every instance of `emu` until finished: each server's user data (while the API
/// has it), and in its container every command line, the listening sockets and the mode of the
/// pushed rclone config `conf`.
fn instance_sampler(emu: &ScwEmu, conf: &str) -> crate::audit::Sampler {
    let url = emu.url.clone();
    let probe = crate::audit::probe_script(conf);
    crate::audit::Sampler::start(move || {
        let mut out = String::new();
        for id in booted_at(&url) {
            let ud = format!("{url}/instance/v1/zones/fr-par-1/servers/{id}/user_data/cloud-init");
            if let Ok(mut r) = ureq::get(&ud).header("X-Auth-Token", SECRET).call() {
                out.push_str("===USERDATA\n");
                out.push_str(&r.body_mut().read_to_string().unwrap_or_default());
            }
            for c in instance_standin::containers(Some(&id)).unwrap_or_default() {
                let o =
                    crate::harness::run(command("docker").args(["exec", &c, "sh", "-c", &probe]));
                out.push_str(&String::from_utf8_lossy(&o.stdout));
            }
        }
        (!out.is_empty()).then_some(out)
    })
}

/// The secrets audit and the exposure check of a completed run on an instance: the Scaleway key,
/// the S3 keys, the planted claim and the run's SSH private key are in none of the plan's and
/// the run's output, the state dir (logs, state, plan, report, journal, the target's logs), the
/// bucket (manifest and the archive's bytes), the user data or a command line seen in the
/// instance; there, Plex and rclone's rc listened on loopback only and the pushed rclone config
/// was 0600; here, the state file and the run key are 0600.
fn audit_instance_run(
    rl: &RcloneLab,
    plan: &std::process::Output,
    run: &std::process::Output,
    samples: &[String],
) {
    let lab = &rl.lab;
    let (access, secret) = rl.s3_keys();
    let run_dir = lab.journal().parent().unwrap().to_path_buf();
    let key = run_dir.join("ssh/id_ed25519");
    let private = std::fs::read_to_string(&key).unwrap();
    // The third base64 line holds private bytes (the first ones are a header shared by all keys).
    let body = private.lines().nth(3).unwrap().to_string();
    let user_data: Vec<&String> = samples
        .iter()
        .filter(|s| s.contains("===USERDATA"))
        .collect();
    assert!(!user_data.is_empty(), "the sampler saw the user data");
    let cmdlines = samples.iter().filter(|s| s.contains("===SS")).count();
    assert!(
        cmdlines >= 3,
        "the sampler looked into the instance {cmdlines} times"
    );
    let state = lab.state();
    let archive = state["export"]["archive"].as_str().unwrap();
    let object = lab
        .path("exports/plexburst")
        .join(archive.rsplit('/').next().unwrap());
    let unpacked = crate::harness::run(command("zstd").arg("-dc").arg(&object));
    assert!(unpacked.status.success(), "{}", text(&unpacked));
    let texts = [
        ("plan output", text(plan)),
        ("run output", text(run)),
        (
            "the instance (user data, command lines)",
            samples.join("\n"),
        ),
        (
            "the archive's bytes",
            String::from_utf8_lossy(&unpacked.stdout).into_owned(),
        ),
    ];
    let texts: Vec<(&str, &str)> = texts.iter().map(|(n, t)| (*n, t.as_str())).collect();
    let secrets = [
        ("the Scaleway secret key", SECRET),
        ("the S3 access key", access.as_str()),
        ("the S3 secret key", secret.as_str()),
        ("the claim token", PLANTED_CLAIM),
        ("the run's SSH private key", body.as_str()),
    ];
    let leaks = crate::audit::leaks(
        &secrets,
        &texts,
        &[&lab.state_dir(), &lab.path("exports")],
        &[&key],
    );
    assert!(leaks.is_empty(), "secrets leaked: {leaks:#?}");
    assert!(
        run_dir.join("target-logs").is_dir(),
        "the target's logs were audited too"
    );

    // The search finds what is there: the run key in its own file, the S3 secret in the
    // user's rclone.conf.
    assert!(!crate::audit::leaks(&secrets[4..], &[], &[&lab.state_dir()], &[]).is_empty());
    let user_conf = std::fs::read_to_string(lab.path("user-rclone.conf")).unwrap();
    assert!(!crate::audit::leaks(&secrets[2..3], &[("conf", &user_conf)], &[], &[]).is_empty());

    let needles = [
        "((\"plex-emulator\"".to_string(),
        "((\"rclone\"".to_string(),
    ];
    let (open, seen) = crate::audit::exposed(samples, &needles);
    assert!(open.is_empty(), "listening beyond loopback: {open:#?}");
    assert!(
        seen.iter().all(|n| *n > 0),
        "Plex and rclone's rc were seen listening: {seen:?}"
    );
    assert_eq!(
        crate::audit::modes(samples),
        ["600".to_string()].into(),
        "the pushed rclone config's mode"
    );
    for f in [lab.state_dir().join("state.json"), key] {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    eprintln!(
        "secrets audit (instance run): {} secrets, {} sinks + every file under the state dir and the bucket, {cmdlines} looks into the instance: 0 found; Plex and rclone rc on loopback only",
        secrets.len(),
        texts.len()
    );
}

impl ScwEmu {
    fn booted(&self) -> Vec<String> {
        booted_at(&self.url)
    }

    /// The stand-in containers of this emulator's servers (other tests' are not ours).
    pub fn containers(&self) -> Vec<String> {
        self.booted()
            .iter()
            .flat_map(|id| instance_standin::containers(Some(id)).unwrap_or_default())
            .collect()
    }
}

impl Drop for ScwEmu {
    fn drop(&mut self) {
        let left = self.containers();
        let _ = self.child.kill();
        let _ = self.child.wait();
        for c in left {
            let _ = crate::harness::run(command("docker").args(["rm", "-f", &c]));
        }
    }
}

/// A lab whose target is a Scaleway instance from `emu`, storage in `rclone serve s3`, the
/// archive streamed to the bucket, Plex the emulator bound into the instance.
pub fn scaleway_lab(emu: &ScwEmu, opts: LabOpts) -> RcloneLab {
    let rl = RcloneLab::new(
        LabOpts {
            target_toml: Some(format!(
                "[target]\nkind = \"scaleway\"\nprofile = \"lite\"\nzone = \"fr-par-1\"\nssh_port = {}\nboot_timeout = \"5m\"\n",
                emu.ssh_port
            )),
            ..opts
        },
        "export_path = \"exports/plexburst\"",
    );
    let toml = std::fs::read_to_string(rl.lab.config_path())
        .unwrap()
        .replace(
            &emulator_bin().display().to_string(),
            "/usr/local/bin/plex-emulator",
        );
    std::fs::write(rl.lab.config_path(), toml).unwrap();
    rl
}

/// A lab whose Plex scans `rate` files a second (the library has 22), so a phase can be caught.
fn slow_lab(emu: &ScwEmu, rate: &str) -> RcloneLab {
    scaleway_lab(
        emu,
        LabOpts {
            emulator_args: vec!["--scan-rate".into(), rate.into()],
            ..Default::default()
        },
    )
}

/// Add `line` to the lab's `[target]` (before its `ssh_port`).
fn target_line(lab: &crate::harness::Lab, line: &str) {
    let toml = std::fs::read_to_string(lab.config_path())
        .unwrap()
        .replace("ssh_port =", &format!("{line}\nssh_port ="));
    std::fs::write(lab.config_path(), toml).unwrap();
}

pub fn scw_env(emu: &ScwEmu, c: &mut std::process::Command) {
    c.env("SCW_SECRET_KEY", SECRET)
        .env("SCW_ACCESS_KEY", "SCWPLEXBURSTTEST000")
        .env("SCW_DEFAULT_PROJECT_ID", PROJECT)
        .env("SCW_DEFAULT_ORGANIZATION_ID", ORGANIZATION)
        .env("SCW_DEFAULT_ZONE", "fr-par-1")
        .env("SCW_API_URL", &emu.url);
}

#[test]
fn a_run_on_a_rented_instance_completes_and_leaves_nothing_billed() {
    let emu = ScwEmu::start(&[]);
    let rl = scaleway_lab(&emu, LabOpts::default());
    let lab = &rl.lab;
    let mut plan = lab.cmd(&["plan"]);
    scw_env(&emu, &mut plan);
    let plan = crate::harness::run(&mut plan);
    assert!(plan.status.success(), "{}", text(&plan));
    let shown = String::from_utf8_lossy(&plan.stdout);
    assert!(
        shown.contains("scaleway: fr-par-1 DEV1-S: 2 vCPU") && shown.contains("EUR/h"),
        "plan shows the type, zone and price: {shown}"
    );

    // The secrets audit and the exposure check ride on this run: a distinctive claim token, the
    // target's keep-logs copied home too, and a sampler looking into the instance throughout.
    let conf_path = shown
        .split_once("pushed to ")
        .and_then(|(_, r)| r.split_once(" (0600"))
        .map(|(p, _)| p.to_string())
        .expect("the plan names the pushed rclone config");
    let sampler = instance_sampler(&emu, &conf_path);
    let mut run = lab.cmd(&["run", "--keep-logs"]);
    scw_env(&emu, &mut run);
    run.env("PLEX_CLAIM", PLANTED_CLAIM);
    let out = crate::harness::run(&mut run);
    let samples = sampler.finish();
    assert!(
        out.status.success(),
        "{}\nhooks: {}",
        text(&out),
        emu.hooks()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("created server"), "{stderr}");
    audit_instance_run(&rl, &plan, &out, &samples);

    // The archive is in the bucket, and the instance with all it had is gone.
    let state = lab.state();
    let object = state["export"]["archive"].as_str().unwrap().to_string();
    assert!(object.contains("exports/plexburst/"), "{object}");
    assert_eq!(emu.left(), 0, "left at Scaleway: {:#}", emu.resources());
    assert!(
        emu.containers().is_empty(),
        "the instance container is gone"
    );
    assert!(state["instance"].is_null(), "{state:#}");
    let released = state["released"].as_array().unwrap();
    assert!(
        released
            .iter()
            .any(|r| r.as_str().unwrap().starts_with("server ")),
        "{state:#}"
    );
    // The Scaleway secret key is nowhere in what the run wrote.
    let journal = std::fs::read_to_string(lab.journal()).unwrap();
    assert!(
        !journal.contains(SECRET),
        "the secret key is in the journal"
    );
    let st = std::fs::read_to_string(lab.state_dir().join("state.json")).unwrap();
    assert!(!st.contains(SECRET));
    assert!(!stderr.contains(SECRET));

    // The timeline of report.html has what the rented machine cost as the run went, and the
    // bytes the instance's mount read from the bucket.
    let timeline = crate::rclone::timeline(lab);
    let costs: Vec<f64> = timeline
        .iter()
        .filter_map(|s| s["cost_eur"].as_f64())
        .collect();
    assert!(
        !costs.is_empty() && costs.windows(2).all(|w| w[0] <= w[1]) && costs[costs.len() - 1] > 0.0,
        "a growing cost on the timeline: {costs:?}"
    );
    assert!(
        timeline
            .iter()
            .any(|s| s["bucket_bytes"].as_u64().is_some_and(|b| b > 0)),
        "bucket bytes on the timeline"
    );
    let html =
        std::fs::read_to_string(lab.journal().parent().unwrap().join("report.html")).unwrap();
    assert!(!html.contains("nothing rented"), "the cost is drawn");
    assert!(!html.contains(SECRET));

    // The run's own key: private half 0600, in no log, journal or state.
    let run_dir = lab.journal().parent().unwrap().to_path_buf();
    let key = run_dir.join("ssh/id_ed25519");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the run's private key is private");
    let private = std::fs::read_to_string(&key).unwrap();
    // The third base64 line holds private bytes (the first ones are a header shared by all keys).
    let body: String = private.lines().nth(3).unwrap().to_string();
    for f in [
        run_dir.join("plexburst.log"),
        lab.journal(),
        lab.state_dir().join("state.json"),
    ] {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains(&body),
            "the private key is in {}",
            f.display()
        );
    }

    // Every request plexburst sent is one the official SDK also sends (its contract script
    // against an emulator of its own), so the emulator's answers to them are SDK-checked.
    let ours = emu.request_templates();
    let sdk_emu = ScwEmu::start_with(&[], false);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../scaleway-emulator/tests/sdk_contract.py"
    );
    let sdk = crate::harness::run(command("python3").args([
        script,
        &sdk_emu.url,
        SECRET,
        PROJECT,
        ORGANIZATION,
    ]));
    assert!(
        sdk.status.success(),
        "the SDK contract script: {}",
        text(&sdk)
    );
    let theirs = sdk_emu.request_templates();
    let only_ours: Vec<&String> = ours.difference(&theirs).collect();
    assert!(
        only_ours.is_empty(),
        "requests plexburst sends that the SDK never does: {only_ours:#?}\nthe SDK's: {theirs:#?}"
    );
}

#[test]
fn sigkill_mid_run_then_destroy_deletes_the_instance() {
    let emu = ScwEmu::start(&[]);
    let rl = slow_lab(&emu, "2");
    let lab = &rl.lab;
    let mut child = run_until_scan(&emu, lab);
    child.kill().unwrap();
    let _ = child.wait();
    assert!(emu.left() > 0, "the killed run left its instance");
    let mut destroy = lab.cmd(&["destroy"]);
    scw_env(&emu, &mut destroy);
    let out = crate::harness::run(&mut destroy);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(emu.left(), 0, "left at Scaleway: {:#}", emu.resources());
    assert!(
        emu.containers().is_empty(),
        "the instance container is gone"
    );
}

#[test]
fn bad_credentials_are_reported_by_plan_before_anything_is_created() {
    let emu = ScwEmu::start(&[]);
    let rl = scaleway_lab(&emu, LabOpts::default());
    let lab = &rl.lab;
    let mut plan = lab.cmd(&["plan"]);
    scw_env(&emu, &mut plan);
    plan.env("SCW_SECRET_KEY", "not-the-key");
    let out = crate::harness::run(&mut plan);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("check the Scaleway key"),
        "{}",
        text(&out)
    );
    let mut none = lab.cmd(&["plan"]);
    none.env_remove("SCW_SECRET_KEY")
        .env("SCW_API_URL", &emu.url);
    let out = crate::harness::run(&mut none);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no Scaleway secret key"),
        "{}",
        text(&out)
    );
    assert_eq!(emu.left(), 0);
}

#[test]
fn the_instance_deletes_itself_at_its_deadline_with_plexburst_dead() {
    let emu = ScwEmu::start(&[]);
    // 22 files at 0.2 files/s: the scan outlasts the 1-minute deadline.
    let rl = slow_lab(&emu, "0.2");
    let lab = &rl.lab;
    target_line(lab, "max_lifetime = \"1m\"");
    let mut child = run_until_scan(&emu, lab);
    let provision = lab.phase("provision");
    assert!(
        provision["detail"]
            .as_str()
            .is_some_and(|d| d.contains("terminates itself through the API after 1m")),
        "{provision:#}"
    );
    child.kill().unwrap();
    let _ = child.wait();
    // plexburst is dead; the instance's own watchdog terminates it through the API.
    crate::harness::wait_for(
        "the instance to terminate itself",
        std::time::Duration::from_secs(180),
        || {
            emu.resources()["servers"]
                .as_array()
                .is_some_and(Vec::is_empty)
        },
    );
    assert!(emu.containers().is_empty(), "its container went with it");
    // What a server's terminate leaves (the deadline's IAM objects) goes with destroy.
    let mut destroy = lab.cmd(&["destroy"]);
    scw_env(&emu, &mut destroy);
    let out = crate::harness::run(&mut destroy);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(emu.left(), 0, "left at Scaleway: {:#}", emu.resources());
}

/// Run the lab until its scan is under way on the instance; returns the running plexburst.
fn run_until_scan(emu: &ScwEmu, lab: &crate::harness::Lab) -> std::process::Child {
    let mut run = lab.cmd(&["run", "--skip-analysis"]);
    scw_env(emu, &mut run);
    let child = crate::harness::spawn(&mut run);
    crate::harness::wait_for(
        "the scan on the instance",
        std::time::Duration::from_secs(300),
        || current_phase(lab).as_deref() == Some("scan"),
    );
    child
}

#[test]
fn sigint_mid_scan_deletes_the_instance_before_exiting() {
    let emu = ScwEmu::start(&[]);
    let rl = slow_lab(&emu, "1");
    let lab = &rl.lab;
    let child = run_until_scan(&emu, lab);
    crate::harness::run(command("kill").args(["-INT", &child.id().to_string()]));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert_eq!(emu.left(), 0, "left at Scaleway: {:#}", emu.resources());
    assert!(emu.containers().is_empty());
    let logs = lab.journal().with_file_name("target-logs");
    assert!(
        logs.join("cloud-init-output.log").exists(),
        "the instance's logs were kept before it was deleted"
    );
    assert_eq!(lab.state()["status"], "interrupted");
}

#[test]
fn a_lost_state_dir_is_covered_by_destroy_sweep() {
    let emu = ScwEmu::start(&[]);
    let rl = slow_lab(&emu, "1");
    let lab = &rl.lab;
    let mut child = run_until_scan(&emu, lab);
    child.kill().unwrap();
    let _ = child.wait();
    std::fs::remove_dir_all(lab.state_dir()).unwrap();
    assert!(emu.left() > 0);
    let mut no = lab.cmd(&["destroy", "--sweep"]);
    scw_env(&emu, &mut no);
    let out = crate::harness::run(&mut no);
    assert_eq!(
        out.status.code(),
        Some(2),
        "asks before deleting: {}",
        text(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("  server "),
        "lists what it found: {}",
        text(&out)
    );
    let mut yes = lab.cmd(&["destroy", "--sweep", "--yes"]);
    scw_env(&emu, &mut yes);
    let out = crate::harness::run(&mut yes);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(emu.left(), 0, "left at Scaleway: {:#}", emu.resources());
    assert!(emu.containers().is_empty());
}

#[test]
fn the_user_data_script_is_clean_under_shellcheck() {
    let dirs = vec!["/srv/plex".to_string(), "/srv/plex/.plexburst".to_string()];
    for runtime in ["docker", "command"] {
        let script = plexburst::cloud::scaleway::userdata::script(
            &plexburst::cloud::scaleway::userdata::UserData {
                public_key: "ssh-ed25519 AAAA test",
                runtime,
                image: "plexinc/pms-docker:latest",
                dirs: &dirs,
                deadline: std::time::Duration::from_secs(96 * 3600),
            },
        );
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), script).unwrap();
        let out = crate::harness::run(command("shellcheck").args(["-s", "sh"]).arg(f.path()));
        assert!(
            out.status.success(),
            "shellcheck ({runtime}): {}",
            text(&out)
        );
    }
}

#[test]
fn the_budget_stops_the_work_exports_what_exists_and_deletes_the_instance() {
    let emu = ScwEmu::start(&[]);
    let rl = slow_lab(&emu, "1");
    let lab = &rl.lab;
    // DEV1-S costs under a cent an hour: this budget is spent within the first seconds.
    target_line(lab, "budget_eur = 0.00001");
    let mut run = lab.cmd(&["run", "--skip-analysis"]);
    scw_env(&emu, &mut run);
    let out = crate::harness::run(&mut run);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("done with warnings"), "{stderr}");
    assert!(stderr.contains("the budget is spent"), "{stderr}");
    let state = lab.state();
    assert!(
        state["export"]["archive"].as_str().is_some(),
        "exported: {state:#}"
    );
    assert_eq!(emu.left(), 0, "left at Scaleway: {:#}", emu.resources());
    let report = std::fs::read_to_string(lab.journal().with_file_name("report.md")).unwrap();
    assert!(
        report.contains("- cost: ") && report.contains("EUR"),
        "{report}"
    );
}

/// An API key of an IAM application allowed Instances in the project and nothing else.
fn instances_only_key(emu: &ScwEmu) -> String {
    let post = |path: &str, body: serde_json::Value| -> serde_json::Value {
        let text = ureq::post(&format!("{}{path}", emu.url))
            .header("X-Auth-Token", SECRET)
            .header("Content-Type", "application/json")
            .send(body.to_string())
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let app = post(
        "/iam/v1alpha1/applications",
        serde_json::json!({"name": "user-key", "organization_id": ORGANIZATION}),
    );
    let app_id = app["id"].as_str().unwrap();
    post(
        "/iam/v1alpha1/policies",
        serde_json::json!({"name": "user-key", "organization_id": ORGANIZATION, "application_id": app_id,
            "rules": [{"permission_set_names": ["InstancesFullAccess"], "project_ids": [PROJECT]}]}),
    );
    let key = post(
        "/iam/v1alpha1/api-keys",
        serde_json::json!({"application_id": app_id, "default_project_id": PROJECT}),
    );
    key["secret_key"].as_str().unwrap().to_string()
}

#[test]
fn a_key_without_iam_rights_needs_the_weak_deadline_accepted() {
    let emu = ScwEmu::start(&[]);
    let rl = scaleway_lab(&emu, LabOpts::default());
    let lab = &rl.lab;
    let key = instances_only_key(&emu);
    let mut plan = lab.cmd(&["plan"]);
    scw_env(&emu, &mut plan);
    plan.env("SCW_SECRET_KEY", &key);
    let out = crate::harness::run(&mut plan);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("target.allow_weak_deadline = true"),
        "{}",
        text(&out)
    );
    target_line(lab, "allow_weak_deadline = true");
    let mut plan = lab.cmd(&["plan"]);
    scw_env(&emu, &mut plan);
    plan.env("SCW_SECRET_KEY", &key);
    let out = crate::harness::run(&mut plan);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("only an in-guest shutdown"),
        "{}",
        text(&out)
    );
}

/// The phases of a run on an instance, in order.
const PHASES: [&str; 10] = [
    "provision",
    "prepare",
    "preflight",
    "start-plex",
    "configure",
    "scan",
    "analyze",
    "restore",
    "export",
    "teardown",
];

/// The current phase in the lab's state file, if it reads.
fn current_phase(lab: &crate::harness::Lab) -> Option<String> {
    let b = std::fs::read(lab.state_dir().join("state.json")).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&b).ok()?;
    v["current_phase"].as_str().map(String::from)
}

/// Start a run and signal plexburst while the state says it is in `phase` (frozen with SIGSTOP
/// between the look and the signal, so it cannot move on). `signal` is `INT` or `TERM` (then the run
/// must stop cleanly by itself) or `KILL` (then `destroy` must clean up). Returns the observed
/// outcome; a phase that went by before it was caught is tried again with a new run.
fn signal_in(emu: &ScwEmu, lab: &crate::harness::Lab, phase: &str, signal: &str) -> String {
    use std::time::{Duration, Instant};
    let args: &[&str] = if phase == "analyze" {
        &["run"]
    } else {
        &["run", "--skip-analysis"]
    };
    for _ in 0..3 {
        let _ = std::fs::remove_dir_all(lab.state_dir());
        let mut run = lab.cmd(args);
        scw_env(emu, &mut run);
        let mut child = crate::harness::spawn(&mut run);
        let pid = child.id().to_string();
        let deadline = Instant::now() + Duration::from_secs(300);
        while current_phase(lab).as_deref() != Some(phase) {
            if let Ok(Some(_)) = child.try_wait() {
                let out = child.wait_with_output().unwrap();
                panic!("the run ended before phase {phase}:\n{}", text(&out));
            }
            assert!(Instant::now() < deadline, "phase {phase} never came");
            std::thread::sleep(Duration::from_millis(5)); // polling the state file
        }
        crate::harness::run(command("kill").args(["-STOP", &pid]));
        let caught = current_phase(lab).as_deref() == Some(phase);
        crate::harness::run(command("kill").args([&format!("-{signal}"), &pid]));
        crate::harness::run(command("kill").args(["-CONT", &pid]));
        let out = child.wait_with_output().unwrap();
        let observed = if signal == "KILL" {
            let mut destroy = lab.cmd(&["destroy"]);
            scw_env(emu, &mut destroy);
            let d = crate::harness::run(&mut destroy);
            assert!(
                d.status.success(),
                "destroy after SIGKILL in {phase}: {}",
                text(&d)
            );
            "killed; destroy cleaned up".to_string()
        } else {
            match out.status.code() {
                Some(130) => "stopped cleanly (exit 130)".to_string(),
                Some(0) => "completed (the signal came in its last step)".to_string(),
                other => panic!("SIG{signal} in {phase}: exit {other:?}:\n{}", text(&out)),
            }
        };
        if caught {
            return observed;
        }
        // Went by: clean up what it left and try again.
        let mut destroy = lab.cmd(&["destroy"]);
        scw_env(emu, &mut destroy);
        crate::harness::run(&mut destroy);
    }
    panic!("three runs went through phase {phase} before they could be signalled in it");
}

/// The signal matrix on a rented instance: in every phase, the signal, then zero resources left
/// at Scaleway and no instance container. Prints the table (and the figures go in docs/).
fn matrix(signal: &str) {
    let emu = ScwEmu::start(&[]);
    let rl = scaleway_lab(
        &emu,
        LabOpts {
            // Slow enough that the scan and the analysis can be caught.
            emulator_args: vec![
                "--scan-rate".into(),
                "8".into(),
                "--analysis-rate".into(),
                "4".into(),
            ],
            ..Default::default()
        },
    );
    let lab = &rl.lab;
    let mut table = format!(
        "| SIG{signal} in | observed | resources left | containers left |\n|---|---|---|---|\n"
    );
    for phase in PHASES {
        let observed = signal_in(&emu, lab, phase, signal);
        let left = emu.left();
        let containers = emu.containers().len();
        table.push_str(&format!(
            "| {phase} | {observed} | {left} | {containers} |\n"
        ));
        assert_eq!(
            left,
            0,
            "SIG{signal} in {phase}: left at Scaleway: {:#}",
            emu.resources()
        );
        assert_eq!(
            containers, 0,
            "SIG{signal} in {phase}: an instance container is left"
        );
    }
    println!("{table}");
    crate::matrix::write_figures(&format!("scaleway-sig{}.md", signal.to_lowercase()), &table);
}

#[test]
fn sigterm_in_every_phase_stops_cleanly_and_leaves_nothing_billed() {
    matrix("TERM");
}

#[test]
fn sigkill_in_every_phase_then_destroy_leaves_nothing_billed() {
    matrix("KILL");
}

#[test]
fn sigint_in_every_phase_stops_cleanly_and_leaves_nothing_billed() {
    matrix("INT");
}

#[test]
fn a_quota_error_is_explained_not_retried_and_nothing_is_left() {
    let emu = ScwEmu::start(&["quota:DEV1-S"]);
    let rl = scaleway_lab(&emu, LabOpts::default());
    let lab = &rl.lab;
    let mut run = lab.cmd(&["run"]);
    scw_env(&emu, &mut run);
    let out = crate::harness::run(&mut run);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("quota") && stderr.contains("raise it in the Scaleway console"),
        "{stderr}"
    );
    let creates = emu
        .request_templates()
        .iter()
        .filter(|r| r.as_str() == "POST /instance/v1/zones/fr-par-1/servers")
        .count();
    assert_eq!(creates, 1, "the create was not retried");
    assert_eq!(emu.left(), 0, "left at Scaleway: {:#}", emu.resources());
}

#[test]
fn profiles_lists_live_prices_and_stock() {
    let emu = ScwEmu::start_with(&["shortage:GP1-S"], false);
    let mut c = command(crate::harness::plexburst_bin());
    c.args(["profiles", "--zone", "fr-par-1"]);
    scw_env(&emu, &mut c);
    let out = crate::harness::run(c.env_remove("SCW_CONFIG_PATH"));
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    for (profile, t) in [
        ("lite", "DEV1-S"),
        ("standard", "DEV1-M"),
        ("power", "GP1-S"),
        ("superpower", "GP1-M"),
    ] {
        let line = shown
            .lines()
            .find(|l| l.starts_with(profile) && l.contains(t))
            .unwrap_or_else(|| panic!("no {profile} {t} line: {shown}"));
        assert!(line.contains('.'), "a price: {line}");
    }
    let power = shown.lines().find(|l| l.starts_with("power")).unwrap();
    assert!(power.ends_with("shortage"), "{power}");
}

#[test]
fn resume_after_sigterm_rents_a_new_instance_and_completes() {
    let emu = ScwEmu::start(&[]);
    let rl = slow_lab(&emu, "4");
    let lab = &rl.lab;
    let child = run_until_scan(&emu, lab);
    crate::harness::run(command("kill").args(["-TERM", &child.id().to_string()]));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert_eq!(emu.left(), 0, "the stopped run deleted its instance");
    let mut resume = lab.cmd(&["resume"]);
    scw_env(&emu, &mut resume);
    let out = crate::harness::run(&mut resume);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("resuming on a new one"),
        "{}",
        text(&out)
    );
    assert_eq!(lab.state()["status"], "done");
    assert_eq!(emu.booted().len(), 2, "a second instance was rented");
    assert_eq!(emu.left(), 0, "left at Scaleway: {:#}", emu.resources());
}

/// The lab's music files (of the plan's extensions for the section) and their bytes, from disk.
fn music_on_disk(lab: &crate::harness::Lab, extensions: &[String]) -> (u64, u64) {
    fn walk(dir: &std::path::Path, exts: &[String], acc: &mut (u64, u64)) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, exts, acc);
            } else if p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| exts.contains(&x.to_lowercase()))
            {
                acc.0 += 1;
                acc.1 += std::fs::metadata(&p).unwrap().len();
            }
        }
    }
    let mut acc = (0, 0);
    walk(&lab.path("media/Music"), extensions, &mut acc);
    acc
}

/// The forecast line `plan` or `profiles` printed for a commercial type.
fn forecast_line<'a>(out: &'a str, commercial_type: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with("  ") && l.contains(&format!("({commercial_type}) in fr-par-1")))
        .unwrap_or_else(|| panic!("no forecast line for {commercial_type}:\n{out}"))
}

#[test]
fn plan_forecasts_the_analysis_on_every_profile_from_the_bucket_and_the_live_catalog() {
    let emu = ScwEmu::start_with(&[], false);
    let rl = scaleway_lab(&emu, LabOpts::default());
    let lab = &rl.lab;
    let plan_json: serde_json::Value = {
        let out = lab.plexburst(&["plan", "--json", "--offline"]);
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let music = plan_json["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["type"] == "music")
        .unwrap();
    let exts: Vec<String> = serde_json::from_value(music["extensions"].clone()).unwrap();
    let (tracks, bytes) = music_on_disk(lab, &exts);
    assert_eq!(tracks as i64, lab.counts.tracks);
    // The catalog the forecast must have used, read from the emulator directly.
    let catalog: serde_json::Value = ureq::get(&format!(
        "{}/instance/v1/zones/fr-par-1/products/servers?per_page=100",
        emu.url
    ))
    .header("X-Auth-Token", SECRET)
    .call()
    .unwrap()
    .body_mut()
    .read_json()
    .unwrap();
    let check = |out: &str, per_track: f64| {
        assert!(
            out.contains(&format!("forecast: Sonic analysis of {tracks} tracks, ")),
            "{out}"
        );
        for t in ["DEV1-S", "DEV1-M", "GP1-S", "GP1-M"] {
            let spec = &catalog["servers"][t];
            let vcpus = spec["ncpus"].as_u64().unwrap();
            let bps = spec["network"]["sum_internet_bandwidth"].as_u64().unwrap() as f64;
            let price = spec["hourly_price"].as_f64().unwrap();
            let (cpu, net) = (
                tracks as f64 * per_track / vcpus as f64,
                bytes as f64 * 8.0 / bps,
            );
            let line = forecast_line(out, t);
            let bound = if net > cpu {
                "network-bound"
            } else {
                "CPU-bound"
            };
            assert!(line.contains(bound), "{bound} expected: {line}");
            assert!(line.contains(&format!("on {vcpus} workers")), "{line}");
            assert!(
                line.contains(&format!(
                    "at {} Mbit/s",
                    spec["network"]["sum_internet_bandwidth"].as_u64().unwrap() / 1_000_000
                )),
                "{line}"
            );
            let eur = price * cpu.max(net) / 3600.0;
            assert!(
                line.ends_with(&format!(", {eur:.4} EUR")),
                "{eur:.4}: {line}"
            );
        }
    };
    let plan = |extra: Option<&str>| {
        if let Some(line) = extra {
            let toml = std::fs::read_to_string(lab.config_path()).unwrap();
            std::fs::write(
                lab.config_path(),
                toml.replacen("[plex]\n", &format!("[plex]\n{line}\n"), 1),
            )
            .unwrap();
        }
        let mut c = lab.cmd(&["plan"]);
        scw_env(&emu, &mut c);
        let out = crate::harness::run(c.env_remove("SCW_CONFIG_PATH"));
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8(out.stdout).unwrap()
    };
    // The default cost: labelled a guess, and with these few small tracks every profile is
    // CPU-bound.
    let out = plan(None);
    assert!(out.contains("20 CPU s/track, an unmeasured guess"), "{out}");
    assert!(forecast_line(&out, "DEV1-S").ends_with("EUR"), "{out}");
    assert!(
        forecast_line(&out, "DEV1-S").contains(", this config"),
        "{out}"
    );
    check(&out, 20.0);
    // A per-track cost this small leaves the link as the bound.
    let out = plan(Some("sonic_cpu_seconds_per_track = 0.000001"));
    assert!(
        out.contains("0.000001 CPU s/track (plex.sonic_cpu_seconds_per_track)"),
        "{out}"
    );
    check(&out, 0.000001);
    assert!(out.contains("network-bound"), "{out}");
    // `profiles` with the config sizes the same library.
    let mut c = lab.cmd(&["profiles", "--zone", "fr-par-1"]);
    scw_env(&emu, &mut c);
    let out = crate::harness::run(c.env_remove("SCW_CONFIG_PATH"));
    assert!(out.status.success(), "{}", text(&out));
    check(&String::from_utf8(out.stdout).unwrap(), 0.000001);
    // Offline: nothing is read, and the plan says the forecast is left out.
    let out = lab.plexburst(&["plan", "--offline"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(
            "forecast: omitted, the library's size is unknown (plan --offline reads neither the target nor the bucket)"
        ),
        "{}",
        text(&out)
    );
    assert_eq!(emu.left(), 0);
}
