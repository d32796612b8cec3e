//! plex-emulator: a PMS-compatible server for tests and the local demo — the real library DB
//! schema, real filesystem scans, a `Plex Media Scanner` child burning real CPU for analysis,
//! and injectable faults. See README.md for every behaviour and the fact it rests on.

pub mod analysis;
pub mod cli;
pub mod container;
pub mod db;
pub mod faults;
pub mod genlib;
pub mod http;
pub mod prefs;
pub mod scan;
pub mod scanner;
pub mod state;
pub mod task;
pub mod worker;
pub mod xml;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;

/// The PMS version the emulator reports (a real 1.41 build string, plex.md §4 `/identity`).
pub const VERSION: &str = "1.41.6.9685-d301f511a";

/// Everything `serve` needs; the `serve` subcommand and the container entry point both build it.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Plays pms-docker's `/config`.
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Claim token (`PLEX_CLAIM`); any value claims the server after `claim_delay`.
    pub claim: Option<String>,
    pub claim_delay: Duration,
    /// Drives `/myplex/account` `subscriptionActive`; Sonic needs it.
    pub plex_pass: bool,
    /// Files per second; `None` = as fast as possible.
    pub scan_rate: Option<f64>,
    /// Tracks per second for Sonic and loudness.
    pub analysis_rate: Option<f64>,
    /// Photos per second for thumbnailing.
    pub thumb_rate: Option<f64>,
    pub startup_delay: Duration,
    pub faults: Vec<faults::Fault>,
    /// CPU burnt per analysed item, on top of hashing the file.
    pub analysis_cost: Duration,
    /// Paths under which every file lists but cannot be read (a degraded mount).
    pub unreadable: Vec<PathBuf>,
}

/// Run the server until SIGTERM/SIGINT: finish the current DB transaction, checkpoint the WAL,
/// return Ok. Blocking; builds its own tokio runtime.
pub fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let dd = db::DataDir::new(&opts.data_dir);
    dd.create()?;
    db::init(&dd)?;
    let prefs = prefs::Prefs::load(&dd.prefs())?;
    let st = Arc::new(state::State::new(opts, prefs));
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

async fn run_http(st: Arc<state::State>) -> anyhow::Result<()> {
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
            let token: String = uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .chars()
                .take(20)
                .collect();
            let mut p = st.prefs();
            let r = p
                .set_attr("PlexOnlineToken", &token)
                .and_then(|_| p.set_attr("PlexOnlineUsername", "plexburst"))
                .and_then(|_| p.set_attr("PlexOnlineMail", "plexburst@example.invalid"));
            drop(p);
            st.log(&format!(
                "Claimed with a claim token of {} chars: {r:?}",
                claim.len()
            ));
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
