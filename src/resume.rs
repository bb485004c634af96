//! Resume: what the store holds of a stage's earlier attempts, and for each job what a run
//! does with it.
//!
//! [`StageHistory`] gathers a stage's recorded state (the latest ledger record of each job as
//! a small [`JobState`], the submitted arrays, the jobs local bundles ran, the outcome files
//! no runner has collected yet), and [`StageHistory::decide`] makes the one decision per job:
//! **reuse** a recorded success made with the job's current fingerprint, or **launch** it with
//! the next attempt number (attempts are numbered per job across runs, so outcome files never
//! collide). [`StageHistory::adoptable`] names the submitted tasks a new runner **adopts**
//! instead of launching again, and [`StageHistory::counts`] gives `plan` its counts from the
//! same rules. [`collect_staged`] moves outcome files into the ledger (through
//! [`store::record`]), so that they count like any recorded attempt.
//!
//! Reads the store; writes only through [`store::record`] (and deletes outcome files already
//! recorded through [`store::remove_staged`]). Never asks a scheduler.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::backend::Launch;
use crate::error::Result;
use crate::jobs::Jobs;
use crate::manifest::ResultMode;
use crate::outcome::{JobRecord, StagedOutcome};
use crate::plan::{Fp, PlannedJob};
use crate::store::{self, Bundled, JobState, JobStates, Layout, Submission, SubmittedJob};

/// How a run treats recorded outcomes (from the command line).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Policy {
    /// `--force`: launch every job, whatever is recorded.
    pub force: bool,
    /// `--retry-failed`: reuse every recorded success, even with a changed fingerprint.
    pub retry_failed: bool,
    /// The stage is taken as recorded (`--recorded-needs`): nothing is launched.
    pub recorded: bool,
}

/// What a run does with one job.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Decision {
    /// Its latest record stands: a success that is reused, or (for a stage taken as recorded)
    /// whatever it recorded last.
    Recorded(JobState),
    /// Taken as recorded, but nothing is recorded: it did not run.
    NotRecorded,
    /// Launch it as this attempt.
    Launch {
        /// The attempt number.
        attempt: u32,
    },
}

/// A task of an earlier run's array that a new runner takes over instead of launching its job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Adoptable {
    /// The job's index.
    pub index: usize,
    /// The attempt the task runs.
    pub attempt: u32,
    /// The array's scheduler job id.
    pub job_id: String,
    /// The task's position in the array.
    pub position: usize,
}

/// What `plan` says a run would do with a stage's jobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Never recorded.
    pub new: usize,
    /// Succeeded with another fingerprint.
    pub changed: usize,
    /// Did not succeed.
    pub failed: usize,
    /// Succeeded with the current fingerprint: reused.
    pub done: usize,
}

/// An outcome file newer than the job's latest record (not collected yet).
#[derive(Clone, Debug)]
pub(crate) struct Staged {
    /// The outcome.
    pub outcome: StagedOutcome,
    /// The fingerprint a local bundle recorded for it (cluster arrays are adopted whatever it was).
    pub fp: Option<String>,
}

/// A stage's recorded state, as resume needs it.
#[derive(Debug, Default)]
pub(crate) struct StageHistory {
    states: JobStates,
    /// Highest attempt of each job in submissions and bundles, where above the ledger's.
    submitted: HashMap<Box<str>, u32>,
    submissions: Vec<Submission>,
    staged: HashMap<String, Staged>,
}

impl StageHistory {
    /// Reads a stage's ledger (one record at a time, keeping a [`JobState`] per job), its
    /// submissions and bundles, and the outcome files waiting in its staging folder.
    ///
    /// # Errors
    /// Unreadable or corrupt state files.
    pub(crate) fn load(layout: &Layout, stage: &str) -> Result<Self> {
        Self::load_with(layout, stage, None)
    }

    /// [`StageHistory::load`] with the ledger's states already read (`None`: read them now).
    ///
    /// # Errors
    /// As [`StageHistory::load`].
    pub(crate) fn load_with(
        layout: &Layout,
        stage: &str,
        states: Option<JobStates>,
    ) -> Result<Self> {
        let states = match states {
            Some(s) => s,
            None => store::read_states(&layout.ledger(stage))?,
        };
        let submissions: Vec<Submission> = store::read_lines(&layout.submissions(stage))?;
        let bundled: Vec<Bundled> = store::read_lines(&layout.bundled(stage))?;
        let mut submitted: HashMap<Box<str>, u32> = HashMap::new();
        let jobs = submissions
            .iter()
            .flat_map(|s| s.tasks.iter().flatten())
            .chain(bundled.iter().flat_map(|b| b.tasks.iter().flatten()));
        for j in jobs {
            if states
                .get(j.id.as_str())
                .is_some_and(|s| s.max_attempt >= j.attempt)
            {
                continue;
            }
            let a = submitted.entry(j.id.as_str().into()).or_default();
            *a = (*a).max(j.attempt);
        }
        let mut staged: HashMap<String, Staged> = HashMap::new();
        for (_, s) in store::read_staged(&layout.staging_dir(stage)) {
            let newer = states
                .get(s.id.as_str())
                .is_none_or(|r| s.attempt > r.attempt)
                && staged
                    .get(&s.id)
                    .is_none_or(|o| s.attempt > o.outcome.attempt);
            if newer {
                staged.insert(
                    s.id.clone(),
                    Staged {
                        outcome: s,
                        fp: None,
                    },
                );
            }
        }
        for j in bundled.iter().flat_map(|b| b.tasks.iter().flatten()) {
            if let Some(o) = staged.get_mut(&j.id) {
                if o.outcome.attempt == j.attempt {
                    o.fp = Some(j.fp.clone());
                }
            }
        }
        Ok(Self {
            states,
            submitted,
            submissions,
            staged,
        })
    }

    /// The latest recorded state of a job.
    pub(crate) fn state(&self, id: &str) -> Option<&JobState> {
        self.states.get(id)
    }

    /// Every job's latest recorded state, by id.
    pub(crate) fn states(&self) -> &JobStates {
        &self.states
    }

    /// The outcome file of a job that is newer than its latest record, if any.
    pub(crate) fn staged(&self, id: &str) -> Option<&Staged> {
        self.staged.get(id)
    }

    /// Every outcome file newer than its job's latest record, by job id.
    pub(crate) fn staged_all(&self) -> &HashMap<String, Staged> {
        &self.staged
    }

    /// Whether outcome files wait to be collected.
    pub(crate) fn has_staged(&self) -> bool {
        !self.staged.is_empty()
    }

    /// The highest attempt a job had so far, in the ledger, an array or a bundle (0 when none).
    pub(crate) fn last_attempt(&self, id: &str) -> u32 {
        let recorded = self.states.get(id).map_or(0, |s| s.max_attempt);
        recorded.max(self.submitted.get(id).copied().unwrap_or(0))
    }

    /// Whether attempt `attempt` of a job is recorded (or a later one is).
    fn recorded(&self, id: &str, attempt: u32) -> bool {
        self.states
            .get(id)
            .is_some_and(|s| s.max_attempt >= attempt)
    }

    /// The decision for a job with fingerprint `fp`.
    pub(crate) fn decide(&self, id: &str, fp: &str, policy: Policy) -> Decision {
        self.decide_at(usize::MAX, id, fp, policy)
    }

    /// [`StageHistory::decide`] for the job at `index` (its state looked for there first, see
    /// [`JobStates::get_at`]).
    pub(crate) fn decide_at(&self, index: usize, id: &str, fp: &str, policy: Policy) -> Decision {
        let latest = self.states.get_at(index, id);
        if policy.recorded {
            return latest.map_or(Decision::NotRecorded, |s| Decision::Recorded(*s));
        }
        match latest {
            Some(s) if reuses(s, fp, policy) => Decision::Recorded(*s),
            _ => Decision::Launch {
                attempt: self.last_attempt(id) + 1,
            },
        }
    }

    /// The tasks of submitted arrays that run one of `jobs` (the same job: its id, and its
    /// fingerprint when the array recorded one) as an attempt without a recorded outcome, for
    /// a job that would not be reused: a new runner adopts them rather than launching those
    /// jobs again.
    pub(crate) fn adoptable(&self, jobs: &Jobs, fps: &[Fp], policy: Policy) -> Vec<Adoptable> {
        let mut out = Vec::new();
        for s in &self.submissions {
            for (position, task) in s.tasks.iter().enumerate() {
                for j in task {
                    let Some((job, fp)) = jobs.get(j.index).zip(fps.get(j.index)) else {
                        continue;
                    };
                    let same_job = job.id == j.id && (j.fp.is_empty() || j.fp == fp.as_str());
                    if !same_job || self.recorded(&j.id, j.attempt) {
                        continue;
                    }
                    // A recorded success of this version is reused, not adopted again.
                    let reuse = Policy {
                        force: policy.force,
                        ..Policy::default()
                    };
                    if let Decision::Recorded(_) = self.decide(&j.id, fp.as_str(), reuse) {
                        continue;
                    }
                    out.push(Adoptable {
                        index: j.index,
                        attempt: j.attempt,
                        job_id: s.job_id.clone(),
                        position,
                    });
                }
            }
        }
        out
    }

    /// The submitted jobs without a recorded outcome or a waiting outcome file, per array
    /// (what `cancel` cancels and records as interrupted).
    pub(crate) fn unfinished<'a>(
        &'a self,
        layout: &Layout,
        stage: &str,
    ) -> Vec<(&'a Submission, Vec<&'a SubmittedJob>)> {
        self.submissions
            .iter()
            .map(|s| {
                let open: Vec<&SubmittedJob> = s
                    .tasks
                    .iter()
                    .flatten()
                    .filter(|j| !self.recorded(&j.id, j.attempt))
                    // An outcome file waiting in staging means the job ended: the next run
                    // collects it.
                    .filter(|j| !layout.staged_outcome(stage, &j.id, j.attempt).exists())
                    .collect();
                (s, open)
            })
            .filter(|(_, open)| !open.is_empty())
            .collect()
    }

    /// What a run would do with `jobs` (fingerprints `fps`): the jobs [`Self::decide`]
    /// reuses are done, the others new, changed or failed by their latest record. An outcome
    /// file waiting in the staging folder counts as the job's latest outcome, since `run`
    /// collects it first (a success in it is done when the fingerprint a local bundle recorded
    /// for it is the job's, or when none is recorded).
    pub(crate) fn counts(&self, jobs: &Jobs, fps: &[Fp]) -> Counts {
        let mut c = Counts::default();
        for (j, fp) in jobs.iter().zip(fps) {
            let id = j.id;
            let fp = fp.as_str();
            if let Some(s) = self.staged.get(id) {
                match (
                    s.outcome.succeeded(),
                    s.fp.as_deref().is_none_or(|f| f == fp),
                ) {
                    (true, true) => c.done += 1,
                    (true, false) => c.changed += 1,
                    (false, _) => c.failed += 1,
                }
                continue;
            }
            // What `decide` does with the job under the default policy, from the state read
            // once (`decide` itself would also look up its attempt number).
            match self.states.get_at(j.index, id) {
                None => c.new += 1,
                Some(r) if reuses(r, fp, Policy::default()) => c.done += 1,
                Some(r) if r.succeeded() => c.changed += 1,
                Some(_) => c.failed += 1,
            }
        }
        c
    }

    /// The launches a run with `policy` would make now for planned jobs (those not reused),
    /// each with its attempt number.
    pub(crate) fn launches(&self, jobs: &[Arc<PlannedJob>], policy: Policy) -> Vec<Launch> {
        jobs.iter()
            .filter_map(|j| match self.decide(j.id.as_str(), &j.fp, policy) {
                Decision::Launch { attempt } => Some(Launch {
                    job: Arc::clone(j),
                    attempt,
                }),
                _ => None,
            })
            .collect()
    }
}

/// The reuse rule: a job's latest record `latest` stands (is reused rather than launched
/// again) when it is a success made with the job's current fingerprint `fp` (or any, with
/// `--retry-failed`), and `--force` is not given.
fn reuses(latest: &JobState, fp: &str, policy: Policy) -> bool {
    !policy.force && latest.succeeded() && (latest.fp_is(fp) || policy.retry_failed)
}

/// How a stage's results are recorded (its `result` settings).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ResultSpec {
    /// `result`.
    pub mode: ResultMode,
    /// `result_max_bytes`.
    pub max_bytes: u64,
}

/// Which outcome files [`collect_staged`] moves into the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Collect {
    /// Every outcome file (a runner starting the stage).
    All,
    /// Only those of jobs a local bundle ran (listed in `bundled.jsonl`).
    Bundled,
}

/// Moves outcome files an earlier run left in a stage's staging folder (a killed runner, a
/// detached or hand-submitted bundle) into its ledger, with the fingerprint each job had when
/// it was submitted or bundled and its result read as the stage's `result` says, so that they
/// count like any recorded attempt: a success with an unchanged fingerprint is reused, a
/// failure runs again. Files of attempts already recorded are deleted. Returns how many
/// records it appended. Call it holding the workflow lock.
///
/// # Errors
/// When the state cannot be read or written.
pub(crate) fn collect_staged(
    layout: &Layout,
    stage: &str,
    result: ResultSpec,
    run: &str,
    which: Collect,
) -> Result<usize> {
    let files = store::read_staged(&layout.staging_dir(stage));
    if files.is_empty() {
        return Ok(0);
    }
    let submissions: Vec<Submission> = store::read_lines(&layout.submissions(stage))?;
    let bundled: Vec<Bundled> = store::read_lines(&layout.bundled(stage))?;
    let mut fps: HashMap<(&str, u32), &str> = HashMap::new();
    let bundled_jobs = bundled.iter().flat_map(|b| b.tasks.iter().flatten());
    if which == Collect::All {
        for j in submissions.iter().flat_map(|s| s.tasks.iter().flatten()) {
            fps.insert((j.id.as_str(), j.attempt), j.fp.as_str());
        }
    }
    for j in bundled_jobs {
        fps.insert((j.id.as_str(), j.attempt), j.fp.as_str());
    }
    let states = store::read_states(&layout.ledger(stage))?;
    let paths = layout.stage_paths(stage);
    let mut stale: Vec<PathBuf> = Vec::new();
    let mut records: Vec<(JobRecord, Option<PathBuf>)> = Vec::new();
    for (path, staged) in files {
        let fp = fps.get(&(staged.id.as_str(), staged.attempt)).copied();
        if which == Collect::Bundled && fp.is_none() {
            continue;
        }
        if states
            .get(staged.id.as_str())
            .is_some_and(|s| s.max_attempt >= staged.attempt)
        {
            stale.push(path);
            continue;
        }
        let value = store::read_result(
            result.mode,
            &paths.result(&staged.id),
            &paths.log_out(&staged.id),
            result.max_bytes,
            true,
        );
        let record = staged.record(run.to_owned(), fp.unwrap_or_default().to_owned(), value);
        records.push((record, Some(path)));
    }
    let n = store::record(layout, stage, records)?;
    store::remove_staged(stale);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Outcome;
    use crate::plan::Command;

    fn fp_of(text: &str) -> Fp {
        Fp::of(text, &Command::Shell(String::new()), "")
    }

    fn layout() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("w"));
        layout.create_stage_dirs("s").unwrap();
        (dir, layout)
    }

    fn rec(id: &str, attempt: u32, outcome: Outcome, fp: &str) -> JobRecord {
        JobRecord {
            index: 0,
            id: id.into(),
            attempt,
            outcome,
            start: Some(1.0),
            end: Some(2.0),
            run: "r".into(),
            fp: fp.into(),
            result: None,
        }
    }

    fn record(layout: &Layout, records: Vec<JobRecord>) {
        store::record(layout, "s", records.into_iter().map(|r| (r, None))).unwrap();
    }

    fn fps() -> (Fp, Fp) {
        (fp_of("this"), fp_of("other"))
    }

    #[test]
    fn a_success_with_the_same_fingerprint_is_reused() {
        let (_d, layout) = layout();
        let (fp, other) = fps();
        let (fa, _) = (fp.as_str(), other.as_str());
        record(&layout, vec![rec("a", 1, Outcome::Succeeded, fa)]);
        let h = StageHistory::load(&layout, "s").unwrap();
        assert!(matches!(
            h.decide("a", fa, Policy::default()),
            Decision::Recorded(s) if s.succeeded() && s.attempt == 1
        ));
    }

    #[test]
    fn a_changed_failed_or_forced_job_launches_above_its_last_attempt() {
        let (_d, layout) = layout();
        let (fp, other) = fps();
        let (fa, fb) = (fp.as_str(), other.as_str());
        record(
            &layout,
            vec![
                rec("a", 1, Outcome::Succeeded, fa),
                rec("b", 1, Outcome::Failed { code: 1 }, fa),
                rec("b", 2, Outcome::Failed { code: 1 }, fa),
                // Recorded as not run after it ran: new attempts still go above 2.
                rec("c", 2, Outcome::Failed { code: 1 }, fa),
                rec("c", 0, Outcome::NotRun { reason: "x".into() }, ""),
            ],
        );
        let h = StageHistory::load(&layout, "s").unwrap();
        let p = Policy::default();
        assert_eq!(h.decide("a", fb, p), Decision::Launch { attempt: 2 });
        assert_eq!(h.decide("b", fa, p), Decision::Launch { attempt: 3 });
        assert_eq!(h.decide("c", fa, p), Decision::Launch { attempt: 3 });
        assert_eq!(h.decide("new", fa, p), Decision::Launch { attempt: 1 });
        let force = Policy { force: true, ..p };
        assert_eq!(h.decide("a", fa, force), Decision::Launch { attempt: 2 });
        let retry = Policy {
            retry_failed: true,
            ..p
        };
        assert!(matches!(h.decide("a", fb, retry), Decision::Recorded(_)));
    }

    #[test]
    fn a_stage_taken_as_recorded_launches_nothing() {
        let (_d, layout) = layout();
        let (fp, other) = fps();
        let (fa, _) = (fp.as_str(), other.as_str());
        record(&layout, vec![rec("b", 1, Outcome::Failed { code: 3 }, fa)]);
        let h = StageHistory::load(&layout, "s").unwrap();
        let p = Policy {
            recorded: true,
            ..Policy::default()
        };
        assert!(matches!(
            h.decide("b", fa, p),
            Decision::Recorded(s) if s.exit_code == Some(3)
        ));
        assert_eq!(h.decide("x", fa, p), Decision::NotRecorded);
    }

    fn submission(layout: &Layout, jobs: &[(&str, usize, u32, &str)]) {
        let s = Submission {
            job_id: "77".into(),
            script: PathBuf::from("x.sh"),
            run: "r".into(),
            scheduler: "slurm".into(),
            tasks: jobs
                .iter()
                .map(|(id, index, attempt, fp)| {
                    vec![SubmittedJob {
                        index: *index,
                        id: (*id).into(),
                        attempt: *attempt,
                        fp: (*fp).into(),
                    }]
                })
                .collect(),
            submitted: None,
        };
        store::append_lines(
            &layout.submissions("s"),
            &[serde_json::to_string(&s).unwrap()],
        )
        .unwrap();
    }

    #[test]
    fn submitted_tasks_without_an_outcome_are_adopted() {
        let (_d, layout) = layout();
        let (fp, other) = fps();
        let (fa, fb) = (fp.as_str(), other.as_str());
        // a: submitted as attempt 2, recorded; b: running; c: another version of the job;
        // d: its earlier success is reused.
        record(
            &layout,
            vec![
                rec("a", 2, Outcome::Failed { code: 1 }, fa),
                rec("d", 1, Outcome::Succeeded, fa),
            ],
        );
        submission(
            &layout,
            &[
                ("a", 0, 2, fa),
                ("b", 1, 4, fa),
                ("c", 2, 1, fb),
                ("d", 3, 2, fa),
            ],
        );
        let h = StageHistory::load(&layout, "s").unwrap();
        let jobs = Jobs::with_ids(&["a", "b", "c", "d"]);
        let adopt = h.adoptable(&jobs, &[fp; 4], Policy::default());
        assert_eq!(
            adopt,
            vec![Adoptable {
                index: 1,
                attempt: 4,
                job_id: "77".into(),
                position: 1
            }]
        );
        // A new attempt goes above the submitted one.
        assert_eq!(
            h.decide("b", fa, Policy::default()),
            Decision::Launch { attempt: 5 }
        );
        // `cancel` records b and c as interrupted (a is recorded, d's attempt 2 is not).
        let open = h.unfinished(&layout, "s");
        let ids: Vec<&str> = open[0].1.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["b", "c", "d"]);
    }

    #[test]
    fn plan_counts_staged_outcomes_as_the_latest() {
        let (_d, layout) = layout();
        let (fp, other) = fps();
        let (fa, fb) = (fp.as_str(), other.as_str());
        record(
            &layout,
            vec![
                rec("done", 1, Outcome::Succeeded, fa),
                rec("changed", 1, Outcome::Succeeded, fb),
                rec("failed", 1, Outcome::Failed { code: 1 }, fa),
                rec("fixed", 1, Outcome::Failed { code: 1 }, fa),
            ],
        );
        std::fs::write(
            layout.staged_outcome("s", "fixed", 2),
            r#"{"index":3,"id":"fixed","attempt":2,"rc":0,"start":1,"end":2}"#,
        )
        .unwrap();
        let h = StageHistory::load(&layout, "s").unwrap();
        let jobs = Jobs::with_ids(&["done", "changed", "failed", "fixed", "new"]);
        let c = h.counts(&jobs, &[fp; 5]);
        assert_eq!(
            c,
            Counts {
                new: 1,
                changed: 1,
                failed: 1,
                done: 2
            }
        );
    }

    #[test]
    fn collecting_a_stdout_result_keeps_the_log() {
        // A local bundle's job with `result = "stdout"`: its result is its stdout log, which
        // stays (it used to be deleted when the outcome was collected).
        let (_d, layout) = layout();
        let (fp, other) = fps();
        let (fa, _) = (fp.as_str(), other.as_str());
        std::fs::create_dir_all(layout.logs_dir("s")).unwrap();
        std::fs::write(layout.log_out("s", "a"), "42\n").unwrap();
        std::fs::write(
            layout.bundled("s"),
            format!(
                "{{\"script\":\"x\",\"tasks\":[[{{\"index\":0,\"id\":\"a\",\"attempt\":1,\"fp\":\"{fa}\"}}]]}}\n"
            ),
        )
        .unwrap();
        let staged = layout.staged_outcome("s", "a", 1);
        std::fs::write(
            &staged,
            r#"{"index":0,"id":"a","attempt":1,"rc":0,"start":1,"end":2}"#,
        )
        .unwrap();
        let spec = ResultSpec {
            mode: ResultMode::Stdout,
            max_bytes: 1 << 20,
        };
        assert_eq!(
            collect_staged(&layout, "s", spec, "bundle", Collect::Bundled).unwrap(),
            1
        );
        assert!(layout.log_out("s", "a").exists(), "the log is kept");
        assert!(!staged.exists(), "the outcome file goes once recorded");
        let h = StageHistory::load(&layout, "s").unwrap();
        let Decision::Recorded(s) = h.decide("a", fa, Policy::default()) else {
            panic!("reused");
        };
        let mut reader = store::LedgerReader::open(layout.ledger("s")).unwrap();
        let result = reader.result_at(s.offset).unwrap().unwrap();
        assert_eq!(result.to_json(), "42");
        // Collected once: a second collection finds nothing.
        assert_eq!(
            collect_staged(&layout, "s", spec, "bundle", Collect::Bundled).unwrap(),
            0
        );
    }
}
