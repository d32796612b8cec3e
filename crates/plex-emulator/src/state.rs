//! Shared server state: options, prefs, the job queue the worker thread drains, and the
//! activities `/activities` reports.

use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::db::DataDir;
use crate::faults::{Fault, Faults, Phase, mark_fired};
use crate::prefs::Prefs;
use crate::task::Task;

/// Everything `serve` needs; the `serve` subcommand and the container entry point both build it.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Plays pms-docker's `/config`.
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// Claim token (`PLEX_CLAIM`), used `claim_delay` after start: exchanged at `plextv_url`
    /// when set, else any value claims the server.
    pub claim: Option<String>,
    pub claim_delay: Duration,
    /// Base URL of plex.tv (an emulated one, `plex-emulator plextv`) where the claim is
    /// exchanged for the server's token; `None` = no exchange.
    pub plextv_url: Option<String>,
    /// Drives `/myplex/account` `subscriptionActive`; Sonic needs it.
    pub plex_pass: bool,
    /// Files per second; `None` = as fast as possible.
    pub scan_rate: Option<f64>,
    /// Tracks per second for Sonic and loudness.
    pub analysis_rate: Option<f64>,
    /// Photos per second for thumbnailing.
    pub thumb_rate: Option<f64>,
    pub startup_delay: Duration,
    pub faults: Vec<Fault>,
    /// CPU burnt per analysed item, on top of hashing the file.
    pub analysis_cost: Duration,
    /// Paths under which every file lists but cannot be read (a degraded mount).
    pub unreadable: Vec<PathBuf>,
}

/// Work the single worker thread runs, one at a time (like Plex's serial scanner queue).
#[derive(Debug, Clone)]
pub enum Job {
    Scan {
        sections: Vec<i64>,
        force: bool,
        path: Option<PathBuf>,
    },
    Task {
        task: Task,
        sections: Vec<i64>,
    },
    EmptyTrash {
        section: i64,
    },
}

impl Job {
    pub fn sections(&self) -> Vec<i64> {
        match self {
            Job::Scan { sections, .. } | Job::Task { sections, .. } => sections.clone(),
            Job::EmptyTrash { section } => vec![*section],
        }
    }
}

/// One entry of `GET /activities`.
#[derive(Debug, Clone)]
pub struct Activity {
    pub uuid: String,
    pub kind: String,
    pub title: String,
    pub subtitle: String,
    pub progress: Arc<AtomicI64>,
    pub section_id: Option<i64>,
    pub cancel: Arc<AtomicBool>,
}

#[derive(Default)]
pub struct Jobs {
    pub queue: VecDeque<Job>,
    pub running: Option<Job>,
    pub activities: Vec<Activity>,
}

pub struct State {
    pub opts: ServeOptions,
    pub dd: DataDir,
    pub faults: Faults,
    pub prefs: Mutex<Prefs>,
    pub started: Instant,
    pub jobs: Mutex<Jobs>,
    pub wake: Condvar,
    pub shutdown: AtomicBool,
    log: Mutex<Option<std::fs::File>>,
}

impl State {
    pub fn new(opts: ServeOptions, prefs: Prefs) -> State {
        let dd = DataDir::new(&opts.data_dir);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dd.log())
            .ok();
        State {
            faults: Faults {
                list: opts.faults.clone(),
            },
            dd,
            opts,
            prefs: Mutex::new(prefs),
            started: Instant::now(),
            jobs: Mutex::new(Jobs::default()),
            wake: Condvar::new(),
            shutdown: AtomicBool::new(false),
            log: Mutex::new(log),
        }
    }

    pub fn prefs(&self) -> MutexGuard<'_, Prefs> {
        self.prefs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn jobs(&self) -> MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The server's own token, once the claim has completed (plex.md §4.5).
    pub fn token(&self) -> Option<String> {
        self.prefs().attr("PlexOnlineToken").map(str::to_string)
    }

    pub fn machine_id(&self) -> String {
        self.prefs()
            .attr("ProcessedMachineIdentifier")
            .unwrap_or_default()
            .to_string()
    }

    /// Still inside the start-up window (`--startup-delay` or a `starting:` fault).
    pub fn starting(&self) -> bool {
        let window = self
            .opts
            .startup_delay
            .max(self.faults.starting().unwrap_or(Duration::ZERO));
        self.started.elapsed() < window
    }

    pub fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }

    /// Queue a job, unless the same job is already waiting (repeated refresh or butler calls
    /// coalesce, as Plex does not scan a section twice for two quick requests).
    pub fn enqueue(&self, job: Job) {
        let mut j = self.jobs();
        let same = |q: &Job| format!("{q:?}") == format!("{job:?}");
        if j.queue.iter().any(same) {
            drop(j);
            self.log(&format!("Already queued: {job:?}"));
            return;
        }
        j.queue.push_back(job.clone());
        drop(j);
        self.log(&format!("Queued {job:?}"));
        self.wake.notify_all();
    }

    /// A section is `refreshing` while a scan of it is queued or running.
    pub fn refreshing(&self, section: i64) -> bool {
        let j = self.jobs();
        j.running
            .iter()
            .chain(j.queue.iter())
            .any(|job| matches!(job, Job::Scan { sections, .. } if sections.contains(&section)))
    }

    /// Jobs queued or running that touch a section (`LibraryTimeline.updateQueueSize`).
    pub fn queue_size(&self, section: i64) -> usize {
        let j = self.jobs();
        j.running
            .iter()
            .chain(j.queue.iter())
            .filter(|job| job.sections().contains(&section))
            .count()
    }

    /// Fire a crash (abort, no checkpoint) or a stall (hold the activity, no CPU, until SIGTERM).
    /// Scans and analysis both call it when their `--fault` count is reached.
    pub fn fire_fault(&self, crash: bool, phase: Phase) {
        mark_fired(&self.dd.config, crash, phase);
        self.log(&format!(
            "Fault: {} during {phase:?}",
            if crash { "crash" } else { "stall" }
        ));
        if crash {
            std::process::abort();
        }
        while !self.stopping() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Append a line to `Logs/Plex Media Server.log` in Plex's layout.
    pub fn log(&self, msg: &str) {
        let ts = crate::db::datetime(crate::db::unix_now());
        if let Some(f) = self.log.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            let _ = writeln!(
                f,
                "{ts}.000 [{:?}] INFO - {msg}",
                std::thread::current().id()
            );
        }
    }
}

/// Registers an activity for the lifetime of a job and removes it when dropped.
pub struct ActivityGuard<'a> {
    st: &'a State,
    pub act: Activity,
}

impl<'a> ActivityGuard<'a> {
    pub fn start(
        st: &'a State,
        kind: &str,
        title: String,
        section_id: Option<i64>,
    ) -> ActivityGuard<'a> {
        let act = Activity {
            uuid: uuid::Uuid::new_v4().to_string(),
            kind: kind.to_string(),
            title,
            subtitle: String::new(),
            progress: Arc::new(AtomicI64::new(0)),
            section_id,
            cancel: Arc::new(AtomicBool::new(false)),
        };
        st.jobs().activities.push(act.clone());
        st.log(&format!(
            "Activity: started {} {} ({})",
            act.kind, act.title, act.uuid
        ));
        ActivityGuard { st, act }
    }

    pub fn progress(&self, done: u64, total: u64) {
        let p = (done * 100).checked_div(total).map_or(100, |p| p as i64);
        self.act.progress.store(p.min(100), Ordering::Relaxed);
    }

    pub fn set_subtitle(&self, s: &str) {
        if let Some(a) = self
            .st
            .jobs()
            .activities
            .iter_mut()
            .find(|a| a.uuid == self.act.uuid)
        {
            a.subtitle = s.to_string();
        }
    }

    /// Cancelled through `DELETE /activities/{uuid}` or a refresh cancel, or the server is stopping.
    pub fn cancelled(&self) -> bool {
        self.act.cancel.load(Ordering::Relaxed) || self.st.stopping()
    }
}

impl Drop for ActivityGuard<'_> {
    fn drop(&mut self) {
        self.st
            .jobs()
            .activities
            .retain(|a| a.uuid != self.act.uuid);
        self.st.log(&format!(
            "Activity: ended {} ({})",
            self.act.kind, self.act.uuid
        ));
    }
}
