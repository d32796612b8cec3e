//! Entry point of the library: dispatch a parsed command line to its action and return the exit code.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::cli::{Cli, Command, RunArgs};
use crate::config::{Config, ConfigError};
use crate::error::{BadInput, Interrupted};
use crate::pipeline;
use crate::plan::{Plan, RunOptions, forecast};
use crate::remote::quote;
use crate::state;

/// 0 done, 2 bad input, 130 interrupted, 1 anything else.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<Interrupted>().is_some() {
        130
    } else if e.downcast_ref::<ConfigError>().is_some() || e.downcast_ref::<BadInput>().is_some() {
        2
    } else {
        1
    }
}

/// Logs and progress lines go to stderr (see `logging`).
pub fn init_logging(verbose: u8) {
    crate::logging::init(verbose);
}

pub fn state_dir(cli: &Cli) -> PathBuf {
    cli.state_dir
        .clone()
        .unwrap_or_else(|| crate::config::default_state_dir(&cli.config))
}

fn load_config(path: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let state_dir = state_dir(&cli);
    match &cli.command {
        Command::Init { force } => init(&cli.config, *force),
        Command::Plan { json, offline, run } => {
            let plan = plan_of(&cli.config, run)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                print!("{}", plan.render());
            }
            let say = |text: &str| {
                if *json {
                    eprint!("{text}");
                } else {
                    print!("{text}");
                }
            };
            if *offline {
                if !plan.sonic_sections().is_empty() {
                    say(&forecast::render(
                        Err("plan --offline reads neither the target nor the bucket".into()),
                        &[],
                        &plan.plex.sonic_cost,
                        plan.plex.analysis_threads,
                        forecast::Limits::default(),
                    ));
                }
                return Ok(());
            }
            let looked = preflight_of_plan(&plan, *json)?;
            if !plan.sonic_sections().is_empty() {
                say(&forecast_of(&plan, looked)?);
            }
            Ok(())
        }
        Command::Run(args) => {
            let plan = plan_of(&cli.config, args)?;
            check_before_run(&plan)?;
            pipeline::run(plan, &cli.config, &state_dir)
        }
        Command::Resume {
            allow_deleted,
            replan,
        } => {
            let config = load_config(&cli.config)?;
            pipeline::resume(&state_dir, *allow_deleted, *replan, |options| {
                build_plan(&config, options)
            })
        }
        Command::Destroy { sweep, zones, yes } => {
            let config = load_config(&cli.config)?;
            let plan = build_plan(&config, &RunOptions::default());
            let zones = if zones.is_empty() {
                pipeline::provision::scaleway(&plan)
                    .map(|sc| sc.zones.clone())
                    .unwrap_or_default()
            } else {
                zones.clone()
            };
            let destroyed = pipeline::destroy(&state_dir, plan);
            if *sweep {
                pipeline::provision::sweep(&zones, *yes)?;
            }
            destroyed
        }
        Command::Status { json, watch } => status(&state_dir, *json, *watch),
        Command::Login => login(&cli.config),
        Command::Profiles { zone } => profiles(&cli.config, zone.as_deref()),
        Command::Logs { lines } => {
            let plan = target_plan(&cli.config, &state_dir)?;
            let remote = crate::session::connect(&plan, &state_dir)?;
            print!("{}", plan.plex.runtime.log_tail(remote.as_ref(), *lines)?);
            Ok(())
        }
        Command::Apply(a) => apply(a),
        Command::Ssh { command } => {
            let plan = target_plan(&cli.config, &state_dir)?;
            ssh(&plan, &state_dir, command)
        }
    }
}

/// `plexburst apply`: needs no config and reads none.
fn apply(a: &crate::cli::ApplyArgs) -> anyhow::Result<()> {
    crate::apply::run(&crate::apply::Options {
        archive: a.archive.clone(),
        manifest: a.manifest.clone(),
        to: a.to.clone(),
        service: a.service.clone(),
        take_identity: a.take_identity,
        dry_run: a.dry_run,
        rollback: a.rollback,
        plex_port: a.plex_port,
        timeout: a.timeout,
        ssh_identity: a.ssh_identity.clone(),
        ssh_options: a.ssh_options.clone(),
    })
}

/// The plan of the config at `path` for these `run` flags (exit 2 on a bad config or flag).
fn plan_of(path: &Path, args: &RunArgs) -> anyhow::Result<Plan> {
    let config = load_config(path)?;
    check_only_section(&config, path, args)?;
    let plan = build_plan(&config, &options_of(args)?);
    check_local(&plan)?;
    check_local_seed(&plan)?;
    Ok(plan)
}

/// `--seed`: where it is and what it is. A file on this machine is looked at (it must be a
/// SQLite DB or a zstd archive); one elsewhere is known by its name.
fn seed_of(a: &RunArgs) -> anyhow::Result<Option<crate::plan::SeedOption>> {
    use crate::seed::{SeedKind, SeedSource};
    let Some(raw) = &a.seed else {
        return Ok(None);
    };
    let source = SeedSource::parse(raw)?;
    let kind = match &source {
        SeedSource::Local { path } => {
            let mut head = [0u8; 16];
            let n = std::fs::File::open(path)
                .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
                .map_err(|e| {
                    BadInput(format!(
                        "--seed {path}: cannot read it ({e}); give an existing archive or DB (a file on the target: target:/path)"
                    ))
                })?;
            SeedKind::sniff(&head[..n]).ok_or_else(|| {
                BadInput(format!(
                    "--seed {path} is neither a plexburst archive (.tar.zst) nor a SQLite DB; give the archive `plexburst run` exported or your home server's com.plexapp.plugins.library.db"
                ))
            })?
        }
        other => SeedKind::from_name(other.file_name()).ok_or_else(|| {
            BadInput(format!(
                "--seed {raw}: cannot tell what it is from its name; a seed on the target or in the bucket must end in .tar.zst (a plexburst archive) or .db (a library DB)"
            ))
        })?,
    };
    Ok(Some(crate::plan::SeedOption { source, kind }))
}

/// A seed on this machine is checked here, before anything starts or is rented: one that
/// `.recover` cannot repair stops the run now (exit 2).
fn check_local_seed(plan: &Plan) -> anyhow::Result<()> {
    let Some(sp) = &plan.seed else {
        return Ok(());
    };
    let crate::seed::SeedSource::Local { path } = &sp.source else {
        return Ok(());
    };
    use crate::remote::Remote;
    let local = crate::remote::local::Local::new();
    let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
    let dir = scratch.path().to_string_lossy().into_owned();
    let db = match sp.kind {
        crate::seed::SeedKind::Db => path.clone(),
        crate::seed::SeedKind::Archive => {
            let out = local
                .run(&crate::remote::Cmd::new(crate::seed::extract_db_script(
                    path, &dir,
                )))
                .map_err(|e| {
                    BadInput(format!(
                        "--seed {path}: cannot take the library DB out of it ({}); give the archive `plexburst run` exported (a .tar.zst holding com.plexapp.plugins.library.db), or the DB itself",
                        shell_reason(&format!("{e:#}"))
                    ))
                })?;
            out.stdout_str().trim().to_string()
        }
    };
    let found = crate::seed::check(&local, &db)?;
    if found.ok() {
        tracing::info!("seed {path}: checked on this machine, sound");
        return Ok(());
    }
    let copy = format!("{dir}/try.db");
    local.run(&crate::remote::Cmd::new(format!(
        "cp -f {} {}",
        crate::remote::quote(&db),
        crate::remote::quote(&copy)
    )))?;
    let after = match crate::seed::recover(
        &local,
        "sqlite3",
        &copy,
        &format!("{copy}.original"),
        &found.damaged_tables(),
    ) {
        Ok((_, after)) => after,
        Err(e) => crate::seed::CheckResult {
            problems: vec![format!("{e:#}")],
            ..Default::default()
        },
    };
    if !after.ok() {
        return Err(BadInput(format!(
            "--seed {path}: the database is damaged ({}) and cannot be repaired (.recover, then table by table: {}); take another copy from your home server (stop Plex first) or an older plexburst archive",
            found.problems.join("; "),
            after.problems.join("; ")
        ))
        .into());
    }
    tracing::warn!(
        "seed {path}: damaged ({}); the run rebuilds it on the target, keeping the original",
        found.problems.join("; ")
    );
    Ok(())
}

/// What `plan`'s preflight saw of an existing target: its connection, and the survey of the section
/// folders when the storage is already there.
struct Looked {
    /// `Err`: why the target could not be reached (only the forecast needed it).
    remote: Result<Box<dyn crate::remote::Remote>, String>,
    surveys: Option<Vec<crate::survey::SectionSurvey>>,
    /// Keeps an ssh master's socket directory for as long as `remote` is used.
    _scratch: tempfile::TempDir,
}

/// What a failed local script said, without the script's own quoting and tar's closing line.
fn shell_reason(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| l.split_once("exited with status").map_or(l, |(_, r)| r))
        .map(|l| l.trim_start_matches(|c: char| c.is_ascii_digit() || c == ':' || c == ' '))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.contains("Exiting with failure status"))
        .collect();
    lines.join("; ")
}

/// `plan`'s read-only preflight: on a target that exists and storage that is already there, the
/// same survey of the section folders as the run's preflight phase (a problem: exit 2). On rclone
/// storage the folders exist only once mounted, so it says when they will be checked. Returns the
/// target's connection and survey (none for a rented target, which does not exist yet).
fn preflight_of_plan(plan: &Plan, json: bool) -> anyhow::Result<Option<Looked>> {
    let say = |line: String| {
        if json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    if pipeline::provision::scaleway(plan).is_some() {
        for line in pipeline::provision::check(plan, false)? {
            say(format!("scaleway: {line}"));
        }
        say("preflight: the section folders are checked on the instance, after provisioning and the mount (phase preflight)".into());
        return Ok(None);
    }
    // A scratch dir for an ssh master: `plan` leaves nothing behind, not even a state dir.
    let scratch = tempfile::tempdir().context("cannot create a scratch directory")?;
    if let crate::storage::StorageSpec::Rclone(_) = &plan.storage {
        say("preflight: the section folders are checked after the mount (phase preflight)".into());
        // Nothing to survey before the mount: the target is reached only for the forecast's
        // vCPU count, and one out of reach fails nothing.
        let remote = crate::session::connect(plan, scratch.path()).map_err(|e| format!("{e:#}"));
        return Ok(Some(Looked {
            remote,
            surveys: None,
            _scratch: scratch,
        }));
    }
    let remote = crate::session::connect(plan, scratch.path())?;
    let surveys = pipeline::preflight(plan, remote.as_ref())?;
    say(format!(
        "preflight: ok ({})",
        pipeline::survey_summary(&surveys)
    ));
    Ok(Some(Looked {
        remote: Ok(remote),
        surveys: Some(surveys),
        _scratch: scratch,
    }))
}

/// The analysis forecast of `plan`: the library's size (the survey `looked` made, else the bucket
/// listed from this machine), and the machines it could run on: each sizing profile on a rented
/// target (live vCPUs, link and price), else the target itself.
fn forecast_of(plan: &Plan, looked: Option<Looked>) -> anyhow::Result<String> {
    let lib = match looked.as_ref().and_then(|l| l.surveys.as_deref()) {
        Some(surveys) => Ok(surveyed_library(plan, surveys)),
        None => bucket_library(plan),
    };
    let target = looked.as_ref().map(|l| match &l.remote {
        Ok(r) => this_target(plan, r.as_ref()).map_err(|e| format!("{e:#}")),
        Err(why) => Err(why.clone()),
    });
    let machines = match target {
        Some(Ok(m)) => vec![m],
        Some(Err(why)) => {
            return Ok(format!(
                "forecast: omitted, the target's vCPUs are unknown ({why})\n"
            ));
        }
        None => profile_machines(plan, None)?,
    };
    Ok(forecast::render(
        lib,
        &machines,
        &plan.plex.sonic_cost,
        plan.plex.analysis_threads,
        limits(plan),
    ))
}

/// The caps of a rented target, which a forecast may exceed.
fn limits(plan: &Plan) -> forecast::Limits {
    match pipeline::provision::scaleway(plan) {
        Some(sc) => forecast::Limits {
            max_lifetime: Some(sc.max_lifetime),
            budget_eur: sc.budget_eur,
        },
        None => forecast::Limits::default(),
    }
}

/// The tracks and bytes of the analysed music sections, from the preflight's survey.
fn surveyed_library(plan: &Plan, surveys: &[crate::survey::SectionSurvey]) -> forecast::Library {
    let music = plan.sonic_sections();
    let mut lib = forecast::Library {
        tracks: 0,
        bytes: 0,
    };
    for s in surveys
        .iter()
        .filter(|s| music.iter().any(|m| m.name == s.name))
    {
        lib.tracks += s.media_files;
        lib.bytes += s.media_bytes;
    }
    lib
}

/// The tracks and bytes of the analysed music sections on rclone storage, counted from this
/// machine with `rclone size` against the user's remote (the target may not exist yet). `Err`: why
/// the size is unknown.
fn bucket_library(plan: &Plan) -> Result<forecast::Library, String> {
    let crate::storage::StorageSpec::Rclone(spec) = &plan.storage else {
        return Err("the storage is not an rclone remote".into());
    };
    let rc = crate::storage::rclone::Rclone::new(spec);
    let (conf, secrets) = rc.conf_text().map_err(|e| format!("{e:#}"))?;
    // The remote's config in a 0600 file of this machine for the one listing, removed after it.
    let mut file = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    use std::io::Write;
    file.write_all(conf.as_bytes())
        .map_err(|e| format!("cannot write a scratch rclone config: {e}"))?;
    let root = spec.mount_point.trim_end_matches('/');
    let mut lib = forecast::Library {
        tracks: 0,
        bytes: 0,
    };
    let local = crate::remote::local::Local::new();
    for section in plan.sonic_sections() {
        let include = match section.extensions.as_slice() {
            [] => String::new(),
            exts => format!(
                " --ignore-case --include {}",
                quote(&format!("*.{{{}}}", exts.join(",")))
            ),
        };
        for path in &section.paths {
            let rel = path
                .strip_prefix(root)
                .ok_or_else(|| format!("{path} is not under the mount point {root}"))?;
            let fs = format!("{}{rel}", spec.fs.trim_end_matches('/'));
            let script = format!(
                "rclone --config {} size --json{include} {}",
                quote(&file.path().display().to_string()),
                quote(&fs)
            );
            let cmd = secrets.iter().fold(
                crate::remote::Cmd::new(script).timeout(std::time::Duration::from_secs(600)),
                |c, secret| c.secret(secret.clone()),
            );
            let out = crate::remote::Remote::run(&local, &cmd)
                .map_err(|e| format!("`rclone size` of {fs} on this machine failed: {e}"))?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout)
                .map_err(|e| format!("`rclone size` of {fs} said something unexpected: {e}"))?;
            lib.tracks += v["count"].as_u64().unwrap_or(0);
            lib.bytes += v["bytes"].as_u64().unwrap_or(0);
        }
    }
    Ok(lib)
}

/// The target of a local or ssh plan as the forecast's one machine: its vCPUs, no price.
fn this_target(
    plan: &Plan,
    remote: &dyn crate::remote::Remote,
) -> anyhow::Result<forecast::Machine> {
    Ok(forecast::Machine {
        name: format!("this target ({})", plan.target.describe),
        vcpus: crate::host::nproc(remote)?,
        link: match plan.storage {
            crate::storage::StorageSpec::Path { .. } => forecast::Link::LocalDisk,
            crate::storage::StorageSpec::Rclone(_) => forecast::Link::Unknown,
        },
        eur_per_hour: None,
    })
}

/// Every sizing profile's machine in the zone (`None`: the plan's first zone, else the
/// credentials'), with the live vCPUs, internet bandwidth and price of the Instance API; the plan's
/// own commercial type is marked (and added when it is no profile's).
fn profile_machines(plan: &Plan, zone: Option<&str>) -> anyhow::Result<Vec<forecast::Machine>> {
    let (creds, api) = pipeline::provision::connect_api()?;
    let chosen = pipeline::provision::scaleway(plan).map(|sc| sc.types[0].clone());
    let zone = zone
        .map(String::from)
        .or_else(|| pipeline::provision::scaleway(plan).and_then(|sc| sc.zones.first().cloned()))
        .unwrap_or(creds.zone.clone());
    let types = api
        .server_types(&zone)
        .with_context(|| format!("cannot read the server types of {zone}"))?;
    let mut names: Vec<(String, String)> = crate::cloud::scaleway::PROFILES
        .iter()
        .map(|p| {
            let t = crate::cloud::scaleway::profile_machine(p)
                .commercial_type
                .to_string();
            (format!("{p} ({t})"), t)
        })
        .collect();
    if let Some(c) = &chosen
        && !names.iter().any(|(_, t)| t == c)
    {
        names.push((c.clone(), c.clone()));
    }
    Ok(names
        .into_iter()
        .filter_map(|(name, t)| {
            let st = types.get(&t)?;
            let mark = if chosen.as_ref() == Some(&t) {
                ", this config"
            } else {
                ""
            };
            Some(forecast::Machine {
                name: format!("{name} in {zone}{mark}"),
                vcpus: st.ncpus,
                link: forecast::Link::Bps(st.internet_bandwidth_bps),
                eur_per_hour: Some(st.hourly_price),
            })
        })
        .collect())
}

/// What only this machine can tell about the plan (the user's rclone.conf, a secret in the
/// environment), checked before anything starts: a problem is a config error, exit 2.
fn check_local(plan: &Plan) -> anyhow::Result<()> {
    if let crate::storage::StorageSpec::Rclone(spec) = &plan.storage {
        let problems = crate::storage::rclone::local_problems(spec);
        if !problems.is_empty() {
            return Err(ConfigError {
                problems: problems
                    .into_iter()
                    .map(|(field, msg)| format!("{field} {msg}"))
                    .collect(),
            }
            .into());
        }
    }
    Ok(())
}

/// What `run` asks the outside world before it creates its state dir, so that a credential the
/// user must fix stops it with nothing made: the Scaleway key, project, zones, types and IAM
/// rights (the same read-only look as `plan`, but for the stock, which power-on tests), and an
/// account token plex.tv refuses.
fn check_before_run(plan: &Plan) -> anyhow::Result<()> {
    for line in pipeline::provision::check(plan, true)? {
        tracing::debug!("scaleway: {line}");
    }
    if plan.needs_plex_pass()
        && let Some(token) = crate::plextv::account_token()?
    {
        let tv = crate::plextv::PlexTv::new(&plan.plex.plextv_url, &crate::plextv::client_id());
        crate::plextv::checked_account(&tv, &token)?;
    }
    Ok(())
}

/// The stored plan of the run in `state_dir` (what it really started), or else the config's.
fn target_plan(config: &Path, state_dir: &Path) -> anyhow::Result<Plan> {
    match pipeline::stored_plan(state_dir)? {
        Some(p) => Ok(p),
        None => Ok(build_plan(&load_config(config)?, &RunOptions::default())),
    }
}

fn build_plan(config: &Config, options: &RunOptions) -> Plan {
    crate::plan::build(config, options, &std::env::var("HOME").unwrap_or_default())
}

fn options_of(a: &RunArgs) -> anyhow::Result<RunOptions> {
    Ok(RunOptions {
        only_section: a.only_section.clone(),
        skip_analysis: a.skip_analysis,
        deep_scan: a.deep_scan,
        keep: a.keep,
        allow_deleted: a.allow_deleted,
        strict: a.strict,
        keep_logs: a.keep_logs,
        keep_cache: a.keep_cache,
        seed: seed_of(a)?,
        allow_missing: a.allow_missing,
    })
}

/// `--only-section` names must be sections of the config (bad input otherwise).
fn check_only_section(config: &Config, path: &Path, args: &RunArgs) -> anyhow::Result<()> {
    for name in &args.only_section {
        if !config.sections.iter().any(|s| &s.name == name) {
            let names: Vec<_> = config.sections.iter().map(|s| s.name.as_str()).collect();
            return Err(BadInput(format!(
                "--only-section {name:?} is not a section of {}; use one of {}",
                path.display(),
                names.join(", ")
            ))
            .into());
        }
    }
    Ok(())
}

/// `plexburst profiles`: each sizing profile's machine, live from the Instance API; with a config,
/// the analysis forecast of its library on each.
fn profiles(config: &Path, zone: Option<&str>) -> anyhow::Result<()> {
    let (creds, api) = pipeline::provision::connect_api()?;
    let zone = zone.unwrap_or(&creds.zone);
    let types = api
        .server_types(zone)
        .with_context(|| format!("cannot read the server types of {zone}"))?;
    let stock = api.availability(zone).unwrap_or_default();
    println!("zone {zone} (prices from the Instance API, EUR/h excluding VAT)");
    println!(
        "{:<11} {:<8} {:>5} {:>8} {:>9} {:>10}  flags",
        "profile", "type", "vCPU", "RAM GiB", "root GB", "EUR/h"
    );
    for p in crate::cloud::scaleway::PROFILES {
        let m = crate::cloud::scaleway::profile_machine(p);
        match types.get(m.commercial_type) {
            Some(t) => {
                let mut flags = vec![
                    stock
                        .get(m.commercial_type)
                        .cloned()
                        .unwrap_or_else(|| "unknown".into()),
                ];
                if t.end_of_service {
                    flags.push("end_of_service".into());
                }
                println!(
                    "{:<11} {:<8} {:>5} {:>8} {:>9} {:>10.4}  {}",
                    p,
                    m.commercial_type,
                    t.ncpus,
                    t.ram_bytes >> 30,
                    m.root_volume_gb,
                    t.hourly_price,
                    flags.join(", ")
                );
            }
            None => println!("{p:<11} {:<8} not offered in {zone}", m.commercial_type),
        }
    }
    if !config.exists() {
        println!(
            "forecast: needs a config ({} not found) to size the library",
            config.display()
        );
        return Ok(());
    }
    let plan = build_plan(&load_config(config)?, &RunOptions::default());
    if plan.sonic_sections().is_empty() {
        return Ok(());
    }
    let lib = match &plan.storage {
        crate::storage::StorageSpec::Rclone(_) => bucket_library(&plan),
        crate::storage::StorageSpec::Path { .. } => path_library(&plan),
    };
    print!(
        "{}",
        forecast::render(
            lib,
            &profile_machines(&plan, Some(zone))?,
            &plan.plex.sonic_cost,
            plan.plex.analysis_threads,
            limits(&plan),
        )
    );
    Ok(())
}

/// The library of a plan whose media is on its target's disk: the survey of the section folders
/// there. `Err`: why it is unknown.
fn path_library(plan: &Plan) -> Result<forecast::Library, String> {
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let remote = crate::session::connect(plan, scratch.path()).map_err(|e| format!("{e:#}"))?;
    let surveys = pipeline::preflight(plan, remote.as_ref()).map_err(|e| format!("{e:#}"))?;
    Ok(surveyed_library(plan, &surveys))
}

/// `plexburst login`: plex.tv's PIN link flow (plex.md §5), then the token stored 0600. The
/// plex.tv address is the config's (`plex.plextv_url`) when there is a config.
fn login(config: &Path) -> anyhow::Result<()> {
    let base = if config.exists() {
        load_config(config)?.plex.plextv_url
    } else {
        "https://plex.tv".to_string()
    };
    let tv = crate::plextv::PlexTv::new(&base, &crate::plextv::client_id());
    let pin = tv
        .create_pin()
        .context("cannot start the sign-in with plex.tv")?;
    eprintln!(
        "To sign plexburst in to your Plex account, open {}/link and enter the code {} (valid {} minutes). Waiting...",
        base,
        pin.code,
        pin.expires_in.as_secs() / 60
    );
    let deadline = std::time::Instant::now() + pin.expires_in;
    let token = loop {
        if let Some(t) = tv
            .pin_token(&pin)
            .context("cannot check the sign-in with plex.tv")?
        {
            break t;
        }
        if std::time::Instant::now() >= deadline {
            return Err(BadInput(format!(
                "the code {} expired before it was entered; run `plexburst login` again",
                pin.code
            ))
            .into());
        }
        // plex.tv's clients poll a pin once a second (plexapi's MyPlexPinLogin does).
        std::thread::sleep(std::time::Duration::from_secs(1));
    };
    let account = tv
        .account(&token)
        .context("cannot read the account from plex.tv")?;
    let path = crate::plextv::store_token(&token)?;
    eprintln!(
        "signed in as {:?} (Plex Pass: {}); the account token is in {} (0600). Runs use it only to ask {} for a claim token right before Plex starts.",
        account.username,
        if account.plex_pass {
            "active"
        } else {
            "none, so no Sonic analysis"
        },
        path.display(),
        base
    );
    Ok(())
}

fn init(path: &Path, force: bool) -> anyhow::Result<()> {
    if path.exists() && !force {
        return Err(BadInput(format!(
            "{} already exists; edit it, or pass --force to overwrite it",
            path.display()
        ))
        .into());
    }
    std::fs::write(path, crate::config::EXAMPLE)
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "wrote {}; edit it, then check it with `plexburst plan`",
        path.display()
    );
    Ok(())
}

fn ssh(plan: &Plan, state_dir: &Path, command: &[String]) -> anyhow::Result<()> {
    if command.is_empty() {
        match &plan.target.spec {
            crate::plan::TargetSpec::Local => {
                println!("the target is this machine; no ssh needed")
            }
            crate::plan::TargetSpec::Ssh(t) => {
                let args: Vec<String> = t.login_args().iter().map(|a| quote(a)).collect();
                println!("ssh {}", args.join(" "));
            }
            crate::plan::TargetSpec::Scaleway(_) => {
                match state::read(state_dir)?.and_then(|s| s.instance) {
                    Some(i) if i.address.is_some() => {
                        let t = crate::session::instance_target(&i, true);
                        let args: Vec<String> = t.login_args().iter().map(|a| quote(a)).collect();
                        println!("ssh {}", args.join(" "));
                    }
                    _ => println!("no instance of this run exists now"),
                }
            }
        }
        return Ok(());
    }
    let remote = crate::session::connect(plan, state_dir)?;
    let script = command
        .iter()
        .map(|a| quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    let out = remote
        .exec(&crate::remote::Cmd::new(script).timeout(std::time::Duration::from_secs(3600)))?;
    use std::io::Write;
    std::io::stdout().write_all(&out.stdout)?;
    std::io::stderr().write_all(&out.stderr)?;
    if out.status != 0 {
        bail!("the command exited with status {}", out.status);
    }
    Ok(())
}

fn status(state_dir: &Path, json: bool, watch: bool) -> anyhow::Result<()> {
    // On a terminal `--watch` redraws its block in place; elsewhere (a pipe, a log) it appends.
    let redraw = watch && !json && std::io::stdout().is_terminal();
    let mut drawn_lines = 0usize;
    loop {
        let Some(st) = state::read(state_dir)? else {
            if json {
                println!("{{\"run\": null}}");
                return Ok(());
            }
            return Err(BadInput(format!(
                "no run in {}; start one with `plexburst run`",
                state_dir.display()
            ))
            .into());
        };
        let alive = st.status == state::RunStatus::Running && state::run_alive(state_dir);
        if json {
            let mut v = serde_json::to_value(crate::report::StatusJson::from_state(&st))?;
            v["process_alive"] = serde_json::Value::Bool(alive);
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            let mut block = crate::report::render_status(&st);
            if st.status == state::RunStatus::Running && !alive {
                block.push_str(
                    "no plexburst process holds this run: it died; continue with `plexburst resume` or clean up with `plexburst destroy`\n",
                );
            }
            if redraw && drawn_lines > 0 {
                // Up to the first line of the last block, then clear to the end of the screen.
                print!("\x1b[{drawn_lines}F\x1b[J");
            } else if watch && drawn_lines > 0 {
                println!();
            }
            print!("{block}");
            use std::io::Write;
            std::io::stdout().flush()?;
            drawn_lines = block.lines().count();
        }
        if !watch || st.status != state::RunStatus::Running || !alive {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
}
