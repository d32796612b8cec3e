//! Entry point of the library: dispatch a parsed command line to its action and return the exit code.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::cli::{Cli, Command, RunArgs};
use crate::config::{Config, ConfigError};
use crate::error::{BadInput, Interrupted};
use crate::pipeline;
use crate::plan::{Plan, RunOptions};
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

/// Logs and progress lines go to stderr; `PLEXBURST_LOG` (an EnvFilter) overrides `-v`.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "plexburst=info",
        1 => "plexburst=debug",
        _ => "plexburst=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PLEXBURST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
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
        Command::Plan { json, run } => {
            let plan = plan_of(&cli.config, run)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                print!("{}", plan.render());
            }
            Ok(())
        }
        Command::Run(args) => {
            let plan = plan_of(&cli.config, args)?;
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
        Command::Destroy => {
            let config = load_config(&cli.config)?;
            pipeline::destroy(&state_dir, build_plan(&config, &RunOptions::default()))
        }
        Command::Status { json, watch } => status(&state_dir, *json, *watch),
        Command::Logs { lines } => {
            let plan = target_plan(&cli.config, &state_dir)?;
            let remote = crate::session::connect(&plan, &state_dir)?;
            print!("{}", plan.plex.runtime.log_tail(remote.as_ref(), *lines)?);
            Ok(())
        }
        Command::Ssh { command } => {
            let plan = target_plan(&cli.config, &state_dir)?;
            ssh(&plan, &state_dir, command)
        }
    }
}

/// The plan of the config at `path` for these `run` flags (exit 2 on a bad config or flag).
fn plan_of(path: &Path, args: &RunArgs) -> anyhow::Result<Plan> {
    let config = load_config(path)?;
    check_only_section(&config, path, args)?;
    let plan = build_plan(&config, &options_of(args));
    check_local(&plan)?;
    Ok(plan)
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

fn options_of(a: &RunArgs) -> RunOptions {
    RunOptions {
        only_section: a.only_section.clone(),
        skip_analysis: a.skip_analysis,
        deep_scan: a.deep_scan,
        keep: a.keep,
        allow_deleted: a.allow_deleted,
        keep_cache: a.keep_cache,
    }
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
            print!("{}", crate::report::render_status(&st));
            if st.status == state::RunStatus::Running && !alive {
                println!(
                    "no plexburst process holds this run: it died; continue with `plexburst resume` or clean up with `plexburst destroy`"
                );
            }
        }
        if watch && st.status == state::RunStatus::Running && !alive {
            return Ok(());
        }
        if !watch || st.status != state::RunStatus::Running {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
        if !json {
            println!();
        }
    }
}
