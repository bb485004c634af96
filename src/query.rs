//! Read-only views of recorded state: `poolparty results` (a stage's results in job order) and
//! `poolparty status` (every stage's outcomes).
//!
//! Reads only the store (jobs and ledger files), never the scheduler, so both work during a
//! run, after a killed run, after a resumed run and after a detached one.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::Value;

use crate::cli::ResultsFormat;
use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::outcome::{JobRecord, Outcome, Stats, Verdict};
use crate::store::{self, JobLine, Layout};
use crate::summary::{FailedJob, RunReport, StageReport};

/// What `results` printed and how it ends.
#[derive(Debug)]
pub struct ResultsOutput {
    /// The text for stdout.
    pub stdout: String,
    /// One line per job without a result, for stderr.
    pub missing: Vec<String>,
    /// Notes for stderr (results kept as files).
    pub notes: Vec<String>,
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

/// A stage's jobs and the latest record of each.
type Recorded = (Vec<JobLine>, HashMap<String, JobRecord>);

fn load_stage(layout: &Layout, name: &str, result_max_bytes: u64) -> Result<Option<Recorded>> {
    let jobs = store::read_jobs(&layout.jobs_file(name))?;
    let mut latest = store::read_latest(&layout.ledger(name))?;
    // Outcome files no runner has collected yet (a detached or hand-submitted bundle, or a
    // killed runner) count too; a later attempt wins.
    if let Ok(dir) = std::fs::read_dir(layout.staging_dir(name)) {
        for entry in dir.flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            let (Some(index), Some(id), Some(attempt), Some(rc)) = (
                v["index"].as_u64(),
                v["id"].as_str(),
                v["attempt"].as_u64().and_then(|a| u32::try_from(a).ok()),
                v["rc"].as_i64().and_then(|c| i32::try_from(c).ok()),
            ) else {
                continue;
            };
            if latest.get(id).is_some_and(|r| r.attempt >= attempt) {
                continue;
            }
            // A large result stays a file: only its size is read.
            let result =
                crate::backend::read_result_file(&layout.result_path(name, id), result_max_bytes);
            latest.insert(
                id.to_owned(),
                JobRecord {
                    index: usize::try_from(index).unwrap_or(usize::MAX),
                    id: id.to_owned(),
                    attempt,
                    outcome: if rc == 0 {
                        Outcome::Succeeded
                    } else {
                        Outcome::Failed { code: rc }
                    },
                    start: v["start"].as_f64(),
                    end: v["end"].as_f64(),
                    run: "staged".to_owned(),
                    fp: String::new(),
                    result,
                },
            );
        }
    }
    let jobs = match jobs {
        Some(jobs) => jobs,
        None if latest.is_empty() => return Ok(None),
        // `jobs.jsonl` is gone but outcomes were recorded: the recorded jobs are still known
        // (without their values), so their outcomes are shown rather than "not started".
        None => {
            let mut known: Vec<JobLine> = latest
                .values()
                .map(|r| JobLine {
                    index: r.index,
                    id: r.id.clone(),
                    job: serde_json::value::RawValue::from_string("null".to_owned())
                        .expect("`null` is JSON"),
                })
                .collect();
            known.sort_by_key(|j| j.index);
            known
        }
    };
    Ok(Some((jobs, latest)))
}

/// A stage's results in job order.
///
/// # Errors
/// An unknown stage, a stage that never ran, or unreadable state.
pub fn results(
    manifest: &Manifest,
    layout: &Layout,
    opts: &ResultsOptions,
) -> Result<ResultsOutput> {
    let name = stage_name(manifest, opts.stage.as_deref())?;
    let max = manifest
        .stage(name)
        .map_or(1 << 20, |s| s.settings.result_max_bytes);
    let (jobs, latest) = load_stage(layout, name, max)?.ok_or_else(|| Error::Usage {
        message: format!("stage `{name}` has not run yet: there are no results"),
        help: Some("run it first with `poolparty run`".to_owned()),
    })?;
    let mut out = String::with_capacity(jobs.len() * 24);
    let mut missing = Vec::new();
    let mut notes = Vec::new();
    // (line, record, result text or None)
    let rows: Vec<(&JobLine, Option<&JobRecord>, Option<String>)> = jobs
        .iter()
        .map(|j| {
            let rec = latest.get(&j.id);
            let result = rec
                .and_then(|r| r.result.as_ref())
                .map(crate::outcome::ResultValue::to_json);
            (j, rec, result)
        })
        .collect();
    let records_results = manifest
        .stage(name)
        .is_some_and(|s| s.settings.result != crate::manifest::ResultMode::None);
    for (j, rec, result) in &rows {
        let ok = rec.is_some_and(|r| r.outcome.is_success());
        let who = || {
            let label = crate::summary::job_label(j.job.get())
                .map_or_else(String::new, |l| format!(" {l}"));
            format!("job {} `{}`{label}", j.index, j.id)
        };
        match (rec, result) {
            (Some(r), _) if !ok => missing.push(format!("{}: {}", who(), r.outcome.describe())),
            (None, _) => missing.push(format!("{}: no outcome recorded", who())),
            // A stage with `result = "none"` records no results by design.
            (Some(_), None) if !records_results => {}
            (Some(_), None) => missing.push(format!("{}: succeeded but wrote no result", who())),
            _ => {}
        }
        if let Some(crate::outcome::ResultValue::File { path, bytes }) =
            rec.and_then(|r| r.result.as_ref())
        {
            notes.push(format!(
                "job {} `{}`: result of {bytes} bytes kept as a file: {path}",
                j.index, j.id
            ));
        }
    }
    match opts.format {
        ResultsFormat::Json => {
            out.push('[');
            for (n, (_, rec, result)) in rows.iter().enumerate() {
                if n > 0 {
                    out.push_str(", ");
                }
                let ok = rec.is_some_and(|r| r.outcome.is_success());
                match result {
                    Some(t) if ok => out.push_str(t),
                    _ => out.push_str("null"),
                }
            }
            out.push_str("]\n");
        }
        ResultsFormat::Jsonl => {
            for (j, rec, result) in &rows {
                let code = rec
                    .and_then(|r| r.outcome.exit_code())
                    .map_or_else(|| "null".to_owned(), |c| c.to_string());
                let outcome = rec.map_or("not_run", |r| outcome_kind(&r.outcome));
                let _ = write!(
                    out,
                    "{{\"index\":{},\"id\":{},\"outcome\":\"{outcome}\",\"exit_code\":{code},\"result\":{}",
                    j.index,
                    serde_json::to_string(&j.id).expect("string"),
                    result.as_deref().unwrap_or("null")
                );
                if opts.with_job {
                    let _ = write!(out, ",\"job\":{}", j.job.get());
                }
                out.push_str("}\n");
            }
        }
        ResultsFormat::Csv | ResultsFormat::Tsv => table(&rows, opts, &mut out),
    }
    Ok(ResultsOutput {
        stdout: out,
        missing,
        notes,
    })
}

fn outcome_kind(o: &Outcome) -> &'static str {
    match o {
        Outcome::Succeeded => "succeeded",
        Outcome::Failed { .. } => "failed",
        Outcome::Signaled { .. } => "signaled",
        Outcome::ExecFailed { .. } => "exec_failed",
        Outcome::TimedOut => "timed_out",
        Outcome::Lost => "lost",
        Outcome::Interrupted => "interrupted",
        Outcome::NotRun { .. } => "not_run",
        Outcome::OutputLost { .. } => "output_lost",
    }
}

fn table(
    rows: &[(&JobLine, Option<&JobRecord>, Option<String>)],
    opts: &ResultsOptions,
    out: &mut String,
) {
    let tsv = opts.format == ResultsFormat::Tsv;
    let parsed: Vec<Option<Value>> = rows
        .iter()
        .map(|(_, _, r)| r.as_deref().and_then(|t| crate::jobs::parse_value(t).ok()))
        .collect();
    let mut keys: Vec<String> = Vec::new();
    let mut scalar = false;
    for v in parsed.iter().flatten() {
        match v {
            Value::Object(m) => {
                for k in m.keys() {
                    if !keys.contains(k) {
                        keys.push(k.clone());
                    }
                }
            }
            _ => scalar = true,
        }
    }
    let mut header: Vec<String> = vec!["index".into(), "id".into(), "exit_code".into()];
    if scalar || keys.is_empty() {
        header.push("result".into());
    }
    // Object fields get a `result.` prefix so they never collide with the fixed columns.
    header.extend(keys.iter().map(|k| format!("result.{k}")));
    if opts.with_job {
        header.push("job".into());
    }
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
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    out.push_str(&header.iter().map(|h| cell(h)).collect::<Vec<_>>().join(sep));
    out.push('\n');
    for ((j, rec, _), v) in rows.iter().zip(&parsed) {
        let mut cells = vec![
            j.index.to_string(),
            j.id.clone(),
            rec.and_then(|r| r.outcome.exit_code())
                .map_or_else(String::new, |c| c.to_string()),
        ];
        if scalar || keys.is_empty() {
            cells.push(match v {
                Some(Value::Object(_)) | None => String::new(),
                Some(other) => text(other),
            });
        }
        for k in &keys {
            cells.push(
                v.as_ref()
                    .and_then(|v| v.get(k))
                    .map_or_else(String::new, text),
            );
        }
        if opts.with_job {
            cells.push(j.job.get().to_owned());
        }
        out.push_str(&cells.iter().map(|c| cell(c)).collect::<Vec<_>>().join(sep));
        out.push('\n');
    }
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
        .max();
    let holder =
        store::read_holder(layout).filter(|h| h.run.starts_with(|c: char| c.is_ascii_digit()));
    match (recorded, holder) {
        (Some(r), Some(h)) if h.run > r => Some((h.run, h.started)),
        (Some(r), _) => {
            let started = std::fs::read_to_string(layout.runs_dir().join(format!("{r}.json")))
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

/// Every stage's recorded state, as a report.
///
/// # Errors
/// Unreadable state.
pub fn status(manifest: &Manifest, layout: &Layout) -> Result<RunReport> {
    let mut stages = Vec::new();
    let mut all = Vec::new();
    for stage in &manifest.stages {
        let name = stage.name.as_str();
        let Some((jobs, latest)) = load_stage(layout, name, stage.settings.result_max_bytes)?
        else {
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
        for j in &jobs {
            let rec = latest.get(&j.id);
            stats.add(rec.map(|r| &r.outcome));
            if let Some(r) = rec {
                if let (Some(s), Some(e)) = (r.start, r.end) {
                    first = first.min(s);
                    last = last.max(e);
                }
                if !r.outcome.is_success() && !matches!(r.outcome, Outcome::NotRun { .. }) {
                    let out = layout.log_out(name, &j.id);
                    let err = layout.log_err(name, &j.id);
                    failed.push(FailedJob {
                        index: j.index,
                        id: j.id.clone(),
                        label: crate::summary::job_label(j.job.get()),
                        outcome: r.outcome.clone(),
                        attempts: r.attempt,
                        exit_code: r.outcome.exit_code(),
                        stderr_tail: if failed.len() < 20 {
                            store::tail(&err, 5)
                        } else {
                            None
                        },
                        stdout_log: out.exists().then_some(out),
                        stderr_log: err.exists().then_some(err),
                    });
                }
            }
        }
        all.push(stats);
        stages.push(StageReport {
            name: name.to_owned(),
            backend: stage.settings.backend,
            jobs: Some(jobs.len()),
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
        (Some(s), Some((id, at))) if id > s.run => (id, at, None),
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
