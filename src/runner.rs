//! The runner drives a run: it starts each stage when what it needs is done, hands planned jobs
//! to the stage's backend, and is the one consumer of the backends' [`Event`]s. For each event
//! it alone appends the record to the store's ledger (durable first), retries or finalizes the
//! job, feeds element-wise stages, and only then tells the reporter.
//!
//! Reads `plan`, `graph`, `store`, `backend` and `summary`; those never call each other.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::backend::{self, Adopt, Backend, CancelMode, Event, Launch, StageSpec};
use crate::error::{Error, Result};
use crate::graph::StageGraph;
use crate::jobs::{self, Job};
use crate::manifest::{BackendKind, JobSource, Manifest, OnFailure};
use crate::outcome::{JobRecord, Outcome, ResultValue, Stats, Verdict};
use crate::plan::{self, PlannedJob, StagePlan, Upstream, UpstreamStage};
use crate::resume::{self, Collect, Decision, Policy, ResultSpec, StageHistory};
use crate::signals::Signals;
use crate::store::{self, Layout, Ledger, LedgerReader};
use crate::summary::{FailedJob, Reporter, RunReport, StageReport};

/// Choices that come from the command line.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Overrides every stage's backend.
    pub backend: Option<BackendKind>,
    /// Overrides every stage's `max_parallel`.
    pub max_parallel: Option<u32>,
    /// Rerun jobs that already succeeded.
    pub force: bool,
    /// Keep every recorded success, even with a changed fingerprint.
    pub retry_failed: bool,
    /// Stages taken as recorded (indices): their submitted tasks are adopted and waited for
    /// and their recorded outcomes count, but none of their jobs is launched or retried. A
    /// detached run's driver job runs its stage this way, so the stage sees its needs as an
    /// attached run would have left them.
    pub recorded: Vec<usize>,
}

/// A stage's jobs, expanded before the run started (for validation), if they could be.
pub type Prepared = Vec<Option<(Vec<Job>, StagePlan)>>;

#[derive(Debug)]
enum Phase {
    Waiting,
    Running,
    Done,
    Skipped(String),
    Unselected,
}

struct StageState {
    phase: Phase,
    jobs: Vec<Job>,
    plan: Option<StagePlan>,
    planned: Vec<Option<Arc<PlannedJob>>>,
    backend: Option<Box<dyn Backend>>,
    ledger: Option<Ledger>,
    finals: Vec<Option<Outcome>>,
    /// Where each ended job's result is: the offset of its record in the stage's ledger.
    results: Vec<Option<u64>>,
    attempts: Vec<u32>,
    failures: Vec<u32>,
    queued: Vec<Launch>,
    losses: Vec<u32>,
    remaining: usize,
    in_flight: usize,
    done_before: usize,
    history: StageHistory,
    policy: Policy,
    /// Reads results back from the ledger by offset.
    reader: Option<LedgerReader>,
    started: Option<Instant>,
    wall: Option<f64>,
    failed: Vec<FailedJob>,
    next_poll: Option<Instant>,
}

impl StageState {
    fn new(selected: bool) -> Self {
        Self {
            phase: if selected {
                Phase::Waiting
            } else {
                Phase::Unselected
            },
            jobs: Vec::new(),
            plan: None,
            planned: Vec::new(),
            backend: None,
            ledger: None,
            finals: Vec::new(),
            results: Vec::new(),
            attempts: Vec::new(),
            failures: Vec::new(),
            queued: Vec::new(),
            losses: Vec::new(),
            remaining: 0,
            in_flight: 0,
            done_before: 0,
            history: StageHistory::default(),
            policy: Policy::default(),
            reader: None,
            started: None,
            wall: None,
            failed: Vec::new(),
            next_poll: None,
        }
    }

    fn stats(&self) -> Stats {
        let mut s = Stats::default();
        for f in &self.finals {
            s.add(f.as_ref());
        }
        s
    }

    fn jobs_known(&self) -> bool {
        matches!(self.phase, Phase::Running | Phase::Done)
    }
}

/// How many failed jobs get their stderr tail read for the summary.
const TAILS_SHOWN: usize = 20;

/// One run of a manifest.
pub struct Runner<'a> {
    manifest: &'a Manifest,
    graph: &'a StageGraph,
    layout: Layout,
    run_id: String,
    opts: RunOptions,
    states: Vec<StageState>,
    tx: Sender<Event>,
    rx: Receiver<Event>,
    reporter: &'a mut Reporter,
    signals: &'a Signals,
    interrupted: bool,
    last_sync: Instant,
    started: f64,
    /// Arrays an interrupt could not cancel (their jobs may still run), per stage.
    uncancelled: Vec<(usize, backend::Uncancelled)>,
    live: Option<Arc<store::LiveGroups>>,
}

impl<'a> Runner<'a> {
    /// Prepares a run of the `selected` stages.
    #[must_use]
    #[expect(
        clippy::too_many_arguments,
        reason = "the run's inputs, each borrowed for the run's lifetime"
    )]
    pub fn new(
        manifest: &'a Manifest,
        graph: &'a StageGraph,
        layout: Layout,
        run_id: String,
        opts: RunOptions,
        selected: &[bool],
        reporter: &'a mut Reporter,
        signals: &'a Signals,
    ) -> Self {
        let (tx, rx) = channel();
        let states = selected.iter().map(|&s| StageState::new(s)).collect();
        Self {
            manifest,
            graph,
            layout,
            run_id,
            opts,
            states,
            tx,
            rx,
            reporter,
            signals,
            interrupted: false,
            last_sync: Instant::now(),
            started: store::now(),
            uncancelled: Vec::new(),
            live: None,
        }
    }

    /// Runs until every selected stage is done, skipped or interrupted.
    ///
    /// # Errors
    /// Only errors that make the state untrustworthy (the ledger cannot be written) or a
    /// backend failure; job failures are outcomes, not errors.
    pub fn run(mut self, mut prepared: Prepared) -> Result<RunReport> {
        let tx = Mutex::new(self.tx.clone());
        let subscription = self.signals.subscribe(move |signal, count| {
            let _ = tx
                .lock()
                .expect("signal sender")
                .send(Event::Signal { signal, count });
        });
        // A signal that arrived while the run was being prepared counts too.
        if self.signals.count() > 0 {
            let (signal, count) = (self.signals.last().unwrap_or(2), self.signals.count());
            self.tx
                .send(Event::Signal { signal, count })
                .expect("the runner holds the receiver");
        }
        let header = store::LiveLine::Runner {
            run: self.run_id.clone(),
            host: store::hostname(),
            boot: crate::process::boot_id(),
        };
        self.live = Some(Arc::new(store::LiveGroups::create(
            self.layout.live_file(),
            &header,
        )?));
        // A runner killed outright takes its jobs along through this process.
        let watchdog = start_watchdog(&self.layout.live_file());
        let result = self.drive(&mut prepared);
        // Stop whatever still runs if we leave on an error, and say so: those jobs get no
        // record (the state cannot be trusted to take one) and run again next time.
        if result.is_err() {
            for (i, st) in self.states.iter_mut().enumerate() {
                if let Some(b) = st.backend.as_mut() {
                    b.cancel(CancelMode::Kill);
                    if st.in_flight > 0 {
                        self.reporter.message(&format!(
                            "stage `{}`: stopped {} that had not ended; not recorded, {} again next time",
                            self.manifest.stages[i].name,
                            crate::error::count(st.in_flight, "job"),
                            if st.in_flight == 1 { "it runs" } else { "they run" }
                        ));
                    }
                }
            }
        }
        let mut synced = Ok(());
        for st in &mut self.states {
            if let Some(l) = st.ledger.as_mut() {
                if let Err(e) = l.sync() {
                    synced = synced.and(Err(e));
                }
            }
            st.backend = None;
        }
        // Dropping a backend reaps every job it started (on an error they were killed just
        // above), so nothing is left for the watchdog or a later command to stop, even when
        // the run ends in an error.
        if let Some(live) = self.live.take() {
            let _ = std::fs::remove_file(live.path());
        }
        if let Some((mut child, write)) = watchdog {
            drop(write);
            let _ = child.wait();
        }
        drop(subscription);
        result?;
        synced?;
        if !self.uncancelled.is_empty() {
            return Err(self.uncancelled_error());
        }
        Ok(self.report())
    }

    /// The error for arrays that an interrupt could not cancel: which, why, and how to
    /// cancel them later.
    fn uncancelled_error(&self) -> crate::error::Error {
        let mut ids = Vec::new();
        let mut lines = Vec::new();
        let mut backend = "cluster";
        for (i, u) in &self.uncancelled {
            backend = u.scheduler;
            lines.push(format!(
                "stage `{}`: {} {} ({}): {}",
                self.manifest.stages[*i].name,
                u.scheduler,
                if u.job_ids.len() == 1 {
                    "array"
                } else {
                    "arrays"
                },
                u.job_ids.join(", "),
                u.error
            ));
            ids.extend(u.job_ids.iter().cloned());
        }
        let jobs: usize = self.uncancelled.iter().map(|(_, u)| u.launches.len()).sum();
        let command = if backend == "sge" { "qdel" } else { "scancel" };
        crate::error::Error::Backend {
            backend,
            message: format!(
                "the run was interrupted but cancelling failed: {} may still be running on the cluster and {} no recorded outcome",
                crate::error::count(ids.len(), "array"),
                if jobs == 1 { "its job has".to_owned() } else { format!("their {jobs} jobs have") }
            ),
            detail: Some(format!(
                "{}
cancel them with `poolparty cancel {}` once the scheduler answers (or `{command} {}`); until then `poolparty run` adopts them",
                lines.join("\n"),
                self.manifest.path.display(),
                ids.join(" ")
            )),
        }
    }

    fn drive(&mut self, prepared: &mut Prepared) -> Result<()> {
        self.write_provenance(None)?;
        loop {
            if !self.interrupted {
                self.start_ready(prepared)?;
                self.submit_queued()?;
            }
            // A stage that just ended may let others start: go round again at once rather
            // than waiting for the next event or poll.
            if self.finish_done_stages()? && !self.interrupted {
                continue;
            }
            if self
                .states
                .iter()
                .all(|s| !matches!(s.phase, Phase::Waiting | Phase::Running))
            {
                break;
            }
            let timeout = self.wait_time();
            match self.rx.recv_timeout(timeout) {
                Ok(ev) => {
                    self.handle(ev)?;
                    while let Ok(ev) = self.rx.try_recv() {
                        self.handle(ev)?;
                    }
                    self.submit_queued()?;
                    if self
                        .states
                        .iter()
                        .any(|s| s.ledger.as_ref().is_some_and(Ledger::has_consumed))
                    {
                        // Outcome files are deleted by the sync that makes their records
                        // durable: do it now rather than at the next tick.
                        self.sync_ledgers()?;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => unreachable!("the runner holds a sender"),
            }
            self.poll_backends()?;
            if self.last_sync.elapsed() >= Duration::from_millis(200) {
                self.sync_ledgers()?;
            }
        }
        self.sync_ledgers()?;
        Ok(())
    }

    fn wait_time(&self) -> Duration {
        let now = Instant::now();
        self.states
            .iter()
            .filter_map(|s| s.next_poll)
            .map(|t| t.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1))
    }

    fn sync_ledgers(&mut self) -> Result<()> {
        for st in &mut self.states {
            if let Some(l) = st.ledger.as_mut() {
                l.sync()?;
            }
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    fn poll_backends(&mut self) -> Result<()> {
        let now = Instant::now();
        for st in &mut self.states {
            if let (Some(b), Some(t)) = (st.backend.as_mut(), st.next_poll) {
                if now >= t {
                    b.poll()?;
                    st.next_poll = b.next_poll().map(|d| Instant::now() + d);
                }
            }
        }
        for i in 0..self.states.len() {
            self.record_submissions(i)?;
        }
        Ok(())
    }

    /// Starts every waiting stage whose needs allow it.
    fn start_ready(&mut self, prepared: &mut Prepared) -> Result<()> {
        for &i in self.graph.order() {
            if !matches!(self.states[i].phase, Phase::Waiting) {
                continue;
            }
            let stage = &self.manifest.stages[i];
            let needs = self.graph.needs(i);
            let element_wise = matches!(stage.source, JobSource::ForEach(_));
            let mut ready = true;
            let mut blocked: Option<String> = None;
            for &n in &needs {
                let up = &self.states[n];
                let name = &self.manifest.stages[n].name;
                match &up.phase {
                    Phase::Done => {
                        if !up.stats().all_succeeded()
                            && stage.on_failure == OnFailure::Stop
                            && !element_wise
                        {
                            blocked = Some(format!("needed stage `{name}` had failed jobs"));
                        }
                    }
                    Phase::Skipped(_) => {
                        blocked = Some(format!("needed stage `{name}` did not run"))
                    }
                    Phase::Running if element_wise => {}
                    Phase::Unselected => {}
                    Phase::Waiting | Phase::Running => ready = false,
                }
            }
            if let Some(reason) = blocked {
                self.skip(i, reason);
                continue;
            }
            if ready {
                if let Err(e) = self.start_stage(i, prepared[i].take()) {
                    if let crate::error::Error::Interrupted { signal, .. } = e {
                        // The generator was stopped: stop the rest as the signal's event
                        // would (it skips this stage, still waiting, too).
                        if self.interrupted {
                            self.skip(i, "run interrupted".to_owned());
                        } else {
                            let count = self.signals.count().max(1);
                            self.handle(Event::Signal { signal, count })?;
                        }
                        return Ok(());
                    }
                    if e.exit_code() == crate::error::EXIT_INVALID_INPUT {
                        // A generator or template failing at run time fails its stage only.
                        self.reporter.diagnostic(&e);
                        self.skip(i, format!("could not plan its jobs: {e}"));
                    } else {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    fn skip(&mut self, i: usize, reason: String) {
        self.reporter
            .stage_skipped(self.manifest.stages[i].name.as_str(), &reason);
        self.states[i].phase = Phase::Skipped(reason);
    }

    fn upstream(&self, i: usize) -> Upstream {
        let mut up = Upstream::default();
        for n in self.graph.needs(i) {
            let name = self.manifest.stages[n].name.as_str();
            let st = &self.states[n];
            let failed = st
                .jobs
                .iter()
                .zip(&st.finals)
                .filter(|(_, f)| !f.as_ref().is_some_and(Outcome::is_success))
                .map(|(j, _)| j.id.to_string())
                .collect();
            up.stages.insert(
                name.to_owned(),
                UpstreamStage {
                    dir: self.layout.stage_dir(name),
                    outcomes: self.layout.outcomes_file(name),
                    results: self.layout.results_file(name),
                    jobs: self.layout.jobs_file(name),
                    failed,
                },
            );
        }
        up
    }

    fn start_stage(&mut self, i: usize, prepared: Option<(Vec<Job>, StagePlan)>) -> Result<()> {
        let manifest = self.manifest;
        let stage = &manifest.stages[i];
        let name = stage.name.to_string();
        let upstream = self.upstream(i);
        let any_upstream_failed = upstream.stages.values().any(|u| !u.failed.is_empty());
        let (jobs, plan) = match (prepared, &stage.source) {
            (Some(p), _) if !any_upstream_failed => p,
            (_, JobSource::ForEach(up)) => {
                let n = self.graph.needs(i)[0];
                debug_assert_eq!(manifest.stages[n].name, *up);
                let jobs = jobs::for_each(&self.states[n].jobs);
                let plan = plan::plan_stage(manifest, i, &mut [], &self.layout, &upstream)?;
                (jobs, plan)
            }
            (_, source) => {
                let layout = &self.layout;
                match source {
                    JobSource::Generate(cmd) => {
                        let base = plan::base_context(manifest, stage, layout, &upstream);
                        let rendered = plan::render_generator(manifest, stage, cmd, &base)?;
                        let env = plan::stage_env(manifest, stage, layout, &upstream);
                        plan::expand_and_plan(manifest, i, layout, &upstream, |visit| {
                            jobs::run_generator_with(
                                manifest,
                                stage,
                                &rendered,
                                &env,
                                self.signals,
                                visit,
                            )
                        })?
                    }
                    _ => plan::expand_and_plan(manifest, i, layout, &upstream, |visit| {
                        jobs::expand_static_with(manifest, stage, visit).expect("static source")
                    })?,
                }
            }
        };
        self.layout.create_stage_dirs(&name)?;
        store::write_jobs(&self.layout.jobs_file(&name), &jobs)?;
        // Outcome files an earlier run left (killed, detached, a bundle submitted by hand)
        // count like any recorded attempt, with the fingerprint the job had when submitted.
        let result = ResultSpec {
            mode: plan.settings.result,
            max_bytes: plan.settings.result_max_bytes,
        };
        resume::collect_staged(&self.layout, &name, result, &self.run_id, Collect::All)?;
        let history = StageHistory::load(&self.layout, &name)?;
        // Automatic bundling packs by the durations earlier runs recorded.
        let durations = match plan.settings.auto_bundle {
            Some(_) => backend::packing::recorded_durations(&store::read_ledger(
                &self.layout.ledger(&name),
            )?),
            None => HashMap::new(),
        };
        let policy = Policy {
            force: self.opts.force,
            retry_failed: self.opts.retry_failed,
            recorded: self.opts.recorded.contains(&i),
        };
        let ledger = Ledger::open(self.layout.ledger(&name))?;
        let kind = self.opts.backend.unwrap_or(plan.settings.backend);
        let workers = backend::local_workers(
            self.opts.max_parallel.or(plan.settings.max_parallel),
            jobs.len(),
        );
        let mut spec = StageSpec::new(&plan, &self.layout, &manifest.name, &self.run_id, workers);
        spec.durations = std::sync::Arc::new(durations);
        if kind == BackendKind::Local {
            spec.live.clone_from(&self.live);
        }
        let mut backend = backend::create(kind, spec, self.tx.clone())?;
        let record_to = self.layout.submissions(&name);
        backend.set_recorder(Box::new(move |s| {
            store::append_lines(&record_to, &[serde_json::to_string(s).expect("serializes")])
        }));
        let n = jobs.len();
        let st = &mut self.states[i];
        // Commands are rendered again when a job is launched (`planned_job`), not kept.
        st.planned = vec![None; n];
        st.jobs = jobs;
        st.plan = Some(plan);
        st.finals = vec![None; n];
        st.results = vec![None; n];
        st.reader = Some(LedgerReader::open(self.layout.ledger(&name))?);
        st.attempts = vec![0; n];
        st.failures = vec![0; n];
        st.losses = vec![0; n];
        st.remaining = n;
        st.history = history;
        st.policy = policy;
        st.ledger = Some(ledger);
        st.next_poll = backend.next_poll().map(|d| Instant::now() + d);
        st.backend = Some(backend);
        st.started = Some(Instant::now());
        st.phase = Phase::Running;
        self.reporter.stage_started(i, &name, n, kind);

        if let JobSource::ForEach(_) = stage.source {
            // Feed the elements whose upstream job already ended.
            let up = self.graph.needs(i)[0];
            for idx in 0..n {
                if let Some(o) = self.states[up].finals[idx].clone() {
                    self.feed_element(i, idx, &o)?;
                }
            }
        } else {
            let adopted = self.adopt(i);
            let launches: Vec<Launch> = (0..n)
                .filter(|idx| !adopted.contains(idx))
                .filter_map(|idx| self.launch_or_reuse(i, idx))
                .collect();
            self.submit(i, launches)?;
        }
        Ok(())
    }

    /// Hands tasks of earlier runs that have no recorded outcome to the backend; returns the
    /// job indices it took over (they are in flight now).
    fn adopt(&mut self, i: usize) -> HashSet<usize> {
        let st = &mut self.states[i];
        let Some(plan) = st.plan.as_ref() else {
            return HashSet::new();
        };
        let adoptable = st.history.adoptable(&st.jobs, &plan.fps, st.policy);
        let mut open = Vec::new();
        for a in adoptable {
            let Some(job) = Self::planned_job(st, a.index) else {
                continue;
            };
            open.push(Adopt {
                launch: Launch {
                    job,
                    attempt: a.attempt,
                },
                job_id: a.job_id,
                position: a.position,
            });
        }
        if open.is_empty() {
            return HashSet::new();
        }
        let attempts: HashMap<usize, u32> = open
            .iter()
            .map(|a| (a.launch.job.index, a.launch.attempt))
            .collect();
        let kept = st.backend.as_mut().expect("running").adopt(open);
        for &idx in &kept {
            st.attempts[idx] = attempts[&idx];
        }
        st.in_flight += kept.len();
        if !kept.is_empty() {
            self.reporter.message(&format!(
                "stage `{}`: reattached to {} of an earlier run",
                self.manifest.stages[i].name,
                crate::error::count(kept.len(), "job")
            ));
        }
        kept.into_iter().collect()
    }

    /// The first launch of a job, or `None` when a recorded success with the same
    /// fingerprint is reused (and the job is finalized here).
    fn launch_or_reuse(&mut self, i: usize, idx: usize) -> Option<Launch> {
        let st = &mut self.states[i];
        let fp = match (&st.planned[idx], &st.plan) {
            (Some(p), _) => p.fp.as_str(),
            (None, Some(plan)) => plan.fps[idx].as_str(),
            (None, None) => "",
        };
        match st.history.decide(st.jobs[idx].id.as_str(), fp, st.policy) {
            Decision::Recorded(prev) if prev.succeeded() => {
                st.done_before += 1;
                self.finalize(i, idx, Outcome::Succeeded, Some(prev.offset), None);
                None
            }
            Decision::Recorded(prev) => {
                // A stage taken as recorded keeps its latest failure.
                match self.read_record(i, prev.offset) {
                    Ok(r) => self.finalize(i, idx, r.outcome.clone(), Some(prev.offset), Some(&r)),
                    Err(e) => self.reporter.diagnostic(&e),
                }
                None
            }
            Decision::NotRecorded => {
                let reason = "it has no recorded outcome".to_owned();
                if let Err(e) = self.record_not_run(i, idx, reason) {
                    self.reporter.diagnostic(&e);
                }
                None
            }
            Decision::Launch { attempt } => {
                let job = Self::planned_job(st, idx)?;
                st.attempts[idx] = attempt;
                Some(Launch { job, attempt })
            }
        }
    }

    /// The ledger record of stage `i` at `offset`.
    fn read_record(&mut self, i: usize, offset: u64) -> Result<JobRecord> {
        let name = self.manifest.stages[i].name.as_str();
        let st = &mut self.states[i];
        let reader = match st.reader.as_mut() {
            Some(r) => r,
            None => st
                .reader
                .insert(LedgerReader::open(self.layout.ledger(name))?),
        };
        reader.read_at(offset)
    }

    /// The result recorded at `offset` of stage `i`'s ledger.
    fn read_result(&mut self, i: usize, offset: Option<u64>) -> Result<Option<ResultValue>> {
        match offset {
            Some(o) => Ok(self.read_record(i, o)?.result),
            None => Ok(None),
        }
    }

    /// A job ready to launch: planned already (element-wise jobs, retries), or its command
    /// rendered again from the stage's plan, which keeps only fingerprints.
    fn planned_job(st: &mut StageState, idx: usize) -> Option<Arc<PlannedJob>> {
        if st.planned[idx].is_none() {
            let plan = st.plan.as_ref()?;
            // The same renderer rendered this job when the stage was planned.
            let job = plan
                .job(&st.jobs[idx])
                .expect("a job's command rendered when its stage was planned");
            st.planned[idx] = Some(job);
        }
        st.planned[idx].clone()
    }

    /// Submits the retries and element-wise jobs that handling a batch of events produced:
    /// one submission per stage, not one per job.
    fn submit_queued(&mut self) -> Result<()> {
        for i in 0..self.states.len() {
            let queued = std::mem::take(&mut self.states[i].queued);
            if matches!(self.states[i].phase, Phase::Running) && !self.interrupted {
                self.submit(i, queued)?;
            } else {
                for l in queued {
                    self.record_not_run(i, l.job.index, "run interrupted".to_owned())?;
                }
            }
        }
        Ok(())
    }

    fn submit(&mut self, i: usize, launches: Vec<Launch>) -> Result<()> {
        if launches.is_empty() {
            return Ok(());
        }
        let st = &mut self.states[i];
        st.in_flight += launches.len();
        let n = launches.len();
        if let Err(e) = st.backend.as_mut().expect("running stage").submit(launches) {
            st.in_flight -= n;
            return Err(e);
        }
        self.record_submissions(i)
    }

    /// Appends the arrays a backend submitted to the stage's `submissions.jsonl`, synced,
    /// before anything else happens.
    fn record_submissions(&mut self, i: usize) -> Result<()> {
        let Some(b) = self.states[i].backend.as_mut() else {
            return Ok(());
        };
        let subs = b.take_submissions();
        if subs.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = subs
            .iter()
            .map(|s| serde_json::to_string(s).expect("serializes"))
            .collect();
        let name = self.manifest.stages[i].name.as_str();
        store::append_lines(&self.layout.submissions(name), &lines)
    }

    /// Job `idx` of element-wise stage `i` may go: its upstream job ended with `upstream`.
    fn feed_element(&mut self, i: usize, idx: usize, upstream: &Outcome) -> Result<()> {
        let stage = &self.manifest.stages[i];
        let up = self.graph.needs(i)[0];
        if !upstream.is_success() && stage.on_failure == OnFailure::Stop {
            let reason = format!(
                "upstream job of `{}` did not succeed",
                self.manifest.stages[up].name
            );
            self.record_not_run(i, idx, reason)?;
            return Ok(());
        }
        let up_name = self.manifest.stages[up].name.to_string();
        let up_job = &self.states[up].jobs[idx];
        let mut value = json!({
            "id": up_job.id.as_str(),
            "index": idx,
            "exit_code": upstream.exit_code(),
            "outcome": upstream.describe(),
            "stdout": self.layout.log_out(&up_name, up_job.id.as_str()),
            "stderr": self.layout.log_err(&up_name, up_job.id.as_str()),
        });
        // Inserted as values, not through `json!`: its `to_value` would rewrite numbers
        // (`1E2` to `1e+2`), and numbers reach the command as written.
        let offset = self.states[up].results[idx];
        let result = self.read_result(up, offset)?.map_or(Value::Null, |r| {
            jobs::parse_value(&r.to_json()).unwrap_or(Value::Null)
        });
        let up_job = &self.states[up].jobs[idx];
        if let Value::Object(map) = &mut value {
            map.insert("upstream".to_owned(), up_job.value());
            map.insert("result".to_owned(), result);
        }
        let element = Job {
            index: idx,
            id: up_job.id.clone(),
            json: serde_json::to_string(&value).expect("serializes"),
            value,
        };
        let st = &mut self.states[i];
        let planned = st.plan.as_mut().expect("running").renderer.plan(&element);
        match planned {
            Ok(p) => {
                st.planned[idx] = Some(Arc::new(p));
                if let Some(l) = self.launch_or_reuse(i, idx) {
                    self.states[i].queued.push(l);
                }
            }
            Err(e) => {
                self.reporter.diagnostic(&e);
                self.record_not_run(i, idx, "its command could not be rendered".to_owned())?;
            }
        }
        Ok(())
    }

    fn record_not_run(&mut self, i: usize, idx: usize, reason: String) -> Result<()> {
        self.record_outcome(i, idx, 0, Outcome::NotRun { reason })
    }

    /// Records an outcome the runner decided itself (not run, interrupted).
    fn record_outcome(
        &mut self,
        i: usize,
        idx: usize,
        attempt: u32,
        outcome: Outcome,
    ) -> Result<()> {
        let st = &mut self.states[i];
        let job = &st.jobs[idx];
        let record = JobRecord {
            index: idx,
            id: job.id.to_string(),
            attempt,
            outcome: outcome.clone(),
            start: None,
            end: None,
            run: self.run_id.clone(),
            fp: String::new(),
            result: None,
        };
        let offset = st.ledger.as_mut().expect("running").append(&record)?;
        self.finalize(i, idx, outcome, Some(offset), Some(&record));
        Ok(())
    }

    fn handle(&mut self, ev: Event) -> Result<()> {
        match ev {
            Event::Signal { signal, count } => {
                let mode = if count >= 2 {
                    CancelMode::Kill
                } else {
                    CancelMode::Graceful
                };
                if !self.interrupted {
                    self.reporter.message(&format!(
                        "received signal {signal}: stopping running jobs (send it again to kill them at once)"
                    ));
                }
                self.interrupted = true;
                self.cancel_all(mode)?;
            }
            Event::Finished {
                stage,
                record,
                staged,
            } => {
                self.finished(stage, record, staged)?;
            }
        }
        Ok(())
    }

    fn cancel_all(&mut self, mode: CancelMode) -> Result<()> {
        for i in 0..self.states.len() {
            match self.states[i].phase {
                Phase::Waiting => self.skip(i, "run interrupted".to_owned()),
                Phase::Running => {
                    let dropped = self.states[i]
                        .backend
                        .as_mut()
                        .expect("running")
                        .cancel(mode);
                    self.states[i].in_flight -= dropped.len();
                    for (l, outcome) in dropped {
                        self.record_outcome(i, l.job.index, l.attempt, outcome)?;
                    }
                    let uncancelled = self.states[i]
                        .backend
                        .as_mut()
                        .expect("running")
                        .uncancelled();
                    if let Some(u) = uncancelled {
                        // No outcome for these: they may still run.
                        let st = &mut self.states[i];
                        st.in_flight -= u.launches.len();
                        st.remaining -= u.launches.len();
                        self.uncancelled.push((i, u));
                    }
                    // Element-wise jobs not yet fed will never be.
                    let missing: Vec<usize> = (0..self.states[i].finals.len())
                        .filter(|&idx| {
                            self.states[i].finals[idx].is_none()
                                && self.states[i].attempts[idx] == 0
                        })
                        .collect();
                    for idx in missing {
                        self.record_not_run(i, idx, "run interrupted".to_owned())?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn finished(&mut self, i: usize, record: JobRecord, staged: Option<PathBuf>) -> Result<()> {
        let st = &mut self.states[i];
        st.in_flight -= 1;
        // The outcome file it came from goes with the sync that makes the record durable.
        let offset = st
            .ledger
            .as_mut()
            .expect("running stage")
            .append_staged(&record, staged)?;
        let kind = st
            .plan
            .as_ref()
            .map(|p| self.opts.backend.unwrap_or(p.settings.backend));
        if let (Some(live), Some(BackendKind::Local)) = (&self.live, kind) {
            // Only now may recovery forget the job's group.
            live.append(&store::LiveLine::Recorded {
                stage: self.manifest.stages[i].name.to_string(),
                id: record.id.clone(),
                attempt: record.attempt,
            })
            .map_err(|e| crate::error::Error::store("append to", live.path(), e))?;
        }
        let idx = record.index;
        let settings = &st.plan.as_ref().expect("running").settings;
        let (retries, resubmit_lost) = (settings.retries, settings.resubmit_lost);
        // Lost tasks are resubmitted up to `resubmit_lost` times; failures are retried
        // `retries` times; the two budgets are separate.
        let again = if record.outcome == Outcome::Lost {
            st.losses[idx] += 1;
            st.losses[idx] <= resubmit_lost
        } else if record.outcome.is_retryable() {
            st.failures[idx] += 1;
            st.failures[idx] <= retries
        } else {
            false
        };
        if again && !self.interrupted && !self.opts.recorded.contains(&i) {
            let label = st.planned[idx]
                .as_ref()
                .and_then(|p| crate::summary::job_label(&p.json));
            self.reporter.job_retrying(i, &record, label.as_deref());
            let job = st.planned[idx].clone().expect("planned");
            st.attempts[idx] = record.attempt + 1;
            let attempt = record.attempt + 1;
            st.queued.push(Launch { job, attempt });
            return Ok(());
        }
        let outcome = record.outcome.clone();
        self.finalize(i, idx, outcome, Some(offset), Some(&record));
        if let Outcome::OutputLost { .. } = &record.outcome {
            // A full disk: every further job would lose its output too.
            let dir = self.layout.logs_dir(self.manifest.stages[i].name.as_str());
            let what = format!(
                "job {} `{}` {} (recorded so); the run stops",
                record.index,
                record.id,
                record.outcome.describe()
            );
            return Err(crate::error::Error::store(
                "store job output in",
                dir,
                std::io::Error::other(what),
            ));
        }
        Ok(())
    }

    /// Job `idx` of stage `i` ended for this run with `outcome`; its result is in the record
    /// at `result` in the stage's ledger.
    fn finalize(
        &mut self,
        i: usize,
        idx: usize,
        outcome: Outcome,
        result: Option<u64>,
        record: Option<&JobRecord>,
    ) {
        let name = self.manifest.stages[i].name.to_string();
        let st = &mut self.states[i];
        if st.finals[idx].is_some() {
            return;
        }
        if !outcome.is_success() && !matches!(outcome, Outcome::NotRun { .. }) {
            let id = st.jobs[idx].id.to_string();
            let out = self.layout.log_out(&name, &id);
            let err = self.layout.log_err(&name, &id);
            let tail = if st.failed.len() < TAILS_SHOWN {
                store::tail(&err, 5)
            } else {
                None
            };
            st.failed.push(FailedJob {
                index: idx,
                id,
                label: crate::summary::job_label(&st.jobs[idx].json),
                outcome: outcome.clone(),
                attempts: record.map_or(0, |r| r.attempt),
                exit_code: outcome.exit_code(),
                stdout_log: out.exists().then_some(out),
                stderr_log: err.exists().then_some(err),
                stderr_tail: tail,
            });
        }
        st.finals[idx] = Some(outcome.clone());
        st.results[idx] = result;
        st.remaining -= 1;
        if let Some(r) = record {
            let label = crate::summary::job_label(&self.states[i].jobs[idx].json);
            self.reporter.job_finished(i, r, label.as_deref());
        } else {
            self.reporter.job_reused(i);
        }
        // Element-wise dependents that are already running get their element now.
        let dependents: Vec<usize> = (0..self.states.len())
            .filter(|&d| {
                matches!(self.states[d].phase, Phase::Running)
                    && matches!(&self.manifest.stages[d].source, JobSource::ForEach(up) if up.as_str() == name)
            })
            .collect();
        for d in dependents {
            if let Err(e) = self.feed_element(d, idx, &outcome) {
                self.reporter.diagnostic(&e);
            }
        }
    }

    /// Finalizes every running stage whose jobs have all ended; true when one did.
    fn finish_done_stages(&mut self) -> Result<bool> {
        let mut any = false;
        for i in 0..self.states.len() {
            let st = &self.states[i];
            if !matches!(st.phase, Phase::Running) || st.remaining > 0 || st.in_flight > 0 {
                continue;
            }
            let name = self.manifest.stages[i].name.to_string();
            self.write_stage_files(i, &name)?;
            let st = &mut self.states[i];
            if let Some(mut b) = st.backend.take() {
                b.close();
            }
            if let Some(l) = st.ledger.as_mut() {
                l.sync()?;
            }
            st.wall = st.started.map(|t| t.elapsed().as_secs_f64());
            st.phase = Phase::Done;
            let report = self.stage_report(i);
            self.reporter.stage_finished(i, &report);
            any = true;
        }
        Ok(any)
    }

    /// Writes a stage's `results.jsonl` and `outcomes.jsonl` in job order, one job at a time
    /// (results are read back from the ledger).
    fn write_stage_files(&mut self, i: usize, name: &str) -> Result<()> {
        // Records appended by this run are read back through another handle.
        let results_path = self.layout.results_file(name);
        let st = &mut self.states[i];
        let mut reader = match st.reader.take() {
            Some(r) => r,
            None => LedgerReader::open(self.layout.ledger(name))?,
        };
        let io = |e| Error::store("write", &results_path, e);
        let written = store::atomic_write_with(&results_path, |w| {
            for offset in &st.results {
                match offset {
                    Some(o) => match reader.result_at(*o)? {
                        Some(r) => w.write_all(r.to_json().as_bytes()).map_err(io)?,
                        None => w.write_all(b"null").map_err(io)?,
                    },
                    None => w.write_all(b"null").map_err(io)?,
                }
                w.write_all(b"\n").map_err(io)?;
            }
            Ok(())
        });
        st.reader = Some(reader);
        written?;
        // One line per job, in job order: what a stage that needs this one gets to read.
        let outcomes_path = self.layout.outcomes_file(name);
        let io = |e| Error::store("write", &outcomes_path, e);
        let layout = &self.layout;
        store::atomic_write_with(&outcomes_path, |w| {
            for (j, f) in st.jobs.iter().zip(&st.finals) {
                let path = |p: std::path::PathBuf| if p.exists() { json!(p) } else { Value::Null };
                let line = json!({
                    "index": j.index,
                    "id": j.id.as_str(),
                    "outcome": f.as_ref().map(Outcome::describe),
                    "succeeded": f.as_ref().is_some_and(Outcome::is_success),
                    "exit_code": f.as_ref().and_then(Outcome::exit_code),
                    "attempts": st.attempts[j.index],
                    "stdout": path(layout.log_out(name, j.id.as_str())),
                    "stderr": path(layout.log_err(name, j.id.as_str())),
                });
                let mut text = serde_json::to_string(&line).expect("serializes");
                // The job's value exactly as expanded, without parsing it again.
                text.pop();
                text.push_str(",\"job\":");
                text.push_str(&j.json);
                text.push_str("}\n");
                w.write_all(text.as_bytes()).map_err(io)?;
            }
            Ok(())
        })
    }

    fn stage_report(&self, i: usize) -> StageReport {
        let st = &self.states[i];
        let stage = &self.manifest.stages[i];
        let (stats, jobs) = if st.jobs_known() {
            (st.stats(), Some(st.jobs.len()))
        } else {
            (Stats::default(), None)
        };
        StageReport {
            name: stage.name.to_string(),
            backend: self.opts.backend.unwrap_or(stage.settings.backend),
            jobs,
            stats,
            reused: st.done_before,
            wall_seconds: st.wall,
            not_started: match &st.phase {
                Phase::Skipped(r) => Some(r.clone()),
                _ => None,
            },
            results: Some(self.layout.results_file(stage.name.as_str())),
            failed: st.failed.clone(),
        }
    }

    fn report(&self) -> RunReport {
        let stages: Vec<StageReport> = (0..self.states.len())
            .filter(|&i| !matches!(self.states[i].phase, Phase::Unselected))
            .map(|i| self.stage_report(i))
            .collect();
        let mut all: Vec<Stats> = stages.iter().map(|s| s.stats).collect();
        // A stage that never started counts as failed work.
        if stages.iter().any(|s| s.not_started.is_some()) {
            all.push(Stats {
                total: 1,
                not_run: 1,
                ..Stats::default()
            });
        }
        RunReport {
            format_version: store::FORMAT_VERSION,
            workflow: self.manifest.name.clone(),
            run: self.run_id.clone(),
            manifest: self.manifest.path.clone(),
            manifest_sha256: self.manifest.hash.clone(),
            poolparty_version: env!("CARGO_PKG_VERSION").to_owned(),
            started: self.started,
            ended: Some(store::now()),
            verdict: Verdict::of(&all, self.interrupted),
            state_dir: self.layout.root().to_path_buf(),
            stages,
        }
    }

    fn write_provenance(&self, report: Option<&RunReport>) -> Result<()> {
        let path: PathBuf = self.layout.runs_dir().join(format!("{}.json", self.run_id));
        let value = report.map_or_else(
            || {
                json!({
                    "format_version": store::FORMAT_VERSION,
                    "run": self.run_id,
                    "workflow": self.manifest.name,
                    "manifest": self.manifest.path,
                    "manifest_sha256": self.manifest.hash,
                    "poolparty_version": env!("CARGO_PKG_VERSION"),
                    "started": self.started,
                    "host": store::hostname(),
                })
            },
            |r| serde_json::to_value(r).expect("serializes"),
        );
        store::atomic_write(
            &path,
            serde_json::to_string_pretty(&value)
                .expect("serializes")
                .as_bytes(),
        )
    }
}

/// Writes the end-of-run records: the run's provenance and `summary.json`.
///
/// # Errors
/// On I/O failure.
pub fn write_report(layout: &Layout, report: &RunReport) -> Result<()> {
    let text = serde_json::to_string_pretty(report).expect("serializes");
    store::atomic_write(
        &layout.runs_dir().join(format!("{}.json", report.run)),
        text.as_bytes(),
    )?;
    store::atomic_write(&layout.summary(), text.as_bytes())
}

/// What [`recover`] found: a run whose runner died while local jobs ran.
#[derive(Debug)]
pub struct Recovered {
    /// The dead runner's run id.
    pub run: String,
    /// Jobs whose outcome it never recorded, now recorded as interrupted.
    pub jobs: usize,
    /// Of their process groups, those that still had live processes (stopped now).
    pub stopped: usize,
}

impl Recovered {
    /// A line for the user.
    #[must_use]
    pub fn message(&self) -> String {
        let left = match self.stopped {
            0 => "none of them still ran".to_owned(),
            n if n == self.jobs => "stopped what was left of them".to_owned(),
            n => format!("stopped what was left of {n} of them"),
        };
        format!(
            "run {} ended without recording the outcome of {} (its runner was killed): {left}, \
             and recorded them as interrupted",
            self.run,
            crate::error::count(self.jobs, "local job")
        )
    }
}

/// Cleans up after a runner that died (SIGKILL, out of memory, a crash) while local jobs ran,
/// from its record of their process groups (`.live.jsonl`): stops what is left of them
/// (SIGTERM, a grace period, SIGKILL), waits until it is gone, records those jobs as
/// interrupted, and removes the record. Nothing of that run is left running afterwards, so no
/// job can run twice at once. Call it holding the workflow lock.
///
/// # Errors
/// When the record or a ledger cannot be read or written, the dead runner ran on another host,
/// or a process survives SIGKILL.
pub fn recover(layout: &Layout) -> Result<Option<Recovered>> {
    use crate::error::Error;
    use crate::process;
    use crate::store::LiveLine;
    let path = layout.live_file();
    let Some((header, open)) = store::read_live(&path)? else {
        return Ok(None);
    };
    let (run, host, boot) = match header {
        Some(LiveLine::Runner { run, host, boot }) => (run, host, boot),
        _ => (
            "(unknown)".to_owned(),
            store::hostname(),
            process::boot_id(),
        ),
    };
    if open.is_empty() {
        let _ = std::fs::remove_file(&path);
        return Ok(None);
    }
    if host != store::hostname() {
        return Err(Error::Usage {
            message: format!(
                "run {run} died on host `{host}` while {} ran there; only that host can check \
                 whether they still run",
                crate::error::count(open.len(), "local job")
            ),
            help: Some(format!("run `poolparty status` on `{host}`")),
        });
    }
    let groups = live_groups(&open);
    // After a reboot, nothing of it runs.
    let (stopped, left) = if boot == process::boot_id() {
        process::stop_groups(&groups, process::GRACE)
    } else {
        (0, Vec::new())
    };
    if !left.is_empty() {
        return Err(Error::Backend {
            backend: "local",
            message: format!(
                "processes of jobs of run {run} did not stop after SIGKILL: pids {left:?}"
            ),
            detail: Some(
                "they may be stuck in the kernel (state D); their jobs are not started again \
                 while they live"
                    .to_owned(),
            ),
        });
    }
    let mut by_stage: HashMap<&str, Vec<&LiveLine>> = HashMap::new();
    for l in &open {
        if let LiveLine::Started { stage, .. } | LiveLine::Starting { stage, .. } = l {
            by_stage.entry(stage.as_str()).or_default().push(l);
        }
    }
    let mut jobs = 0;
    for (stage, lines) in by_stage {
        let states = store::read_states(&layout.ledger(stage))?;
        let records = lines.into_iter().filter_map(|l| {
            let (LiveLine::Started {
                index,
                id,
                attempt,
                at,
                ..
            }
            | LiveLine::Starting {
                index,
                id,
                attempt,
                at,
                ..
            }) = l
            else {
                return None;
            };
            // Recorded already (or a later attempt is).
            if states
                .get(id.as_str())
                .is_some_and(|s| s.max_attempt >= *attempt)
            {
                return None;
            }
            let record = JobRecord {
                index: *index,
                id: id.clone(),
                attempt: *attempt,
                outcome: Outcome::Interrupted,
                start: Some(*at),
                end: Some(store::now()),
                run: run.clone(),
                fp: String::new(),
                result: None,
            };
            Some((record, None))
        });
        jobs += store::record(layout, stage, records)?;
    }
    std::fs::remove_file(&path).map_err(|e| Error::store("remove", &path, e))?;
    Ok(Some(Recovered { run, jobs, stopped }))
}

/// The process groups of a dead runner's unrecorded jobs: those it recorded, and those of
/// jobs it was starting, found by their `$POOLPARTY_RESULT`.
fn live_groups(open: &[store::LiveLine]) -> Vec<crate::process::Group> {
    use crate::process::{self, Group};
    use crate::store::LiveLine;
    let mut groups = Vec::new();
    let mut starting = Vec::new();
    for l in open {
        match l {
            LiveLine::Started { pgid, start, .. } => groups.push(Group {
                pgid: *pgid,
                start: *start,
            }),
            // The attempt too: a later attempt of the same job has the same result path.
            LiveLine::Starting {
                result, attempt, ..
            } => starting.push(vec![
                format!("POOLPARTY_RESULT={result}"),
                format!("POOLPARTY_ATTEMPT={attempt}"),
            ]),
            _ => {}
        }
    }
    groups.extend(process::groups_by_env(&starting));
    groups
}

/// Started by each runner (`poolparty __watchdog`): waits until the runner's end of `stdin`
/// closes (the runner ended, or was killed), then stops the groups of the jobs `.live.jsonl`
/// names without an outcome, so that a killed runner's jobs die with it. It records nothing
/// (the next `run`, `status` or `cancel` does, holding the lock).
pub fn watchdog(live: &std::path::Path) {
    use std::io::Read;
    let mut buf = [0u8; 64];
    let mut stdin = std::io::stdin();
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => break,
            Err(e) if e.kind() != std::io::ErrorKind::Interrupted => break,
            _ => {}
        }
    }
    if let Ok(Some((_, open))) = store::read_live(live) {
        let _ = crate::process::stop_groups(&live_groups(&open), crate::process::GRACE);
    }
}

/// Starts the watchdog of this run; the runner keeps the write end of its `stdin`.
fn start_watchdog(live: &std::path::Path) -> Option<(std::process::Child, std::os::fd::OwnedFd)> {
    use std::os::unix::process::CommandExt;
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
    let exe = std::env::current_exe().ok()?;
    let child = std::process::Command::new(exe)
        .arg("__watchdog")
        .arg(live)
        .stdin(std::process::Stdio::from(read))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .ok()?;
    Some((child, write))
}

/// A fresh run id: UTC time plus the process id.
#[must_use]
pub fn new_run_id() -> String {
    let t = store::format_time(store::now());
    let compact: String = t.chars().filter(char::is_ascii_digit).collect();
    format!(
        "{}T{}-{}",
        &compact[..8],
        &compact[8..14],
        std::process::id()
    )
}
