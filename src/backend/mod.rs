//! Backends run planned jobs somewhere and report how each attempt ended as [`Event`]s.
//!
//! One small trait, [`Backend`]: `submit` launches, `poll` asks the scheduler (clusters), and
//! `cancel` stops. Backends never print, never read the manifest file, and never write the
//! ledger, `submissions.jsonl` or any other record: the runner records what they report (a
//! cluster backend hands each array to the runner's recorder before submitting the next).
//! They write only what a job needs to run and what a dead runner's recovery needs, at the
//! paths of the [`StageSpec`] they are given: the local backend a job's log files, its job
//! file (a value too large for the environment) and the `starting`/`started` lines of
//! `.live.jsonl` (through [`crate::store::LiveGroups`]); the cluster backend its array
//! scripts and task files (`scripts/`, `tasks/`). Both read results through
//! [`crate::store::read_result`], which removes a small result file once it is recorded.
//!
//! [`SCHEDULERS`] is the one list of cluster schedulers (Slurm, Grid Engine, PBS, LSF); each
//! is one file here (its [`syntax::Syntax`] and [`cluster::Client`]).

pub mod cluster;
#[cfg(test)]
mod fake;
pub mod local;
pub mod lsf;
pub mod packing;
pub mod pbs;
pub mod sge;
pub mod slurm;
pub mod syntax;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::manifest::{BackendKind, Settings};
use crate::outcome::{JobRecord, Outcome};
use crate::plan::{PlannedJob, StagePlan};

/// What a backend (or the signal handler) tells the runner.
#[derive(Debug)]
pub enum Event {
    /// An attempt ended (any outcome, including `Interrupted`).
    Finished {
        /// Stage index.
        stage: usize,
        /// The record to store.
        record: JobRecord,
        /// The outcome file it came from: deleted once the record is durable.
        staged: Option<PathBuf>,
    },
    /// Something went wrong that does not stop the run (a scheduler call whose failure
    /// costs nothing but a task left in the queue): the runner shows it as a warning line.
    Warning {
        /// What happened, as one sentence.
        message: String,
    },
    /// SIGINT or SIGTERM arrived; `count` is how many so far.
    Signal {
        /// The signal number.
        signal: i32,
        /// How many termination signals so far.
        count: usize,
    },
}

/// One attempt to launch.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The job.
    pub job: Arc<PlannedJob>,
    /// 1 for the first attempt.
    pub attempt: u32,
}

impl From<&Launch> for crate::store::SubmittedJob {
    /// How a submission records the launch (`submissions.jsonl`, a bundle's `.tasks.json`).
    fn from(l: &Launch) -> Self {
        Self {
            index: l.job.index,
            id: l.job.id.to_string(),
            attempt: l.attempt,
            fp: l.job.fp.clone(),
        }
    }
}

/// Records one submitted array durably; a cluster backend calls it right after each
/// submission returns, before anything else happens (see [`create`]).
pub type Recorder = Box<dyn FnMut(&crate::store::Submission) -> Result<()> + Send>;

/// A task of an earlier run's array that may still be running.
#[derive(Clone, Debug)]
pub struct Adopt {
    /// The job and its attempt.
    pub launch: Launch,
    /// The scheduler's job id of the array.
    pub job_id: String,
    /// The task's position in the array (0-based).
    pub position: usize,
}

/// Arrays a cancel could not stop (see [`Backend::uncancelled`]).
#[derive(Debug)]
pub struct Uncancelled {
    /// The scheduler's syntax (its name, and the command a person cancels with).
    pub scheduler: &'static syntax::Syntax,
    /// The arrays' job ids.
    pub job_ids: Vec<String>,
    /// The launches in them that have no outcome.
    pub launches: Vec<Launch>,
    /// The last error of the cancel call.
    pub error: String,
}

/// How hard to cancel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelMode {
    /// Ask jobs to stop (SIGTERM), then kill after a grace period.
    Graceful,
    /// Kill at once.
    Kill,
}

/// The most worker threads the local backend starts for one stage, whatever `max_parallel`
/// says: more would only make the runner fail to create threads, never run jobs faster.
pub const MAX_LOCAL_WORKERS: usize = 1024;

/// How many jobs of a stage may run at once on the local backend: `max_parallel` (or the
/// number of CPUs), but never more than the stage has jobs nor [`MAX_LOCAL_WORKERS`], so
/// nothing is ever sized by `max_parallel` alone.
#[must_use]
pub fn local_workers(max_parallel: Option<u32>, jobs: usize) -> usize {
    let wanted = max_parallel.map_or_else(
        || std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        |n| usize::try_from(n).unwrap_or(usize::MAX),
    );
    wanted.min(jobs).clamp(1, MAX_LOCAL_WORKERS)
}

/// Everything a backend needs to know about a stage, without the manifest.
#[derive(Clone, Debug)]
pub struct StageSpec {
    /// Stage index.
    pub stage: usize,
    /// Stage name.
    pub name: String,
    /// Workflow name.
    pub workflow: String,
    /// Where cluster backends write their array scripts.
    pub scripts_dir: PathBuf,
    /// Settings.
    pub settings: Settings,
    /// Jobs' working directory.
    pub cwd: PathBuf,
    /// Stage environment.
    pub env: Vec<(String, String)>,
    /// Where a job's logs, result and outcome files go (the store's names).
    pub paths: crate::store::StagePaths,
    /// The run id.
    pub run: String,
    /// Workers for the local backend (resolved `max_parallel`).
    pub workers: usize,
    /// With `bundle = "auto"`: durations (seconds) recorded by earlier runs, by job id.
    pub durations: Arc<HashMap<String, f64>>,
    /// Where the local backend records each job's process group as it starts.
    pub live: Option<Arc<crate::store::LiveGroups>>,
}

impl StageSpec {
    /// The spec for a planned stage.
    #[must_use]
    pub fn new(
        plan: &StagePlan,
        layout: &crate::store::Layout,
        workflow: &str,
        run: &str,
        workers: usize,
    ) -> Self {
        let name = plan.name.to_string();
        Self {
            workflow: workflow.to_owned(),
            scripts_dir: layout.scripts_dir(&name),
            stage: plan.stage,
            settings: plan.settings.clone(),
            cwd: plan.cwd.clone(),
            env: plan.env.clone(),
            paths: layout.stage_paths(&name),
            run: run.to_owned(),
            workers,
            name,
            durations: Arc::default(),
            live: None,
        }
    }
}

/// A place that runs jobs.
pub trait Backend: Send {
    /// Launches attempts; each ends with exactly one [`Event::Finished`].
    ///
    /// # Errors
    /// When the backend refuses them (e.g. `sbatch` fails); nothing was launched then.
    fn submit(&mut self, launches: Vec<Launch>) -> Result<()>;

    /// Asks the scheduler for news; clusters report finished jobs from here. The default does
    /// nothing (the local backend reports from its workers).
    ///
    /// # Errors
    /// A failure that stops the run.
    fn poll(&mut self) -> Result<()> {
        Ok(())
    }

    /// How long the runner may wait before the next `poll`; `None` means no polling needed.
    fn next_poll(&self) -> Option<Duration> {
        None
    }

    /// Stops everything submitted. Returns the launches it settled itself, with their outcome
    /// (never started: not run; cancelled on a cluster: interrupted); every other launch still
    /// ends with an `Event::Finished`.
    fn cancel(&mut self, mode: CancelMode) -> Vec<(Launch, Outcome)>;

    /// Takes over tasks that an earlier (killed) runner submitted: those still queued or
    /// running, or whose outcome file is waiting, are tracked as if submitted now; returns
    /// their job indices. The rest must be launched again. Backends that cannot reattach
    /// (local) adopt nothing.
    fn adopt(&mut self, adopted: Vec<Adopt>) -> Vec<usize> {
        let _ = adopted;
        Vec::new()
    }

    /// What the last [`Backend::cancel`] could not stop: the scheduler's cancel call kept
    /// failing, so these launches (not among those `cancel` returned) may still run and get no
    /// outcome. `None` when everything was cancelled.
    fn uncancelled(&mut self) -> Option<Uncancelled> {
        None
    }

    /// No more submissions will come; workers may exit once idle.
    fn close(&mut self) {}
}

/// A cluster scheduler: how its scripts are written and how to talk to it.
pub struct Scheduler {
    /// Its backend.
    pub kind: BackendKind,
    /// How its scripts and commands are written (pure).
    pub syntax: &'static syntax::Syntax,
    /// Where it keeps its array limit, and its documented default.
    pub limit: &'static cluster::LimitQuery,
    /// Makes a client that runs its commands.
    pub client: fn() -> Box<dyn cluster::Client>,
}

/// Every cluster scheduler, the one list `run`, `cancel`, `plan --out` and `templates` read.
/// Adding a scheduler takes its file (`backend/<name>.rs`: a [`syntax::Syntax`] and a
/// [`cluster::Client`]), its template, its `BackendKind` variant and one entry here.
pub static SCHEDULERS: &[Scheduler] = &[
    Scheduler {
        kind: BackendKind::Slurm,
        syntax: &slurm::SYNTAX,
        limit: &slurm::LIMIT,
        client: || Box::new(slurm::Slurm),
    },
    Scheduler {
        kind: BackendKind::Sge,
        syntax: &sge::SYNTAX,
        limit: &sge::LIMIT,
        client: || Box::new(sge::Sge),
    },
    Scheduler {
        kind: BackendKind::Pbs,
        syntax: &pbs::SYNTAX,
        limit: &pbs::LIMIT,
        client: || Box::new(pbs::Pbs),
    },
    Scheduler {
        kind: BackendKind::Lsf,
        syntax: &lsf::SYNTAX,
        limit: &lsf::LIMIT,
        client: || Box::new(lsf::Lsf),
    },
];

/// The scheduler of a cluster backend; `None` for the local backend.
#[must_use]
pub fn scheduler(kind: BackendKind) -> Option<&'static Scheduler> {
    SCHEDULERS.iter().find(|s| s.kind == kind)
}

/// The scheduler named `name` (as in `submissions.jsonl`).
#[must_use]
pub fn scheduler_named(name: &str) -> Option<&'static Scheduler> {
    SCHEDULERS.iter().find(|s| s.syntax.script.name == name)
}

/// Each scheduler's array task variable: a template that reads one is written for that
/// scheduler.
#[must_use]
pub fn task_index_vars() -> Vec<(BackendKind, &'static str)> {
    SCHEDULERS
        .iter()
        .map(|s| (s.kind, s.syntax.task_index_var))
        .collect()
}

/// How a backend's array scripts are written: its scheduler's, or the local bundle
/// script's.
#[must_use]
pub fn syntax(kind: BackendKind) -> &'static syntax::ScriptSyntax {
    scheduler(kind).map_or(&local::SCRIPT, |s| &s.syntax.script)
}

/// Creates the backend for a stage. A cluster backend hands each array it submits to
/// `recorder` (the local backend submits none).
///
/// # Errors
/// When the backend is not available.
pub fn create(
    kind: BackendKind,
    spec: StageSpec,
    events: Sender<Event>,
    recorder: Recorder,
) -> Result<Box<dyn Backend>> {
    let Some(s) = scheduler(kind) else {
        return Ok(Box::new(local::LocalBackend::new(spec, events)?));
    };
    Ok(Box::new(cluster::ClusterBackend::new(
        s.syntax,
        (s.client)(),
        spec,
        events,
        recorder,
    )?))
}

/// Cancels whole arrays of an earlier run with one scheduler call (`poolparty cancel`).
///
/// # Errors
/// When the scheduler refuses or cannot be reached.
pub fn cancel_arrays(scheduler: &str, job_ids: &[String]) -> Result<()> {
    if job_ids.is_empty() {
        return Ok(());
    }
    let Some(s) = scheduler_named(scheduler) else {
        return Err(Error::Backend {
            backend: "cluster",
            message: format!("unknown scheduler `{scheduler}` in submissions.jsonl"),
            detail: None,
        });
    };
    (s.client)().cancel(job_ids).map_err(|e| Error::Backend {
        backend: s.syntax.script.name,
        message: "cancelling failed".into(),
        detail: Some(e.message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The registry is consistent: each scheduler is found by its backend and by the name
    /// `submissions.jsonl` records, its template reads its own task variable and no other
    /// scheduler's, and template files are distinct.
    #[test]
    fn schedulers_are_registered_consistently() {
        let mut files = std::collections::HashSet::new();
        for s in SCHEDULERS {
            let name = s.syntax.script.name;
            assert_eq!(name, s.kind.as_str());
            assert_eq!(name.parse::<BackendKind>(), Ok(s.kind));
            assert!(std::ptr::eq(scheduler(s.kind).unwrap(), s));
            assert!(std::ptr::eq(scheduler_named(name).unwrap(), s));
            assert!(std::ptr::eq(syntax(s.kind), &s.syntax.script));
            let template = s.syntax.script.template;
            for (kind, var) in task_index_vars() {
                assert_eq!(
                    template.contains(var),
                    kind == s.kind,
                    "{name} template, {var}"
                );
            }
            assert!(!s.syntax.submit_function.is_empty(), "{name}");
            assert!(!s.syntax.wait_function.is_empty(), "{name}");
            assert!(s.limit.default.0 > 1, "{name}");
            assert!(files.insert(s.syntax.script.template_file), "{name}");
        }
        assert!(scheduler(BackendKind::Local).is_none());
        assert_eq!(syntax(BackendKind::Local).name, "local");
        assert!(scheduler_named("local").is_none());
    }

    #[test]
    fn local_workers_are_bounded_by_jobs_and_the_cap() {
        assert_eq!(local_workers(Some(u32::MAX), 3), 3);
        assert_eq!(local_workers(Some(u32::MAX), 1 << 20), MAX_LOCAL_WORKERS);
        assert_eq!(local_workers(Some(4), 100), 4);
        assert_eq!(local_workers(Some(4), 0), 1);
        assert!(local_workers(None, 1) == 1);
    }
}
