//! Running the emulator: the `serve` flags, the router of every API behind the gate, the
//! blocking [`serve`] (prints `listening on http://ADDR`, stops on SIGTERM/SIGINT) and the
//! in-process [`spawn`] whose handle stops it on drop.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::Uri;
use axum::middleware;

use crate::apierror::ApiError;
use crate::catalog::DEFAULT_ZONES;
use crate::clock::parse_duration;
use crate::faults::FaultSpec;
use crate::hook::HookRunner;
use crate::lifecycle::{App, run_effects};
use crate::options::{DEFAULT_ORGANIZATION_ID, DEFAULT_PROJECT_ID, Options};
use crate::world::{World, lock};
use crate::{block_api, controls, http, iam_api, instance_api, marketplace_api};

/// `scaleway-emulator serve` flags (README "Usage").
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on; port 0 picks a free one (the printed line has the real one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// A secret key with full access (X-Auth-Token); repeatable. Without any, every non-empty
    /// token has full access (IAM API key secrets are always checked).
    #[arg(long = "secret-key", value_name = "KEY")]
    pub secret_keys: Vec<String>,
    /// An existing project; repeatable, the first is the default.
    #[arg(long = "project-id", value_name = "UUID", default_value = DEFAULT_PROJECT_ID)]
    pub project_ids: Vec<String>,
    #[arg(long, value_name = "UUID", default_value = DEFAULT_ORGANIZATION_ID)]
    pub organization_id: String,
    /// A zone to serve; repeatable (default fr-par-1, fr-par-2, nl-ams-1, pl-waw-1).
    #[arg(long = "zone", value_name = "ZONE")]
    pub zones: Vec<String>,
    /// The address of dynamic public IPs (unless the boot hook prints `public_ip=ADDR`).
    #[arg(long, default_value = "127.0.0.1")]
    pub public_ip: String,
    /// poweron → running (and reboot).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub boot_delay: Duration,
    /// poweroff / terminate / stop_in_place → done.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub stop_delay: Duration,
    /// An SBS volume's detaching → available.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub detach_delay: Duration,
    /// Run `PATH boot SERVER_ID ZONE USERDATA_DIR` at power-on and `PATH halt SERVER_ID ZONE`
    /// at power-off, terminate and delete (README "Instance hook").
    #[arg(long, value_name = "PATH")]
    pub instance_hook: Option<PathBuf>,
    /// A hook call running longer is killed and counts as failed.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub hook_timeout: Duration,
    /// KIND:ARG, repeatable: rate-limit:P, server-error:P, transient:N, out-of-stock:TYPE[@ZONE],
    /// quota:TYPE[=N], shortage:TYPE[@ZONE], slow-boot:D, slow-detach:D, end-of-service:TYPE.
    #[arg(long = "fault", value_name = "SPEC")]
    pub faults: Vec<FaultSpec>,
    /// Seed for the rate-limit and server-error rolls (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep every resource in this JSON file (loaded at start, rewritten after each change).
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<PathBuf>,
}

impl From<ServeArgs> for Options {
    fn from(a: ServeArgs) -> Self {
        Options {
            listen: a.listen,
            secret_keys: a.secret_keys,
            project_ids: a.project_ids,
            organization_id: a.organization_id,
            zones: if a.zones.is_empty() {
                DEFAULT_ZONES.iter().map(|z| z.to_string()).collect()
            } else {
                a.zones
            },
            public_ip: a.public_ip,
            boot_delay: a.boot_delay,
            stop_delay: a.stop_delay,
            detach_delay: a.detach_delay,
            instance_hook: a.instance_hook,
            hook_timeout: a.hook_timeout,
            faults: a.faults,
            seed: a.seed,
            state_file: a.state_file,
        }
    }
}

/// Every API and the controls, behind [`http::gate`].
pub fn router(app: App) -> Router {
    Router::new()
        .merge(instance_api::routes())
        .merge(block_api::routes())
        .merge(marketplace_api::routes())
        .merge(iam_api::routes())
        .merge(controls::routes())
        .fallback(|uri: Uri| async move { ApiError::not_found("route", uri.path()) })
        .layer(middleware::from_fn_with_state(app.clone(), http::gate))
        .with_state(app)
}

/// The world (loaded from the state file) and the hook of one emulator bound to `addr`. With a
/// hook, its work dir (user data, output files) lives as long as the returned guard.
fn build(opts: Options, addr: SocketAddr) -> anyhow::Result<(App, Option<tempfile::TempDir>)> {
    if let Some(hook) = &opts.instance_hook {
        anyhow::ensure!(
            hook.is_file(),
            "--instance-hook {}: no such file; give the path of an executable",
            hook.display()
        );
    }
    anyhow::ensure!(!opts.zones.is_empty(), "no zone to serve; give --zone");
    let mut world = World::new(opts.clone());
    if let Some(path) = &opts.state_file {
        world.load(path)?;
    }
    let (hook, work) = match &opts.instance_hook {
        None => (None, None),
        Some(path) => {
            let work = tempfile::Builder::new()
                .prefix("scaleway-emulator-")
                .tempdir()
                .context("creating the instance hook's work dir")?;
            let hook = Arc::new(HookRunner {
                path: path.clone(),
                timeout: opts.hook_timeout,
                work_dir: work.path().to_path_buf(),
                emulator_url: format!("http://{addr}"),
            });
            (Some(hook), Some(work))
        }
    };
    let app = App {
        world: Arc::new(Mutex::new(world)),
        hook,
        hook_seq: Arc::new(AtomicU64::new(0)),
    };
    Ok((app, work))
}

/// Finish the transitions a state file left in progress. Inside the runtime.
fn resume(app: &App) {
    let pending = lock(&app.world).all_pending();
    run_effects(app, pending);
}

fn into_tokio(l: std::net::TcpListener) -> anyhow::Result<tokio::net::TcpListener> {
    l.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(l)?)
}

/// Run until SIGTERM/SIGINT. Prints one flushed stdout line, `listening on http://ADDR`, once
/// it accepts requests. Blocking; builds its own tokio runtime.
pub fn serve(opts: Options) -> anyhow::Result<()> {
    let listener = std::net::TcpListener::bind(opts.listen)
        .with_context(|| format!("binding {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let (app, _work) = build(opts, addr)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let listener = into_tokio(listener)?;
        resume(&app);
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on http://{addr}")?;
            out.flush()?;
        }
        axum::serve(listener, router(app))
            .with_graceful_shutdown(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            })
            .await?;
        anyhow::Ok(())
    })
}

/// An emulator on a background thread of the calling process; stops on drop.
pub struct EmulatorHandle {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EmulatorHandle {
    /// `http://127.0.0.1:PORT`, the `api_url` for SDKs (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop serving and wait for the thread (what dropping the handle does).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EmulatorHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Start an emulator on a background thread. The port is bound before this returns, so
/// [`EmulatorHandle::url`] accepts requests at once.
pub fn spawn(opts: Options) -> anyhow::Result<EmulatorHandle> {
    let listener = std::net::TcpListener::bind(opts.listen)
        .with_context(|| format!("binding {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let (app, work) = build(opts, addr)?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
    let thread = std::thread::Builder::new()
        .name("scaleway-emulator".into())
        .spawn(move || {
            let _work = work;
            let run = || -> anyhow::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let listener = into_tokio(listener)?;
                    resume(&app);
                    let _ = ready_tx.send(Ok(()));
                    axum::serve(listener, router(app))
                        .with_graceful_shutdown(async move {
                            let _ = rx.await;
                        })
                        .await?;
                    anyhow::Ok(())
                })
            };
            if let Err(e) = run() {
                eprintln!("scaleway-emulator: {e:#}");
            }
        })?;
    ready_rx
        .recv()
        .context("the emulator thread ended before serving")??;
    Ok(EmulatorHandle {
        addr,
        stop: Some(tx),
        thread: Some(thread),
    })
}
