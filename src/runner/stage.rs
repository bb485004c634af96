//! A stage's phase during a run, each phase owning the data that exists in it: a waiting
//! stage has nothing, a running one its plan, backend, ledger and per-job slots, an ended one
//! only what later stages and the report read (its jobs, their outcomes and where their
//! results are).
//!
//! The running phase does the per-job work on its own data: start a job or take its recorded
//! outcome, record what the runner decides, retry within the budgets, adopt, submit, cancel,
//! finalize. The runner matches a stage's phase once per event and does only what crosses
//! stages or leaves the run: the reporter, feeding element-wise stages.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use crate::backend::{Adopt, Backend, CancelMode, Launch, Uncancelled};
use crate::error::Result;
use crate::jobs::Jobs;
use crate::outcome::{JobRecord, Outcome, ResultValue, Stats};
use crate::plan::{PlannedJob, StagePlan};
use crate::resume::{Decision, Policy, StageHistory};
use crate::store::{self, Layout, Ledger, LedgerReader};
use crate::summary::FailedJob;

/// How many failed jobs get their stderr tail read for the summary.
const TAILS_SHOWN: usize = 20;

/// The outcome of a job ended without a record of this run (a reused success).
pub(super) static SUCCEEDED: Outcome = Outcome::Succeeded;

/// Where a stage is in the run.
pub(super) enum Phase {
    /// Not started: its needs are not done.
    Waiting,
    /// Its jobs run.
    Running(Box<Running>),
    /// Every job ended.
    Ended(Box<Ended>),
    /// It did not start, and why.
    Skipped(String),
    /// Not selected for this run.
    Unselected,
}

impl Phase {
    /// The jobs of a started stage (running or ended).
    pub(super) fn jobs(&self) -> Option<&StageJobs> {
        match self {
            Self::Running(r) => Some(&r.jobs),
            Self::Ended(e) => Some(&e.jobs),
            _ => None,
        }
    }

    /// [`Phase::jobs`], mutably.
    pub(super) fn jobs_mut(&mut self) -> Option<&mut StageJobs> {
        match self {
            Self::Running(r) => Some(&mut r.jobs),
            Self::Ended(e) => Some(&mut e.jobs),
            _ => None,
        }
    }

    /// The running stage, if it runs.
    pub(super) fn running(&mut self) -> Option<&mut Running> {
        match self {
            Self::Running(r) => Some(r),
            _ => None,
        }
    }
}

/// One job of a started stage.
#[derive(Clone, Debug, Default)]
pub(super) struct JobSlot {
    /// Its command, once rendered (element-wise jobs, launched jobs).
    pub planned: Option<Arc<PlannedJob>>,
    /// How it ended for this run, once it did.
    pub outcome: Option<Outcome>,
    /// The offset of the ledger record that holds its result.
    pub result: Option<u64>,
    /// Its latest attempt in this run (0: none).
    pub attempt: u32,
    /// Failures retried so far (the `retries` budget).
    pub failures: u32,
    /// Losses resubmitted so far (the `resubmit_lost` budget).
    pub losses: u32,
}

/// What a started stage knows of its jobs, running or ended.
pub(super) struct StageJobs {
    /// The jobs, in order.
    pub jobs: Jobs,
    /// One slot per job.
    pub slots: Vec<JobSlot>,
    /// Jobs that did not succeed, for the summary.
    pub failed: Vec<FailedJob>,
    /// Recorded successes reused.
    pub done_before: usize,
    /// Reads results back from the stage's ledger.
    pub reader: LedgerReader,
}

impl StageJobs {
    /// Counts of the jobs' outcomes so far.
    pub(super) fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for slot in &self.slots {
            s.add(slot.outcome.as_ref());
        }
        s
    }

    /// The ids of the jobs that did not succeed (or have not ended).
    pub(super) fn failed_ids(&self) -> Vec<String> {
        self.jobs
            .iter()
            .zip(&self.slots)
            .filter(|(_, s)| !s.outcome.as_ref().is_some_and(Outcome::is_success))
            .map(|(j, _)| j.id.to_owned())
            .collect()
    }

    /// The ledger record at `offset`.
    pub(super) fn record_at(&mut self, offset: u64) -> Result<JobRecord> {
        self.reader.read_at(offset)
    }

    /// The result of job `idx`, read back from the ledger.
    pub(super) fn result(&mut self, idx: usize) -> Result<Option<ResultValue>> {
        match self.slots[idx].result {
            Some(o) => self.reader.result_at(o),
            None => Ok(None),
        }
    }
}

/// A stage whose jobs run.
pub(super) struct Running {
    /// Its jobs.
    pub jobs: StageJobs,
    /// Its plan (fingerprints, renderer, settings).
    pub plan: StagePlan,
    /// Where its jobs run.
    pub backend: Box<dyn Backend>,
    /// Its ledger, open for appending.
    pub ledger: Ledger,
    /// What earlier runs recorded.
    pub history: StageHistory,
    /// How recorded outcomes count.
    pub policy: Policy,
    /// Launches made while handling events, submitted together.
    pub queued: Vec<Launch>,
    /// Jobs without a final outcome.
    pub remaining: usize,
    /// Launches the backend has not reported back.
    pub in_flight: usize,
    /// When it started.
    pub started: Instant,
    /// When to poll its backend next.
    pub next_poll: Option<Instant>,
}

impl Running {
    /// A job ready to launch: planned already (element-wise jobs, retries), or its command
    /// rendered again from the stage's plan, which keeps only fingerprints.
    pub(super) fn planned_job(&mut self, idx: usize) -> Arc<PlannedJob> {
        let slot = &mut self.jobs.slots[idx];
        if let Some(p) = &slot.planned {
            return Arc::clone(p);
        }
        // The same renderer rendered this job when the stage was planned.
        let job = self
            .plan
            .job(self.jobs.jobs.at(idx))
            .expect("a job's command rendered when its stage was planned");
        slot.planned = Some(Arc::clone(&job));
        job
    }

    /// How job `idx` starts: launched, or ended by what earlier runs recorded (a success with
    /// the same fingerprint is reused; a stage taken as recorded keeps its latest failure,
    /// and a job of it with no record is recorded as not run).
    ///
    /// # Errors
    /// The ledger cannot be read or written.
    pub(super) fn start(&mut self, idx: usize, run_id: &str) -> Result<Start> {
        Ok(
            match self
                .history
                .decide_at(idx, self.jobs.jobs.id(idx), self.fp(idx), self.policy)
            {
                Decision::Recorded(prev) if prev.succeeded() => {
                    self.jobs.done_before += 1;
                    Start::Ended(prev.offset, None)
                }
                Decision::Recorded(prev) => {
                    Start::Ended(prev.offset, Some(self.jobs.record_at(prev.offset)?))
                }
                Decision::NotRecorded => {
                    self.not_run(idx, "it has no recorded outcome".to_owned(), run_id)?
                }
                Decision::Launch { attempt } => {
                    let job = self.planned_job(idx);
                    self.jobs.slots[idx].attempt = attempt;
                    Start::Launch(Launch { job, attempt })
                }
            },
        )
    }

    /// Records that job `idx` did not run, and why.
    ///
    /// # Errors
    /// The ledger cannot be written.
    pub(super) fn not_run(&mut self, idx: usize, reason: String, run_id: &str) -> Result<Start> {
        let (offset, record) = self.record(idx, 0, Outcome::NotRun { reason }, run_id)?;
        Ok(Start::Ended(offset, Some(record)))
    }

    /// [`Running::record`], then [`Running::finalize`]: the job, its record and its label,
    /// unless it had ended already.
    ///
    /// # Errors
    /// The ledger cannot be written.
    pub(super) fn record_end(
        &mut self,
        idx: usize,
        attempt: u32,
        outcome: Outcome,
        run_id: &str,
        layout: &Layout,
    ) -> Result<Option<(usize, JobRecord, Option<String>)>> {
        let (offset, record) = self.record(idx, attempt, outcome, run_id)?;
        Ok(self
            .finalize(idx, offset, Some(&record), layout)
            .map(|label| (idx, record, label)))
    }

    /// Records an outcome the runner decided itself (not run, interrupted).
    ///
    /// # Errors
    /// The ledger cannot be written.
    pub(super) fn record(
        &mut self,
        idx: usize,
        attempt: u32,
        outcome: Outcome,
        run_id: &str,
    ) -> Result<(u64, JobRecord)> {
        let record = JobRecord {
            index: idx,
            id: self.jobs.jobs.id(idx).to_owned(),
            attempt,
            outcome,
            start: None,
            end: None,
            run: run_id.to_owned(),
            fp: String::new(),
            result: None,
        };
        let offset = self.ledger.append(&record)?;
        Ok((offset, record))
    }

    /// Appends the record of an attempt the backend reported (its outcome file, if any, goes
    /// with the sync that makes the record durable); returns its offset.
    ///
    /// # Errors
    /// The ledger cannot be written.
    pub(super) fn append(&mut self, record: &JobRecord, staged: Option<PathBuf>) -> Result<u64> {
        self.in_flight -= 1;
        self.ledger.append_staged(record, staged)
    }

    /// The next attempt of the job `record` ended, if its budget allows one: lost tasks are
    /// resubmitted up to `resubmit_lost` times, failures retried `retries` times; the two
    /// budgets are separate. None once interrupted, nor for a stage taken as recorded.
    pub(super) fn retry(&mut self, record: &JobRecord, interrupted: bool) -> Option<Launch> {
        let settings = &self.plan.settings;
        let slot = &mut self.jobs.slots[record.index];
        let again = if record.outcome == Outcome::Lost {
            slot.losses += 1;
            slot.losses <= settings.resubmit_lost
        } else if record.outcome.is_retryable() {
            slot.failures += 1;
            slot.failures <= settings.retries
        } else {
            false
        };
        if !again || interrupted || self.policy.recorded {
            return None;
        }
        let attempt = record.attempt + 1;
        let job = self.planned_job(record.index);
        self.jobs.slots[record.index].attempt = attempt;
        Some(Launch { job, attempt })
    }

    /// Hands tasks of earlier runs that have no recorded outcome to the backend; returns the
    /// job indices it took over (they are in flight now).
    pub(super) fn adopt(&mut self) -> HashSet<usize> {
        let adoptable = self
            .history
            .adoptable(&self.jobs.jobs, &self.plan.fps, self.policy);
        if adoptable.is_empty() {
            return HashSet::new();
        }
        let open: Vec<Adopt> = adoptable
            .into_iter()
            .map(|a| Adopt {
                launch: Launch {
                    job: self.planned_job(a.index),
                    attempt: a.attempt,
                },
                job_id: a.job_id,
                position: a.position,
            })
            .collect();
        let attempts: HashMap<usize, u32> = open
            .iter()
            .map(|a| (a.launch.job.index, a.launch.attempt))
            .collect();
        let kept = self.backend.adopt(open);
        for &idx in &kept {
            self.jobs.slots[idx].attempt = attempts[&idx];
        }
        self.in_flight += kept.len();
        kept.into_iter().collect()
    }

    /// Hands `launches` to the backend.
    ///
    /// # Errors
    /// The backend refused them (nothing was launched).
    pub(super) fn submit(&mut self, launches: Vec<Launch>) -> Result<()> {
        if launches.is_empty() {
            return Ok(());
        }
        let n = launches.len();
        self.in_flight += n;
        if let Err(e) = self.backend.submit(launches) {
            self.in_flight -= n;
            return Err(e);
        }
        Ok(())
    }

    /// Cancels what runs: returns the launches the backend settled itself, with their
    /// outcome, and what it could not cancel (those get no outcome: they may still run).
    pub(super) fn cancel(
        &mut self,
        mode: CancelMode,
    ) -> (Vec<(Launch, Outcome)>, Option<Uncancelled>) {
        let dropped = self.backend.cancel(mode);
        self.in_flight -= dropped.len();
        let uncancelled = self.backend.uncancelled();
        if let Some(u) = &uncancelled {
            self.in_flight -= u.launches.len();
            self.remaining -= u.launches.len();
        }
        (dropped, uncancelled)
    }

    /// Job `idx` ended for this run: with `record`'s outcome (a reused success when `None`),
    /// its result in the ledger record at `result`. Returns the label the reporter shows, or
    /// `None` when the job had ended already (nothing to report).
    pub(super) fn finalize(
        &mut self,
        idx: usize,
        result: u64,
        record: Option<&JobRecord>,
        layout: &Layout,
    ) -> Option<Option<String>> {
        if self.jobs.slots[idx].outcome.is_some() {
            return None;
        }
        let outcome = record.map_or(&SUCCEEDED, |r| &r.outcome);
        let job = self.jobs.jobs.at(idx);
        // Parsed from the job's value only when something shows it (not for a reused job).
        let label = (record.is_some() || !outcome.is_success())
            .then(|| crate::summary::job_label(job.json))
            .flatten();
        if !outcome.is_success() && !matches!(outcome, Outcome::NotRun { .. }) {
            let id = job.id.to_owned();
            let name = self.plan.name.as_str();
            let out = layout.log_out(name, &id);
            let err = layout.log_err(name, &id);
            let tail = if self.jobs.failed.len() < TAILS_SHOWN {
                store::tail(&err, 5)
            } else {
                None
            };
            self.jobs.failed.push(FailedJob {
                index: idx,
                id,
                label: label.clone(),
                outcome: outcome.clone(),
                attempts: record.map_or(0, |r| r.attempt),
                exit_code: outcome.exit_code(),
                stdout_log: out.exists().then_some(out),
                stderr_log: err.exists().then_some(err),
                stderr_tail: tail,
            });
        }
        let slot = &mut self.jobs.slots[idx];
        slot.outcome = Some(outcome.clone());
        slot.result = Some(result);
        self.remaining -= 1;
        Some(label)
    }

    /// The fingerprint job `idx` has now.
    pub(super) fn fp(&self, idx: usize) -> &str {
        match &self.jobs.slots[idx].planned {
            Some(p) => p.fp.as_str(),
            None => self.plan.fps.get(idx).map_or("", |f| f.as_str()),
        }
    }
}

/// How a job starts (see [`Running::start`]).
pub(super) enum Start {
    /// It is launched.
    Launch(Launch),
    /// It ended without a launch: the ledger record at the offset holds its result; the
    /// record itself, unless it is a reused success.
    Ended(u64, Option<JobRecord>),
}

/// A stage whose jobs all ended.
pub(super) struct Ended {
    /// Its jobs.
    pub jobs: StageJobs,
    /// How long it ran, in seconds.
    pub wall: f64,
}
