//! What a run leaves besides the ledger: each ended stage's `results.jsonl` and
//! `outcomes.jsonl` (what stages that need it read), the run's provenance, `summary.json`, and
//! the [`RunReport`] built from the stages' phases. The drive loop decides when; this module
//! only writes and reports.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::PathBuf;

use serde_json::json;

use crate::error::{Error, Result};
use crate::manifest::{BackendKind, Manifest};
use crate::outcome::{Outcome, Stats, Verdict};
use crate::store::{self, Layout, LedgerReader};
use crate::summary::{RunReport, StageReport};

use crate::jobs::{JobRef, Jobs};

use super::stage::{JobSlot, Phase, StageJobs};

/// Writes a stage's `results.jsonl` and `outcomes.jsonl` in job order, one job at a time
/// (results are read back from the ledger by offset).
pub(super) fn write_stage_files(layout: &Layout, name: &str, jobs: &mut StageJobs) -> Result<()> {
    // Each file is compared with what an earlier run left and written only when it differs:
    // a resumed run that finds everything done rewrites nothing. The two are made on two
    // threads (each reads and compares a file as long as the jobs are many).
    let StageJobs {
        jobs: list,
        slots,
        reader,
        ..
    } = jobs;
    let (slots, list) = (&*slots, &*list);
    let (results, outcomes) = std::thread::scope(|scope| {
        let results = scope.spawn(|| write_results(layout, name, slots, reader));
        let outcomes = write_outcomes(layout, name, list, slots);
        let results = results
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (results, outcomes)
    });
    results?;
    outcomes
}

/// `results.jsonl`: each job's result read back from the ledger, or `null`.
fn write_results(
    layout: &Layout,
    name: &str,
    slots: &[JobSlot],
    reader: &mut LedgerReader,
) -> Result<()> {
    let results_path = layout.results_file(name);
    let io = |e| Error::store("write", &results_path, e);
    store::write_if_changed_with(&results_path, |w| {
        for slot in slots {
            let result = match slot.result {
                Some(o) => reader.result_at(o)?,
                None => None,
            };
            match result {
                Some(r) => w.write_all(r.to_json().as_bytes()).map_err(io)?,
                None => w.write_all(b"null").map_err(io)?,
            }
            w.write_all(b"\n").map_err(io)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// `outcomes.jsonl`: one line per job, in job order (what a stage that needs this one reads).
fn write_outcomes(layout: &Layout, name: &str, list: &Jobs, slots: &[JobSlot]) -> Result<()> {
    let outcomes_path = layout.outcomes_file(name);
    let io = |e| Error::store("write", &outcomes_path, e);
    // One listing of the logs rather than two `stat`s per job.
    let logs: HashSet<OsString> = std::fs::read_dir(layout.logs_dir(name))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    let mut line = Vec::with_capacity(512);
    store::write_if_changed_with(&outcomes_path, |w| {
        for (j, slot) in list.iter().zip(slots) {
            line.clear();
            outcome_line(&mut line, layout, name, &logs, &j, slot);
            w.write_all(&line).map_err(io)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// One line of `outcomes.jsonl`, written field by field in the order (sorted by key) and
/// form `serde_json` gives the object `{"attempts", "exit_code", "id", "index", "outcome",
/// "stderr", "stdout", "succeeded"}`, then the job's value exactly as expanded under `"job"`.
fn outcome_line(
    line: &mut Vec<u8>,
    layout: &Layout,
    name: &str,
    logs: &HashSet<OsString>,
    j: &JobRef<'_>,
    slot: &JobSlot,
) {
    let f = slot.outcome.as_ref();
    let string = |line: &mut Vec<u8>, s: &str| serde_json::to_writer(line, s).expect("serializes");
    // A log's path when the log exists (no path built for a job without logs).
    let log = |line: &mut Vec<u8>, path: fn(&Layout, &str, &str) -> PathBuf| {
        let p = path(layout, name, j.id);
        if p.file_name().is_some_and(|n| logs.contains(n)) {
            serde_json::to_writer(line, &p).expect("serializes");
        } else {
            line.extend_from_slice(b"null");
        }
    };
    line.extend_from_slice(b"{\"attempts\":");
    line.extend_from_slice(slot.attempt.to_string().as_bytes());
    line.extend_from_slice(b",\"exit_code\":");
    match f.and_then(Outcome::exit_code) {
        Some(c) => line.extend_from_slice(c.to_string().as_bytes()),
        None => line.extend_from_slice(b"null"),
    }
    line.extend_from_slice(b",\"id\":");
    string(line, j.id);
    line.extend_from_slice(b",\"index\":");
    line.extend_from_slice(j.index.to_string().as_bytes());
    line.extend_from_slice(b",\"outcome\":");
    match f {
        Some(Outcome::Succeeded) => line.extend_from_slice(b"\"succeeded\""),
        Some(o) => string(line, &o.describe()),
        None => line.extend_from_slice(b"null"),
    }
    line.extend_from_slice(b",\"stderr\":");
    if logs.is_empty() {
        line.extend_from_slice(b"null,\"stdout\":null");
    } else {
        log(line, Layout::log_err);
        line.extend_from_slice(b",\"stdout\":");
        log(line, Layout::log_out);
    }
    line.extend_from_slice(b",\"succeeded\":");
    line.extend_from_slice(if f.is_some_and(Outcome::is_success) {
        b"true"
    } else {
        b"false"
    });
    // The job's value exactly as expanded, without parsing it again.
    line.extend_from_slice(b",\"job\":");
    line.extend_from_slice(j.json.as_bytes());
    line.extend_from_slice(b"}\n");
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
    let path: PathBuf = layout.run_record(run);
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
    store::atomic_write(&layout.run_record(&report.run), text.as_bytes())?;
    store::atomic_write(&layout.summary(), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line as it was built before: a `json!` object serialized, the job appended.
    fn json_line(
        layout: &Layout,
        name: &str,
        logs: &HashSet<OsString>,
        j: &JobRef<'_>,
        slot: &JobSlot,
    ) -> String {
        let f = slot.outcome.as_ref();
        let path = |p: PathBuf| {
            if p.file_name().is_some_and(|n| logs.contains(n)) {
                json!(p)
            } else {
                serde_json::Value::Null
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
        text.pop();
        format!("{text},\"job\":{}}}\n", j.json)
    }

    #[test]
    fn outcome_lines_are_those_serde_json_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("state"));
        let outcomes = [
            None,
            Some(Outcome::Succeeded),
            Some(Outcome::Failed { code: -3 }),
            Some(Outcome::Signaled { signal: 9 }),
            Some(Outcome::ExecFailed {
                error: "no \"such\" file\n\u{1}é".to_owned(),
            }),
            Some(Outcome::TimedOut),
            Some(Outcome::Lost),
            Some(Outcome::Interrupted),
            Some(Outcome::NotRun {
                reason: "upstream `a` failed".to_owned(),
            }),
            Some(Outcome::OutputLost {
                ran: "exit code 0".to_owned(),
                error: "disk full".to_owned(),
            }),
        ];
        let all_logs: HashSet<OsString> = ["j\"1.out", "j\"1.err", "other.out"]
            .iter()
            .map(OsString::from)
            .collect();
        for logs in [HashSet::new(), all_logs] {
            for (n, outcome) in outcomes.iter().enumerate() {
                for id in ["j\"1", "plain", "a/b"] {
                    let j = JobRef {
                        index: n * 1000,
                        id,
                        json: r#"{"x":[1,2.5e3,"é"]}"#,
                        parsed: None,
                    };
                    let slot = JobSlot {
                        outcome: outcome.clone(),
                        attempt: u32::try_from(n).unwrap(),
                        ..JobSlot::default()
                    };
                    let mut line = Vec::new();
                    outcome_line(&mut line, &layout, "st", &logs, &j, &slot);
                    assert_eq!(
                        String::from_utf8(line).unwrap(),
                        json_line(&layout, "st", &logs, &j, &slot)
                    );
                }
            }
        }
    }
}
