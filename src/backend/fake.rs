//! A scheduler in memory, for tests: [`FakeClient`] implements [`Client`] over a queue the
//! test edits (tasks finish, vanish, get stuck; the controller goes down), and [`FakeClock`]
//! is a clock the test moves. Together they drive [`ClusterBackend`], the cluster state
//! machine, through lost and stuck tasks, transient failures, backoff, throttled chunks,
//! adoption and controller outages in milliseconds, counting every scheduler call. The same
//! paths on real clusters are tested in `tests/slurm.rs` and `tests/sge.rs`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::cluster::{
    ArrayLimit, CallError, Client, Clock, ClusterBackend, SUBMIT_PATIENCE, TaskState,
};
use super::syntax::testing::{launches, spec};
use super::{Adopt, Backend, CancelMode, Event, Launch, Recorder};
use crate::error::Result;
use crate::manifest::Settings;
use crate::outcome::{JobRecord, Outcome};
use crate::store::Submission;

/// A clock that only moves when told to (or when the backend "sleeps").
#[derive(Clone)]
pub(super) struct FakeClock(Arc<Mutex<Instant>>);

impl FakeClock {
    /// A clock standing at the real now.
    pub(super) fn new() -> Self {
        Self(Arc::new(Mutex::new(Instant::now())))
    }
    fn advance(&self, d: Duration) {
        *self.0.lock().unwrap() += d;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap()
    }
    fn sleep(&self, d: Duration) {
        self.advance(d);
    }
}

/// Submitted arrays, as a backend's recorder saw them, in order.
pub(super) type Recorded = Arc<Mutex<Vec<Submission>>>;

/// A recorder that keeps what it is given in memory, where [`taken`] finds it (a run's
/// recorder appends to `submissions.jsonl`).
pub(super) fn recording() -> (Recorder, Recorded) {
    let recorded = Recorded::default();
    let into = Arc::clone(&recorded);
    let recorder: Recorder = Box::new(move |s| {
        into.lock().unwrap().push(s.clone());
        Ok(())
    });
    (recorder, recorded)
}

/// The arrays recorded since the last call.
pub(super) fn taken(recorded: &Recorded) -> Vec<Submission> {
    std::mem::take(&mut *recorded.lock().unwrap())
}

/// The cluster the fake client talks to.
struct Cluster {
    /// What `max_array_tasks` answers.
    limit: usize,
    /// Job ids handed out so far.
    ids: u32,
    /// The tasks the scheduler lists, by (job id, array index).
    queue: BTreeMap<(String, usize), TaskState>,
    /// Every call, with the fake time it was made at: `submit`, `query`, `cancel 1 2`,
    /// `cancel_tasks 1 [0, 2]`, `max_array_tasks`.
    calls: Vec<(String, Instant)>,
    /// Scripted failures of the next calls of a kind (`"submit"`, `"query"`, ...).
    failures: VecDeque<(&'static str, CallError)>,
    /// While set, every call fails as with an unreachable controller.
    down: bool,
    clock: FakeClock,
}

fn transient(message: &str) -> CallError {
    CallError {
        message: message.to_owned(),
        transient: true,
    }
}

impl Cluster {
    /// Logs a call and says how it fails, if it does.
    fn call(&mut self, what: &str) -> std::result::Result<(), CallError> {
        let kind = what.split(' ').next().unwrap_or(what);
        let now = self.clock.now();
        self.calls.push((what.to_owned(), now));
        if self.down {
            return Err(transient(
                "Unable to contact slurm controller (connect failure)",
            ));
        }
        match self.failures.iter().position(|(k, _)| *k == kind) {
            Some(i) => Err(self.failures.remove(i).expect("listed").1),
            None => Ok(()),
        }
    }
}

/// A [`Client`] over a shared [`Cluster`]; submitted arrays are listed as active until the
/// test says otherwise.
struct FakeClient(Arc<Mutex<Cluster>>);

impl Client for FakeClient {
    fn max_array_tasks(&mut self) -> Result<ArrayLimit> {
        let mut c = self.0.lock().unwrap();
        let now = c.clock.now();
        c.calls.push(("max_array_tasks".into(), now));
        Ok(ArrayLimit {
            tasks: c.limit,
            source: "the fake cluster".into(),
        })
    }
    fn submit(&mut self, script: &Path) -> std::result::Result<String, CallError> {
        let mut c = self.0.lock().unwrap();
        c.call("submit")?;
        // The task count from the script's own header (`#SBATCH --array=0-N[%K]`).
        let text = std::fs::read_to_string(script).expect("the script was written");
        let spec = text
            .lines()
            .find_map(|l| l.strip_prefix("#SBATCH --array=0-"))
            .expect("an array header");
        let last: usize = spec.split('%').next().unwrap().parse().unwrap();
        c.ids += 1;
        let id = c.ids.to_string();
        for t in 0..=last {
            c.queue.insert((id.clone(), t), TaskState::Active);
        }
        Ok(id)
    }
    fn query(
        &mut self,
        job_ids: &[String],
    ) -> std::result::Result<HashMap<(String, usize), TaskState>, CallError> {
        let mut c = self.0.lock().unwrap();
        c.call("query")?;
        Ok(c.queue
            .iter()
            .filter(|((job, _), _)| job_ids.contains(job))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
    fn cancel(&mut self, job_ids: &[String]) -> std::result::Result<(), CallError> {
        let mut c = self.0.lock().unwrap();
        c.call(&format!("cancel {}", job_ids.join(" ")))?;
        c.queue.retain(|(job, _), _| !job_ids.contains(job));
        Ok(())
    }
    fn cancel_tasks(
        &mut self,
        job_id: &str,
        indices: &[usize],
    ) -> std::result::Result<(), CallError> {
        let mut c = self.0.lock().unwrap();
        c.call(&format!("cancel_tasks {job_id} {indices:?}"))?;
        c.queue
            .retain(|(job, t), _| job != job_id || !indices.contains(t));
        Ok(())
    }
}

/// A stage on the fake cluster, driven by hand.
struct Rig {
    b: ClusterBackend,
    rx: Receiver<Event>,
    recorded: Recorded,
    cluster: Arc<Mutex<Cluster>>,
    clock: FakeClock,
    dir: tempfile::TempDir,
    /// Every array submitted so far, in order.
    subs: Vec<Submission>,
    /// Every outcome reported so far, with the fake time it was reported at.
    done: Vec<(JobRecord, Instant)>,
    /// Every warning reported so far.
    warnings: Vec<String>,
    start: Instant,
}

impl Rig {
    /// A Slurm stage with arrays of at most `limit` tasks and `settings` changed.
    fn new(limit: usize, settings: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), "slurm", settings);
        std::fs::create_dir_all(&spec.paths.staging_dir).unwrap();
        let clock = FakeClock::new();
        let cluster = Arc::new(Mutex::new(Cluster {
            limit,
            ids: 0,
            queue: BTreeMap::new(),
            calls: Vec::new(),
            failures: VecDeque::new(),
            down: false,
            clock: clock.clone(),
        }));
        let (tx, rx) = std::sync::mpsc::channel();
        let (recorder, recorded) = recording();
        let b = ClusterBackend::with_clock(
            &super::slurm::SYNTAX,
            Box::new(FakeClient(Arc::clone(&cluster))),
            Box::new(clock.clone()),
            spec,
            tx,
            recorder,
        )
        .unwrap();
        let start = clock.now();
        Self {
            b,
            rx,
            recorded,
            cluster,
            clock,
            dir,
            subs: Vec::new(),
            done: Vec::new(),
            warnings: Vec::new(),
            start,
        }
    }

    fn cluster(&self) -> MutexGuard<'_, Cluster> {
        self.cluster.lock().unwrap()
    }

    /// Seconds of fake time since the rig was made.
    fn secs(&self, at: Instant) -> f64 {
        at.duration_since(self.start).as_secs_f64()
    }

    fn collect(&mut self) {
        self.subs.extend(taken(&self.recorded));
        while let Ok(e) = self.rx.try_recv() {
            match e {
                Event::Finished { record, staged, .. } => {
                    if let Some(p) = staged {
                        // The runner deletes an outcome file once its record is durable.
                        std::fs::remove_file(p).unwrap();
                    }
                    self.done.push((record, self.clock.now()));
                }
                Event::Warning { message } => self.warnings.push(message),
                Event::Signal { .. } => {}
            }
        }
    }

    fn submit(&mut self, launches: Vec<Launch>) -> Result<()> {
        let r = self.b.submit(launches);
        self.collect();
        r
    }

    /// Moves the clock to the next poll and polls.
    fn step(&mut self) -> Result<()> {
        let wait = self.b.next_poll().expect("a cluster backend polls");
        self.clock.advance(wait);
        let r = self.b.poll();
        self.collect();
        r
    }

    /// Steps until `until` holds, at most `max` times; panics otherwise.
    fn step_until(&mut self, max: usize, until: impl Fn(&Self) -> bool) {
        for _ in 0..max {
            if until(self) {
                return;
            }
            self.step().unwrap();
        }
        assert!(until(self), "not reached in {max} polls");
    }

    /// The jobs (index, id, attempt) of task `task` of array `job_id`.
    fn jobs_of(&self, job_id: &str, task: usize) -> Vec<(usize, String, u32)> {
        let s = self
            .subs
            .iter()
            .find(|s| s.job_id == job_id)
            .expect("a submitted array");
        s.tasks[task]
            .iter()
            .map(|j| (j.index, j.id.clone(), j.attempt))
            .collect()
    }

    /// Task `task` of array `job_id` ran its jobs (exit `rc`): their outcome files are in
    /// the staging folder and the scheduler no longer lists the task.
    fn complete(&mut self, job_id: &str, task: usize, rc: i32) {
        for (index, id, attempt) in self.jobs_of(job_id, task) {
            stage_outcome(self.dir.path(), index, &id, attempt, rc);
        }
        self.cluster().queue.remove(&(job_id.to_owned(), task));
    }

    /// The scheduler forgets task `task` of array `job_id` without any outcome file.
    fn vanish(&mut self, job_id: &str, task: usize) {
        self.cluster().queue.remove(&(job_id.to_owned(), task));
    }

    /// Calls made so far whose text starts with `what`.
    fn calls(&self, what: &str) -> usize {
        self.cluster()
            .calls
            .iter()
            .filter(|(c, _)| c.starts_with(what))
            .count()
    }

    /// The fake times (seconds since the start) of the calls starting with `what`.
    fn call_times(&self, what: &str) -> Vec<f64> {
        self.cluster()
            .calls
            .iter()
            .filter(|(c, _)| c.starts_with(what))
            .map(|(_, at)| self.secs(*at))
            .collect()
    }

    /// The outcome recorded for job `id` (exactly one).
    fn outcome(&self, id: &str) -> Outcome {
        let mut of = self.done.iter().filter(|(r, _)| r.id == id);
        let (r, _) = of.next().unwrap_or_else(|| panic!("no outcome for {id}"));
        assert!(of.next().is_none(), "{id} has two outcomes");
        r.outcome.clone()
    }

    /// The arrays the scheduler lists now.
    fn listed_arrays(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .cluster()
            .queue
            .keys()
            .map(|(j, _)| j.clone())
            .collect();
        ids.dedup();
        ids
    }
}

/// Writes an outcome file as `templates/wrapper.sh` does.
fn stage_outcome(dir: &Path, index: usize, id: &str, attempt: u32, rc: i32) {
    std::fs::write(
        dir.join(format!("staging/{id}.{attempt}.json")),
        format!(
            "{{\"index\":{index},\"id\":\"{id}\",\"attempt\":{attempt},\"rc\":{rc},\"start\":100.0,\"end\":101.0}}"
        ),
    )
    .unwrap();
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Status calls come one `poll_interval` after a submission, then at doubling intervals up
/// to `status_interval`; harvesting polls in between start at `poll_interval` and grow ×1.5
/// up to `poll_max` while nothing happens, and drop back once an outcome arrives.
#[test]
fn status_calls_and_polls_back_off() {
    let mut r = Rig::new(1000, |s| {
        s.poll_interval = secs(1);
        s.poll_max = secs(8);
        s.status_interval = secs(16);
    });
    r.submit(launches(2)).unwrap();
    let mut polls = vec![0.0];
    while r.secs(r.clock.now()) < 100.0 {
        r.step().unwrap();
        polls.push(r.secs(r.clock.now()));
    }
    let queries = r.call_times("query");
    let gaps: Vec<f64> = queries.windows(2).map(|w| w[1] - w[0]).collect();
    // 1 s after the submission, then 1, 2, 4, 8, 16, 16 .. s apart.
    assert_eq!(queries[0], 1.0, "{queries:?}");
    let doubling: Vec<f64> = (0..gaps.len()).map(|i| f64::from(1 << i.min(4))).collect();
    assert_eq!(gaps, doubling, "status calls at {queries:?}");
    assert_eq!(queries.len(), 10, "{queries:?}");
    // Harvest polls grow and are capped by poll_max (status calls may come between them).
    let gaps: Vec<f64> = polls.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|&g| g > 0.0 && g <= 8.0), "{polls:?}");
    assert!(gaps.iter().filter(|&&g| g == 8.0).count() >= 5, "{polls:?}");
    // An outcome arrives: the next poll comes one poll_interval later again.
    r.complete("1", 0, 0);
    r.step().unwrap();
    let before = r.clock.now();
    r.step().unwrap();
    assert_eq!(r.clock.now() - before, secs(1));
    assert_eq!(r.outcome("j0"), Outcome::Succeeded);
}

/// A task that leaves the queue without an outcome file is lost once `lost_grace` has passed
/// since the status call that saw it gone, not before; the others succeed; an array with
/// nothing left to track is never asked about again.
#[test]
fn a_vanished_task_is_lost_after_the_grace_period() {
    let mut r = Rig::new(1000, |s| {
        s.poll_interval = secs(1);
        s.poll_max = secs(2);
        s.status_interval = secs(4);
        s.lost_grace = secs(10);
    });
    r.submit(launches(3)).unwrap();
    r.step_until(10, |r| r.calls("query") == 1);
    r.vanish("1", 1);
    r.complete("1", 0, 0);
    r.complete("1", 2, 3);
    let vanished = r.secs(r.clock.now());
    r.step_until(50, |r| r.done.len() == 3);
    assert_eq!(r.outcome("j0"), Outcome::Succeeded);
    assert_eq!(r.outcome("j2"), Outcome::Failed { code: 3 });
    assert_eq!(r.outcome("j1"), Outcome::Lost);
    let seen_gone = r
        .call_times("query")
        .into_iter()
        .find(|&t| t > vanished)
        .unwrap();
    let lost_at = r.secs(r.done.iter().find(|(j, _)| j.id == "j1").unwrap().1);
    assert!(
        lost_at >= seen_gone + 10.0 && lost_at <= seen_gone + 10.0 + 2.0,
        "gone at {seen_gone} s, lost at {lost_at} s"
    );
    let queries = r.calls("query");
    assert!(queries <= 6, "{queries} status calls");
    for _ in 0..20 {
        r.step().unwrap();
    }
    assert_eq!(
        r.calls("query"),
        queries,
        "an array with nothing left was asked about"
    );
    assert_eq!(r.calls("submit"), 1);
}

/// A task the scheduler says ran out of time is `timed_out` after the grace period (its
/// outcome file may still come until then).
#[test]
fn a_task_past_its_time_limit_is_timed_out() {
    let mut r = Rig::new(1000, |s| {
        s.poll_interval = secs(1);
        s.poll_max = secs(1);
        s.lost_grace = secs(5);
    });
    r.submit(launches(2)).unwrap();
    r.cluster()
        .queue
        .insert(("1".into(), 1), TaskState::TimedOut);
    r.complete("1", 0, 0);
    r.step_until(20, |r| r.done.len() == 2);
    assert_eq!(r.outcome("j0"), Outcome::Succeeded);
    assert_eq!(r.outcome("j1"), Outcome::TimedOut);
}

/// A task killed at its time limit leaves the queue at once, but the scheduler's accounting
/// says so only later (Grid Engine's `qacct`, up to 15 s): the task is asked about once more
/// when its grace period ends, so it is timed out, not lost, even when the regular status
/// cadence has grown past the grace period.
#[test]
fn a_late_accounting_record_still_makes_a_task_timed_out() {
    let mut r = Rig::new(1000, |s| {
        s.poll_interval = secs(1);
        s.poll_max = secs(2);
        s.status_interval = secs(30);
        s.lost_grace = secs(20);
    });
    r.submit(launches(2)).unwrap();
    r.step_until(10, |r| r.calls("query") == 1);
    r.vanish("1", 1);
    r.complete("1", 0, 0);
    let vanished = r.clock.now();
    // The accounting knows 16 s later: after the status calls at 3, 7 and 15 s, before the
    // one at 31 s, and before the grace period (20 s from the call that saw it gone) ends.
    r.step_until(100, |r| r.clock.now() >= vanished + secs(16));
    assert!(
        r.done.iter().all(|(j, _)| j.id != "j1"),
        "decided too early"
    );
    r.cluster()
        .queue
        .insert(("1".into(), 1), TaskState::TimedOut);
    r.step_until(100, |r| r.done.len() == 2);
    assert_eq!(r.outcome("j0"), Outcome::Succeeded);
    assert_eq!(r.outcome("j1"), Outcome::TimedOut);
    let queries = r.call_times("query");
    assert!(queries.len() <= 6, "status calls at {queries:?}");
}

/// Tasks stuck in an error state (Grid Engine `Eqw`) are removed with one call per array,
/// whatever their number, and reported lost (the runner resubmits lost jobs).
#[test]
fn stuck_tasks_are_removed_with_one_call_and_reported_lost() {
    let mut r = Rig::new(1000, |s| {
        s.poll_interval = secs(1);
        s.poll_max = secs(1);
    });
    r.submit(launches(4)).unwrap();
    for t in [0, 2] {
        r.cluster()
            .queue
            .insert(("1".into(), t), TaskState::Error("state Eqw".into()));
    }
    r.step_until(5, |r| r.done.len() == 2);
    assert_eq!(r.outcome("j0"), Outcome::Lost);
    assert_eq!(r.outcome("j2"), Outcome::Lost);
    assert_eq!(r.calls("cancel_tasks"), 1);
    assert_eq!(r.calls("cancel_tasks 1 [0, 2]"), 1);
    r.complete("1", 1, 0);
    r.complete("1", 3, 0);
    r.step_until(5, |r| r.done.len() == 4);
    assert_eq!(r.outcome("j3"), Outcome::Succeeded);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);
}

/// A stuck task the scheduler refuses to remove is still reported lost (the run goes on),
/// and the refusal is a warning naming the array, its tasks and the scheduler's words.
#[test]
fn a_failed_removal_of_stuck_tasks_is_a_warning() {
    let mut r = Rig::new(1000, |s| {
        s.poll_interval = secs(1);
        s.poll_max = secs(1);
    });
    r.submit(launches(2)).unwrap();
    r.cluster()
        .queue
        .insert(("1".into(), 1), TaskState::Error("state Eqw".into()));
    r.cluster().failures.push_back((
        "cancel_tasks",
        CallError {
            message: "permission denied".into(),
            transient: false,
        },
    ));
    r.step_until(5, |r| r.done.len() == 1);
    assert_eq!(r.outcome("j1"), Outcome::Lost);
    assert_eq!(r.calls("cancel_tasks 1 [1]"), 1);
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    let w = &r.warnings[0];
    assert!(
        w.contains("array 1") && w.contains("[1]") && w.contains("permission denied"),
        "{w}"
    );
    r.complete("1", 0, 0);
    r.step_until(5, |r| r.done.len() == 2);
    assert_eq!(r.outcome("j0"), Outcome::Succeeded);
}

/// A submission that fails with an error worth retrying keeps its jobs queued and is tried
/// again at each poll; nothing is submitted twice and no script is left behind.
#[test]
fn transient_submit_failures_are_retried_then_succeed() {
    let mut r = Rig::new(1000, |s| {
        s.poll_interval = secs(1);
        s.poll_max = secs(1);
    });
    for _ in 0..2 {
        r.cluster()
            .failures
            .push_back(("submit", transient("Socket timed out")));
    }
    r.submit(launches(3)).unwrap();
    assert!(r.subs.is_empty());
    r.step_until(5, |r| r.subs.len() == 1);
    assert_eq!(r.calls("submit"), 3);
    assert_eq!(r.subs[0].tasks.len(), 3);
    let scripts: Vec<_> = std::fs::read_dir(r.dir.path().join("scripts"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(scripts, ["r-1.sh"]);
    for t in 0..3 {
        r.complete("1", t, 0);
    }
    r.step_until(5, |r| r.done.len() == 3);
    assert!(r.done.iter().all(|(j, _)| j.outcome == Outcome::Succeeded));
}

/// A script the scheduler refuses (not worth retrying) stops the stage with its stderr.
#[test]
fn a_refused_submission_is_an_error() {
    let mut r = Rig::new(1000, |_| {});
    r.cluster().failures.push_back((
        "submit",
        CallError {
            message: "invalid partition specified: nope".into(),
            transient: false,
        },
    ));
    let e = r.submit(launches(1)).unwrap_err().to_string();
    assert!(e.contains("refused the array script"), "{e}");
    assert_eq!(r.calls("submit"), 1);
}

/// More jobs than one array may hold go in several arrays. With `max_parallel`, one array is
/// in the queue at a time, each throttled, so the throttle holds for the whole stage; the
/// limit is asked once.
#[test]
fn throttle_holds_across_chunks() {
    let mut r = Rig::new(4, |s| {
        s.poll_interval = secs(1);
        s.poll_max = secs(1);
        s.max_parallel = Some(2);
    });
    r.submit(launches(10)).unwrap();
    let mut finished_arrays = 0;
    while finished_arrays < 3 {
        assert_eq!(r.subs.len(), finished_arrays + 1, "one array at a time");
        assert!(r.listed_arrays().len() <= 1, "{:?}", r.listed_arrays());
        let s = r.subs[finished_arrays].clone();
        let script = std::fs::read_to_string(&s.script).unwrap();
        assert!(
            script.contains(&format!("#SBATCH --array=0-{}%2\n", s.tasks.len() - 1)),
            "{script}"
        );
        for t in 0..s.tasks.len() {
            r.complete(&s.job_id, t, 0);
        }
        r.step().unwrap();
        finished_arrays += 1;
    }
    let sizes: Vec<usize> = r.subs.iter().map(|s| s.tasks.len()).collect();
    assert_eq!(sizes, [4, 4, 2]);
    r.step_until(5, |r| r.done.len() == 10);
    assert_eq!(r.calls("max_array_tasks"), 1);
    assert_eq!(r.calls("submit"), 3);
}

/// Unthrottled, every chunk is submitted at once; with `max_array_size` set the cluster is
/// not asked for its limit.
#[test]
fn unthrottled_chunks_go_in_at_once_and_the_setting_spares_the_question() {
    let mut r = Rig::new(4, |s| s.max_array_size = Some(3));
    r.submit(launches(10)).unwrap();
    let sizes: Vec<usize> = r.subs.iter().map(|s| s.tasks.len()).collect();
    assert_eq!(sizes, [3, 3, 3, 1]);
    assert_eq!(r.calls("max_array_tasks"), 0);
    assert_eq!(r.listed_arrays().len(), 4);
}

/// A new runner adopts an earlier run's array with one status call: a task still listed or
/// whose outcome file waits is tracked (and ends as usual); a stuck one is removed; one that
/// is gone without an outcome is left for the runner to launch again.
#[test]
fn adopted_tasks_are_tracked_removed_or_handed_back() {
    let mut r = Rig::new(1000, |s| {
        s.poll_interval = secs(1);
        s.poll_max = secs(1);
    });
    {
        let mut c = r.cluster();
        c.queue.insert(("77".into(), 0), TaskState::Active);
        c.queue
            .insert(("77".into(), 1), TaskState::Error("state Eqw".into()));
    }
    stage_outcome(r.dir.path(), 2, "j2", 1, 0);
    let adopt: Vec<Adopt> = launches(4)
        .into_iter()
        .enumerate()
        .map(|(position, launch)| Adopt {
            launch,
            job_id: "77".into(),
            position,
        })
        .collect();
    assert_eq!(r.b.adopt(adopt), [0, 2]);
    assert_eq!(r.calls("query"), 1);
    assert_eq!(r.calls("cancel_tasks 77 [1]"), 1);
    r.step().unwrap();
    assert_eq!(r.outcome("j2"), Outcome::Succeeded);
    stage_outcome(r.dir.path(), 0, "j0", 1, 0);
    r.cluster().queue.remove(&("77".into(), 0));
    r.step_until(5, |r| r.done.len() == 2);
    assert_eq!(r.outcome("j0"), Outcome::Succeeded);
    assert_eq!(r.calls("submit"), 0);
}

/// When the scheduler cannot be asked while adopting, everything is kept; what is really
/// gone is found lost after the grace period once it answers again.
#[test]
fn adoption_during_an_outage_keeps_everything() {
    let mut r = Rig::new(1000, |s| {
        s.poll_interval = secs(1);
        s.poll_max = secs(1);
        s.lost_grace = secs(5);
    });
    r.cluster().down = true;
    let adopt: Vec<Adopt> = launches(2)
        .into_iter()
        .enumerate()
        .map(|(position, launch)| Adopt {
            launch,
            job_id: "77".into(),
            position,
        })
        .collect();
    assert_eq!(r.b.adopt(adopt), [0, 1]);
    r.cluster().down = false;
    r.step_until(30, |r| r.done.len() == 2);
    assert_eq!(r.outcome("j0"), Outcome::Lost);
    assert_eq!(r.outcome("j1"), Outcome::Lost);
}

/// The controller is unreachable for two minutes while arrays run and more jobs come: every
/// call fails. Polls neither fail nor block, outcomes that arrive meanwhile are collected,
/// nothing is taken for lost, the new jobs are submitted once the controller is back, and
/// every job ends with exactly one outcome.
#[test]
fn a_controller_outage_loses_nothing() {
    let mut r = Rig::new(2, |s| {
        s.poll_interval = secs(1);
        s.poll_max = secs(4);
        s.status_interval = secs(8);
        s.lost_grace = secs(5);
    });
    r.submit(launches(4)).unwrap();
    assert_eq!(r.subs.len(), 2);
    r.cluster().down = true;
    let down_at = r.clock.now();
    r.complete("1", 0, 0);
    let more: Vec<Launch> = launches(6).into_iter().skip(4).collect();
    r.submit(more).unwrap();
    while r.clock.now() - down_at < secs(120) {
        r.step().unwrap();
        assert!(r.b.next_poll().unwrap() <= secs(8));
    }
    assert_eq!(r.outcome("j0"), Outcome::Succeeded);
    assert_eq!(r.done.len(), 1, "{:?}", r.done);
    assert!(r.calls("query") >= 10 && r.calls("submit") >= 10);
    assert_eq!(r.subs.len(), 2, "submitted while the controller was down");
    r.cluster().down = false;
    r.step_until(10, |r| r.subs.len() == 3);
    for (job, tasks) in [("1", 2), ("2", 2), ("3", 2)] {
        for t in 0..tasks {
            if (job, t) != ("1", 0) {
                r.complete(job, t, 0);
            }
        }
    }
    r.step_until(20, |r| r.done.len() == 6);
    for i in 0..6 {
        assert_eq!(r.outcome(&format!("j{i}")), Outcome::Succeeded);
    }
}

/// Submissions that keep failing for [`SUBMIT_PATIENCE`] stop the run with the stage named.
#[test]
fn an_outage_longer_than_the_patience_stops_the_stage() {
    let mut r = Rig::new(1000, |s| {
        s.poll_interval = secs(1);
        s.poll_max = secs(60);
    });
    r.cluster().down = true;
    r.submit(launches(1)).unwrap();
    let start = r.clock.now();
    let e = loop {
        match r.step() {
            Ok(()) => assert!(r.clock.now() - start <= SUBMIT_PATIENCE + secs(60)),
            Err(e) => break e.to_string(),
        }
    };
    assert!(r.clock.now() - start >= SUBMIT_PATIENCE);
    assert!(e.contains("stage `a`") && e.contains("kept failing"), "{e}");
}

/// A cancel the scheduler does not take is tried four times over 3.5 s; the arrays are then
/// reported as not cancelled and their jobs get no outcome (they may still run), while jobs
/// never submitted are not run.
#[test]
fn a_cancel_during_an_outage_is_retried_then_reported() {
    let mut r = Rig::new(2, |s| s.max_parallel = Some(1));
    r.submit(launches(3)).unwrap();
    r.cluster().down = true;
    let before = r.clock.now();
    let settled = r.b.cancel(CancelMode::Graceful);
    assert_eq!(r.clock.now() - before, Duration::from_millis(3500));
    assert_eq!(r.calls("cancel 1"), 4);
    assert_eq!(settled.len(), 1);
    assert!(matches!(settled[0].1, Outcome::NotRun { .. }));
    let u = r.b.uncancelled().expect("reported");
    assert_eq!(u.job_ids, ["1"]);
    assert_eq!(u.launches.len(), 2);
    assert!(u.error.contains("tried 4 times"), "{}", u.error);
}

/// A cancel that works: one call for every array, and the tracked jobs are interrupted.
#[test]
fn a_cancel_is_one_call() {
    let mut r = Rig::new(2, |_| {});
    r.submit(launches(5)).unwrap();
    let settled = r.b.cancel(CancelMode::Graceful);
    assert_eq!(r.calls("cancel"), 1);
    assert_eq!(r.calls("cancel 1 2 3"), 1);
    assert_eq!(settled.len(), 5);
    assert!(settled.iter().all(|(_, o)| *o == Outcome::Interrupted));
    assert!(r.listed_arrays().is_empty());
}
