//! `poolparty run`: takes the workflow's lock, recovers what a dead runner left, and runs the
//! selected stages attached (the runner) or detached (a bundle submitted to the cluster).

use std::io::Write;

use crate::cli::RunArgs;
use crate::error::{EXIT_SUCCESS, Error, Result};
use crate::manifest::{self, Manifest};
use crate::resume::Policy;
use crate::runner::{self, RunOptions, Runner};
use crate::store::{self, Layout};
use crate::summary::Reporter;
use crate::{bundle, cmd, report};

use super::Ctx;

/// `poolparty run`: returns the run's verdict as the exit code.
///
/// # Errors
/// Bad input (before anything starts), a held lock, or a state fault during the run.
pub(crate) fn run(args: &RunArgs, ctx: &Ctx<'_>, stdout: &mut impl Write) -> Result<u8> {
    let Ctx {
        g,
        color,
        verbosity,
        signals,
    } = *ctx;
    let RunArgs {
        ref manifest,
        ref stages,
        force,
        retry_failed,
        detach,
        wait,
        report: ref report_path,
        recorded_needs,
    } = *args;
    let (m, graph, layout) = super::load(manifest.as_deref(), g)?;
    manifest::check_template_backends(&m, detach, &crate::backend::task_index_vars())?;
    let selected = super::select(&m, &graph, stages)?;
    let run_id = runner::new_run_id();
    let _lock = if wait {
        store::lock_wait(&layout, &run_id)?
    } else {
        store::lock(&layout, &run_id)?
    };
    // Nothing of a run whose runner died may still run when this one starts jobs.
    if let Some(r) = runner::recover(&layout)? {
        eprintln!("poolparty: {}", r.message());
    }
    if detach {
        let prepared = super::prepare(&m, &graph, &layout, &selected, signals)?;
        let out = layout.root().join(".detached").join(&run_id);
        let s = super::write_bundle(
            &m,
            &graph,
            &layout,
            &prepared,
            &selected,
            g,
            Policy {
                force,
                retry_failed,
                ..Policy::default()
            },
            &out,
        )?;
        let _ = stdout.write_all(s.as_bytes());
        drop(_lock);
        let status = std::process::Command::new("bash")
            .arg(out.join("submit.sh"))
            .status()
            .map_err(|e| Error::store("run", out.join("submit.sh"), e))?;
        if !status.success() {
            return Err(Error::Backend {
                backend: "cluster",
                message: format!("`{}` failed ({status})", out.join("submit.sh").display()),
                detail: None,
            });
        }
        return Ok(EXIT_SUCCESS);
    }
    if force {
        set_aside_corrupt(&m, &layout, &selected)?;
    }
    // Outcomes of jobs a local bundle ran go to the ledger first, to be reused.
    bundle::collect_local(&m, &layout)?;
    // Each stage's ledger is read while the jobs are expanded (this run holds the lock: only
    // it can change a ledger, and a stage uses what was read only if its ledger is unchanged).
    let (prepared, ahead) = std::thread::scope(|scope| {
        let ahead = scope.spawn(|| {
            m.stages
                .iter()
                .zip(&selected)
                .map(|(s, &on)| {
                    let path = layout.ledger(s.name.as_str());
                    (on && !matches!(s.source, manifest::JobSource::ForEach(_)))
                        .then(|| store::StatesAhead::read(&path))
                        .flatten()
                })
                .collect::<Vec<_>>()
        });
        let prepared = super::prepare(&m, &graph, &layout, &selected, signals);
        let ahead = ahead
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (prepared, ahead)
    });
    let prepared = prepared?;
    let opts = RunOptions {
        force,
        retry_failed,
        recorded: if recorded_needs {
            (0..m.stages.len())
                .filter(|&i| selected[i] && !stages.iter().any(|n| n == m.stages[i].name.as_str()))
                .collect()
        } else {
            Vec::new()
        },
    };
    let mut reporter = Reporter::new(verbosity, color);
    let ran = Runner::new(
        &m,
        &graph,
        layout.clone(),
        run_id.clone(),
        opts,
        &selected,
        &mut reporter,
        signals,
    )
    .with_states_ahead(ahead)
    .run(prepared);
    let report = match ran {
        Ok(report) => report,
        Err(e) => {
            // A run stopped by an error (a state fault: exit 3) still gets the
            // `--report` it asked for, from the outcomes recorded before it stopped.
            if let Some(out) = report_path {
                let written = report::load_run(&m, &layout, Some(&run_id))
                    .and_then(|mut chosen| {
                        // Not "in progress": this process still holds the lock.
                        chosen.note = Some(format!(
                            "run {run_id} was stopped by an error (exit code {}) before it ended: outcomes recorded before it stopped",
                            e.exit_code()
                        ));
                        report::collect(&m, &graph, &layout, &chosen)
                    })
                    .and_then(|data| report::write(&data, out, report::Format::Html));
                if let Err(re) = written {
                    eprintln!("poolparty: the report could not be written either: {re}");
                }
            }
            return Err(e);
        }
    };
    runner::write_report(&layout, &report)?;
    reporter.finish(&report);
    if let Some(out) = report_path {
        cmd::report::after_run(&m, &graph, &layout, &report, out)?;
    }
    if g.json {
        let _ = writeln!(
            stdout,
            "{}",
            serde_json::to_string_pretty(&report).expect("serializes")
        );
    }
    Ok(report.verdict.exit_code())
}

/// `run --force` reruns every job of the selected stages, so a ledger (or submissions
/// record) that cannot be read is moved aside rather than refusing the run.
fn set_aside_corrupt(m: &Manifest, layout: &Layout, selected: &[bool]) -> Result<()> {
    for (stage, _) in m.stages.iter().zip(selected).filter(|(_, s)| **s) {
        let name = stage.name.as_str();
        for path in [layout.ledger(name), layout.submissions(name)] {
            if let Some(to) = store::set_aside_if_corrupt(&path)? {
                eprintln!(
                    "poolparty: `{}` could not be read; moved it to `{}` and running stage `{name}` afresh",
                    path.display(),
                    to.display()
                );
            }
        }
    }
    Ok(())
}
