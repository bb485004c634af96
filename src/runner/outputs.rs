//! What a run leaves besides the ledger: each ended stage's `results.jsonl` and
//! `outcomes.jsonl` (what stages that need it read), the run's provenance, `summary.json`, and
//! the [`RunReport`] built from the stages' phases. The drive loop decides when; this module
//! only writes and reports.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::manifest::{BackendKind, Manifest};
use crate::outcome::{Outcome, Stats, Verdict};
use crate::store::{self, Layout};
use crate::summary::{RunReport, StageReport};

use super::stage::{Phase, StageJobs};

/// Writes a stage's `results.jsonl` and `outcomes.jsonl` in job order, one job at a time
/// (results are read back from the ledger by offset).
pub(super) fn write_stage_files(layout: &Layout, name: &str, jobs: &mut StageJobs) -> Result<()> {
    let results_path = layout.results_file(name);
    let io = |e| Error::store("write", &results_path, e);
    store::atomic_write_with(&results_path, |w| {
        for idx in 0..jobs.slots.len() {
            match jobs.result(idx)? {
                Some(r) => w.write_all(r.to_json().as_bytes()).map_err(io)?,
                None => w.write_all(b"null").map_err(io)?,
            }
            w.write_all(b"\n").map_err(io)?;
        }
        Ok(())
    })?;
    // One line per job, in job order: what a stage that needs this one gets to read.
    let outcomes_path = layout.outcomes_file(name);
    let io = |e| Error::store("write", &outcomes_path, e);
    // One listing of the logs rather than two `stat`s per job.
    let logs: std::collections::HashSet<std::ffi::OsString> =
        std::fs::read_dir(layout.logs_dir(name))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
    store::atomic_write_with(&outcomes_path, |w| {
        for (j, slot) in jobs.jobs.iter().zip(&jobs.slots) {
            let f = slot.outcome.as_ref();
            let path = |p: PathBuf| {
                if p.file_name().is_some_and(|n| logs.contains(n)) {
                    json!(p)
                } else {
                    Value::Null
                }
            };
            let line = json!({
                "index": j.index,
                "id": j.id,
                "outcome": f.map(Outcome::describe),
                "succeeded": f.is_some_and(Outcome::is_success),
                "exit_code": f.and_then(Outcome::exit_code),
                "attempts": slot.attempt,
                "stdout": path(layout.log_out(name, j.id)),
                "stderr": path(layout.log_err(name, j.id)),
            });
            let mut text = serde_json::to_string(&line).expect("serializes");
            // The job's value exactly as expanded, without parsing it again.
            text.pop();
            text.push_str(",\"job\":");
            text.push_str(j.json);
            text.push_str("}\n");
            w.write_all(text.as_bytes()).map_err(io)?;
        }
        Ok(())
    })
}

/// What the report says of one stage, from its phase.
pub(super) fn stage_report(
    layout: &Layout,
    name: &str,
    backend: BackendKind,
    phase: &Phase,
) -> StageReport {
    let jobs = phase.jobs();
    StageReport {
        name: name.to_owned(),
        backend,
        jobs: jobs.map(|j| j.jobs.len()),
        stats: jobs.map_or_else(Stats::default, StageJobs::stats),
        reused: jobs.map_or(0, |j| j.done_before),
        wall_seconds: match phase {
            Phase::Ended(e) => Some(e.wall),
            _ => None,
        },
        not_started: match phase {
            Phase::Skipped(r) => Some(r.clone()),
            _ => None,
        },
        results: Some(layout.results_file(name)),
        failed: jobs.map(|j| j.failed.clone()).unwrap_or_default(),
    }
}

/// The run's report from its stages' reports.
pub(super) fn run_report(
    manifest: &Manifest,
    layout: &Layout,
    run: &str,
    started: f64,
    interrupted: bool,
    stages: Vec<StageReport>,
) -> RunReport {
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
        workflow: manifest.name.clone(),
        run: run.to_owned(),
        manifest: manifest.path.clone(),
        manifest_sha256: manifest.hash.clone(),
        poolparty_version: env!("CARGO_PKG_VERSION").to_owned(),
        started,
        ended: Some(store::now()),
        verdict: Verdict::of(&all, interrupted),
        state_dir: layout.root().to_path_buf(),
        stages,
    }
}

/// Writes the provenance of a run that starts (`.runs/<run>.json`).
pub(super) fn write_provenance(
    manifest: &Manifest,
    layout: &Layout,
    run: &str,
    started: f64,
) -> Result<()> {
    let path: PathBuf = layout.runs_dir().join(format!("{run}.json"));
    let value = json!({
        "format_version": store::FORMAT_VERSION,
        "run": run,
        "workflow": manifest.name,
        "manifest": manifest.path,
        "manifest_sha256": manifest.hash,
        "poolparty_version": env!("CARGO_PKG_VERSION"),
        "started": started,
        "host": store::hostname(),
    });
    store::atomic_write(
        &path,
        serde_json::to_string_pretty(&value)
            .expect("serializes")
            .as_bytes(),
    )
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
