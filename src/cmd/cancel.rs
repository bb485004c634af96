//! `poolparty cancel`: stops a live runner, cancels what a detached run or a dead runner left
//! on the cluster, and records those jobs as interrupted.

use std::path::Path;

use crate::cli::GlobalArgs;
use crate::error::{self, EXIT_SUCCESS, Error, Result};
use crate::manifest::Manifest;
use crate::resume::StageHistory;
use crate::store::{self, Layout};
use crate::{backend, outcome, runner};

/// `poolparty cancel [MANIFEST]`.
///
/// # Errors
/// A bad manifest, a runner on another host or one that does not stop, unreadable state, or a
/// scheduler that refuses the cancel.
pub(crate) fn run(manifest: Option<&Path>, g: &GlobalArgs) -> Result<u8> {
    let (m, _, layout) = super::load(manifest, g)?;
    cancel(&m, &layout)
}

/// `poolparty cancel`: stops a live runner on this host (SIGTERM; it cancels and records its
/// jobs); then, holding the workflow, cancels the driver jobs of a detached run that have not
/// ended (first, so none starts) and the arrays recorded in `submissions.jsonl` that have
/// jobs without an outcome, and records those jobs as interrupted.
fn cancel(m: &Manifest, layout: &Layout) -> Result<u8> {
    use std::collections::BTreeMap;
    let (lock, stopped_runner) = stop_live_runner(layout)?;
    let recovered = runner::recover(layout)?;
    if let Some(r) = &recovered {
        eprintln!("poolparty: {}", r.message());
    }
    let run = runner::new_run_id();
    let mut by_scheduler: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // Driver jobs first: cancelling the arrays they wait for would let them start.
    let mut drivers: Vec<(String, Vec<String>)> = Vec::new();
    for stage in &m.stages {
        let name = stage.name.as_str();
        let open = store::open_drivers(layout, name)?;
        if open.is_empty() {
            continue;
        }
        let mut ids = Vec::new();
        for (scheduler, id) in open {
            by_scheduler.entry(scheduler).or_default().push(id.clone());
            ids.push(id);
        }
        drivers.push((name.to_owned(), ids));
    }
    let n_drivers: usize = drivers.iter().map(|(_, ids)| ids.len()).sum();
    let mut open_jobs = 0;
    for stage in &m.stages {
        let name = stage.name.as_str();
        if !layout.submissions(name).exists() {
            continue;
        }
        let history = StageHistory::load(layout, name)?;
        let mut records = Vec::new();
        for (s, open) in history.unfinished(layout, name) {
            by_scheduler
                .entry(s.scheduler.clone())
                .or_default()
                .push(s.job_id.clone());
            for j in open {
                let record = outcome::JobRecord {
                    index: j.index,
                    id: j.id.clone(),
                    attempt: j.attempt,
                    outcome: outcome::Outcome::Interrupted,
                    start: None,
                    end: Some(store::now()),
                    run: run.clone(),
                    fp: String::new(),
                    result: None,
                };
                records.push((record, None));
            }
        }
        open_jobs += store::record(layout, name, records)?;
    }
    for (scheduler, ids) in &by_scheduler {
        backend::cancel_arrays(scheduler, ids)?;
        let n_drv = drivers
            .iter()
            .flat_map(|(_, d)| d)
            .filter(|d| ids.contains(d))
            .count();
        let mut what = error::count(ids.len() - n_drv, "array");
        if n_drv > 0 {
            what = format!("{what} and {}", error::count(n_drv, "driver job"));
        }
        eprintln!("poolparty: cancelled {what} on {scheduler}");
    }
    for (name, ids) in &drivers {
        store::close_drivers(layout, name, ids)?;
    }
    drop(lock);
    if by_scheduler.is_empty() {
        if !stopped_runner && recovered.is_none() {
            eprintln!(
                "poolparty: nothing to cancel: no runner is active and no submitted job lacks an outcome"
            );
        }
    } else if open_jobs > 0 || n_drivers == 0 {
        eprintln!(
            "poolparty: {} recorded as interrupted",
            error::count(open_jobs, "job")
        );
    }
    Ok(EXIT_SUCCESS)
}

/// Takes the workflow's lock; when a live runner on this host holds it, asks that runner to
/// stop (SIGTERM; it cancels and records its jobs), once more after a while, and waits for it.
/// Returns the lock and whether a runner was stopped.
fn stop_live_runner(layout: &Layout) -> Result<(store::Lock, bool)> {
    let mut stopped_runner = false;
    let lock = match store::lock(layout, "cancel") {
        Ok(lock) => lock,
        Err(Error::Locked { path, holder }) => {
            let h = store::read_holder(layout).ok_or(Error::Locked {
                path: path.clone(),
                holder: holder.clone(),
            })?;
            if h.host != store::hostname() {
                return Err(Error::Usage {
                    message: format!(
                        "the run holding `{}` runs on host `{}`",
                        path.display(),
                        h.host
                    ),
                    help: Some("run `poolparty cancel` on that host".to_owned()),
                });
            }
            let pid = nix::unistd::Pid::from_raw(i32::try_from(h.pid).unwrap_or(i32::MAX));
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).map_err(|e| {
                Error::Usage {
                    message: format!("cannot signal the runner (pid {}): {e}", h.pid),
                    help: None,
                }
            })?;
            eprintln!(
                "poolparty: asked run {} (pid {}) to stop; waiting for it to cancel its jobs",
                h.run, h.pid
            );
            // A runner stops within its jobs' grace period; if it has not after ESCALATE, a
            // second signal makes it kill its jobs at once; after GIVE_UP, say so and return.
            const ESCALATE: std::time::Duration = std::time::Duration::from_secs(20);
            const GIVE_UP: std::time::Duration = std::time::Duration::from_secs(60);
            let asked = std::time::Instant::now();
            let mut escalated = false;
            loop {
                std::thread::sleep(std::time::Duration::from_millis(200));
                if let Ok(lock) = store::lock(layout, "cancel") {
                    eprintln!("poolparty: run {} stopped", h.run);
                    stopped_runner = true;
                    // Driver jobs of a detached run may still be queued behind it.
                    break lock;
                }
                if !escalated && asked.elapsed() > ESCALATE {
                    escalated = true;
                    eprintln!(
                        "poolparty: run {} has not stopped after {} s; asking again, so that it kills its jobs at once",
                        h.run,
                        ESCALATE.as_secs()
                    );
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                }
                if asked.elapsed() > GIVE_UP {
                    return Err(Error::Usage {
                        message: format!(
                            "run {} (pid {}) did not stop within {} s of being asked twice",
                            h.run,
                            h.pid,
                            GIVE_UP.as_secs()
                        ),
                        help: Some(format!(
                            "it may be stuck; `kill -KILL {}` ends it, and the next `poolparty run`, `status` or `cancel` stops the jobs it leaves and records them as interrupted",
                            h.pid
                        )),
                    });
                }
            }
        }
        Err(e) => return Err(e),
    };
    Ok((lock, stopped_runner))
}
