//! The `serve` subcommand: its flags, and running the server (prefs and DB set up, the worker
//! thread, the HTTP listener, the claim, SIGTERM). It sits above `http` and `worker`, which it
//! starts; `cli` and `container` call it.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;

use crate::claim::{self, Claimed, ExchangeError};
use crate::db::{self, DataDir};
use crate::faults::{Fault, parse_duration};
use crate::http;
use crate::prefs::{Prefs, VERSION};
use crate::state::{ServeOptions, State};
use crate::worker;

#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Plays pms-docker's /config.
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:32400")]
    pub listen: SocketAddr,
    /// Claim token; read from PLEX_CLAIM when the flag is absent.
    #[arg(long, env = "PLEX_CLAIM", hide_env_values = true)]
    pub claim: Option<String>,
    /// Delay between start and PlexOnlineToken appearing in Preferences.xml.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub claim_delay: Duration,
    /// Exchange the claim at this plex.tv (e.g. `plex-emulator plextv`'s URL) and claim only on
    /// its 200; without it any claim value claims the server.
    #[arg(long, env = "PLEX_EMULATOR_PLEXTV_URL")]
    pub plextv_url: Option<String>,
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub plex_pass: bool,
    /// Files per second (default: as fast as possible).
    #[arg(long)]
    pub scan_rate: Option<f64>,
    /// Tracks per second for Sonic/loudness (default: as fast as possible).
    #[arg(long)]
    pub analysis_rate: Option<f64>,
    /// Photos per second for thumbnails (default: as fast as possible).
    #[arg(long)]
    pub thumb_rate: Option<f64>,
    /// Section calls answer "server is still starting up" for this long.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub startup_delay: Duration,
    /// KIND[:PHASE][:ARG], repeatable: crash:scan:N, stall:analysis:N, slow-api:500ms, refuse:3s, starting:2s.
    #[arg(long = "fault")]
    pub faults: Vec<Fault>,
    /// CPU time burnt per analysed item by the Plex Media Scanner child, on top of hashing the file.
    #[arg(long, default_value = "5ms", value_parser = parse_duration)]
    pub analysis_cost: Duration,
    /// Every file under this path lists but cannot be read (simulates a degraded mount). Repeatable.
    #[arg(long)]
    pub unreadable: Vec<PathBuf>,
}

impl From<ServeArgs> for ServeOptions {
    fn from(a: ServeArgs) -> Self {
        ServeOptions {
            data_dir: a.data_dir,
            listen: a.listen,
            claim: a.claim,
            claim_delay: a.claim_delay,
            plextv_url: a.plextv_url.filter(|u| !u.is_empty()),
            plex_pass: a.plex_pass,
            scan_rate: a.scan_rate,
            analysis_rate: a.analysis_rate,
            thumb_rate: a.thumb_rate,
            startup_delay: a.startup_delay,
            faults: a.faults,
            analysis_cost: a.analysis_cost,
            unreadable: a.unreadable,
        }
    }
}

/// Run the server until SIGTERM/SIGINT: finish the current DB transaction, checkpoint the WAL,
/// return Ok. Blocking; builds its own tokio runtime.
pub fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let dd = DataDir::new(&opts.data_dir);
    dd.create()?;
    db::init(&dd)?;
    let prefs = Prefs::load(&dd.prefs())?;
    let st = Arc::new(State::new(opts, prefs));
    st.log(&format!("Plex Media Server v{VERSION} - emulator starting"));
    let worker = {
        let st = st.clone();
        std::thread::Builder::new()
            .name("worker".into())
            .spawn(move || worker::run(st))?
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let res = rt.block_on(run_http(st.clone()));
    st.shutdown.store(true, Ordering::SeqCst);
    st.wake.notify_all();
    let _ = worker.join();
    rt.shutdown_timeout(Duration::from_secs(1));
    db::checkpoint(&st.dd).context("checkpointing the WAL at shutdown")?;
    st.log("Shutdown complete");
    res
}

/// The server's token for a claim: exchanged at `--plextv-url` when set (pms-docker's first run),
/// else made up on the spot, so any claim value claims (the emulator's behaviour before plex.tv
/// was emulated, which tests without a plex.tv rely on).
fn claim_token(st: &State, claim: &str) -> Result<Claimed, ExchangeError> {
    match &st.opts.plextv_url {
        Some(url) => {
            st.log(&format!("Exchanging the claim token at {url}"));
            claim::exchange(url, claim, &st.machine_id(), Duration::from_secs(30))
        }
        None => Ok(Claimed {
            token: uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .chars()
                .take(20)
                .collect(),
            username: Some("plexburst".into()),
            email: Some("plexburst@example.invalid".into()),
        }),
    }
}

/// Write the token (and the account's name and mail) to Preferences.xml: the server is claimed.
fn apply_claim(st: &State, c: &Claimed) {
    let mut p = st.prefs();
    let mut r = p.set_attr("PlexOnlineToken", &c.token);
    if let Some(u) = &c.username {
        r = r.and_then(|_| p.set_attr("PlexOnlineUsername", u));
    }
    if let Some(m) = &c.email {
        r = r.and_then(|_| p.set_attr("PlexOnlineMail", m));
    }
    drop(p);
    st.log(&format!(
        "Claimed: PlexOnlineToken of {} chars for {}: {r:?}",
        c.token.len(),
        c.username.as_deref().unwrap_or("(no username)")
    ));
}

async fn run_http(st: Arc<State>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    if let Some(claim) = st.opts.claim.clone().filter(|c| !c.is_empty())
        && st.token().is_none()
    {
        // pms-docker exchanges the claim at first run; the token lands in Preferences.xml a few
        // seconds later (plex.md §4.5).
        let st = st.clone();
        tokio::spawn(async move {
            tokio::time::sleep(st.opts.claim_delay).await;
            let st2 = st.clone();
            let outcome = tokio::task::spawn_blocking(move || claim_token(&st2, &claim)).await;
            match outcome {
                Ok(Ok(claimed)) => apply_claim(&st, &claimed),
                Ok(Err(ExchangeError::Rejected { status, body })) => st.log(&format!(
                    "claim rejected by plex.tv: HTTP {status}: {body}; the server stays unclaimed"
                )),
                Ok(Err(ExchangeError::Transport(e))) => st.log(&format!(
                    "claim exchange with plex.tv failed: {e}; the server stays unclaimed"
                )),
                Err(e) => st.log(&format!("claim task failed: {e}")),
            }
        });
    }
    if let Some(d) = st.faults.refuse() {
        // Nothing listens yet: connections are refused, like a server still binding its port.
        st.log(&format!(
            "Refusing connections for {} ms (fault)",
            d.as_millis()
        ));
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
    let listener = tokio::net::TcpListener::bind(st.opts.listen)
        .await
        .with_context(|| format!("binding {}", st.opts.listen))?;
    let app = http::router(st.clone());
    let addr = listener.local_addr()?;
    st.log(&format!("Listening on {addr}"));
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}")?;
        out.flush()?;
    }
    let stopper = st.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            stopper.log("Got a stop signal; finishing the current transaction");
            stopper.shutdown.store(true, Ordering::SeqCst);
            stopper.wake.notify_all();
        })
        .await?;
    Ok(())
}
