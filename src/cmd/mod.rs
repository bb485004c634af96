//! One file per command, each with a `run` that `lib.rs` dispatches to in one line (`man`
//! shares `completions.rs`).
//!
//! Commands load the manifest through [`load`], which applies the command line's overrides
//! (`--backend`, `--max-parallel`) to every stage's settings once, so every command and every
//! module after it sees the settings in effect. The pieces several commands share (stage
//! selection, validating everything before a run starts, writing a bundle, writing a file
//! that `init` or `templates eject` must not overwrite) live here, so no command imports
//! another.

pub(crate) mod cancel;
pub(crate) mod completions;
pub(crate) mod graph;
pub(crate) mod init;
pub(crate) mod logs;
pub(crate) mod plan;
pub(crate) mod report;
pub(crate) mod results;
pub(crate) mod run;
pub(crate) mod schema;
pub(crate) mod status;
pub(crate) mod templates;
pub(crate) mod validate;

use crate::bundle;
use crate::cli::GlobalArgs;
use crate::error::{self, Error, Result};
use crate::graph::StageGraph;
use crate::jobs::{self, Job, SourceKind};
use crate::manifest::{self, Manifest};
use crate::plan::{Upstream, UpstreamStage};
use crate::runner::Prepared;
use crate::signals::Signals;
use crate::store::Layout;
use crate::summary::Verbosity;

/// What a command gets from the command line besides its own arguments.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    /// The global options.
    pub g: &'a GlobalArgs,
    /// Whether to colour diagnostics and tables.
    pub color: bool,
    /// `-q`, `-v` or neither.
    pub verbosity: Verbosity,
    /// SIGINT/SIGTERM, for the commands that start child processes.
    pub signals: &'a Signals,
}

/// Loads the manifest (with the command line's overrides applied to every stage's settings),
/// its stage graph and its state folder.
///
/// # Errors
/// A manifest that cannot be read, parsed or validated, or a cycle in its needs.
pub(crate) fn load(
    path: Option<&std::path::Path>,
    g: &GlobalArgs,
) -> Result<(Manifest, StageGraph, Layout)> {
    let mut manifest = manifest::load(&manifest::resolve_path(path))?;
    manifest.apply_overrides(g.backend, g.max_parallel);
    let graph = StageGraph::build(&manifest)?;
    let layout = Layout::new(manifest.state_dir());
    Ok((manifest, graph, layout))
}

/// Writes a bundle and returns the text that describes it.
#[expect(
    clippy::too_many_arguments,
    reason = "the loaded workflow as `load` and `prepare` give it, and where and how to bundle it"
)]
pub(crate) fn write_bundle(
    m: &Manifest,
    graph: &StageGraph,
    layout: &Layout,
    prepared: &Prepared,
    selected: &[bool],
    g: &GlobalArgs,
    policy: crate::resume::Policy,
    out: &std::path::Path,
) -> Result<String> {
    use std::fmt::Write as _;
    let exe = std::env::current_exe().map_err(|e| Error::store("find", "poolparty", e))?;
    let opts = bundle::BundleOptions {
        out: out.to_path_buf(),
        driver_flags: driver_flags(g),
        exe,
        policy,
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
    for (kind, limit) in summary.limits {
        let _ = writeln!(
            s,
            "  {kind} arrays of at most {}: {}",
            error::count(limit.tasks, "task"),
            limit.source
        );
    }
    let _ = writeln!(
        s,
        "submit it with: bash {}",
        out.join("submit.sh").display()
    );
    Ok(s)
}

/// The overrides `load` resolved into the settings, as flags for a bundle's driver jobs, which
/// load the manifest again: empty, or starting with a space.
fn driver_flags(g: &GlobalArgs) -> String {
    use std::fmt::Write as _;
    let mut flags = String::new();
    if let Some(b) = g.backend {
        let _ = write!(flags, " --backend {b}");
    }
    if let Some(n) = g.max_parallel {
        let _ = write!(flags, " --max-parallel {n}");
    }
    flags
}

/// The stages to run: those named with `--stage` plus everything they need (resume makes a
/// need that already succeeded cost nothing), or all.
pub(crate) fn select(m: &Manifest, graph: &StageGraph, names: &[String]) -> Result<Vec<bool>> {
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
pub(crate) fn prepare(
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
        match SourceKind::of(&stage.source) {
            SourceKind::Generate(cmd) if stage.needs.is_empty() => {
                let base = crate::plan::base_context(m, stage, layout, &upstream);
                let rendered = crate::plan::render_generator(m, stage, cmd, &base)?;
                let env = crate::plan::stage_env(m, stage, layout, &upstream);
                prepared[i] = Some(crate::plan::expand_and_plan(
                    m,
                    i,
                    layout,
                    &upstream,
                    |visit| jobs::run_generator_with(m, stage, &rendered, &env, signals, visit),
                )?);
            }
            SourceKind::Generate(cmd) => {
                // Its jobs come later, but an undefined variable in the command is known now.
                let base = crate::plan::base_context(m, stage, layout, &upstream);
                crate::plan::render_generator(m, stage, cmd, &base)?;
            }
            SourceKind::ForEach(_) => {
                let up = graph.needs(i)[0];
                if let Some((up_jobs, _)) = &prepared[up] {
                    let base = crate::plan::base_context(m, stage, layout, &upstream);
                    let renderer = crate::plan::Renderer::new(m, stage, base)?;
                    for j in up_jobs {
                        let mut value = serde_json::json!({
                            "id": j.id, "index": j.index,
                            "exit_code": 0, "outcome": "succeeded", "result": null,
                            "stdout": layout.log_out(m.stages[up].name.as_str(), j.id),
                            "stderr": layout.log_err(m.stages[up].name.as_str(), j.id),
                        });
                        // Not through `json!`, which would rewrite its numbers (`1E2`).
                        if let serde_json::Value::Object(map) = &mut value {
                            map.insert("upstream".to_owned(), j.value());
                        }
                        let probe = Job {
                            index: j.index,
                            id: j.job_id(),
                            json: String::new(),
                            value,
                        };
                        match renderer.plan(&probe) {
                            // The upstream result's shape is unknown before it exists.
                            Err(Error::Template {
                                undefined: Some(path),
                                ..
                            }) if path.starts_with("job.result.") => {}
                            other => {
                                other?;
                            }
                        }
                    }
                }
            }
            SourceKind::Static(source) => {
                prepared[i] = Some(crate::plan::expand_and_plan(
                    m,
                    i,
                    layout,
                    &upstream,
                    |visit| jobs::expand_static_with(m, stage, source, visit),
                )?);
            }
        }
    }
    Ok(prepared)
}

/// Writes a file that must not exist yet (unless `force`), creating its folder.
///
/// # Errors
/// The file exists and `force` is off, or it cannot be written.
pub(crate) fn write_new(path: &std::path::Path, text: &str, force: bool) -> Result<()> {
    if !force && path.exists() {
        return Err(Error::Usage {
            message: format!("`{}` already exists", path.display()),
            help: Some("pass `--force` to overwrite it".to_owned()),
        });
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::store("create", parent, e))?;
    }
    std::fs::write(path, text).map_err(|e| Error::store("write", path, e))
}
