//! A stage's phase during a run, each phase owning the data that exists in it: a waiting
//! stage has nothing, a running one its plan, backend, ledger and per-job slots, an ended one
//! only what later stages and the report read (its jobs, their outcomes and where their
//! results are).

use std::sync::Arc;
use std::time::Instant;

use crate::backend::{Backend, Launch};
use crate::error::Result;
use crate::jobs::Jobs;
use crate::outcome::{JobRecord, Outcome, ResultValue, Stats};
use crate::plan::{PlannedJob, StagePlan};
use crate::resume::{Policy, StageHistory};
use crate::store::{Ledger, LedgerReader};
use crate::summary::FailedJob;

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

    /// The fingerprint job `idx` has now.
    pub(super) fn fp(&self, idx: usize) -> &str {
        match &self.jobs.slots[idx].planned {
            Some(p) => p.fp.as_str(),
            None => self.plan.fps.get(idx).map_or("", |f| f.as_str()),
        }
    }
}

/// A stage whose jobs all ended.
pub(super) struct Ended {
    /// Its jobs.
    pub jobs: StageJobs,
    /// How long it ran, in seconds.
    pub wall: f64,
}
