//! What the cluster backends (Slurm, Grid Engine, PBS, LSF) share: array scripts rendered from
//! a template, chunking, bundling, throttled submission, one scheduler query per poll with
//! backoff, outcome files harvested from the staging folder, and lost-task detection.
//!
//! A scheduler is two parts, both in its own file (`slurm.rs`, `sge.rs`, `pbs.rs`, `lsf.rs`):
//! a [`Syntax`] (pure: how its scripts are written, see `syntax.rs`) and a [`Client`] (the
//! only code that runs its commands, such as `sbatch`/`squeue`/`scancel`, `qsub`/`qstat`/`qdel`
//! or `bsub`/`bjobs`/`bkill`, and reads their output).
//! [`ClusterBackend`] is the state machine over them: what to submit, when to ask, and what
//! an answer means for a job.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::path::Path;
use std::process::{Command as Proc, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use super::syntax::{ArrayScript, Syntax};
use super::{Backend, CancelMode, Event, Launch, Recorder, StageSpec, Uncancelled, packing};
use crate::error::{Error, Result};
use crate::outcome::{JobRecord, Outcome};
use crate::store::{Submission, SubmittedJob};

/// How long a scheduler command may take before it counts as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What the scheduler says about one array task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Pending, running, or finishing.
    Active,
    /// Ended normally (its outcome file should exist).
    Done,
    /// Ended without running to completion: cancelled, node failure, out of memory...
    Ended(String),
    /// Ran past its time limit.
    TimedOut,
    /// Stuck in an error state (Grid Engine `Eqw`), with the reason when known.
    Error(String),
}

/// The most tasks one array may have, and where that number came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArrayLimit {
    /// Tasks per array.
    pub tasks: usize,
    /// Where it came from, for people: "the cluster's `MaxArraySize`".
    pub source: String,
}

/// Where a scheduler keeps its array limit: the command that prints it, how to read the
/// number, and the scheduler's documented default. Every sentence about where a limit came
/// from is worded here.
#[derive(Debug)]
pub struct LimitQuery {
    /// The command and its arguments (`scontrol show config`).
    pub command: (&'static str, &'static [&'static str]),
    /// The scheduler's transient error texts (see [`call`]).
    pub transient: &'static [&'static str],
    /// Finds the limit in the command's output.
    pub parse: fn(&str) -> Option<usize>,
    /// Who answers, for people: "the cluster", "the server".
    pub asked: &'static str,
    /// The setting's name there (`MaxArraySize`).
    pub setting: &'static str,
    /// The scheduler's documented default, and how it is named for people ("Grid Engine's
    /// default `max_aj_tasks`").
    pub default: (usize, &'static str),
}

impl LimitQuery {
    /// Asks once per process: every stage of a run submits to the same cluster, and a stage
    /// starting while the controller is unreachable then needs no answer from it. A command
    /// that fails is not remembered (the next stage asks again); what to do then is the
    /// scheduler's choice (see [`LimitQuery::fallback`]).
    ///
    /// # Errors
    /// The failed call.
    pub fn ask(&self, cache: &OnceLock<ArrayLimit>) -> std::result::Result<ArrayLimit, CallError> {
        if let Some(n) = cache.get() {
            return Ok(n.clone());
        }
        let (program, args) = self.command;
        let out = call(program, args, self.transient)?;
        // For people: `qmgr -c "list server"`.
        let shown = std::iter::once(program)
            .chain(args.iter().copied())
            .map(|a| {
                if a.contains(' ') {
                    format!("\"{a}\"")
                } else {
                    a.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ");
        let limit = match (self.parse)(&out) {
            Some(tasks) => ArrayLimit {
                tasks,
                source: format!("{}'s `{}` (`{shown}`)", self.asked, self.setting),
            },
            None => ArrayLimit {
                tasks: self.default.0,
                source: format!("{} (`{shown}` has none)", self.default.1),
            },
        };
        Ok(cache.get_or_init(|| limit).clone())
    }

    /// The documented default, used because the scheduler could not be asked (`why`).
    #[must_use]
    pub fn fallback(&self, why: &str) -> ArrayLimit {
        ArrayLimit {
            tasks: self.default.0,
            source: format!(
                "{} ({} could not be asked: {why})",
                self.default.1, self.asked
            ),
        }
    }
}

/// One status call for these arrays, for schedulers that refuse the whole call when one id
/// is no longer known (PBS without job history, LSF after `CLEAN_PERIOD`): the ids the error
/// names (`forgotten(error, id)`) are dropped and the call made once more for the rest, so a
/// poll normally costs at most two calls.
///
/// # Errors
/// The last failed call, when it named none of the ids asked for.
pub fn query_known_ids<T: Default>(
    job_ids: &[String],
    mut ask: impl FnMut(&[&str]) -> std::result::Result<T, CallError>,
    forgotten: impl Fn(&CallError, &str) -> bool,
) -> std::result::Result<T, CallError> {
    let mut ids: Vec<&str> = job_ids.iter().map(String::as_str).collect();
    loop {
        if ids.is_empty() {
            return Ok(T::default());
        }
        match ask(&ids) {
            Ok(v) => return Ok(v),
            Err(e) if !e.transient => {
                let before = ids.len();
                ids.retain(|id| !forgotten(&e, id));
                if ids.len() == before {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The I/O half of a cluster backend: the only part that runs scheduler commands (`sbatch`,
/// `squeue`, `scancel`...) and reads their output. How scripts are written is its
/// [`Syntax`]; what to submit, when to ask, and what an answer means for a job is
/// [`ClusterBackend`]'s.
pub trait Client: Send {
    /// The most tasks one array may have, as the cluster is configured. Asked once per
    /// process at most.
    ///
    /// # Errors
    /// When the scheduler cannot be asked and the backend cannot go on without the answer.
    fn max_array_tasks(&mut self) -> Result<ArrayLimit>;
    /// Submits a script; returns the scheduler's job id.
    ///
    /// # Errors
    /// [`CallError`] saying whether trying again may help.
    fn submit(&mut self, script: &Path) -> std::result::Result<String, CallError>;
    /// The state of every task of these jobs that the scheduler still lists, keyed by
    /// (job id, array index). One call.
    ///
    /// # Errors
    /// When the scheduler does not answer.
    fn query(
        &mut self,
        job_ids: &[String],
    ) -> std::result::Result<HashMap<(String, usize), TaskState>, CallError>;
    /// Cancels whole jobs. One call.
    ///
    /// # Errors
    /// When the scheduler does not answer.
    fn cancel(&mut self, job_ids: &[String]) -> std::result::Result<(), CallError>;
    /// Removes some tasks of one array (e.g. stuck in an error state). One call.
    ///
    /// # Errors
    /// When the scheduler does not answer.
    fn cancel_tasks(
        &mut self,
        job_id: &str,
        indices: &[usize],
    ) -> std::result::Result<(), CallError>;
}

/// A failed scheduler call.
#[derive(Debug, Clone)]
pub struct CallError {
    /// What happened, with the command's stderr.
    pub message: String,
    /// Whether a later try may succeed (timeouts, an unreachable controller).
    pub transient: bool,
}

/// Runs a scheduler command with a timeout; stdout on success.
///
/// # Errors
/// A [`CallError`] with its stderr; timeouts and spawn failures are transient.
pub fn call(
    program: &str,
    args: &[&str],
    transient_markers: &[&str],
) -> std::result::Result<String, CallError> {
    let mut child = Proc::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CallError {
            message: format!("cannot run `{program}`: {e}"),
            transient: e.kind() != std::io::ErrorKind::NotFound,
        })?;
    let mut so = child.stdout.take().expect("piped");
    let mut se = child.stderr.take().expect("piped");
    let t_out = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        b
    });
    let t_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + CALL_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    let out = String::from_utf8_lossy(&t_out.join().unwrap_or_default()).into_owned();
    let err = String::from_utf8_lossy(&t_err.join().unwrap_or_default())
        .trim()
        .to_owned();
    let line = format!("{program} {}", args.join(" "));
    match status {
        None => Err(CallError {
            message: format!("`{line}` did not answer within {}s", CALL_TIMEOUT.as_secs()),
            transient: true,
        }),
        Some(st) if st.success() => Ok(out),
        Some(st) => Err(CallError {
            transient: transient_markers.iter().any(|m| err.contains(m)),
            message: format!("`{line}` failed ({st}): {err}"),
        }),
    }
}

/// The time as the state machine sees it: the real clock in runs; tests drive a fake one, so
/// backoff, grace periods and patience are checked in milliseconds.
pub trait Clock: Send {
    /// Now.
    fn now(&self) -> Instant;
    /// Pauses (between the tries of a cancel call).
    fn sleep(&self, d: Duration);
}

/// The real clock.
#[derive(Debug, Default)]
pub struct RealClock;

impl Clock for RealClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

struct Tracked {
    launch: Launch,
    job_id: String,
    task: usize,
    /// Since when the scheduler no longer lists the task (seen at a status call), and
    /// whether it said the task ran out of time.
    gone_since: Option<(Instant, bool)>,
}

impl Tracked {
    fn key(&self) -> (usize, u32) {
        (self.launch.job.index, self.launch.attempt)
    }
}

/// `bundle = "auto"` with nothing recorded: the first wave of jobs, run one per task to
/// measure them before the rest of the stage is packed.
struct Wave {
    /// The wave's (index, attempt) keys, filled in as it is submitted (see `flush`).
    keys: Vec<(usize, u32)>,
    /// When it was packed.
    started: Instant,
    /// When its first outcome arrived, and the longest duration measured in it so far.
    first_in: Option<(Instant, f64)>,
}

impl Wave {
    /// How long the rest of the stage waits for the wave's last jobs once one of them is
    /// measured: its tasks start about together, so a job still running this long after the
    /// first outcome is a straggler, counted at least as long as it has run (see
    /// [`packing::WAVE_STRAGGLER`]).
    fn patience(first: f64) -> Duration {
        Duration::from_secs_f64(first * packing::WAVE_STRAGGLER).max(packing::WAVE_SETTLE)
    }
}

/// A cluster backend for one stage.
pub struct ClusterBackend {
    syntax: &'static Syntax,
    client: Box<dyn Client>,
    clock: Box<dyn Clock>,
    script: ArrayScript,
    spec: StageSpec,
    events: Sender<Event>,
    pending: VecDeque<Launch>,
    /// Tasks packed and waiting for submission, in order.
    packed: VecDeque<Vec<Launch>>,
    /// `bundle = "auto"` with no recorded durations: the first wave being measured.
    wave: Option<Wave>,
    /// Durations measured in this run (`bundle = "auto"`), by job id.
    measured: HashMap<String, f64>,
    /// Keyed by (job index, attempt).
    tracked: HashMap<(usize, u32), Tracked>,
    active_jobs: Vec<String>,
    max_tasks: Option<usize>,
    interval: Duration,
    next: Instant,
    /// The current interval between status calls (doubling up to `status_interval`).
    status_step: Duration,
    /// When the scheduler is asked next.
    next_status: Instant,
    /// When the grace period of the first task seen gone from the queue ends (and the
    /// scheduler has not been asked since).
    next_lost: Option<Instant>,
    /// When the scheduler was last asked, and last answered.
    last_ask: Option<Instant>,
    last_answer: Option<Instant>,
    grace: Duration,
    cancelled: bool,
    arrays: usize,
    /// Since when submissions fail with errors worth retrying (an unreachable controller).
    submit_failing: Option<Instant>,
    /// Records each submitted array durably (in `submissions.jsonl`, in a run).
    recorder: Recorder,
    uncancelled: Option<Uncancelled>,
}

/// Pauses between the tries of a cancel call (`scancel`/`qdel`): four tries in about 3.5 s,
/// so a signal still ends the run within seconds.
const CANCEL_BACKOFF: [Duration; 3] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// How long submissions may keep failing with errors worth retrying (the controller is
/// unreachable: restarted, failing over) before the run gives up. Meanwhile the jobs stay
/// queued here and each poll tries again, so the runner is never blocked.
pub const SUBMIT_PATIENCE: Duration = Duration::from_secs(600);

impl ClusterBackend {
    /// A backend writing scripts in `syntax` (into `spec.scripts_dir`) and submitting through
    /// `client`; each submitted array goes to `recorder` as soon as the scheduler took it.
    ///
    /// # Errors
    /// A custom template that cannot be read or compiled.
    pub fn new(
        syntax: &'static Syntax,
        client: Box<dyn Client>,
        spec: StageSpec,
        events: Sender<Event>,
        recorder: Recorder,
    ) -> Result<Self> {
        Self::with_clock(syntax, client, Box::new(RealClock), spec, events, recorder)
    }

    /// [`ClusterBackend::new`] reading the time from `clock`.
    ///
    /// # Errors
    /// As [`ClusterBackend::new`].
    pub fn with_clock(
        syntax: &'static Syntax,
        client: Box<dyn Client>,
        clock: Box<dyn Clock>,
        spec: StageSpec,
        events: Sender<Event>,
        recorder: Recorder,
    ) -> Result<Self> {
        let script = ArrayScript::new(&syntax.script, &spec)?;
        let interval = spec.settings.poll_interval;
        let now = clock.now();
        Ok(Self {
            syntax,
            client,
            clock,
            script,
            events,
            pending: VecDeque::new(),
            packed: VecDeque::new(),
            wave: None,
            measured: HashMap::new(),
            tracked: HashMap::new(),
            active_jobs: Vec::new(),
            max_tasks: None,
            interval,
            next: now + interval,
            status_step: interval,
            next_status: now + interval,
            next_lost: None,
            last_ask: None,
            last_answer: None,
            grace: spec.settings.lost_grace,
            cancelled: false,
            arrays: 0,
            recorder,
            submit_failing: None,
            uncancelled: None,
            spec,
        })
    }

    /// Cancels every active array, trying again (with [`CANCEL_BACKOFF`]) when the call fails.
    fn cancel_with_retries(&mut self) -> std::result::Result<(), CallError> {
        let mut pauses = CANCEL_BACKOFF.iter();
        loop {
            match self.client.cancel(&self.active_jobs) {
                Ok(()) => return Ok(()),
                Err(e) => match pauses.next() {
                    Some(p) => self.clock.sleep(*p),
                    None => {
                        return Err(CallError {
                            message: format!(
                                "{} (tried {} times)",
                                e.message,
                                CANCEL_BACKOFF.len() + 1
                            ),
                            ..e
                        });
                    }
                },
            }
        }
    }

    /// Removes tasks stuck in an error state from the queue, one call per array. A call that
    /// fails does not stop the run (the tasks' jobs count as lost already): it is reported
    /// as a warning, since the tasks may stay in the queue.
    fn remove_stuck(&mut self, stuck: std::collections::BTreeMap<String, Vec<usize>>) {
        for (job_id, tasks) in stuck {
            if let Err(e) = self.client.cancel_tasks(&job_id, &tasks) {
                let _ = self.events.send(Event::Warning {
                    message: format!(
                        "stage `{}`: could not remove tasks {tasks:?} of {} array {job_id}, stuck in an error state (they may stay in the queue): {}",
                        self.spec.name,
                        self.syntax.script.name,
                        e.message
                    ),
                });
            }
        }
    }

    /// Submits as much of the pending queue as the throttle allows: everything at once when
    /// unthrottled, otherwise one array at a time (so `max_parallel` bounds the whole stage).
    fn flush(&mut self) -> Result<()> {
        while !self.pending.is_empty() || !self.packed.is_empty() {
            if self.spec.settings.max_parallel.is_some() && !self.active_jobs.is_empty() {
                return Ok(());
            }
            let max_tasks = match self.max_tasks {
                Some(m) => m,
                None => {
                    let m = match self.spec.settings.max_array_size {
                        Some(n) => n as usize,
                        None => self.client.max_array_tasks()?.tasks.max(1),
                    };
                    self.max_tasks = Some(m);
                    m
                }
            };
            if self.packed.is_empty() {
                match self.spec.settings.auto_bundle {
                    Some(target) => {
                        if !self.pack_auto(target) {
                            return Ok(());
                        }
                    }
                    None => {
                        let bundle = self.spec.settings.bundle.max(1) as usize;
                        let take = max_tasks.saturating_mul(bundle).min(self.pending.len());
                        let launches: Vec<Launch> = self.pending.drain(..take).collect();
                        self.packed
                            .extend(launches.chunks(bundle).map(<[Launch]>::to_vec));
                    }
                }
            }
            let take = max_tasks.min(self.packed.len());
            let tasks: Vec<Vec<Launch>> = self.packed.drain(..take).collect();
            self.arrays += 1;
            let name = format!("{}-{}", self.spec.run, self.arrays);
            let scripts_dir = &self.spec.scripts_dir;
            std::fs::create_dir_all(scripts_dir)
                .map_err(|e| Error::store("create", scripts_dir, e))?;
            let path = scripts_dir.join(format!("{name}.sh"));
            // Task files live beside the scripts folder, one per array.
            let tasks_dir = scripts_dir.with_file_name("tasks");
            std::fs::create_dir_all(&tasks_dir)
                .map_err(|e| Error::store("create", &tasks_dir, e))?;
            let data = tasks_dir.join(format!("{name}.jobs"));
            let rendered =
                self.script
                    .render(&self.spec, &tasks, &name, &data.display().to_string())?;
            crate::store::atomic_write(&data, &rendered.task_file)?;
            crate::store::atomic_write(&path, rendered.script.as_bytes())?;
            let submitted = crate::store::now();
            let job_id = match self.client.submit(&path) {
                Ok(id) => id,
                Err(e) if e.transient => {
                    // Keep the jobs queued (in order) and try again at the next poll.
                    let _ = std::fs::remove_file(&path);
                    let _ = std::fs::remove_file(&data);
                    self.arrays -= 1;
                    for t in tasks.into_iter().rev() {
                        self.packed.push_front(t);
                    }
                    let now = self.clock.now();
                    let failing =
                        now.saturating_duration_since(*self.submit_failing.get_or_insert(now));
                    if failing >= SUBMIT_PATIENCE {
                        return Err(Error::Backend {
                            backend: self.syntax.script.name,
                            message: format!(
                                "could not submit the jobs of stage `{}`: the scheduler kept failing for {} s",
                                self.spec.name,
                                failing.as_secs()
                            ),
                            detail: Some(e.message),
                        });
                    }
                    return Ok(());
                }
                Err(e) => {
                    return Err(Error::Backend {
                        backend: self.syntax.script.name,
                        message: format!(
                            "the scheduler refused the array script `{}`",
                            path.display()
                        ),
                        detail: Some(e.message),
                    });
                }
            };
            self.submit_failing = None;
            // A new array: ask the scheduler about it soon, then less and less often.
            self.status_step = self.spec.settings.poll_interval;
            self.next_status = self
                .next_status
                .min(self.clock.now() + self.spec.settings.poll_interval);
            let first = self.syntax.script.first_index;
            let mut record = Vec::with_capacity(tasks.len());
            for (t, launches) in tasks.into_iter().enumerate() {
                record.push(launches.iter().map(SubmittedJob::from).collect());
                for l in launches {
                    self.tracked.insert(
                        (l.job.index, l.attempt),
                        Tracked {
                            launch: l,
                            job_id: job_id.clone(),
                            task: t + first,
                            gone_since: None,
                        },
                    );
                }
            }
            if let Some(wave) = &mut self.wave
                && wave.keys.is_empty()
            {
                wave.keys.extend(
                    record
                        .iter()
                        .flatten()
                        .map(|j: &SubmittedJob| (j.index, j.attempt)),
                );
            }
            self.active_jobs.push(job_id.clone());
            let submission = Submission {
                job_id,
                script: path,
                run: self.spec.run.clone(),
                scheduler: self.syntax.script.name.to_owned(),
                tasks: record,
                submitted: Some(submitted),
            };
            // Recorded durably before the next array is submitted or anything else happens.
            (self.recorder)(&submission)?;
        }
        Ok(())
    }

    /// `bundle = "auto"`: packs the pending jobs into tasks near `target` (longest first) by
    /// their recorded or measured durations. With none known, submits a first wave of
    /// [`packing::FIRST_WAVE`] jobs, one per task, and holds the rest until the wave is
    /// measured: all of it, or, once a first outcome is in, all but stragglers (which count
    /// as at least as long as they have run), or nothing when it has run for `target`.
    /// Returns whether tasks are ready to submit.
    fn pack_auto(&mut self, target: Duration) -> bool {
        if self.pending.is_empty() {
            return false;
        }
        let mut known: HashMap<String, f64> = (*self.spec.durations).clone();
        known.extend(self.measured.iter().map(|(k, v)| (k.clone(), *v)));
        if let Some(wave) = &self.wave {
            let running: Vec<&Tracked> = wave
                .keys
                .iter()
                .filter_map(|k| self.tracked.get(k))
                .collect();
            if !running.is_empty() {
                match wave.first_in {
                    Some((at, first)) if at.elapsed() >= Wave::patience(first) => {
                        // Stragglers started about when the first measured job did.
                        let ran = first + at.elapsed().as_secs_f64();
                        known.extend(running.iter().map(|t| (t.launch.job.id.to_string(), ran)));
                    }
                    _ if wave.started.elapsed() < target => return false,
                    _ => {}
                }
            }
        }
        let estimate = packing::estimate(self.pending.iter().map(|l| l.job.id.as_str()), &known);
        let durations = match (estimate, &self.wave) {
            (Some(d), _) => d,
            // The wave ran for `target` without an outcome: its jobs are long, one per task.
            (None, Some(wave)) => vec![wave.started.elapsed().as_secs_f64(); self.pending.len()],
            (None, None) => {
                let n = packing::FIRST_WAVE.min(self.pending.len());
                let wave: Vec<Vec<Launch>> = self.pending.drain(..n).map(|l| vec![l]).collect();
                self.wave = Some(Wave {
                    keys: Vec::new(),
                    started: Instant::now(),
                    first_in: None,
                });
                self.packed.extend(wave);
                return true;
            }
        };
        let min_tasks = packing::min_tasks(self.spec.settings.max_parallel);
        let launches: Vec<Launch> = self.pending.drain(..).collect();
        let recorded = launches
            .iter()
            .filter(|l| known.contains_key(l.job.id.as_str()))
            .count();
        let (bins, _) = packing::pack(&durations, recorded, target.as_secs_f64(), min_tasks);
        let mut slots: Vec<Option<Launch>> = launches.into_iter().map(Some).collect();
        for bin in bins {
            self.packed
                .push_back(bin.into_iter().filter_map(|i| slots[i].take()).collect());
        }
        true
    }

    /// Reads every outcome file in the staging folder (one `read_dir`) and reports them.
    fn harvest(&mut self) -> usize {
        let mut n = 0;
        for (path, staged) in crate::store::read_staged(&self.spec.paths.staging_dir) {
            let Some(t) = self.tracked.remove(&(staged.index, staged.attempt)) else {
                continue;
            };
            if self.spec.settings.auto_bundle.is_some() {
                let d = (staged.end - staged.start).max(0.0);
                if let Some(w) = self.wave.as_mut().filter(|w| w.keys.contains(&t.key())) {
                    let first = w.first_in.get_or_insert((Instant::now(), d));
                    first.1 = first.1.max(d);
                }
                self.measured.insert(staged.id.clone(), d);
            }
            let result = crate::store::read_result(
                self.spec.settings.result,
                &self.spec.paths.result(t.launch.job.id.as_str()),
                &self.spec.paths.log_out(t.launch.job.id.as_str()),
                self.spec.settings.result_max_bytes,
                true,
            );
            let record = staged.record(self.spec.run.clone(), t.launch.job.fp.clone(), result);
            let _ = self.events.send(Event::Finished {
                stage: self.spec.stage,
                record,
                staged: Some(path),
            });
            n += 1;
        }
        n
    }

    fn finish_lost(&mut self, key: (usize, u32), outcome: Outcome) {
        if let Some(t) = self.tracked.remove(&key) {
            let record = JobRecord {
                index: t.launch.job.index,
                id: t.launch.job.id.to_string(),
                attempt: t.launch.attempt,
                outcome,
                start: None,
                end: Some(crate::store::now()),
                run: self.spec.run.clone(),
                fp: t.launch.job.fp.clone(),
                result: None,
            };
            let _ = self.events.send(Event::Finished {
                stage: self.spec.stage,
                record,
                staged: None,
            });
        }
    }
}

impl Backend for ClusterBackend {
    fn submit(&mut self, launches: Vec<Launch>) -> Result<()> {
        self.pending.extend(launches);
        self.flush()?;
        self.interval = self.spec.settings.poll_interval;
        self.next = self.clock.now() + self.interval;
        // Ask the scheduler soon after a submission (a task stuck in an error state shows at
        // once), then less and less often.
        self.status_step = self.interval;
        self.next_status = self.next;
        Ok(())
    }

    /// Harvests outcome files at every poll (one `read_dir`); asks the scheduler only when
    /// its own, slower cadence is due (one call for every array of the stage), to notice
    /// tasks that left the queue without an outcome (lost after the grace period), ran out of
    /// time, or are stuck in an error state. An array is over when every task's outcome file
    /// arrived, whatever the scheduler was last seen to say.
    fn poll(&mut self) -> Result<()> {
        let now = self.clock.now();
        // A task's grace period ending is a reason to ask too: it is lost only if the
        // scheduler, asked after the grace period, still does not list it and cannot say how
        // it ended (Grid Engine's accounting may take 15 s to know a task hit `h_rt`).
        let grace_over = self.next_lost.is_some_and(|l| now >= l);
        let ask = !self.active_jobs.is_empty() && (now >= self.next_status || grace_over);
        // Asked before harvesting: a task the scheduler no longer lists has written its
        // outcome file by then, so it is harvested below rather than suspected lost.
        let queue = ask.then(|| {
            let ids = self.active_jobs.clone();
            self.client.query(&ids)
        });
        if ask {
            self.last_ask = Some(now);
            if queue.as_ref().is_some_and(Result::is_ok) {
                self.last_answer = Some(now);
            }
            if now >= self.next_status {
                self.next_status = now + self.status_step;
                self.status_step = (self.status_step * 2).min(self.spec.settings.status_interval);
            }
        }
        let harvested = self.harvest();
        let mut progress = harvested > 0;
        let mut finished = Vec::new();
        if let Some(Ok(states)) = &queue {
            let mut errors = Vec::new();
            for (key, t) in &mut self.tracked {
                match states.get(&(t.job_id.clone(), t.task)) {
                    Some(TaskState::Active) => t.gone_since = None,
                    Some(TaskState::Error(reason)) => {
                        errors.push((*key, t.job_id.clone(), t.task, reason.clone()));
                    }
                    state => {
                        let timed_out = matches!(state, Some(TaskState::TimedOut));
                        let since = t.gone_since.get_or_insert((now, timed_out));
                        since.1 |= timed_out;
                    }
                }
            }
            // One call per array, whatever the number of stuck tasks.
            let mut stuck: std::collections::BTreeMap<String, Vec<usize>> =
                std::collections::BTreeMap::new();
            for (_, job_id, task, _) in &errors {
                stuck.entry(job_id.clone()).or_default().push(*task);
            }
            for tasks in stuck.values_mut() {
                tasks.sort_unstable();
                tasks.dedup();
            }
            self.remove_stuck(stuck);
            for (key, _, _, _) in errors {
                finished.push((key, Outcome::Lost));
            }
        }
        // Gone from the queue, still gone at a status call made once the grace period was
        // over, and still no outcome file: lost (or timed out, if the scheduler said so).
        for (key, t) in &self.tracked {
            if let Some((since, timed_out)) = t.gone_since
                && self.last_answer.is_some_and(|a| a >= since + self.grace)
                && !finished.iter().any(|(k, _)| k == key)
            {
                let outcome = if timed_out {
                    Outcome::TimedOut
                } else {
                    Outcome::Lost
                };
                finished.push((*key, outcome));
            }
        }
        progress |= !finished.is_empty();
        for (key, outcome) in finished {
            self.finish_lost(key, outcome);
        }
        // Arrays with no tracked task left are over.
        let tracked = &self.tracked;
        self.active_jobs
            .retain(|j| tracked.values().any(|t| &t.job_id == j));
        // Grace periods that ended before the last status call wait for the next regular one
        // (the scheduler could not be asked, or tracked tasks remain only through them).
        let last_ask = self.last_ask;
        self.next_lost = tracked
            .values()
            .filter_map(|t| t.gone_since.map(|(since, _)| since + self.grace))
            .filter(|&l| last_ask.is_none_or(|a| a < l))
            .min();
        if !self.cancelled {
            self.flush()?;
        }
        // A first wave holds the rest of the stage back: look for its outcomes (one
        // `read_dir`, no scheduler call) at a short interval.
        let waiting_on_wave = !self.pending.is_empty()
            && self
                .wave
                .as_ref()
                .is_some_and(|w| w.keys.iter().any(|k| self.tracked.contains_key(k)));
        self.interval = if waiting_on_wave {
            self.spec.settings.poll_interval.min(packing::WAVE_POLL)
        } else if progress {
            self.spec.settings.poll_interval
        } else {
            (self.interval.mul_f64(1.5)).min(self.spec.settings.poll_max)
        };
        self.next = self.clock.now() + self.interval;
        Ok(())
    }

    fn next_poll(&self) -> Option<Duration> {
        let mut at = self.next;
        if !self.active_jobs.is_empty() {
            at = at.min(self.next_status);
        }
        if let Some(lost) = self.next_lost {
            at = at.min(lost);
        }
        Some(at.saturating_duration_since(self.clock.now()))
    }

    fn adopt(&mut self, adopted: Vec<super::Adopt>) -> Vec<usize> {
        if adopted.is_empty() {
            return Vec::new();
        }
        let mut ids: Vec<String> = adopted.iter().map(|a| a.job_id.clone()).collect();
        ids.sort();
        ids.dedup();
        // If the scheduler cannot be asked now, keep everything: tasks that are really gone
        // are found lost after the grace period.
        let states = self.client.query(&ids).ok();
        let first = self.syntax.script.first_index;
        let mut kept = Vec::new();
        let mut stuck: std::collections::BTreeMap<String, Vec<usize>> =
            std::collections::BTreeMap::new();
        for a in adopted {
            let task = a.position + first;
            let staged = self
                .spec
                .paths
                .staged(a.launch.job.id.as_str(), a.launch.attempt)
                .exists();
            let active = states
                .as_ref()
                .is_none_or(|s| s.get(&(a.job_id.clone(), task)) == Some(&TaskState::Active));
            if let Some(TaskState::Error(_)) = states
                .as_ref()
                .and_then(|s| s.get(&(a.job_id.clone(), task)))
            {
                // Stuck in an error state: remove it; the job is launched again.
                stuck.entry(a.job_id.clone()).or_default().push(task);
                continue;
            }
            if staged || active {
                if !self.active_jobs.contains(&a.job_id) {
                    self.active_jobs.push(a.job_id.clone());
                }
                kept.push(a.launch.job.index);
                self.tracked.insert(
                    (a.launch.job.index, a.launch.attempt),
                    Tracked {
                        launch: a.launch,
                        job_id: a.job_id,
                        task,
                        gone_since: None,
                    },
                );
            }
        }
        self.remove_stuck(stuck);
        self.next = self.clock.now();
        kept
    }

    fn uncancelled(&mut self) -> Option<Uncancelled> {
        self.uncancelled.take()
    }

    fn cancel(&mut self, _mode: CancelMode) -> Vec<(Launch, Outcome)> {
        self.cancelled = true;
        let packed: Vec<Launch> = self.packed.drain(..).flatten().collect();
        let mut out: Vec<(Launch, Outcome)> = packed
            .into_iter()
            .chain(self.pending.drain(..))
            .map(|l| {
                (
                    l,
                    Outcome::NotRun {
                        reason: "run interrupted".into(),
                    },
                )
            })
            .collect();
        let failed = if self.active_jobs.is_empty() {
            None
        } else {
            self.cancel_with_retries().err()
        };
        // Collect what finished before the cancel took effect; the rest was interrupted.
        self.harvest();
        if let Some(e) = failed {
            // The scheduler did not take the cancel: the tasks may still run, so they are
            // not "interrupted"; they keep no outcome, and a later `poolparty cancel` or
            // `run` finds them in submissions.jsonl.
            self.uncancelled = Some(Uncancelled {
                scheduler: self.syntax,
                job_ids: std::mem::take(&mut self.active_jobs),
                launches: self.tracked.drain().map(|(_, t)| t.launch).collect(),
                error: e.message,
            });
            return out;
        }
        out.extend(
            self.tracked
                .drain()
                .map(|(_, t)| (t.launch, Outcome::Interrupted)),
        );
        self.active_jobs.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    #[test]
    fn forgotten_ids_are_dropped_for_one_more_call() {
        let err = |m: &str, transient| CallError {
            message: m.into(),
            transient,
        };
        let ids: Vec<String> = ["1", "2", "3"].map(String::from).to_vec();
        let mut asked = Vec::new();
        let got = query_known_ids(
            &ids,
            |ids| {
                asked.push(ids.join(","));
                if ids.contains(&"2") {
                    Err(err("Unknown Job Id 2", false))
                } else {
                    Ok(ids.len())
                }
            },
            |e, id| e.message.ends_with(id),
        );
        assert_eq!(got.unwrap(), 2);
        assert_eq!(asked, ["1,2,3", "1,3"]);
        // An error naming none of them, or a transient one, is the answer.
        let got: std::result::Result<usize, _> = query_known_ids(
            &ids,
            |_| Err(err("denied", false)),
            |e, id| e.message.ends_with(id),
        );
        assert_eq!(got.unwrap_err().message, "denied");
        let got: std::result::Result<usize, _> = query_known_ids(
            &ids,
            |_| Err(err("timed out 2", true)),
            |e, id| e.message.ends_with(id),
        );
        assert!(got.unwrap_err().transient);
        // Every id forgotten: nothing left to ask.
        let got: std::result::Result<usize, _> =
            query_known_ids(&ids, |_| Err(err("gone", false)), |_, _| true);
        assert_eq!(got.unwrap(), 0);
    }

    use super::*;
    use crate::backend::fake::{Recorded, recording, taken};

    /// A scheduler that logs its calls and lists every task of array `1` while `listed`.
    struct Fake {
        log: Arc<Mutex<Vec<&'static str>>>,
        listed: Arc<Mutex<bool>>,
    }

    impl Client for Fake {
        fn max_array_tasks(&mut self) -> Result<ArrayLimit> {
            Ok(ArrayLimit {
                tasks: 1000,
                source: "the fake".into(),
            })
        }
        fn submit(&mut self, _: &Path) -> std::result::Result<String, CallError> {
            self.log.lock().unwrap().push("submit");
            Ok("1".into())
        }
        fn query(
            &mut self,
            _: &[String],
        ) -> std::result::Result<HashMap<(String, usize), TaskState>, CallError> {
            self.log.lock().unwrap().push("query");
            let listed = *self.listed.lock().unwrap();
            Ok((0..100)
                .filter(|_| listed)
                .map(|t| (("1".to_owned(), t), TaskState::Active))
                .collect())
        }
        fn cancel(&mut self, _: &[String]) -> std::result::Result<(), CallError> {
            Ok(())
        }
        fn cancel_tasks(&mut self, _: &str, _: &[usize]) -> std::result::Result<(), CallError> {
            Ok(())
        }
    }

    use crate::backend::syntax::testing::launches;

    fn backend(
        dir: &Path,
        settings: impl FnOnce(&mut crate::manifest::Settings),
        listed: bool,
    ) -> (
        ClusterBackend,
        std::sync::mpsc::Receiver<Event>,
        Arc<Mutex<Vec<&'static str>>>,
        Recorded,
    ) {
        let spec = crate::backend::syntax::testing::spec(dir, "slurm", settings);
        let log = Arc::new(Mutex::new(Vec::new()));
        let sched = Fake {
            log: log.clone(),
            listed: Arc::new(Mutex::new(listed)),
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let (recorder, recorded) = recording();
        let b = ClusterBackend::with_clock(
            &crate::backend::slurm::SYNTAX,
            Box::new(sched),
            Box::new(crate::backend::fake::FakeClock::new()),
            spec,
            tx,
            recorder,
        )
        .unwrap();
        (b, rx, log, recorded)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn polls_until(b: &mut ClusterBackend, polls: usize) {
        for _ in 0..polls {
            b.clock.sleep(b.next_poll().unwrap());
            b.poll().unwrap();
        }
    }

    /// The scheduler is asked at doubling intervals up to `status_interval` while outcome
    /// files are harvested at every poll: far fewer status calls than polls.
    #[test]
    fn status_calls_back_off_while_polls_harvest() {
        let dir = tempfile::tempdir().unwrap();
        let (mut b, _rx, log, _) = backend(
            dir.path(),
            |s| {
                s.poll_interval = ms(10);
                s.poll_max = ms(10);
                s.status_interval = ms(80);
            },
            true,
        );
        b.submit(launches(3)).unwrap();
        polls_until(&mut b, 60);
        let queries = log
            .lock()
            .unwrap()
            .iter()
            .filter(|c| **c == "query")
            .count();
        // 10, 20, 40, 80, 80 .. ms after the submission, at most one per 8 polls from then.
        assert!(
            (3..=14).contains(&queries),
            "{queries} status calls in 60 polls"
        );
    }

    /// A task the scheduler no longer lists and whose outcome file never comes is lost once
    /// the grace period has passed, at a status call made then (not at the next one of the
    /// regular, hour-long cadence).
    #[test]
    fn tasks_gone_from_the_queue_are_lost_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let (mut b, rx, log, _) = backend(
            dir.path(),
            |s| {
                s.poll_interval = ms(10);
                s.poll_max = ms(10);
                s.status_interval = ms(3_600_000);
                s.lost_grace = ms(50);
            },
            false,
        );
        b.submit(launches(2)).unwrap();
        let mut lost = 0;
        for _ in 0..200 {
            b.clock.sleep(b.next_poll().unwrap());
            b.poll().unwrap();
            while let Ok(Event::Finished { record, .. }) = rx.try_recv() {
                assert_eq!(record.outcome, Outcome::Lost);
                lost += 1;
            }
            if lost == 2 {
                break;
            }
        }
        assert_eq!(lost, 2);
        let queries = log
            .lock()
            .unwrap()
            .iter()
            .filter(|c| **c == "query")
            .count();
        assert!(queries <= 4, "{queries} status calls");
    }

    /// `bundle = "auto"` with nothing recorded: a first wave of single-job tasks, then, once
    /// its outcomes are in, the rest packed into a few tasks by the measured durations.
    #[test]
    fn auto_bundling_measures_a_first_wave_then_packs_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (mut b, _rx, _, recorded) = backend(
            dir.path(),
            |s| {
                s.auto_bundle = Some(Duration::from_secs(600));
                s.poll_interval = ms(10);
                s.poll_max = ms(10);
            },
            true,
        );
        std::fs::create_dir_all(dir.path().join("staging")).unwrap();
        b.submit(launches(300)).unwrap();
        let subs = taken(&recorded);
        assert_eq!(subs.len(), 1);
        let wave: Vec<usize> = subs[0].tasks.iter().map(Vec::len).collect();
        assert_eq!(wave, [1; packing::FIRST_WAVE]);
        // Nothing more until the wave is measured.
        b.poll().unwrap();
        assert!(taken(&recorded).is_empty());
        for j in subs[0].tasks.iter().flatten() {
            std::fs::write(
                dir.path().join(format!("staging/{}.{}.json", j.id, j.attempt)),
                format!(
                    "{{\"index\":{},\"id\":\"{}\",\"attempt\":{},\"rc\":0,\"start\":100.0,\"end\":100.5}}",
                    j.index, j.id, j.attempt
                ),
            )
            .unwrap();
        }
        b.poll().unwrap();
        let subs = taken(&recorded);
        assert_eq!(subs.len(), 1);
        let sizes: Vec<usize> = subs[0].tasks.iter().map(Vec::len).collect();
        // 295 jobs of about 0.5 s: far below 10 min, spread over the minimum of 10 tasks.
        assert_eq!(sizes.len(), packing::AUTO_MIN_TASKS, "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 295);
        assert!(sizes.iter().all(|&n| (29..=30).contains(&n)), "{sizes:?}");
    }

    /// The rest of the stage does not wait for a straggler of the first wave: once the others
    /// are measured and the wave's patience is over, it is packed, the straggler counting as
    /// at least as long as it has run (so the tasks are shorter than the quick jobs alone
    /// would make them).
    #[test]
    fn auto_bundling_does_not_wait_for_a_straggler_of_the_wave() {
        let dir = tempfile::tempdir().unwrap();
        let (mut b, _rx, _, recorded) = backend(
            dir.path(),
            |s| {
                s.auto_bundle = Some(Duration::from_secs(600));
                s.poll_interval = ms(10);
                s.poll_max = ms(10);
            },
            true,
        );
        std::fs::create_dir_all(dir.path().join("staging")).unwrap();
        b.submit(launches(300)).unwrap();
        let wave = taken(&recorded).remove(0).tasks;
        assert_eq!(wave.len(), packing::FIRST_WAVE);
        for j in wave.iter().flatten().skip(1) {
            std::fs::write(
                dir.path().join(format!("staging/{}.{}.json", j.id, j.attempt)),
                format!(
                    "{{\"index\":{},\"id\":\"{}\",\"attempt\":{},\"rc\":0,\"start\":100.0,\"end\":100.1}}",
                    j.index, j.id, j.attempt
                ),
            )
            .unwrap();
        }
        b.poll().unwrap();
        assert!(
            taken(&recorded).is_empty(),
            "packed before the wave settled"
        );
        // The wave's outcomes are looked for often while it holds the stage back.
        assert!(b.next_poll().unwrap() <= packing::WAVE_POLL);
        std::thread::sleep(packing::WAVE_SETTLE + ms(100));
        b.poll().unwrap();
        let subs = taken(&recorded);
        assert_eq!(subs.len(), 1, "the rest waited for the straggler");
        let sizes: Vec<usize> = subs[0].tasks.iter().map(Vec::len).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 295, "{sizes:?}");
        assert!(sizes.len() >= packing::AUTO_MIN_TASKS, "{sizes:?}");
    }

    /// With durations recorded by earlier runs, every job is packed at once (no wave), and
    /// the long jobs get tasks of their own.
    #[test]
    fn auto_bundling_packs_recorded_durations_longest_first() {
        let dir = tempfile::tempdir().unwrap();
        let (mut b, _rx, _, recorded) = backend(
            dir.path(),
            |s| s.auto_bundle = Some(Duration::from_secs(60)),
            true,
        );
        let mut d: HashMap<String, f64> = (0..100).map(|i| (format!("j{i}"), 1.0)).collect();
        d.insert("j7".into(), 55.0);
        b.spec.durations = Arc::new(d);
        b.submit(launches(100)).unwrap();
        let subs = taken(&recorded);
        assert_eq!(subs.len(), 1);
        let tasks = &subs[0].tasks;
        // 154 s of work for tasks of 60 s: 3 by time, raised to the minimum of 10.
        assert_eq!(tasks.len(), packing::AUTO_MIN_TASKS);
        let alone = tasks
            .iter()
            .find(|t| t.iter().any(|j| j.id == "j7"))
            .unwrap();
        assert_eq!(alone.len(), 1, "{alone:?}");
    }
}
