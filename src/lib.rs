//! poolparty: a declarative `Pool.map` for the shell.
//!
//! The pipeline, one module per step, data flowing one way:
//! [`manifest`] (parse, validate) → [`jobs`] (expand) → [`template`] → [`graph`] → [`plan`]
//! (rendered commands) → [`runner`] driving a [`backend`] → [`outcome`]s recorded by [`store`]
//! → [`summary`]. [`query`] reads recorded state back (`status`, `results`).
//!
//! [`run`] is the whole program: parse the command line, dispatch, print an error once, and
//! return the exit code (see [`error`] for the table).

pub mod backend;
pub mod bundle;
pub mod cli;
mod cmd;
pub mod error;
pub mod graph;
pub mod jobs;
pub mod manifest;
pub mod outcome;
pub mod plan;
pub mod process;
pub mod query;
pub mod quoting;
pub mod report;
pub mod runner;
pub mod signals;
pub mod store;
pub mod summary;
pub mod template;

use std::ffi::OsString;
use std::io::{IsTerminal, Write};

use clap::Parser;

use crate::cli::{Cli, Cmd, ColorChoice};
use crate::error::{EXIT_INVALID_INPUT, EXIT_SUCCESS, Error, Result};
use crate::graph::StageGraph;
use crate::jobs::Job;
use crate::manifest::{JobSource, Manifest};
use crate::plan::{Upstream, UpstreamStage};
use crate::runner::{Prepared, RunOptions, Runner};
use crate::signals::Signals;
use crate::store::Layout;
use crate::summary::{Reporter, Verbosity};

/// Runs poolparty with these arguments (the first is the program name) and returns the exit
/// code.
pub fn run(args: impl IntoIterator<Item = impl Into<OsString> + Clone>) -> u8 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                EXIT_INVALID_INPUT
            } else {
                EXIT_SUCCESS
            };
        }
    };
    let color = use_color(cli.global.color);
    match dispatch(&cli, color) {
        Ok(code) => code,
        Err(e) => {
            let _ = std::io::stderr().write_all(summary::render_diagnostic(&e, color).as_bytes());
            e.exit_code()
        }
    }
}

fn use_color(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::stderr().is_terminal()
        }
    }
}

fn load(path: Option<&std::path::Path>) -> Result<(Manifest, StageGraph, Layout)> {
    let manifest = manifest::load(&manifest::resolve_path(path))?;
    let graph = StageGraph::build(&manifest)?;
    let layout = Layout::new(manifest.state_dir());
    Ok((manifest, graph, layout))
}

fn dispatch(cli: &Cli, color: bool) -> Result<u8> {
    let g = &cli.global;
    let verbosity = if g.quiet {
        Verbosity::Quiet
    } else if g.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    // Commands that start child processes answer SIGINT/SIGTERM in every phase (exit 130).
    let signals = match &cli.command {
        Cmd::Validate { .. } | Cmd::Plan { .. } | Cmd::Run { .. } => Signals::install(),
        _ => Signals::none(),
    };
    let mut stdout = std::io::stdout().lock();
    match &cli.command {
        Cmd::Schema => {
            let _ = stdout.write_all(manifest::json_schema().as_bytes());
            Ok(EXIT_SUCCESS)
        }
        Cmd::Validate { manifest } => {
            let (m, graph, layout) = load(manifest.as_deref())?;
            manifest::check_template_backends(&m, g.backend, false)?;
            let selected = vec![true; m.stages.len()];
            let prepared = prepare(&m, &graph, &layout, &selected, &signals)?;
            let jobs: usize = prepared.iter().flatten().map(|(j, _)| j.len()).sum();
            let _ = writeln!(
                stdout,
                "{}: valid ({}, {} expanded and rendered)",
                m.path.display(),
                error::count(m.stages.len(), "stage"),
                error::count(jobs, "job")
            );
            Ok(EXIT_SUCCESS)
        }
        Cmd::Plan {
            manifest,
            stages,
            out,
        } => {
            let (m, graph, layout) = load(manifest.as_deref())?;
            manifest::check_template_backends(&m, g.backend, out.is_some())?;
            let selected = select(&m, &graph, stages)?;
            let prepared = prepare(&m, &graph, &layout, &selected, &signals)?;
            if let Some(out) = out {
                let out = std::path::absolute(out).map_err(|e| Error::store("resolve", out, e))?;
                let s = write_bundle(&m, &graph, &layout, &prepared, &selected, g, &out)?;
                let _ = stdout.write_all(s.as_bytes());
                return Ok(EXIT_SUCCESS);
            }
            let text = if g.json {
                plan_json(&m, &graph, &layout, &prepared, &selected, g)?
            } else {
                plan_text(&m, &graph, &layout, &prepared, &selected, g, verbosity)?
            };
            let _ = stdout.write_all(text.as_bytes());
            Ok(EXIT_SUCCESS)
        }
        Cmd::Watchdog { live } => {
            runner::watchdog(live);
            Ok(EXIT_SUCCESS)
        }
        Cmd::Cancel { manifest } => {
            let (m, _, layout) = load(manifest.as_deref())?;
            cancel(&m, &layout)
        }
        Cmd::Run {
            manifest,
            stages,
            force,
            retry_failed,
            detach,
            wait,
            report: report_path,
            recorded_needs,
        } => {
            let (m, graph, layout) = load(manifest.as_deref())?;
            manifest::check_template_backends(&m, g.backend, *detach)?;
            let selected = select(&m, &graph, stages)?;
            let run_id = runner::new_run_id();
            let _lock = if *wait {
                store::lock_wait(&layout, &run_id)?
            } else {
                store::lock(&layout, &run_id)?
            };
            // Nothing of a run whose runner died may still run when this one starts jobs.
            if let Some(r) = runner::recover(&layout)? {
                eprintln!("poolparty: {}", r.message());
            }
            if *detach {
                let prepared = prepare(&m, &graph, &layout, &selected, &signals)?;
                let out = layout.root().join(".detached").join(&run_id);
                let s = write_bundle(&m, &graph, &layout, &prepared, &selected, g, &out)?;
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
            if *force {
                set_aside_corrupt(&m, &layout, &selected)?;
            }
            // Outcomes of jobs a local bundle ran go to the ledger first, to be reused.
            bundle::collect_local(&m, &layout)?;
            let prepared = prepare(&m, &graph, &layout, &selected, &signals)?;
            let opts = RunOptions {
                backend: g.backend,
                max_parallel: g.max_parallel,
                force: *force,
                retry_failed: *retry_failed,
                stages: Vec::new(),
                recorded: if *recorded_needs {
                    (0..m.stages.len())
                        .filter(|&i| {
                            selected[i] && !stages.iter().any(|n| n == m.stages[i].name.as_str())
                        })
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
                &signals,
            )
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
        Cmd::Status { manifest } => {
            let (m, _, layout) = load(manifest.as_deref())?;
            // A runner that died left jobs without an outcome: say what became of them.
            if layout.live_file().exists() {
                if let Ok(_lock) = store::lock(&layout, "status") {
                    if let Some(r) = runner::recover(&layout)? {
                        eprintln!("poolparty: {}", r.message());
                    }
                }
            }
            let report = query::status(&m, &layout)?;
            if g.json {
                let _ = writeln!(
                    stdout,
                    "{}",
                    serde_json::to_string_pretty(&report).expect("serializes")
                );
            } else {
                // A live runner on this host: say so, since jobs without an outcome are
                // then still to come rather than not run.
                if let Some(h) = store::read_holder(&layout).filter(|h| {
                    // (Not this process: it may have held the lock to recover a dead run.)
                    h.pid != std::process::id()
                        && h.host == store::hostname()
                        && std::path::Path::new(&format!("/proc/{}", h.pid)).exists()
                }) {
                    let _ = writeln!(
                        stdout,
                        "run {} is in progress (pid {}, started {})",
                        h.run,
                        h.pid,
                        store::format_time(h.started)
                    );
                }
                let _ =
                    stdout.write_all(summary::format_report(&report, color, verbosity).as_bytes());
            }
            Ok(report.verdict.exit_code())
        }
        Cmd::Results {
            manifest,
            stage,
            format,
            with_job,
            allow_missing,
        } => {
            let (m, _, layout) = load(manifest.as_deref())?;
            let out = query::results(
                &m,
                &layout,
                &query::ResultsOptions {
                    stage: stage.clone(),
                    format: *format,
                    with_job: *with_job,
                },
            )?;
            let _ = stdout.write_all(out.stdout.as_bytes());
            let mut err = std::io::stderr().lock();
            for n in &out.notes {
                let _ = writeln!(err, "poolparty: {n}");
            }
            if out.missing.is_empty() {
                return Ok(EXIT_SUCCESS);
            }
            if !g.quiet {
                let _ = writeln!(
                    err,
                    "poolparty: {} without a result:",
                    error::count(out.missing.len(), "job")
                );
                for line in out.missing.iter().take(50) {
                    let _ = writeln!(err, "  {line}");
                }
                if out.missing.len() > 50 {
                    let _ = writeln!(err, "  … and {} more", out.missing.len() - 50);
                }
            }
            Ok(if *allow_missing {
                EXIT_SUCCESS
            } else {
                error::EXIT_JOBS_FAILED
            })
        }
        Cmd::Report(args) => cmd::report::run(args, g.json),
        Cmd::Logs(args) => cmd::logs::run(args, &mut stdout),
        Cmd::Init { dir, force } => cmd::init::run(dir.as_deref(), *force, &mut stdout),
        Cmd::Templates { action } => cmd::templates::run(action, &mut stdout),
        Cmd::Completions { shell } => cmd::completions::completions(*shell, &mut stdout),
        Cmd::Man { out } => cmd::completions::man(out.as_deref(), &mut stdout),
        Cmd::Graph { manifest, format } => {
            let (m, graph, layout) = load(manifest.as_deref())?;
            let counts: Vec<Option<usize>> = m
                .stages
                .iter()
                .map(|s| match jobs::expand_static(&m, s) {
                    Some(Ok(j)) => Some(j.len()),
                    _ => store::read_jobs(&layout.jobs_file(s.name.as_str()))
                        .ok()
                        .flatten()
                        .map(|j| j.len()),
                })
                .collect();
            let _ = stdout.write_all(graph.render(&m, &counts, *format).as_bytes());
            Ok(EXIT_SUCCESS)
        }
    }
}

/// Writes a bundle and returns the text that describes it.
fn write_bundle(
    m: &Manifest,
    graph: &StageGraph,
    layout: &Layout,
    prepared: &Prepared,
    selected: &[bool],
    g: &cli::GlobalArgs,
    out: &std::path::Path,
) -> Result<String> {
    use std::fmt::Write as _;
    let exe = std::env::current_exe().map_err(|e| Error::store("find", "poolparty", e))?;
    let opts = bundle::BundleOptions {
        out: out.to_path_buf(),
        backend: g.backend,
        max_parallel: g.max_parallel,
        exe,
    };
    let summary = bundle::write(m, graph, layout, prepared, selected, &opts)?;
    let mut s = format!(
        "bundle written to {}
",
        out.display()
    );
    for (name, kind, jobs, what) in summary.stages {
        let _ = writeln!(
            s,
            "  stage `{name}` ({kind}): {}, {what}",
            error::count(jobs, "job")
        );
    }
    let _ = writeln!(
        s,
        "submit it with: bash {}",
        out.join("submit.sh").display()
    );
    Ok(s)
}

/// `poolparty cancel`: stops a live runner on this host (SIGTERM; it cancels and records its
/// jobs); then, holding the workflow, cancels the driver jobs of a detached run that have not
/// ended (first, so none starts) and the arrays recorded in `submissions.jsonl` that have
/// jobs without an outcome, and records those jobs as interrupted.
fn cancel(m: &Manifest, layout: &Layout) -> Result<u8> {
    use std::collections::{BTreeMap, HashSet};
    let mut stopped_runner = false;
    let lock = match store::lock(layout, "cancel") {
        Ok(lock) => lock,
        Err(Error::Locked { path, holder }) => {
            let h = store::read_holder(layout).ok_or(Error::Locked {
                path: path.clone(),
                holder: holder.clone(),
            })?;
            if h.host != store::hostname() {
                return Err(Error::Usage {
                    message: format!(
                        "the run holding `{}` runs on host `{}`",
                        path.display(),
                        h.host
                    ),
                    help: Some("run `poolparty cancel` on that host".to_owned()),
                });
            }
            let pid = nix::unistd::Pid::from_raw(i32::try_from(h.pid).unwrap_or(i32::MAX));
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).map_err(|e| {
                Error::Usage {
                    message: format!("cannot signal the runner (pid {}): {e}", h.pid),
                    help: None,
                }
            })?;
            eprintln!(
                "poolparty: asked run {} (pid {}) to stop; waiting for it to cancel its jobs",
                h.run, h.pid
            );
            // A runner stops within its jobs' grace period; if it has not after ESCALATE, a
            // second signal makes it kill its jobs at once; after GIVE_UP, say so and return.
            const ESCALATE: std::time::Duration = std::time::Duration::from_secs(20);
            const GIVE_UP: std::time::Duration = std::time::Duration::from_secs(60);
            let asked = std::time::Instant::now();
            let mut escalated = false;
            loop {
                std::thread::sleep(std::time::Duration::from_millis(200));
                if let Ok(lock) = store::lock(layout, "cancel") {
                    eprintln!("poolparty: run {} stopped", h.run);
                    stopped_runner = true;
                    // Driver jobs of a detached run may still be queued behind it.
                    break lock;
                }
                if !escalated && asked.elapsed() > ESCALATE {
                    escalated = true;
                    eprintln!(
                        "poolparty: run {} has not stopped after {} s; asking again, so that it kills its jobs at once",
                        h.run,
                        ESCALATE.as_secs()
                    );
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                }
                if asked.elapsed() > GIVE_UP {
                    return Err(Error::Usage {
                        message: format!(
                            "run {} (pid {}) did not stop within {} s of being asked twice",
                            h.run,
                            h.pid,
                            GIVE_UP.as_secs()
                        ),
                        help: Some(format!(
                            "it may be stuck; `kill -KILL {}` ends it, and the next `poolparty run`, `status` or `cancel` stops the jobs it leaves and records them as interrupted",
                            h.pid
                        )),
                    });
                }
            }
        }
        Err(e) => return Err(e),
    };
    let recovered = runner::recover(layout)?;
    if let Some(r) = &recovered {
        eprintln!("poolparty: {}", r.message());
    }
    let run = runner::new_run_id();
    let mut by_scheduler: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // Driver jobs first: cancelling the arrays they wait for would let them start.
    let mut drivers: Vec<(String, Vec<String>)> = Vec::new();
    for stage in &m.stages {
        let name = stage.name.as_str();
        let open = bundle::open_drivers(layout, name)?;
        if open.is_empty() {
            continue;
        }
        let mut ids = Vec::new();
        for (scheduler, id) in open {
            by_scheduler.entry(scheduler).or_default().push(id.clone());
            ids.push(id);
        }
        drivers.push((name.to_owned(), ids));
    }
    let n_drivers: usize = drivers.iter().map(|(_, ids)| ids.len()).sum();
    let mut open_jobs = 0;
    for stage in &m.stages {
        let name = stage.name.as_str();
        let subs: Vec<backend::cluster::Submission> = store::read_lines(&layout.submissions(name))?;
        if subs.is_empty() {
            continue;
        }
        let records = store::read_ledger(&layout.ledger(name))?;
        let recorded: HashSet<(String, u32)> =
            records.iter().map(|r| (r.id.clone(), r.attempt)).collect();
        let mut ledger = store::Ledger::open(layout.ledger(name))?;
        for s in subs {
            let open: Vec<&backend::cluster::SubmittedJob> = s
                .tasks
                .iter()
                .flatten()
                .filter(|j| !recorded.contains(&(j.id.clone(), j.attempt)))
                // An outcome file waiting in staging means the job ended: the next run
                // collects it.
                .filter(|j| {
                    !layout
                        .staging_dir(name)
                        .join(format!("{}.{}.json", j.id, j.attempt))
                        .exists()
                })
                .collect();
            if open.is_empty() {
                continue;
            }
            by_scheduler
                .entry(s.scheduler.clone())
                .or_default()
                .push(s.job_id.clone());
            for j in open {
                open_jobs += 1;
                ledger.append(&outcome::JobRecord {
                    index: j.index,
                    id: j.id.clone(),
                    attempt: j.attempt,
                    outcome: outcome::Outcome::Interrupted,
                    start: None,
                    end: Some(store::now()),
                    run: run.clone(),
                    fp: String::new(),
                    result: None,
                })?;
            }
        }
        ledger.sync()?;
    }
    for (scheduler, ids) in &by_scheduler {
        backend::cancel_arrays(scheduler, ids)?;
        let n_drv = drivers
            .iter()
            .flat_map(|(_, d)| d)
            .filter(|d| ids.contains(d))
            .count();
        let mut what = error::count(ids.len() - n_drv, "array");
        if n_drv > 0 {
            what = format!("{what} and {}", error::count(n_drv, "driver job"));
        }
        eprintln!("poolparty: cancelled {what} on {scheduler}");
    }
    for (name, ids) in &drivers {
        bundle::close_drivers(layout, name, ids)?;
    }
    drop(lock);
    if by_scheduler.is_empty() {
        if !stopped_runner && recovered.is_none() {
            eprintln!(
                "poolparty: nothing to cancel: no runner is active and no submitted job lacks an outcome"
            );
        }
    } else if open_jobs > 0 || n_drivers == 0 {
        eprintln!(
            "poolparty: {} recorded as interrupted",
            error::count(open_jobs, "job")
        );
    }
    Ok(EXIT_SUCCESS)
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

/// The stages to run: those named with `--stage` plus everything they need (resume makes a
/// need that already succeeded cost nothing), or all.
fn select(m: &Manifest, graph: &StageGraph, names: &[String]) -> Result<Vec<bool>> {
    if names.is_empty() {
        return Ok(vec![true; m.stages.len()]);
    }
    let mut selected = vec![false; m.stages.len()];
    for n in names {
        let i = m
            .stages
            .iter()
            .position(|s| s.name.as_str() == n)
            .ok_or_else(|| Error::Usage {
                message: format!("the manifest has no stage `{n}`"),
                help: error::did_you_mean(n, m.stage_names()),
            })?;
        selected[i] = true;
        for u in graph.upstream(i) {
            selected[u] = true;
        }
    }
    Ok(selected)
}

/// The upstream paths a stage sees, with no failures (the runner re-plans if there are).
fn upstream_paths(m: &Manifest, graph: &StageGraph, layout: &Layout, i: usize) -> Upstream {
    let mut up = Upstream::default();
    for n in graph.needs(i) {
        let name = m.stages[n].name.as_str();
        up.stages.insert(
            name.to_owned(),
            UpstreamStage {
                dir: layout.stage_dir(name),
                outcomes: layout.outcomes_file(name),
                results: layout.results_file(name),
                jobs: layout.jobs_file(name),
                failed: Vec::new(),
            },
        );
    }
    up
}

/// Expands and plans every selected stage whose jobs can be known before anything runs:
/// inline, matrix and file sources, and generators of stages that need nothing. Element-wise
/// stages over such a stage are checked by rendering their command for every upstream job.
/// Everything here fails before any job starts.
fn prepare(
    m: &Manifest,
    graph: &StageGraph,
    layout: &Layout,
    selected: &[bool],
    signals: &Signals,
) -> Result<Prepared> {
    let mut prepared: Prepared = (0..m.stages.len()).map(|_| None).collect();
    for &i in graph.order() {
        if !selected[i] {
            continue;
        }
        let stage = &m.stages[i];
        let upstream = upstream_paths(m, graph, layout, i);
        match &stage.source {
            JobSource::Generate(cmd) if stage.needs.is_empty() => {
                let base = plan::base_context(m, stage, layout, &upstream);
                let rendered = plan::render_generator(m, stage, cmd, &base)?;
                let env = plan::stage_env(m, stage, layout, &upstream);
                prepared[i] = Some(plan::expand_and_plan(m, i, layout, &upstream, |visit| {
                    jobs::run_generator_with(m, stage, &rendered, &env, signals, visit)
                })?);
            }
            JobSource::Generate(cmd) => {
                // Its jobs come later, but an undefined variable in the command is known now.
                let base = plan::base_context(m, stage, layout, &upstream);
                plan::render_generator(m, stage, cmd, &base)?;
            }
            JobSource::ForEach(_) => {
                let up = graph.needs(i)[0];
                if let Some((up_jobs, _)) = &prepared[up] {
                    let base = plan::base_context(m, stage, layout, &upstream);
                    let renderer = plan::Renderer::new(m, stage, base)?;
                    for j in up_jobs {
                        let mut value = serde_json::json!({
                            "id": j.id.as_str(), "index": j.index,
                            "exit_code": 0, "outcome": "succeeded", "result": null,
                            "stdout": layout.log_out(m.stages[up].name.as_str(), j.id.as_str()),
                            "stderr": layout.log_err(m.stages[up].name.as_str(), j.id.as_str()),
                        });
                        // Not through `json!`, which would rewrite its numbers (`1E2`).
                        if let serde_json::Value::Object(map) = &mut value {
                            map.insert("upstream".to_owned(), j.value());
                        }
                        let probe = Job {
                            index: j.index,
                            id: j.id.clone(),
                            json: String::new(),
                            value,
                        };
                        match renderer.plan(&probe) {
                            // The upstream result's shape is unknown before it exists.
                            Err(Error::Template { message, .. })
                                if message.contains("`job.result.") => {}
                            other => {
                                other?;
                            }
                        }
                    }
                }
            }
            _ => {
                prepared[i] = Some(plan::expand_and_plan(m, i, layout, &upstream, |visit| {
                    jobs::expand_static_with(m, stage, visit).expect("static source")
                })?);
            }
        }
    }
    Ok(prepared)
}

fn resume_counts(
    layout: &Layout,
    name: &str,
    jobs: &[Job],
    p: &plan::StagePlan,
) -> Result<(usize, usize, usize, usize)> {
    let latest = store::read_latest(&layout.ledger(name))?;
    let staged = bundle::staged_outcomes(layout, name)?;
    let (mut new, mut changed, mut failed, mut done) = (0, 0, 0, 0);
    for (j, fp) in jobs.iter().zip(&p.fps) {
        let rec = latest.get(j.id.as_str());
        // An outcome waiting in the staging folder (from a bundle, or a killed runner) is
        // newer than the ledger: `run` collects it instead of running the job.
        let staged = staged
            .get(j.id.as_str())
            .filter(|s| rec.is_none_or(|r| s.attempt > r.attempt));
        // (succeeded, with the job's current fingerprint)
        let state = match (staged, rec) {
            (Some(s), _) => Some((s.success, s.fp.as_deref().is_none_or(|f| fp == f))),
            (None, Some(r)) => Some((r.outcome.is_success(), fp == r.fp.as_str())),
            (None, None) => None,
        };
        match state {
            None => new += 1,
            Some((true, true)) => done += 1,
            Some((true, false)) => changed += 1,
            Some((false, _)) => failed += 1,
        }
    }
    Ok((new, changed, failed, done))
}

/// How `bundle = "auto"` would pack a cluster stage's jobs that would run: by the durations
/// earlier runs recorded, or after a measured first wave when none is recorded. `None` when
/// the stage does not bundle automatically or nothing would run.
fn auto_bundling(
    layout: &Layout,
    name: &str,
    jobs: &[Job],
    p: &plan::StagePlan,
    kind: manifest::BackendKind,
) -> Result<Option<serde_json::Value>> {
    use backend::packing;
    let Some(target) = p.settings.auto_bundle else {
        return Ok(None);
    };
    if kind == manifest::BackendKind::Local {
        return Ok(None);
    }
    let records = store::read_ledger(&layout.ledger(name))?;
    let known = packing::recorded_durations(&records);
    let latest = store::latest(records);
    let ids: Vec<&str> = jobs
        .iter()
        .zip(&p.fps)
        .filter(|(j, fp)| {
            latest
                .get(j.id.as_str())
                .is_none_or(|r| !r.outcome.is_success() || **fp != *r.fp.as_str())
        })
        .map(|(j, _)| j.id.as_str())
        .collect();
    if ids.is_empty() {
        return Ok(None);
    }
    let task_time = target.as_secs_f64();
    let v = match packing::estimate(ids.iter().copied(), &known) {
        Some(d) => {
            let recorded = ids.iter().filter(|id| known.contains_key(**id)).count();
            let min_tasks = p
                .settings
                .max_parallel
                .map_or(packing::AUTO_MIN_TASKS, |m| {
                    packing::AUTO_MIN_TASKS.min(m as usize)
                });
            let (_, packing) = packing::pack(&d, recorded, task_time, min_tasks);
            serde_json::json!({"mode": "auto", "task_time": task_time, "packing": packing})
        }
        None => serde_json::json!({
            "mode": "auto",
            "task_time": task_time,
            "first_wave": packing::FIRST_WAVE.min(ids.len()),
            "jobs": ids.len(),
        }),
    };
    Ok(Some(v))
}

/// The `plan` line of an automatic bundling (see [`auto_bundling`]).
fn auto_bundling_line(v: &serde_json::Value) -> String {
    let time = manifest::WallTime(std::time::Duration::from_secs_f64(
        v["task_time"].as_f64().unwrap_or(0.0),
    ))
    .hms();
    let n = |v: &serde_json::Value| usize::try_from(v.as_u64().unwrap_or(0)).unwrap_or(0);
    if let Some(p) = v.get("packing") {
        format!(
            "  bundle auto (task_time {time}): {} in {} of at most {}, the longest about {:.1} s (durations recorded for {} of them)",
            error::count(n(&p["jobs"]), "job"),
            error::count(n(&p["tasks"]), "task"),
            error::count(n(&p["max_jobs_per_task"]), "job"),
            p["longest_task"].as_f64().unwrap_or(0.0),
            n(&p["recorded"]),
        )
    } else {
        let jobs = n(&v["jobs"]);
        let wave = n(&v["first_wave"]);
        format!(
            "  bundle auto (task_time {time}): no durations recorded yet: a first wave of {} runs one per task, then the other {} are packed by its measured durations",
            error::count(wave, "job"),
            jobs - wave
        )
    }
}

fn plan_text(
    m: &Manifest,
    graph: &StageGraph,
    layout: &Layout,
    prepared: &Prepared,
    selected: &[bool],
    g: &cli::GlobalArgs,
    verbosity: Verbosity,
) -> Result<String> {
    use std::fmt::Write as _;
    let mut out = String::new();
    for &i in graph.order() {
        if !selected[i] {
            continue;
        }
        let s = &m.stages[i];
        let backend = g.backend.unwrap_or(s.settings.backend);
        let needs: Vec<&str> = s.needs.iter().map(|n| n.stage.as_str()).collect();
        let _ = write!(out, "stage `{}` ({backend}", s.name);
        if !needs.is_empty() {
            let _ = write!(out, ", after {}", needs.join(", "));
        }
        out.push_str(")\n");
        match &prepared[i] {
            Some((jobs, p)) => {
                let (new, changed, failed, done) = resume_counts(layout, s.name.as_str(), jobs, p)?;
                let _ = writeln!(
                    out,
                    "  {}: {} would run ({new} new, {changed} changed, {failed} failed before), {done} done and reused",
                    error::count(jobs.len(), "job"),
                    new + changed + failed
                );
                if let Some(v) = auto_bundling(layout, s.name.as_str(), jobs, p, backend)? {
                    let _ = writeln!(out, "{}", auto_bundling_line(&v));
                }
                let limit = if verbosity == Verbosity::Verbose {
                    usize::MAX
                } else {
                    10
                };
                for job in jobs.iter().take(limit) {
                    let j = p.job(job)?;
                    let _ = writeln!(
                        out,
                        "  [{}] {}: {}",
                        j.index,
                        j.id,
                        report::text::clean(&j.command.display().to_string())
                    );
                }
                if jobs.len() > limit {
                    let _ = writeln!(out, "  … {} more (use -v to list all)", jobs.len() - limit);
                }
            }
            None => {
                let why = match &s.source {
                    JobSource::ForEach(up) => format!(
                        "one job per job of `{up}`, each started when its upstream job succeeds"
                    ),
                    _ => "jobs are generated at run time, once its needs are done".to_owned(),
                };
                let _ = writeln!(out, "  {why}");
            }
        }
    }
    Ok(out)
}

fn plan_json(
    m: &Manifest,
    graph: &StageGraph,
    layout: &Layout,
    prepared: &Prepared,
    selected: &[bool],
    g: &cli::GlobalArgs,
) -> Result<String> {
    let mut stages = Vec::new();
    for &i in graph.order() {
        if !selected[i] {
            continue;
        }
        let s = &m.stages[i];
        let mut v = serde_json::json!({
            "name": s.name.as_str(),
            "backend": g.backend.unwrap_or(s.settings.backend),
            "needs": s.needs.iter().map(|n| n.stage.as_str()).collect::<Vec<_>>(),
        });
        if let Some((jobs, p)) = &prepared[i] {
            let (new, changed, failed, done) = resume_counts(layout, s.name.as_str(), jobs, p)?;
            v["counts"] =
                serde_json::json!({"new": new, "changed": changed, "failed": failed, "done": done});
            let kind = g.backend.unwrap_or(s.settings.backend);
            if let Some(b) = auto_bundling(layout, s.name.as_str(), jobs, p, kind)? {
                v["bundling"] = b;
            }
            v["jobs"] = jobs
                .iter()
                .map(|job| {
                    p.job(job).map(|j| serde_json::json!({"index": j.index, "id": j.id.as_str(), "command": j.command.display(), "fingerprint": j.fp}))
                })
                .collect::<Result<_>>()?;
        }
        stages.push(v);
    }
    Ok(
        serde_json::to_string_pretty(&serde_json::json!({"workflow": m.name, "stages": stages}))
            .expect("serializes")
            + "\n",
    )
}
