//! Entry point of the library: dispatch a parsed command line to its action and return the exit code.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::cli::{Cli, Command, RunArgs};
use crate::config::{Config, ConfigError};
use crate::pipeline;
use crate::state;

/// Bad input from the user (config, flags, missing claim): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadInput(pub String);

/// The run was stopped by Ctrl-C or SIGTERM: exit code 130.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Interrupted(pub String);

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
            let config = load_config(&cli.config)?;
            check_only_section(&config, &cli.config, run)?;
            let plan = crate::plan::build(&config, run);
            if *json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                print!("{}", plan.render());
            }
            Ok(())
        }
        Command::Run(args) => {
            let config = load_config(&cli.config)?;
            check_only_section(&config, &cli.config, args)?;
            pipeline::run(&config, &cli.config, &state_dir, args.clone())
        }
        Command::Resume { allow_deleted } => {
            let config = load_config(&cli.config)?;
            pipeline::resume(&config, &state_dir, *allow_deleted)
        }
        Command::Destroy => {
            let config = load_config(&cli.config)?;
            pipeline::destroy(&config, &state_dir)
        }
        Command::Status { json, watch } => status(&state_dir, *json, *watch),
        Command::Logs { lines } => {
            let config = load_config(&cli.config)?;
            let remote = pipeline::connect(&config, &state_dir)?;
            let rt = pipeline::runtime_for(&config, None);
            print!("{}", rt.log_tail(remote.as_ref(), *lines)?);
            Ok(())
        }
        Command::Ssh { command } => {
            let config = load_config(&cli.config)?;
            ssh(&config, &state_dir, command)
        }
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

fn ssh(config: &Config, state_dir: &Path, command: &[String]) -> anyhow::Result<()> {
    if command.is_empty() {
        match pipeline::ssh_target(config) {
            None => println!("the target is this machine; no ssh needed"),
            Some(t) => {
                let args: Vec<String> = t
                    .login_args()
                    .iter()
                    .map(|a| crate::plan::quote(a))
                    .collect();
                println!("ssh {}", args.join(" "));
            }
        }
        return Ok(());
    }
    let remote = pipeline::connect(config, state_dir)?;
    let script = command
        .iter()
        .map(|a| crate::plan::quote(a))
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
