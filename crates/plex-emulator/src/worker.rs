//! The worker thread: drains the job queue one job at a time, like Plex's serial scanner and
//! background-processing queue, and queues the after-scan work (trash, `asap` tasks).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rusqlite::Connection;

use crate::analysis;
use crate::scan;
use crate::state::{ActivityGuard, Job, State};
use crate::task::Task;

pub fn run(st: Arc<State>) {
    let mut c = match crate::db::open(&st.dd.library_db()) {
        Ok(c) => c,
        Err(e) => {
            st.log(&format!("worker: cannot open the DB: {e:#}"));
            return;
        }
    };
    // Fault counters span jobs of one server run ("after N items").
    let mut scanned = 0u64;
    let mut analysed = 0u64;
    loop {
        let job = {
            let mut j = st.jobs();
            loop {
                if st.stopping() {
                    return;
                }
                if let Some(job) = j.queue.pop_front() {
                    j.running = Some(job.clone());
                    break job;
                }
                j = st
                    .wake
                    .wait_timeout(j, std::time::Duration::from_millis(200))
                    .map(|x| x.0)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
        };
        if let Err(e) = run_job(&st, &mut c, &job, &mut scanned, &mut analysed) {
            st.log(&format!("worker: {job:?} failed: {e:#}"));
        }
        st.jobs().running = None;
        if st.stopping() {
            return;
        }
    }
}

fn section_name(c: &Connection, id: i64) -> String {
    c.query_row("SELECT name FROM library_sections WHERE id=?", [id], |r| {
        r.get(0)
    })
    .unwrap_or_default()
}

fn run_job(
    st: &State,
    c: &mut Connection,
    job: &Job,
    scanned: &mut u64,
    analysed: &mut u64,
) -> anyhow::Result<()> {
    match job {
        Job::Scan {
            sections,
            force,
            path,
        } => {
            let mut completed = Vec::new();
            for id in sections {
                let Some(sec) = scan::load_section(c, *id)? else {
                    continue;
                };
                let act = ActivityGuard::start(
                    st,
                    "library.update.section",
                    format!("Scanning {}", section_name(c, *id)),
                    Some(*id),
                );
                act.set_subtitle("Scanning files");
                let out = scan::scan_section(st, c, &sec, *force, path.as_deref(), &act, scanned)?;
                match out {
                    scan::Outcome::Done { .. } => {
                        if st.prefs().get_bool("autoEmptyTrash") {
                            let n = scan::empty_trash(c, *id)?;
                            st.log(&format!(
                                "Emptied trash of section {id} after scan: {n} items"
                            ));
                        }
                        completed.push(*id);
                    }
                    scan::Outcome::Cancelled | scan::Outcome::Stopped => break,
                }
                if act.cancelled() {
                    break;
                }
            }
            if !completed.is_empty() {
                for task in analysis::after_scan(st) {
                    queue_task(st, c, task, &completed)?;
                }
            }
        }
        Job::Task { task, sections } => {
            for id in sections {
                if !analysis::allowed(st, *task) {
                    st.log(&format!(
                        "{} skipped: not allowed by prefs/Plex Pass",
                        task.name()
                    ));
                    break;
                }
                let act = ActivityGuard::start(
                    st,
                    task.activity_type(),
                    format!("{} ({})", task.title(), section_name(c, *id)),
                    Some(*id),
                );
                let out = analysis::run(st, c, *task, *id, &act, analysed)?;
                if matches!(
                    out,
                    analysis::Outcome::Cancelled | analysis::Outcome::Stopped
                ) {
                    break;
                }
            }
        }
        Job::EmptyTrash { section } => {
            let n = scan::empty_trash(c, *section)?;
            st.log(&format!("Emptied trash of section {section}: {n} items"));
        }
    }
    Ok(())
}

/// Queue a task for the given sections (filtered to the types it applies to), unless its prefs
/// forbid it now.
pub fn queue_task(st: &State, c: &Connection, task: Task, only: &[i64]) -> anyhow::Result<bool> {
    if !analysis::allowed(st, task) {
        st.log(&format!(
            "{} not queued: not allowed by prefs/Plex Pass",
            task.name()
        ));
        return Ok(false);
    }
    let sections = analysis::sections_for(c, task, only)?;
    if sections.is_empty() {
        return Ok(false);
    }
    st.enqueue(Job::Task { task, sections });
    Ok(true)
}

/// Cancel queued and running scans (of one section, or all).
pub fn cancel_scans(st: &State, section: Option<i64>) {
    let mut j = st.jobs();
    j.queue.retain(|job| !matches!(job, Job::Scan { sections, .. } if section.is_none_or(|s| sections.contains(&s))));
    for a in &j.activities {
        if a.kind == "library.update.section" && (section.is_none() || a.section_id == section) {
            a.cancel.store(true, Ordering::SeqCst);
        }
    }
}
