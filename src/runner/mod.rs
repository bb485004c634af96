//! The runner drives a run: it starts each stage when what it needs is done, hands planned jobs
//! to the stage's backend, and is the one consumer of the backends' [`Event`]s. For each event
//! it alone appends the record to the store's ledger (durable first), retries or finalizes the
//! job, feeds element-wise stages, and only then tells the reporter.
//!
//! Joins `plan`, `graph`, `resume`, `store`, `backend` and `summary`: backends and the
//! reporter never call each other; only the runner passes what one says to the other.
//!
//! By role, as nextest splits executor, dispatcher and reporter: this file is the drive loop
//! and event handling, matching a stage's phase once per event; [`stage`] holds each stage's
//! phase, whose variants own the data that exists in them, and a running stage's per-job work
//! (start or reuse, record, retry, adopt, submit, cancel, finalize); [`outputs`] writes a stage's results and outcomes files and the run report;
//! [`mod@recover`] cleans up after a runner that died, and starts the watchdog.

mod outputs;
mod recover;
mod stage;

pub use outputs::write_report;
pub use recover::{recover, watchdog};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::backend::{self, CancelMode, Event, StageSpec};
use crate::error::{Error, Result};
use crate::graph::StageGraph;
use crate::jobs::{self, Job, Jobs, SourceKind};
use crate::manifest::{BackendKind, JobSource, Manifest, OnFailure};
use crate::outcome::{JobRecord, Outcome};
use crate::plan::{self, StagePlan, Upstream, UpstreamStage};
use crate::resume::{self, Collect, Policy, ResultSpec, StageHistory};
use crate::signals::Signals;
use crate::store::{self, Layout, Ledger, LedgerReader};
use crate::summary::{Reporter, RunReport, StageReport};

use recover::start_watchdog;
use stage::{Ended, JobSlot, Phase, Running, SUCCEEDED, StageJobs, Start};

/// Choices that come from the command line (`--backend` and `--max-parallel` are already in
/// each stage's settings: `cmd::load` resolved them).
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
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
pub type Prepared = Vec<Option<(Jobs, StagePlan)>>;

/// One run of a manifest.
pub struct Runner<'a> {
    manifest: &'a Manifest,
    graph: &'a StageGraph,
    layout: Layout,
    run_id: String,
    opts: RunOptions,
    /// Each stage's phase, by stage index.
    states: Vec<Phase>,
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
    /// Each stage's ledger states read ahead, used if its ledger is unchanged when it starts.
    ahead: Vec<Option<store::StatesAhead>>,
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
        let states = selected
            .iter()
            .map(|&s| if s { Phase::Waiting } else { Phase::Unselected })
            .collect();
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
            ahead: Vec::new(),
        }
    }

    /// Gives the run each stage's ledger states read ahead (by stage index), for a stage to
    /// use when it starts if its ledger has not changed since.
    #[must_use]
    pub fn with_states_ahead(mut self, ahead: Vec<Option<store::StatesAhead>>) -> Self {
        self.ahead = ahead;
        self
    }

    /// Runs until every selected stage is done, skipped or interrupted.
    ///
    /// # Errors
    /// Only errors that make the state untrustworthy (the ledger cannot be written, or read
    /// back) or a backend failure; job failures are outcomes, not errors.
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
            for (i, phase) in self.states.iter_mut().enumerate() {
                if let Some(r) = phase.running() {
                    r.backend.cancel(CancelMode::Kill);
                    if r.in_flight > 0 {
                        self.reporter.message(&format!(
                            "stage `{}`: stopped {} that had not ended; not recorded, {} again next time",
                            self.manifest.stages[i].name,
                            crate::error::count(r.in_flight, "job"),
                            if r.in_flight == 1 { "it runs" } else { "they run" }
                        ));
                    }
                }
            }
        }
        let mut synced = Ok(());
        for phase in &mut self.states {
            if let Some(r) = phase.running() {
                if let Err(e) = r.ledger.sync() {
                    synced = synced.and(Err(e));
                }
            }
            // Only a run that stops on an error leaves stages running: their backends go.
            if let Phase::Running(_) = phase {
                *phase = Phase::Skipped("the run stopped on an error".to_owned());
            }
        }
        // Dropping a backend reaps every job it started (on an error they were killed just
        // above), so nothing is left for the watchdog or a later command to stop, even when
        // the run ends in an error.
        if self.live.take().is_some() {
            let _ = store::remove_live(&self.layout);
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

    /// The run's report, from the stages' phases.
    fn report(&self) -> RunReport {
        let stages: Vec<StageReport> = (0..self.states.len())
            .filter(|&i| !matches!(self.states[i], Phase::Unselected))
            .map(|i| self.stage_report(i))
            .collect();
        outputs::run_report(
            self.manifest,
            &self.layout,
            &self.run_id,
            self.started,
            self.interrupted,
            stages,
        )
    }

    fn stage_report(&self, i: usize) -> StageReport {
        let stage = &self.manifest.stages[i];
        outputs::stage_report(
            &self.layout,
            stage.name.as_str(),
            stage.settings.backend,
            &self.states[i],
        )
    }

    /// The error for arrays that an interrupt could not cancel: which, why, and how to
    /// cancel them later.
    fn uncancelled_error(&self) -> crate::error::Error {
        let mut ids = Vec::new();
        let mut lines = Vec::new();
        let (mut backend, mut command) = ("cluster", "poolparty cancel");
        for (i, u) in &self.uncancelled {
            (backend, command) = (u.scheduler.script.name, u.scheduler.cancel_command);
            lines.push(format!(
                "stage `{}`: {} {} ({}): {}",
                self.manifest.stages[*i].name,
                backend,
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
        outputs::write_provenance(self.manifest, &self.layout, &self.run_id, self.started)?;
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
                .all(|s| !matches!(s, Phase::Waiting | Phase::Running(_)))
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
                        .any(|s| matches!(s, Phase::Running(r) if r.ledger.has_consumed()))
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
            .filter_map(|s| match s {
                Phase::Running(r) => r.next_poll,
                _ => None,
            })
            .map(|t| t.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1))
    }

    fn sync_ledgers(&mut self) -> Result<()> {
        for phase in &mut self.states {
            if let Some(r) = phase.running() {
                r.ledger.sync()?;
            }
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    fn poll_backends(&mut self) -> Result<()> {
        let now = Instant::now();
        for phase in &mut self.states {
            if let Some(r) = phase.running() {
                if r.next_poll.is_some_and(|t| now >= t) {
                    r.backend.poll()?;
                    r.next_poll = r.backend.next_poll().map(|d| Instant::now() + d);
                }
            }
        }
        Ok(())
    }

    /// Starts every waiting stage whose needs allow it.
    fn start_ready(&mut self, prepared: &mut Prepared) -> Result<()> {
        for &i in self.graph.order() {
            if !matches!(self.states[i], Phase::Waiting) {
                continue;
            }
            let stage = &self.manifest.stages[i];
            let needs = self.graph.needs(i);
            let element_wise = matches!(stage.source, JobSource::ForEach(_));
            let mut ready = true;
            let mut blocked: Option<String> = None;
            for &n in &needs {
                let name = &self.manifest.stages[n].name;
                match &self.states[n] {
                    Phase::Ended(up) => {
                        if !up.jobs.stats().all_succeeded()
                            && stage.on_failure == OnFailure::Stop
                            && !element_wise
                        {
                            blocked = Some(format!("needed stage `{name}` had failed jobs"));
                        }
                    }
                    Phase::Skipped(_) => {
                        blocked = Some(format!("needed stage `{name}` did not run"));
                    }
                    Phase::Running(_) if element_wise => {}
                    Phase::Unselected => {}
                    Phase::Waiting | Phase::Running(_) => ready = false,
                }
            }
            if let Some(reason) = blocked {
                self.skip(i, reason);
                continue;
            }
            if ready {
                if let Err(e) = self.start_stage(i, prepared[i].take()) {
                    if let Error::Interrupted { signal, .. } = e {
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
        self.states[i] = Phase::Skipped(reason);
    }

    fn upstream(&self, i: usize) -> Upstream {
        let mut up = Upstream::default();
        for n in self.graph.needs(i) {
            let name = self.manifest.stages[n].name.as_str();
            let failed = self.states[n]
                .jobs()
                .map(StageJobs::failed_ids)
                .unwrap_or_default();
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

    /// The stage's jobs and plan: prepared before the run, or expanded and planned now.
    fn plan_stage(
        &self,
        i: usize,
        prepared: Option<(Jobs, StagePlan)>,
    ) -> Result<(Jobs, StagePlan)> {
        let manifest = self.manifest;
        let stage = &manifest.stages[i];
        let upstream = self.upstream(i);
        let any_upstream_failed = upstream.stages.values().any(|u| !u.failed.is_empty());
        let layout = &self.layout;
        Ok(match (prepared, SourceKind::of(&stage.source)) {
            (Some(p), _) if !any_upstream_failed => p,
            (_, SourceKind::ForEach(up)) => {
                let n = self.graph.needs(i)[0];
                debug_assert_eq!(manifest.stages[n].name, *up);
                // One job per upstream job, same id and order.
                let jobs = self.states[n]
                    .jobs()
                    .map_or_else(Jobs::default, |j| j.jobs.clone());
                let plan = plan::plan_stage(manifest, i, &Jobs::default(), layout, &upstream)?;
                (jobs, plan)
            }
            (_, SourceKind::Generate(cmd)) => {
                let base = plan::base_context(manifest, stage, layout, &upstream);
                let rendered = plan::render_generator(manifest, stage, cmd, &base)?;
                let env = plan::stage_env(manifest, stage, layout, &upstream);
                plan::expand_and_plan(manifest, i, layout, &upstream, |visit| {
                    jobs::run_generator_with(manifest, stage, &rendered, &env, self.signals, visit)
                })?
            }
            (_, SourceKind::Static(source)) => {
                plan::expand_and_plan(manifest, i, layout, &upstream, |visit| {
                    jobs::expand_static_with(manifest, stage, source, visit)
                })?
            }
        })
    }

    fn start_stage(&mut self, i: usize, prepared: Option<(Jobs, StagePlan)>) -> Result<()> {
        let manifest = self.manifest;
        let stage = &manifest.stages[i];
        let name = stage.name.to_string();
        let (jobs, plan) = self.plan_stage(i, prepared)?;
        self.layout.create_stage_dirs(&name)?;
        store::write_jobs(&self.layout.jobs_file(&name), &jobs)?;
        // Outcome files an earlier run left (killed, detached, a bundle submitted by hand)
        // count like any recorded attempt, with the fingerprint the job had when submitted.
        let result = ResultSpec {
            mode: plan.settings.result,
            max_bytes: plan.settings.result_max_bytes,
        };
        resume::collect_staged(&self.layout, &name, result, &self.run_id, Collect::All)?;
        let ahead = self.ahead.get_mut(i).and_then(Option::take);
        let states = ahead.and_then(|a| a.current(&self.layout.ledger(&name)));
        let history = StageHistory::load_with(&self.layout, &name, states)?;
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
        let reader = LedgerReader::open(self.layout.ledger(&name))?;
        let kind = plan.settings.backend;
        let workers = backend::local_workers(plan.settings.max_parallel, jobs.len());
        let mut spec = StageSpec::new(&plan, &self.layout, &manifest.name, &self.run_id, workers);
        spec.durations = Arc::new(durations);
        if kind == BackendKind::Local {
            spec.live.clone_from(&self.live);
        }
        let record_to = self.layout.submissions(&name);
        let recorder: backend::Recorder = Box::new(move |s| {
            store::append_lines(&record_to, &[serde_json::to_string(s).expect("serializes")])
        });
        let backend = backend::create(kind, spec, self.tx.clone(), recorder)?;
        let n = jobs.len();
        // Commands are rendered again when a job is launched (`planned_job`), not kept.
        let next_poll = backend.next_poll().map(|d| Instant::now() + d);
        let mut r = Box::new(Running {
            jobs: StageJobs {
                jobs,
                slots: vec![JobSlot::default(); n],
                failed: Vec::new(),
                done_before: 0,
                reader,
            },
            plan,
            backend,
            ledger,
            history,
            policy,
            queued: Vec::new(),
            remaining: n,
            in_flight: 0,
            started: Instant::now(),
            next_poll,
        });
        self.reporter.stage_started(i, &name, n, kind);
        // The stage runs even when starting its jobs fails: the run's error path stops what
        // it adopted or launched.
        let started = self.start_jobs(i, &mut r);
        self.states[i] = Phase::Running(r);
        started
    }

    /// Starts the jobs of stage `i`, which has just started (its dependents have not):
    /// adopts what earlier runs left running, reuses what they recorded, launches the rest;
    /// an element-wise stage gets the elements whose upstream job already ended.
    fn start_jobs(&mut self, i: usize, r: &mut Running) -> Result<()> {
        let stage = &self.manifest.stages[i];
        if let JobSource::ForEach(up_name) = &stage.source {
            let up = self.graph.needs(i)[0];
            let stop = stage.on_failure == OnFailure::Stop;
            for idx in 0..r.jobs.slots.len() {
                // An upstream stage that did not start (unselected) gave this one no jobs.
                let Some(up_jobs) = self.states[up].jobs_mut() else {
                    break;
                };
                let Some(upstream) = up_jobs.slots[idx].outcome.clone() else {
                    continue;
                };
                let element;
                let fed = if !upstream.is_success() && stop {
                    Err(format!("upstream job of `{up_name}` did not succeed"))
                } else {
                    element = element_of(up_jobs, &self.layout, up_name.as_str(), idx, &upstream)?;
                    Ok(&element)
                };
                if let Some((offset, rec)) = feed(r, idx, fed, &self.run_id, self.reporter)? {
                    if let Some(label) = r.finalize(idx, offset, rec.as_ref(), &self.layout) {
                        self.ended(i, idx, rec.as_ref(), label)?;
                    }
                }
            }
            return Ok(());
        }
        let adopted = r.adopt();
        if !adopted.is_empty() {
            self.reporter.message(&format!(
                "stage `{}`: reattached to {} of an earlier run",
                stage.name,
                crate::error::count(adopted.len(), "job")
            ));
        }
        let mut launches = Vec::new();
        for idx in (0..r.jobs.slots.len()).filter(|idx| !adopted.contains(idx)) {
            match r.start(idx, &self.run_id)? {
                Start::Launch(l) => launches.push(l),
                Start::Ended(offset, rec) => {
                    if let Some(label) = r.finalize(idx, offset, rec.as_ref(), &self.layout) {
                        self.ended(i, idx, rec.as_ref(), label)?;
                    }
                }
            }
        }
        r.submit(launches)
    }

    /// Submits the retries and element-wise jobs that handling a batch of events produced:
    /// one submission per stage, not one per job.
    fn submit_queued(&mut self) -> Result<()> {
        for i in 0..self.states.len() {
            let Phase::Running(r) = &mut self.states[i] else {
                continue;
            };
            let queued = std::mem::take(&mut r.queued);
            if !self.interrupted {
                r.submit(queued)?;
                continue;
            }
            let mut ended = Vec::new();
            for l in queued {
                let reason = "run interrupted".to_owned();
                let outcome = Outcome::NotRun { reason };
                ended.extend(r.record_end(l.job.index, 0, outcome, &self.run_id, &self.layout)?);
            }
            self.report_ended(i, ended)?;
        }
        Ok(())
    }

    /// Job `idx` of stage `i` ended (see [`Running::finalize`]) with `record`'s outcome (a
    /// reused success when `None`): tells the reporter, then feeds the element-wise stages
    /// that read `i`.
    fn ended(
        &mut self,
        i: usize,
        idx: usize,
        record: Option<&JobRecord>,
        label: Option<String>,
    ) -> Result<()> {
        match record {
            Some(rec) => self.reporter.job_finished(i, rec, label.as_deref()),
            None => self.reporter.job_reused(i),
        }
        self.feed_dependents(i, idx, record.map_or(&SUCCEEDED, |r| &r.outcome))
    }

    /// [`Runner::ended`] for jobs of stage `i` recorded together (an interrupt).
    fn report_ended(
        &mut self,
        i: usize,
        ended: Vec<(usize, JobRecord, Option<String>)>,
    ) -> Result<()> {
        for (idx, rec, label) in ended {
            self.ended(i, idx, Some(&rec), label)?;
        }
        Ok(())
    }

    /// Job `idx` of stage `up` ended with `upstream`: each running element-wise stage that
    /// reads `up` gets its job `idx` (its element, or a record that it does not run).
    fn feed_dependents(&mut self, up: usize, idx: usize, upstream: &Outcome) -> Result<()> {
        let manifest = self.manifest;
        let up_name = manifest.stages[up].name.as_str();
        let mut element = None;
        for d in 0..self.states.len() {
            let stage = &manifest.stages[d];
            // A dependent that has not started yet gets the element when it starts
            // (`start_jobs`); one that ended or was skipped needs nothing more.
            if !matches!(&stage.source, JobSource::ForEach(n) if n.as_str() == up_name)
                || !matches!(self.states[d], Phase::Running(_))
            {
                continue;
            }
            let fed = if !upstream.is_success() && stage.on_failure == OnFailure::Stop {
                Err(format!("upstream job of `{up_name}` did not succeed"))
            } else {
                Ok(match element {
                    Some(ref e) => e,
                    None => {
                        // The stage whose job ended has started: its jobs are there.
                        let Some(up_jobs) = self.states[up].jobs_mut() else {
                            return Ok(());
                        };
                        element.insert(element_of(up_jobs, &self.layout, up_name, idx, upstream)?)
                    }
                })
            };
            let Phase::Running(r) = &mut self.states[d] else {
                continue;
            };
            if let Some((offset, rec)) = feed(r, idx, fed, &self.run_id, self.reporter)? {
                if let Some(label) = r.finalize(idx, offset, rec.as_ref(), &self.layout) {
                    self.ended(d, idx, rec.as_ref(), label)?;
                }
            }
        }
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
            } => self.finished(stage, record, staged)?,
            Event::Warning { message } => self.reporter.message(&message),
        }
        Ok(())
    }

    fn cancel_all(&mut self, mode: CancelMode) -> Result<()> {
        for i in 0..self.states.len() {
            if let Phase::Waiting = self.states[i] {
                self.skip(i, "run interrupted".to_owned());
                continue;
            }
            let Phase::Running(r) = &mut self.states[i] else {
                continue;
            };
            let (dropped, uncancelled) = r.cancel(mode);
            if let Some(u) = uncancelled {
                self.uncancelled.push((i, u));
            }
            let mut ended = Vec::new();
            for (l, outcome) in dropped {
                let (idx, attempt) = (l.job.index, l.attempt);
                ended.extend(r.record_end(idx, attempt, outcome, &self.run_id, &self.layout)?);
            }
            // Element-wise jobs not yet fed will never be.
            for idx in 0..r.jobs.slots.len() {
                let slot = &r.jobs.slots[idx];
                if slot.outcome.is_none() && slot.attempt == 0 {
                    let reason = "run interrupted".to_owned();
                    let outcome = Outcome::NotRun { reason };
                    ended.extend(r.record_end(idx, 0, outcome, &self.run_id, &self.layout)?);
                }
            }
            self.report_ended(i, ended)?;
        }
        Ok(())
    }

    fn finished(&mut self, i: usize, record: JobRecord, staged: Option<PathBuf>) -> Result<()> {
        // A backend reports the jobs in flight, and a stage ends only once none is; only a
        // launch that an interrupt could not cancel (no longer counted) may report after its
        // stage ended: it has no outcome, the run's error names it.
        let Phase::Running(r) = &mut self.states[i] else {
            return Ok(());
        };
        let offset = r.append(&record, staged)?;
        if let (Some(live), BackendKind::Local) = (&self.live, r.plan.settings.backend) {
            // Only now may recovery forget the job's group.
            live.append(&store::LiveLine::Recorded {
                stage: self.manifest.stages[i].name.as_str().to_owned(),
                id: record.id.clone(),
                attempt: record.attempt,
            })
            .map_err(|e| Error::store("append to", live.path(), e))?;
        }
        if let Some(launch) = r.retry(&record, self.interrupted) {
            let label = crate::summary::job_label(&launch.job.json);
            self.reporter.job_retrying(i, &record, label.as_deref());
            r.queued.push(launch);
            return Ok(());
        }
        if let Some(label) = r.finalize(record.index, offset, Some(&record), &self.layout) {
            self.ended(i, record.index, Some(&record), label)?;
        }
        if let Outcome::OutputLost { .. } = &record.outcome {
            // A full disk: every further job would lose its output too.
            let dir = self.layout.logs_dir(self.manifest.stages[i].name.as_str());
            let what = format!(
                "job {} `{}` {} (recorded so); the run stops",
                record.index,
                record.id,
                record.outcome.describe()
            );
            return Err(Error::store(
                "store job output in",
                dir,
                std::io::Error::other(what),
            ));
        }
        Ok(())
    }

    /// Ends every running stage whose jobs have all ended (its files written, its backend
    /// closed, its ledger synced); true when one did.
    fn finish_done_stages(&mut self) -> Result<bool> {
        let mut any = false;
        for i in 0..self.states.len() {
            let manifest = self.manifest;
            let name = manifest.stages[i].name.as_str();
            let Some(r) = self.states[i].running() else {
                continue;
            };
            if r.remaining > 0 || r.in_flight > 0 {
                continue;
            }
            outputs::write_stage_files(&self.layout, name, &mut r.jobs)?;
            r.backend.close();
            r.ledger.sync()?;
            let wall = r.started.elapsed().as_secs_f64();
            let phase = std::mem::replace(&mut self.states[i], Phase::Waiting);
            self.states[i] = match phase {
                Phase::Running(r) => Phase::Ended(Box::new(Ended { jobs: r.jobs, wall })),
                other => other,
            };
            let report = self.stage_report(i);
            self.reporter.stage_finished(i, &report);
            any = true;
        }
        Ok(any)
    }
}

/// The element of job `idx` of the stage `up_name`, which ended with `upstream`, for the
/// element-wise stages that read it: the upstream job's id, value, outcome, logs and result.
///
/// # Errors
/// Its result cannot be read back from the ledger.
fn element_of(
    up_jobs: &mut StageJobs,
    layout: &Layout,
    up_name: &str,
    idx: usize,
    upstream: &Outcome,
) -> Result<Job> {
    // Inserted as values, not through `json!`: its `to_value` would rewrite numbers
    // (`1E2` to `1e+2`), and numbers reach the command as written.
    let result = up_jobs.result(idx)?.map_or(Value::Null, |r| {
        jobs::parse_value(&r.to_json()).unwrap_or(Value::Null)
    });
    let up_job = up_jobs.jobs.at(idx);
    let mut value = json!({
        "id": up_job.id,
        "index": idx,
        "exit_code": upstream.exit_code(),
        "outcome": upstream.describe(),
        "stdout": layout.log_out(up_name, up_job.id),
        "stderr": layout.log_err(up_name, up_job.id),
    });
    if let Value::Object(map) = &mut value {
        map.insert("upstream".to_owned(), up_job.value());
        map.insert("result".to_owned(), result);
    }
    Ok(Job {
        index: idx,
        id: up_job.job_id(),
        json: serde_json::to_string(&value).expect("serializes"),
        value,
    })
}

/// Gives job `idx` of the running element-wise stage `r` its element (`Err`: why it does not
/// run): renders its command and starts it (a launch waits in the stage's queue), or records
/// it as not run. Returns how it ended, if it did (see [`Start::Ended`]).
///
/// # Errors
/// The ledger cannot be read or written.
fn feed(
    r: &mut Running,
    idx: usize,
    element: std::result::Result<&Job, String>,
    run_id: &str,
    reporter: &Reporter,
) -> Result<Option<(u64, Option<JobRecord>)>> {
    let start = match element.map(|e| r.plan.renderer.plan(e)) {
        Ok(Ok(p)) => {
            r.jobs.slots[idx].planned = Some(Arc::new(p));
            r.start(idx, run_id)?
        }
        Ok(Err(e)) => {
            reporter.diagnostic(&e);
            r.not_run(idx, "its command could not be rendered".to_owned(), run_id)?
        }
        Err(reason) => r.not_run(idx, reason, run_id)?,
    };
    Ok(match start {
        Start::Launch(l) => {
            r.queued.push(l);
            None
        }
        Start::Ended(offset, rec) => Some((offset, rec)),
    })
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
