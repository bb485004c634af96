//! Read-only views of recorded state: `poolparty results` (a stage's results in job order) and
//! `poolparty status` (every stage's outcomes).
//!
//! Reads only the store (jobs and ledger files, outcome files not collected yet), never the
//! scheduler, and writes nothing, so both work during a run, after a killed run, after a
//! resumed run and after a detached one.

use std::io::Write;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::manifest::ResultMode;
use crate::outcome::{JobRecord, OutcomeKind, ResultValue, StagedOutcome, Stats, Verdict};
use crate::resume::{ResultSpec, StageHistory};
use crate::store::{self, JobLine, JobState, Layout, LedgerReader};
use crate::summary::{FailedJob, RunReport, StageReport};

/// How `results` ended, besides what it wrote.
#[derive(Debug)]
pub struct ResultsOutput {
    /// One line per job without a result (the first [`MISSING_SHOWN`]), for stderr.
    pub missing: Vec<String>,
    /// How many jobs have no result.
    pub missing_total: usize,
    /// Notes for stderr (results kept as files).
    pub notes: Vec<String>,
}

/// Output formats of `poolparty results`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ResultsFormat {
    /// One JSON array, element i the result of job i.
    Json,
    /// One object per job: index, id, exit_code, result.
    Jsonl,
    /// Comma-separated, object results flattened into columns.
    Csv,
    /// Tab-separated, likewise.
    Tsv,
}

/// Options of `results`.
#[derive(Clone, Debug)]
pub struct ResultsOptions {
    /// The stage.
    pub stage: Option<String>,
    /// Output format.
    pub format: ResultsFormat,
    /// Include each job's value.
    pub with_job: bool,
}

fn stage_name<'a>(manifest: &'a Manifest, wanted: Option<&'a str>) -> Result<&'a str> {
    match wanted {
        Some(s) => manifest
            .stage(s)
            .map(|st| st.name.as_str())
            .ok_or_else(|| Error::Usage {
                message: format!("the manifest has no stage `{s}`"),
                help: crate::error::did_you_mean(s, manifest.stage_names()).or_else(|| {
                    Some(format!(
                        "stages: {}",
                        manifest.stage_names().collect::<Vec<_>>().join(", ")
                    ))
                }),
            }),
        None if manifest.stages.len() == 1 => Ok(manifest.stages[0].name.as_str()),
        None => Err(Error::Usage {
            message: "the manifest has several stages: choose one with `--stage`".to_owned(),
            help: Some(format!(
                "stages: {}",
                manifest.stage_names().collect::<Vec<_>>().join(", ")
            )),
        }),
    }
}

/// What is recorded of one job: its latest ledger record, or an outcome file newer than it.
#[derive(Clone, Copy)]
enum Latest<'a> {
    Ledger(&'a JobState),
    Staged(&'a StagedOutcome),
}

impl Latest<'_> {
    fn kind(self) -> OutcomeKind {
        match self {
            Self::Ledger(s) => s.kind,
            Self::Staged(s) if s.succeeded() => OutcomeKind::Succeeded,
            Self::Staged(_) => OutcomeKind::Failed,
        }
    }

    fn exit_code(self) -> Option<i32> {
        match self {
            Self::Ledger(s) => s.exit_code,
            Self::Staged(s) => Some(s.rc),
        }
    }

    fn succeeded(self) -> bool {
        self.kind() == OutcomeKind::Succeeded
    }

    fn span(self) -> Option<(f64, f64)> {
        match self {
            Self::Ledger(s) => s.span(),
            Self::Staged(s) => Some((s.start, s.end)),
        }
    }
}

/// A stage's recorded state, read back: the latest state of each job (small, fixed-size per
/// job) and a reader that fetches a job's full record or result from the ledger when needed.
struct Recorded {
    name: String,
    history: StageHistory,
    ledger: LedgerReader,
    result: ResultSpec,
}

impl Recorded {
    /// `None` when the stage has no jobs file and nothing recorded.
    fn open(layout: &Layout, name: &str, result: ResultSpec) -> Result<Option<Self>> {
        let history = StageHistory::load(layout, name)?;
        if !layout.jobs_file(name).exists() && history.states().is_empty() && !history.has_staged()
        {
            return Ok(None);
        }
        Ok(Some(Self {
            name: name.to_owned(),
            history,
            ledger: LedgerReader::open(layout.ledger(name))?,
            result,
        }))
    }

    fn latest(&self, id: &str) -> Option<Latest<'_>> {
        match self.history.staged(id) {
            Some(s) => Some(Latest::Staged(&s.outcome)),
            None => self.history.state(id).map(Latest::Ledger),
        }
    }

    /// The job's latest record in full.
    fn record(&mut self, layout: &Layout, id: &str) -> Result<Option<JobRecord>> {
        if let Some(s) = self.history.staged(id) {
            let result = self.staged_result(layout, id);
            return Ok(Some(s.outcome.record(
                "staged".to_owned(),
                String::new(),
                result,
            )));
        }
        match self.history.state(id) {
            Some(s) => Ok(Some(self.ledger.read_at(s.offset)?)),
            None => Ok(None),
        }
    }

    /// The job's recorded result.
    fn result(&mut self, layout: &Layout, id: &str) -> Result<Option<ResultValue>> {
        if self.history.staged(id).is_some() {
            return Ok(self.staged_result(layout, id));
        }
        match self.history.state(id) {
            Some(s) => self.ledger.result_at(s.offset),
            None => Ok(None),
        }
    }

    /// The result of an outcome no runner collected yet, read as a runner would (a large
    /// result stays a file: only its size is read), without consuming anything.
    fn staged_result(&self, layout: &Layout, id: &str) -> Option<ResultValue> {
        store::read_result(
            self.result.mode,
            &layout.result_path(&self.name, id),
            &layout.log_out(&self.name, id),
            self.result.max_bytes,
            false,
        )
    }

    /// Calls `f` with each job of the stage in order: from `jobs.jsonl`, or, when it is gone
    /// but outcomes were recorded, the recorded jobs (without their values), so their
    /// outcomes are shown rather than "not started".
    fn for_each_job(
        &mut self,
        layout: &Layout,
        mut f: impl FnMut(&mut Self, JobLine) -> Result<()>,
    ) -> Result<()> {
        let path = layout.jobs_file(&self.name);
        if store::for_each_job(&path, |j| f(self, j))? {
            return Ok(());
        }
        let mut known: Vec<(usize, String)> = self
            .history
            .states()
            .iter()
            .map(|(id, s)| (s.index, id.to_string()))
            .collect();
        known.extend(
            self.history
                .staged_all()
                .iter()
                .filter(|(id, _)| self.history.state(id).is_none())
                .map(|(id, s)| (s.outcome.index, id.clone())),
        );
        known.sort();
        for (index, id) in known {
            let job = JobLine {
                index,
                id,
                job: serde_json::value::RawValue::from_string("null".to_owned())
                    .expect("`null` is JSON"),
            };
            f(self, job)?;
        }
        Ok(())
    }
}

fn result_spec(manifest: &Manifest, name: &str) -> ResultSpec {
    manifest.stage(name).map_or(
        ResultSpec {
            mode: ResultMode::None,
            max_bytes: 1 << 20,
        },
        |s| ResultSpec {
            mode: s.settings.result,
            max_bytes: s.settings.result_max_bytes,
        },
    )
}

/// How many jobs without a result `results` names; the rest are counted.
pub const MISSING_SHOWN: usize = 50;

/// A stage's results in job order, written to `out` as they are read (one job's result in
/// memory at a time; a table reads the results twice, once for its columns).
///
/// # Errors
/// An unknown stage, a stage that never ran, or unreadable state.
pub fn results(
    manifest: &Manifest,
    layout: &Layout,
    opts: &ResultsOptions,
    out: &mut dyn Write,
) -> Result<ResultsOutput> {
    let name = stage_name(manifest, opts.stage.as_deref())?;
    let spec = result_spec(manifest, name);
    let mut rec = Recorded::open(layout, name, spec)?.ok_or_else(|| Error::Usage {
        message: format!("stage `{name}` has not run yet: there are no results"),
        help: Some("run it first with `poolparty run`".to_owned()),
    })?;
    let mut summary = ResultsOutput {
        missing: Vec::new(),
        missing_total: 0,
        notes: Vec::new(),
    };
    // A stage with `result = "none"` records no results by design.
    let records_results = spec.mode != ResultMode::None;
    let columns = match opts.format {
        ResultsFormat::Csv | ResultsFormat::Tsv => {
            let mut columns = Columns::default();
            rec.for_each_job(layout, |rec, j| {
                if let Some(r) = rec.result(layout, &j.id)? {
                    if let Ok(v) = crate::jobs::parse_value(&r.to_json()) {
                        columns.add(&v);
                    }
                }
                Ok(())
            })?;
            let header = columns.header(opts);
            let _ = writeln!(out, "{}", row(&header, opts.format));
            Some(columns)
        }
        ResultsFormat::Json => {
            let _ = out.write_all(b"[");
            None
        }
        ResultsFormat::Jsonl => None,
    };
    let mut n = 0usize;
    rec.for_each_job(layout, |rec, j| {
        let latest = rec.latest(&j.id).map(|l| (l.succeeded(), l.kind(), l.exit_code()));
        let ok = latest.is_some_and(|(s, _, _)| s);
        let result = rec.result(layout, &j.id)?;
        let who = || {
            let label = crate::summary::job_label(j.job.get())
                .map_or_else(String::new, |l| format!(" {l}"));
            format!("job {} `{}`{label}", j.index, j.id)
        };
        let missing = match (latest, &result) {
            (Some(_), _) if !ok => {
                let describe = if summary.missing.len() < MISSING_SHOWN {
                    rec.record(layout, &j.id)?
                        .map_or_else(String::new, |r| r.outcome.describe())
                } else {
                    String::new()
                };
                Some(describe)
            }
            (None, _) => Some("no outcome recorded".to_owned()),
            (Some(_), None) if !records_results => None,
            (Some(_), None) => Some("succeeded but wrote no result".to_owned()),
            _ => None,
        };
        if let Some(why) = missing {
            if summary.missing.len() < MISSING_SHOWN {
                summary.missing.push(format!("{}: {why}", who()));
            }
            summary.missing_total += 1;
        }
        if let Some(ResultValue::File { path, bytes }) = &result {
            summary.notes.push(format!(
                "job {} `{}`: result of {bytes} bytes kept as a file: {path}",
                j.index, j.id
            ));
        }
        let text = result.as_ref().map(ResultValue::to_json);
        match opts.format {
            ResultsFormat::Json => {
                if n > 0 {
                    let _ = out.write_all(b", ");
                }
                match &text {
                    Some(t) if ok => {
                        let _ = out.write_all(t.as_bytes());
                    }
                    _ => {
                        let _ = out.write_all(b"null");
                    }
                }
            }
            ResultsFormat::Jsonl => {
                let code = latest
                    .and_then(|(_, _, c)| c)
                    .map_or_else(|| "null".to_owned(), |c| c.to_string());
                let outcome = latest.map_or("not_run", |(_, k, _)| k.as_str());
                let _ = write!(
                    out,
                    "{{\"index\":{},\"id\":{},\"outcome\":\"{outcome}\",\"exit_code\":{code},\"result\":{}",
                    j.index,
                    serde_json::to_string(&j.id).expect("string"),
                    text.as_deref().unwrap_or("null")
                );
                if opts.with_job {
                    let _ = write!(out, ",\"job\":{}", j.job.get());
                }
                let _ = out.write_all(b"}\n");
            }
            ResultsFormat::Csv | ResultsFormat::Tsv => {
                let columns = columns.as_ref().expect("columns are read first");
                let value = text
                    .as_deref()
                    .and_then(|t| crate::jobs::parse_value(t).ok());
                let cells = columns.cells(&j, latest.and_then(|(_, _, c)| c), value.as_ref(), opts);
                let _ = writeln!(out, "{}", row(&cells, opts.format));
            }
        }
        n += 1;
        Ok(())
    })
    ?;
    if opts.format == ResultsFormat::Json {
        let _ = out.write_all(b"]\n");
    }
    Ok(summary)
}

/// The columns of a `csv`/`tsv` table: the fields of object results, in order of appearance,
/// and a `result` column when some result is not an object.
#[derive(Default)]
struct Columns {
    keys: Vec<String>,
    scalar: bool,
}

impl Columns {
    fn add(&mut self, v: &Value) {
        match v {
            Value::Object(m) => {
                for k in m.keys() {
                    if !self.keys.contains(k) {
                        self.keys.push(k.clone());
                    }
                }
            }
            _ => self.scalar = true,
        }
    }

    fn whole(&self) -> bool {
        self.scalar || self.keys.is_empty()
    }

    fn header(&self, opts: &ResultsOptions) -> Vec<String> {
        let mut header: Vec<String> = vec!["index".into(), "id".into(), "exit_code".into()];
        if self.whole() {
            header.push("result".into());
        }
        // Object fields get a `result.` prefix so they never collide with the fixed columns.
        header.extend(self.keys.iter().map(|k| format!("result.{k}")));
        if opts.with_job {
            header.push("job".into());
        }
        header
    }

    fn cells(
        &self,
        j: &JobLine,
        code: Option<i32>,
        v: Option<&Value>,
        opts: &ResultsOptions,
    ) -> Vec<String> {
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        let mut cells = vec![
            j.index.to_string(),
            j.id.clone(),
            code.map_or_else(String::new, |c| c.to_string()),
        ];
        if self.whole() {
            cells.push(match v {
                Some(Value::Object(_)) | None => String::new(),
                Some(other) => text(other),
            });
        }
        for k in &self.keys {
            cells.push(v.and_then(|v| v.get(k)).map_or_else(String::new, text));
        }
        if opts.with_job {
            cells.push(j.job.get().to_owned());
        }
        cells
    }
}

/// One table line: cells quoted for csv or escaped for tsv, joined.
fn row(cells: &[String], format: ResultsFormat) -> String {
    let tsv = format == ResultsFormat::Tsv;
    let cell = |s: &str| -> String {
        if tsv {
            s.replace('\\', "\\\\")
                .replace('\t', "\\t")
                .replace('\n', "\\n")
                .replace('\r', "\\r")
        } else if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    let sep = if tsv { "\t" } else { "," };
    cells.iter().map(|c| cell(c)).collect::<Vec<_>>().join(sep)
}

/// The newest run that started in this state folder, with its start time: the newest
/// `.runs/<run>.json` (written when a run starts) or the run holding the workflow lock. Run ids
/// start with their UTC start time, so they sort by time; `cancel` and the like take the lock
/// under ids that do not and are skipped.
fn latest_run(layout: &Layout) -> Option<(String, f64)> {
    let recorded = std::fs::read_dir(layout.runs_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".json").map(str::to_owned)
        })
        .filter(|n| n.starts_with(|c: char| c.is_ascii_digit()))
        .max_by(|a, b| run_order(a).cmp(&run_order(b)));
    let holder =
        store::read_holder(layout).filter(|h| h.run.starts_with(|c: char| c.is_ascii_digit()));
    match (recorded, holder) {
        (Some(r), Some(h)) if run_order(&h.run) > run_order(&r) => Some((h.run, h.started)),
        (Some(r), _) => {
            let started = std::fs::read_to_string(layout.run_record(&r))
                .ok()
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .and_then(|v| v["started"].as_f64())
                .unwrap_or(0.0);
            Some((r, started))
        }
        (None, Some(h)) => Some((h.run, h.started)),
        (None, None) => None,
    }
}

/// How run ids (`<UTC start time>-<pid>`) order: by start time, then by process id as a
/// number (as text, `…-9999` would sort after `…-10000` of the same second).
fn run_order(id: &str) -> (&str, u64) {
    match id.rsplit_once('-') {
        Some((time, pid)) => (time, pid.parse().unwrap_or(0)),
        None => (id, 0),
    }
}

/// Every stage's recorded state, as a report.
///
/// # Errors
/// Unreadable state.
pub fn status(manifest: &Manifest, layout: &Layout) -> Result<RunReport> {
    let mut stages = Vec::new();
    let mut all = Vec::new();
    for stage in &manifest.stages {
        let name = stage.name.as_str();
        let spec = result_spec(manifest, name);
        let Some(mut rec) = Recorded::open(layout, name, spec)? else {
            stages.push(StageReport {
                name: name.to_owned(),
                backend: stage.settings.backend,
                jobs: None,
                stats: Stats::default(),
                reused: 0,
                wall_seconds: None,
                not_started: Some("no jobs expanded yet".to_owned()),
                results: None,
                failed: Vec::new(),
            });
            all.push(Stats {
                total: 1,
                not_run: 1,
                ..Stats::default()
            });
            continue;
        };
        let mut stats = Stats::default();
        let mut failed = Vec::new();
        let (mut first, mut last) = (f64::MAX, 0.0f64);
        let mut jobs = 0;
        rec.for_each_job(layout, |rec, j| {
            jobs += 1;
            let Some(latest) = rec.latest(&j.id) else {
                stats.add_kind(None);
                return Ok(());
            };
            let kind = latest.kind();
            stats.add_kind(Some(kind));
            if let Some((s, e)) = latest.span() {
                first = first.min(s);
                last = last.max(e);
            }
            if kind != OutcomeKind::Succeeded && kind != OutcomeKind::NotRun {
                let Some(r) = rec.record(layout, &j.id)? else {
                    return Ok(());
                };
                let out = layout.log_out(name, &j.id);
                let err = layout.log_err(name, &j.id);
                failed.push(FailedJob {
                    index: j.index,
                    id: j.id.clone(),
                    label: crate::summary::job_label(j.job.get()),
                    exit_code: r.outcome.exit_code(),
                    outcome: r.outcome,
                    attempts: r.attempt,
                    stderr_tail: if failed.len() < 20 {
                        store::tail(&err, 5)
                    } else {
                        None
                    },
                    stdout_log: out.exists().then_some(out),
                    stderr_log: err.exists().then_some(err),
                });
            }
            Ok(())
        })?;
        all.push(stats);
        stages.push(StageReport {
            name: name.to_owned(),
            backend: stage.settings.backend,
            jobs: Some(jobs),
            stats,
            reused: 0,
            wall_seconds: (last > 0.0).then_some(last - first),
            not_started: None,
            results: Some(layout.results_file(name)),
            failed,
        });
    }
    let summary: Option<RunReport> = std::fs::read_to_string(layout.summary())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    // A run killed before writing its summary (or still running) is newer than `summary.json`:
    // the outcomes above are its outcomes, so name it, not the run before it.
    let (run, started, ended) = match (summary, latest_run(layout)) {
        (Some(s), Some((id, at))) if run_order(&id) > run_order(&s.run) => (id, at, None),
        (Some(s), _) => (s.run, s.started, s.ended),
        (None, Some((id, at))) => (id, at, None),
        (None, None) => ("none".to_owned(), 0.0, None),
    };
    Ok(RunReport {
        format_version: store::FORMAT_VERSION,
        workflow: manifest.name.clone(),
        run,
        manifest: manifest.path.clone(),
        manifest_sha256: manifest.hash.clone(),
        poolparty_version: env!("CARGO_PKG_VERSION").to_owned(),
        started,
        ended,
        verdict: Verdict::of(&all, false),
        state_dir: layout.root().to_path_buf(),
        stages,
    })
}

#[cfg(test)]
mod tests {
    use super::run_order;

    #[test]
    fn run_ids_order_by_time_then_pid_as_a_number() {
        assert!(run_order("20261202T013221-10000") > run_order("20261202T013221-9999"));
        assert!(run_order("20261202T013222-5") > run_order("20261202T013221-99999"));
        assert!(run_order("20261202T013221-7") == run_order("20261202T013221-7"));
    }
}
