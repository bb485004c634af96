//! The run report (`poolparty report`, `run --report`): the recorded state of one run turned
//! into facts to look at.
//!
//! [`collect`] reads only the store (the run's `.runs/<run>.json`, each stage's `jobs.jsonl`,
//! ledger, `submissions.jsonl` and log tails) into a [`ReportData`], with every per-job series
//! already aggregated to a size that does not depend on the job count (histogram bins,
//! concurrency bins, a binned timeline above [`MAX_BARS`] attempts, capped lists). [`html`]
//! embeds that data once as JSON in one self-contained page; [`text`] prints the same facts for
//! a terminal.

pub mod html;
pub mod text;

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::graph::StageGraph;
use crate::manifest::Manifest;
use crate::outcome::{JobRecord, Outcome, Verdict};
use crate::store::{self, Layout};
use crate::summary::RunReport;

/// Above this many timed attempts in a stage, its timeline is drawn as a binned density grid
/// instead of one bar per attempt.
pub const MAX_BARS: usize = 5000;
/// Failed jobs listed per stage (the rest are counted).
pub const MAX_FAILED_LISTED: usize = 500;
/// Failed jobs per stage whose log tails are embedded.
pub const MAX_TAILS: usize = 50;
/// Lines of each log tail.
pub const TAIL_LINES: usize = 20;
/// Retried jobs listed per stage.
pub const MAX_RETRIED_LISTED: usize = 100;
/// Slowest attempts listed per stage.
pub const SLOWEST: usize = 10;
/// Bins of the duration histogram.
pub const HIST_BINS: usize = 40;
/// Time bins of the concurrency curve and the binned timeline.
pub const TIME_BINS: usize = 300;
/// Rows (job-index buckets) of the binned timeline.
pub const INDEX_BUCKETS: usize = 60;

/// Everything a report shows, for one run of one workflow.
#[derive(Debug, Serialize)]
pub struct ReportData {
    /// Workflow name.
    pub workflow: String,
    /// The run shown.
    pub run: String,
    /// Every recorded run id, oldest first.
    pub runs: Vec<String>,
    /// Set when the run has no record of its own (in progress, or killed).
    pub note: Option<String>,
    /// Manifest path.
    pub manifest: String,
    /// Manifest hash.
    pub manifest_sha256: String,
    /// poolparty version that wrote the report.
    pub poolparty_version: String,
    /// Run start (Unix seconds).
    pub started: f64,
    /// Run end.
    pub ended: Option<f64>,
    /// The run's verdict.
    pub verdict: Verdict,
    /// poolparty's exit code for that verdict.
    pub exit_code: u8,
    /// When this report was generated (Unix seconds).
    pub generated: f64,
    /// Origin of every `*_ms` time below (Unix seconds).
    pub t0: f64,
    /// The limits used, so the page can say what was aggregated or cut.
    pub limits: Limits,
    /// Stages in manifest order.
    pub stages: Vec<StageData>,
}

/// The aggregation limits (see the consts of this module).
#[derive(Debug, Serialize)]
pub struct Limits {
    /// [`MAX_BARS`].
    pub max_bars: usize,
    /// [`MAX_FAILED_LISTED`].
    pub max_failed_listed: usize,
    /// [`MAX_TAILS`].
    pub max_tails: usize,
    /// [`TAIL_LINES`].
    pub tail_lines: usize,
}

/// Counts of a stage's jobs by final outcome, as of the end of the run.
#[derive(Debug, Default, Serialize, Clone, Copy)]
pub struct Counts {
    /// Jobs in the stage.
    pub total: usize,
    /// Succeeded (in this run or reused).
    pub succeeded: usize,
    /// Succeeded in an earlier run and reused unchanged.
    pub reused: usize,
    /// Exited non-zero.
    pub failed: usize,
    /// Killed by a signal.
    pub signaled: usize,
    /// Could not start.
    pub exec_failed: usize,
    /// Ran past their time limit.
    pub timed_out: usize,
    /// Vanished without an outcome.
    pub lost: usize,
    /// Stopped by an interrupt.
    pub interrupted: usize,
    /// Never ran, or no outcome yet.
    pub not_run: usize,
    /// Attempts made in this run.
    pub attempts: usize,
    /// Jobs with more than one attempt in this run.
    pub retried: usize,
    /// Attempts that ended lost (retried or not).
    pub lost_attempts: usize,
}

/// One stage's facts.
#[derive(Debug, Serialize)]
pub struct StageData {
    /// Name.
    pub name: String,
    /// Backend.
    pub backend: String,
    /// Indices of the stages it needs.
    pub needs: Vec<usize>,
    /// Its layer in the graph drawing (0 for stages that need nothing).
    pub layer: usize,
    /// Why it did not run, when it did not.
    pub not_started: Option<String>,
    /// Counts.
    pub counts: Counts,
    /// First submit or start of this run's attempts, ms after `t0`.
    pub first_ms: Option<i64>,
    /// Last end, ms after `t0`.
    pub last_ms: Option<i64>,
    /// Whether queue wait (submit → start) is known for its attempts.
    pub queue_known: bool,
    /// Duration statistics of timed attempts, seconds: min, median, p90, max, mean.
    pub durations: Option<[f64; 5]>,
    /// Queue wait statistics where known, seconds: min, median, p90, max, mean.
    pub queue_wait: Option<[f64; 5]>,
    /// The timeline: one bar per attempt, or binned.
    pub timeline: Timeline,
    /// Duration histogram.
    pub histogram: Option<Histogram>,
    /// Jobs running (and queued) over time.
    pub concurrency: Option<Concurrency>,
    /// The slowest attempts.
    pub slowest: Vec<AttemptRow>,
    /// Jobs retried in this run (first [`MAX_RETRIED_LISTED`]).
    pub retried: Vec<RetryRow>,
    /// Lost attempts (first [`MAX_RETRIED_LISTED`]).
    pub lost: Vec<AttemptRow>,
    /// Jobs whose final outcome is not a success (first [`MAX_FAILED_LISTED`]).
    pub failed: Vec<FailedRow>,
    /// Jobs whose final outcome is not a success, all of them.
    pub failed_total: usize,
    /// Attempts of this run without both start and end (not drawn).
    pub untimed: usize,
}

/// A stage's timeline.
#[derive(Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Timeline {
    /// No timed attempts.
    Empty,
    /// One bar per attempt, columns of equal length.
    Bars {
        /// Job index.
        index: Vec<usize>,
        /// Job id.
        id: Vec<String>,
        /// Attempt number.
        attempt: Vec<u32>,
        /// Submit time (ms after `t0`), -1 when not known.
        submit: Vec<i64>,
        /// Start (ms after `t0`).
        start: Vec<i64>,
        /// End (ms after `t0`).
        end: Vec<i64>,
        /// Outcome code (see [`outcome_code`]).
        outcome: Vec<u8>,
    },
    /// Attempts counted in a grid of time bins × job-index buckets.
    Binned {
        /// Attempts aggregated.
        attempts: usize,
        /// Start of the first bin (ms after `t0`).
        from_ms: i64,
        /// Width of a time bin (ms).
        bin_ms: i64,
        /// Time bins.
        bins: usize,
        /// Job-index buckets (rows).
        buckets: usize,
        /// Jobs per bucket.
        per_bucket: usize,
        /// Attempts running in each cell, row-major (`bucket * bins + bin`).
        running: Vec<u32>,
        /// Attempts that ended without success in each cell.
        failed: Vec<u32>,
    },
}

/// A duration histogram.
#[derive(Debug, Serialize)]
pub struct Histogram {
    /// Start of the first bin (seconds).
    pub lo: f64,
    /// Width of a bin (seconds); bin i covers `[lo + i*width, lo + (i+1)*width)`.
    pub width: f64,
    /// Successful attempts per bin.
    pub ok: Vec<u32>,
    /// Other attempts per bin.
    pub bad: Vec<u32>,
}

/// Concurrency over time.
#[derive(Debug, Serialize)]
pub struct Concurrency {
    /// Start of the first bin (ms after `t0`).
    pub from_ms: i64,
    /// Bin width (ms).
    pub bin_ms: i64,
    /// Most attempts running at once within each bin.
    pub running: Vec<u32>,
    /// Most attempts submitted and not yet started within each bin (empty when unknown).
    pub queued: Vec<u32>,
    /// The peak of `running`.
    pub peak: u32,
}

/// One attempt, for lists.
#[derive(Debug, Serialize, Clone)]
pub struct AttemptRow {
    /// Job index.
    pub index: usize,
    /// Job id.
    pub id: String,
    /// Attempt.
    pub attempt: u32,
    /// Outcome code.
    pub outcome: u8,
    /// Run time (seconds), when known.
    pub seconds: Option<f64>,
}

/// A retried job.
#[derive(Debug, Serialize)]
pub struct RetryRow {
    /// Job index.
    pub index: usize,
    /// Job id.
    pub id: String,
    /// Each attempt's outcome, described.
    pub attempts: Vec<String>,
}

/// A job whose final outcome is not a success.
#[derive(Debug, Serialize)]
pub struct FailedRow {
    /// Job index.
    pub index: usize,
    /// Job id.
    pub id: String,
    /// Its value, shortened.
    pub value: String,
    /// Attempts made (over all runs).
    pub attempts: u32,
    /// Outcome code.
    pub outcome: u8,
    /// The outcome, described.
    pub describe: String,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// stderr log path, if it printed anything.
    pub stderr_log: Option<String>,
    /// stdout log path, if it printed anything.
    pub stdout_log: Option<String>,
    /// Last lines of stderr (first [`MAX_TAILS`] failed jobs).
    pub stderr_tail: Option<String>,
    /// Last lines of stdout (likewise).
    pub stdout_tail: Option<String>,
}

/// Outcome names by [`outcome_code`].
pub const OUTCOME_NAMES: [&str; 9] = [
    "succeeded",
    "failed",
    "signaled",
    "exec_failed",
    "timed_out",
    "lost",
    "interrupted",
    "not_run",
    "output_lost",
];

/// A small number per outcome kind, for compact columns.
#[must_use]
pub fn outcome_code(o: &Outcome) -> u8 {
    match o {
        Outcome::Succeeded => 0,
        Outcome::Failed { .. } => 1,
        Outcome::Signaled { .. } => 2,
        Outcome::ExecFailed { .. } => 3,
        Outcome::TimedOut => 4,
        Outcome::Lost => 5,
        Outcome::Interrupted => 6,
        Outcome::NotRun { .. } => 7,
        Outcome::OutputLost { .. } => 8,
    }
}

/// How to get past a damaged run record.
const RUN_RECORD_HELP: &str =
    "move the file aside (or choose another run with `--run ID`); the ledgers are not affected";

/// Every recorded run id, oldest first (`.runs/*.json`).
fn recorded_runs(layout: &Layout) -> Vec<String> {
    let mut runs: Vec<String> = std::fs::read_dir(layout.runs_dir())
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".json").map(str::to_owned)
                })
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    runs.sort();
    runs
}

/// The run to report, as recorded or as reconstructed for a run without a record.
#[derive(Debug)]
pub struct ChosenRun {
    /// Its summary: `.runs/<run>.json`, or rebuilt from the ledgers (see `note`).
    pub report: RunReport,
    /// Every recorded run id, oldest first.
    pub runs: Vec<String>,
    /// Set when the run has no record of its own: still in progress, or killed.
    pub note: Option<String>,
}

/// Reads the run to report: `run`, or the latest one. A run that holds (or last held) the
/// workflow lock without having written `.runs/<run>.json` (in progress, or killed) is
/// rebuilt from the ledgers, so its report shows every outcome recorded so far.
///
/// # Errors
/// No run recorded, an unknown run id, or an unreadable record.
pub fn load_run(manifest: &Manifest, layout: &Layout, run: Option<&str>) -> Result<ChosenRun> {
    let mut runs = recorded_runs(layout);
    let holder = store::read_holder(layout);
    // Run ids start with their UTC date, so they sort by time; `cancel` and the like do not.
    if let Some(h) = holder
        .as_ref()
        .filter(|h| h.run.starts_with(|c: char| c.is_ascii_digit()) && !runs.contains(&h.run))
    {
        runs.push(h.run.clone());
        runs.sort();
    }
    let id = match run {
        Some(r) if runs.iter().any(|x| x == r) => r.to_owned(),
        Some(r) => {
            return Err(Error::Usage {
                message: format!(
                    "no run `{r}` is recorded in `{}`",
                    layout.runs_dir().display()
                ),
                help: Some(if runs.is_empty() {
                    "nothing has run yet".to_owned()
                } else {
                    format!("recorded runs: {}", runs.join(", "))
                }),
            });
        }
        None => runs.last().cloned().ok_or_else(|| Error::Usage {
            message: format!(
                "no run is recorded in `{}` yet: there is nothing to report",
                layout.root().display()
            ),
            help: Some("run the workflow first with `poolparty run`".to_owned()),
        })?,
    };
    let path = layout.run_record(&id);
    // A run writes its provenance when it starts and its whole summary when it ends.
    let record: Option<serde_json::Value> = match std::fs::read_to_string(&path) {
        Ok(text) => Some(
            serde_json::from_str(&text).map_err(|e| Error::CorruptState {
                path: path.clone(),
                message: e.to_string(),
                help: RUN_RECORD_HELP.to_owned(),
            })?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::store("read", &path, e)),
    };
    if let Some(v) = record.as_ref().filter(|v| v.get("verdict").is_some()) {
        let report = serde_json::from_value(v.clone()).map_err(|e| Error::CorruptState {
            path: path.clone(),
            message: e.to_string(),
            help: RUN_RECORD_HELP.to_owned(),
        })?;
        return Ok(ChosenRun {
            report,
            runs,
            note: None,
        });
    }
    let holder = holder.filter(|h| h.run == id);
    let live = holder.as_ref().is_some_and(store::Holder::is_live_here);
    let mut report = crate::query::status(manifest, layout)?;
    report.run.clone_from(&id);
    report.started = record
        .as_ref()
        .and_then(|v| v["started"].as_f64())
        .or(holder.as_ref().map(|h| h.started))
        .unwrap_or(report.started);
    report.ended = None;
    let note = match holder.filter(|_| live) {
        Some(h) => format!(
            "run {id} is in progress (pid {} on {}): outcomes recorded so far",
            h.pid, h.host
        ),
        None => format!(
            "run {id} ended without writing its summary (killed?): outcomes recorded before it stopped"
        ),
    };
    Ok(ChosenRun {
        report,
        runs,
        note: Some(note),
    })
}

/// Collects the report of `run` (from [`load_run`]).
///
/// # Errors
/// Unreadable state.
pub fn collect(
    manifest: &Manifest,
    graph: &StageGraph,
    layout: &Layout,
    chosen: &ChosenRun,
) -> Result<ReportData> {
    let run = &chosen.report;
    let mut raw = Vec::with_capacity(manifest.stages.len());
    let mut t0 = run.started;
    for stage in &manifest.stages {
        let name = stage.name.as_str();
        let jobs = store::read_jobs(&layout.jobs_file(name))?;
        let records = store::read_ledger(&layout.ledger(name))?;
        let subs: Vec<store::Submission> =
            store::read_lines(&layout.submissions(name)).unwrap_or_default();
        let mut submitted: HashMap<(usize, u32), f64> = HashMap::new();
        for s in subs.iter().filter(|s| s.run == run.run) {
            if let Some(t) = s.submitted {
                for j in s.tasks.iter().flatten() {
                    submitted.insert((j.index, j.attempt), t);
                }
            }
        }
        for r in records.iter().filter(|r| r.run == run.run) {
            if let Some(s) = r.start {
                t0 = t0.min(s);
            }
        }
        for t in submitted.values() {
            t0 = t0.min(*t);
        }
        raw.push((jobs, records, submitted));
    }
    let layers = layers(manifest, graph);
    let mut stages = Vec::with_capacity(raw.len());
    for (i, (jobs, records, submitted)) in raw.into_iter().enumerate() {
        let stage = &manifest.stages[i];
        let summary = run.stages.iter().find(|s| s.name == stage.name.as_str());
        stages.push(stage_data(
            layout,
            stage.name.as_str(),
            stage.settings.backend.to_string(),
            graph.needs(i),
            layers[i],
            summary.and_then(|s| s.not_started.clone()),
            jobs,
            &records,
            &submitted,
            &run.run,
            t0,
        ));
    }
    Ok(ReportData {
        workflow: run.workflow.clone(),
        run: run.run.clone(),
        runs: chosen.runs.clone(),
        note: chosen.note.clone(),
        manifest: run.manifest.display().to_string(),
        manifest_sha256: run.manifest_sha256.clone(),
        poolparty_version: env!("CARGO_PKG_VERSION").to_owned(),
        started: run.started,
        ended: run.ended,
        verdict: run.verdict,
        exit_code: run.verdict.exit_code(),
        generated: store::now(),
        t0,
        limits: Limits {
            max_bars: MAX_BARS,
            max_failed_listed: MAX_FAILED_LISTED,
            max_tails: MAX_TAILS,
            tail_lines: TAIL_LINES,
        },
        stages,
    })
}

/// Each stage's layer: the length of the longest `needs` chain leading to it.
fn layers(manifest: &Manifest, graph: &StageGraph) -> Vec<usize> {
    let mut layer = vec![0; manifest.stages.len()];
    for &s in graph.order() {
        layer[s] = graph
            .needs(s)
            .iter()
            .map(|&n| layer[n] + 1)
            .max()
            .unwrap_or(0);
    }
    layer
}

/// The width (ms) and number of time bins covering `len` ms in at most [`TIME_BINS`] bins.
fn time_bins(len: i64) -> (i64, usize) {
    #[expect(clippy::cast_possible_wrap, reason = "a small constant")]
    let bin_ms = ((len + TIME_BINS as i64 - 1) / TIME_BINS as i64).max(1);
    let bins = usize::try_from((len + bin_ms - 1) / bin_ms)
        .unwrap_or(1)
        .clamp(1, TIME_BINS);
    (bin_ms, bins)
}

fn ms(t: f64, t0: f64) -> i64 {
    #[expect(
        clippy::cast_possible_truncation,
        reason = "milliseconds of a run fit in i64"
    )]
    let v = ((t - t0) * 1000.0).round() as i64;
    v
}

/// min, median, p90, max, mean of unsorted values.
fn stats(mut v: Vec<f64>) -> Option<[f64; 5]> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index into the vector"
        )]
        let i = ((v.len() - 1) as f64 * q).round() as usize;
        v[i]
    };
    #[expect(clippy::cast_precision_loss, reason = "a count")]
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    Some([v[0], at(0.5), at(0.9), v[v.len() - 1], mean])
}

/// Shortens text to `n` characters.
fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(n).collect();
        out.push('…');
        out
    }
}

#[expect(
    clippy::too_many_arguments,
    clippy::too_many_lines,
    reason = "one pass over a stage"
)]
fn stage_data(
    layout: &Layout,
    name: &str,
    backend: String,
    needs: Vec<usize>,
    layer: usize,
    not_started: Option<String>,
    jobs: Option<Vec<store::JobLine>>,
    records: &[JobRecord],
    submitted: &HashMap<(usize, u32), f64>,
    run: &str,
    t0: f64,
) -> StageData {
    // Final state as of this run: records up to this run's last one.
    let cut = records
        .iter()
        .rposition(|r| r.run == run)
        .map_or(records.len(), |p| p + 1);
    let upto = &records[..cut];
    // This run's attempts: a `not_run` record (the run stopped, or a need failed) is the
    // outcome of a job that never started, not an attempt.
    let mine: Vec<&JobRecord> = upto
        .iter()
        .filter(|r| r.run == run && !matches!(r.outcome, Outcome::NotRun { .. }))
        .collect();
    let mut latest: HashMap<&str, &JobRecord> = HashMap::with_capacity(upto.len());
    for r in upto {
        latest.insert(r.id.as_str(), r);
    }
    let ran_here: std::collections::HashSet<&str> = mine.iter().map(|r| r.id.as_str()).collect();
    let mut counts = Counts::default();
    let mut failed = Vec::new();
    let mut failed_total = 0;
    let empty = Vec::new();
    let jobs_ref = jobs.as_ref().unwrap_or(&empty);
    for j in jobs_ref {
        counts.total += 1;
        let Some(r) = latest.get(j.id.as_str()) else {
            counts.not_run += 1;
            continue;
        };
        match &r.outcome {
            Outcome::Succeeded => {
                counts.succeeded += 1;
                if !ran_here.contains(j.id.as_str()) {
                    counts.reused += 1;
                }
            }
            // Ran, but its output was lost: not a success, counted with the failures (its
            // outcome names what happened).
            Outcome::Failed { .. } | Outcome::OutputLost { .. } => counts.failed += 1,
            Outcome::Signaled { .. } => counts.signaled += 1,
            Outcome::ExecFailed { .. } => counts.exec_failed += 1,
            Outcome::TimedOut => counts.timed_out += 1,
            Outcome::Lost => counts.lost += 1,
            Outcome::Interrupted => counts.interrupted += 1,
            Outcome::NotRun { .. } => counts.not_run += 1,
        }
        if r.outcome.is_success() || matches!(r.outcome, Outcome::NotRun { .. }) {
            continue;
        }
        failed_total += 1;
        if failed.len() >= MAX_FAILED_LISTED {
            continue;
        }
        let err = layout.log_err(name, &j.id);
        let out = layout.log_out(name, &j.id);
        let tails = failed.len() < MAX_TAILS;
        failed.push(FailedRow {
            index: j.index,
            id: j.id.clone(),
            value: shorten(j.job.get(), 200),
            attempts: r.attempt,
            outcome: outcome_code(&r.outcome),
            describe: r.outcome.describe(),
            exit_code: r.outcome.exit_code(),
            stderr_tail: if tails {
                store::tail(&err, TAIL_LINES)
            } else {
                None
            },
            stdout_tail: if tails {
                store::tail(&out, TAIL_LINES)
            } else {
                None
            },
            stderr_log: err.exists().then(|| err.display().to_string()),
            stdout_log: out.exists().then(|| out.display().to_string()),
        });
    }
    counts.attempts = mine.len();
    counts.lost_attempts = mine
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Lost))
        .count();

    // Retries: jobs with several attempts in this run, in job order (the ledger's order is
    // the order attempts ended, which parallel jobs make vary from run to run).
    let mut by_job: HashMap<&str, Vec<&JobRecord>> = HashMap::new();
    let mut order = Vec::new();
    for r in &mine {
        let e = by_job.entry(r.id.as_str()).or_default();
        if e.is_empty() {
            order.push(r.id.as_str());
        }
        e.push(r);
    }
    order.sort_by_key(|id| by_job[id][0].index);
    let mut retried = Vec::new();
    for id in &order {
        let a = &by_job[id];
        if a.len() > 1 {
            counts.retried += 1;
            if retried.len() < MAX_RETRIED_LISTED {
                retried.push(RetryRow {
                    index: a[0].index,
                    id: (*id).to_owned(),
                    attempts: a
                        .iter()
                        .map(|r| format!("#{}: {}", r.attempt, r.outcome.describe()))
                        .collect(),
                });
            }
        }
    }
    let row = |r: &JobRecord| AttemptRow {
        index: r.index,
        id: r.id.clone(),
        attempt: r.attempt,
        outcome: outcome_code(&r.outcome),
        seconds: r.duration(),
    };
    let lost: Vec<AttemptRow> = mine
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Lost))
        .take(MAX_RETRIED_LISTED)
        .map(|r| row(r))
        .collect();

    // Timed attempts: (record, submit, start, end).
    let timed: Vec<(&JobRecord, Option<f64>, f64, f64)> = mine
        .iter()
        .filter_map(|r| {
            let (s, e) = (r.start?, r.end?);
            Some((
                *r,
                submitted.get(&(r.index, r.attempt)).copied(),
                s,
                e.max(s),
            ))
        })
        .collect();
    let untimed = mine.len() - timed.len();
    let queue_known = timed.iter().any(|t| t.1.is_some());
    let durations = stats(timed.iter().map(|t| t.3 - t.2).collect());
    let queue_wait = stats(
        timed
            .iter()
            .filter_map(|t| t.1.map(|q| (t.2 - q).max(0.0)))
            .collect(),
    );
    let mut slowest: Vec<&(&JobRecord, Option<f64>, f64, f64)> = timed.iter().collect();
    slowest.sort_by(|a, b| (b.3 - b.2).total_cmp(&(a.3 - a.2)));
    let slowest = slowest
        .into_iter()
        .take(SLOWEST)
        .map(|t| row(t.0))
        .collect();

    let first = timed
        .iter()
        .map(|t| t.1.unwrap_or(t.2).min(t.2))
        .min_by(f64::total_cmp);
    let last = timed.iter().map(|t| t.3).max_by(f64::total_cmp);
    let (first_ms, last_ms) = (first.map(|f| ms(f, t0)), last.map(|l| ms(l, t0)));

    let histogram = durations.map(|d| {
        // From the shortest to the longest attempt, or from 0 when they are all alike.
        let lo = if d[3] - d[0] < 1e-3 { 0.0 } else { d[0] };
        #[expect(clippy::cast_precision_loss, reason = "a small count")]
        let width = (d[3] - lo).max(1e-3) / HIST_BINS as f64;
        let (mut ok, mut bad) = (vec![0u32; HIST_BINS], vec![0u32; HIST_BINS]);
        for t in &timed {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a bin index"
            )]
            let b = (((t.3 - t.2 - lo).max(0.0) / width) as usize).min(HIST_BINS - 1);
            if t.0.outcome.is_success() {
                ok[b] += 1;
            } else {
                bad[b] += 1;
            }
        }
        Histogram { lo, width, ok, bad }
    });

    let span = match (first_ms, last_ms) {
        (Some(f), Some(l)) => Some((f, (l - f).max(1))),
        _ => None,
    };
    let concurrency = span.map(|(from, len)| {
        let (bin_ms, bins) = time_bins(len);
        let bin = |t: i64| {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "clamped to the bins"
            )]
            let b = ((t - from).max(0) / bin_ms) as usize;
            b.min(bins - 1)
        };
        // Exact peak per bin from a sweep over start/end events.
        let mut events: Vec<(i64, i32)> = Vec::with_capacity(timed.len() * 2);
        let mut qevents: Vec<(i64, i32)> = Vec::new();
        for t in &timed {
            events.push((ms(t.2, t0), 1));
            events.push((ms(t.3, t0), -1));
            if let Some(q) = t.1 {
                qevents.push((ms(q, t0), 1));
                qevents.push((ms(t.2, t0).max(ms(q, t0)), -1));
            }
        }
        let sweep = |mut ev: Vec<(i64, i32)>| -> Vec<u32> {
            // Ends before starts at the same instant.
            ev.sort_unstable();
            let mut out = vec![0u32; bins];
            let mut now = 0i32;
            let mut cur = 0usize;
            for (t, d) in ev {
                let b = bin(t);
                while cur < b {
                    cur += 1;
                    out[cur] = out[cur].max(u32::try_from(now).unwrap_or(0));
                }
                now += d;
                out[b] = out[b].max(u32::try_from(now).unwrap_or(0));
            }
            out
        };
        let running = sweep(events);
        let queued = if qevents.is_empty() {
            Vec::new()
        } else {
            sweep(qevents)
        };
        Concurrency {
            from_ms: from,
            bin_ms,
            peak: running.iter().copied().max().unwrap_or(0),
            running,
            queued,
        }
    });

    let timeline = match span {
        None => Timeline::Empty,
        Some(_) if timed.len() <= MAX_BARS => Timeline::Bars {
            index: timed.iter().map(|t| t.0.index).collect(),
            id: timed.iter().map(|t| t.0.id.clone()).collect(),
            attempt: timed.iter().map(|t| t.0.attempt).collect(),
            submit: timed
                .iter()
                .map(|t| t.1.map_or(-1, |q| ms(q, t0)))
                .collect(),
            start: timed.iter().map(|t| ms(t.2, t0)).collect(),
            end: timed.iter().map(|t| ms(t.3, t0)).collect(),
            outcome: timed.iter().map(|t| outcome_code(&t.0.outcome)).collect(),
        },
        Some((from, len)) => {
            let (bin_ms, bins) = time_bins(len);
            let n_jobs = jobs_ref
                .len()
                .max(timed.iter().map(|t| t.0.index + 1).max().unwrap_or(1));
            let per_bucket = n_jobs.div_ceil(INDEX_BUCKETS).max(1);
            let buckets = n_jobs.div_ceil(per_bucket);
            let bin = |t: f64| {
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "clamped to the bins"
                )]
                let b = ((ms(t, t0) - from).max(0) / bin_ms) as usize;
                b.min(bins - 1)
            };
            // Difference arrays per row, then prefix sums: O(attempts + cells).
            let mut diff = vec![0i64; buckets * (bins + 1)];
            let mut failed_cells = vec![0u32; buckets * bins];
            for t in &timed {
                let row = (t.0.index / per_bucket).min(buckets - 1);
                let (a, b) = (bin(t.2), bin(t.3));
                diff[row * (bins + 1) + a] += 1;
                diff[row * (bins + 1) + b + 1] -= 1;
                if !t.0.outcome.is_success() {
                    failed_cells[row * bins + b] += 1;
                }
            }
            let mut running = vec![0u32; buckets * bins];
            for row in 0..buckets {
                let mut acc = 0i64;
                for b in 0..bins {
                    acc += diff[row * (bins + 1) + b];
                    running[row * bins + b] = u32::try_from(acc).unwrap_or(0);
                }
            }
            Timeline::Binned {
                attempts: timed.len(),
                from_ms: from,
                bin_ms,
                bins,
                buckets,
                per_bucket,
                running,
                failed: failed_cells,
            }
        }
    };

    StageData {
        name: name.to_owned(),
        backend,
        needs,
        layer,
        not_started: if jobs.is_none() {
            not_started.or_else(|| Some("no jobs expanded yet".to_owned()))
        } else {
            not_started
        },
        counts,
        first_ms,
        last_ms,
        queue_known,
        durations,
        queue_wait,
        timeline,
        histogram,
        concurrency,
        slowest,
        retried,
        lost,
        failed,
        failed_total,
        untimed,
    }
}

/// Writes the report of `run` to `out` as HTML or text.
///
/// # Errors
/// Unreadable state or an unwritable output.
pub fn write(data: &ReportData, out: &Path, format: Format) -> Result<()> {
    let text = render(data, format);
    store::atomic_write(out, text.as_bytes())
}

/// Renders the report.
#[must_use]
pub fn render(data: &ReportData, format: Format) -> String {
    match format {
        Format::Html => html::render(data),
        Format::Text => text::render(data),
    }
}

/// Output formats of `poolparty report`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One self-contained HTML page.
    Html,
    /// Plain text for a terminal.
    Text,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_values() {
        assert_eq!(stats(vec![]), None);
        let s = stats(vec![3.0, 1.0, 2.0]).unwrap();
        assert_eq!(s[0], 1.0);
        assert_eq!(s[1], 2.0);
        assert_eq!(s[3], 3.0);
        assert!((s[4] - 2.0).abs() < 1e-9);
    }

    #[test]
    fn shortens_on_char_boundaries() {
        assert_eq!(shorten("héllo", 3), "hél…");
        assert_eq!(shorten("ab", 3), "ab");
    }
}
