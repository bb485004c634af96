//! poolparty: a declarative `Pool.map` for the shell.
//!
//! The pipeline, one module per step, data flowing one way:
//! `manifest` (parse, validate) → `jobs` (expand) → `template` → `graph` → `plan`
//! (rendered commands) → `runner` driving a `backend` (local, Slurm, Grid Engine, PBS, LSF)
//! → `outcome`s recorded by `store` → `summary`. `resume` decides per job what a run does
//! with what is recorded; `query` and `report` read recorded state back; `cmd/` holds one
//! file per command. DESIGN.md has the map.
//!
//! [`run`] is the whole program: parse the command line, dispatch to the command in one line,
//! print an error once, and return the exit code (`error` has the table). No module is public
//! (each is `pub(crate)`, `cmd` private), so the compiler finds dead code; [`testing`] holds
//! the few entry points the property tests and one Grid Engine test call.

pub(crate) mod backend;
pub(crate) mod bundle;
pub(crate) mod cli;
mod cmd;
pub(crate) mod error;
pub(crate) mod graph;
pub(crate) mod jobs;
pub(crate) mod manifest;
pub(crate) mod outcome;
pub(crate) mod plan;
pub(crate) mod process;
pub(crate) mod query;
pub(crate) mod quoting;
pub(crate) mod report;
pub(crate) mod resume;
pub(crate) mod runner;
pub(crate) mod signals;
pub(crate) mod store;
pub(crate) mod summary;
pub(crate) mod template;

/// The library entry points the property tests (`tests/fuzz.rs`, `tests/quoting.rs`) and one
/// Grid Engine test drive directly: not a stable interface. poolparty is a program, and
/// [`run`] is its API. Only the template engine is exported as it is; the rest are wrapper
/// functions, so no internal type (manifest, plan, scheduler client) becomes public.
#[doc(hidden)]
pub mod testing {
    use std::path::Path;

    use serde_json::{Map, Value};

    use crate::backend::cluster::Client as _;

    pub use crate::backend::cluster::CallError;
    pub use crate::template::{Quoting, Templates, shell_quote};

    /// What `validate` does with a manifest's text: parses it as the manifest at `path`,
    /// builds the stage graph, and for each stage compiles its command with `base` as the
    /// context, expands its static jobs and renders the command of up to `max_jobs` of them.
    /// Returns, per stage, whether its command compiled.
    ///
    /// # Errors
    /// The parse error's text when the manifest does not parse.
    pub fn plan_manifest(
        path: &Path,
        text: String,
        base: &Map<String, Value>,
        max_jobs: usize,
    ) -> Result<Vec<bool>, String> {
        let m = crate::manifest::parse(path, text).map_err(|e| e.to_string())?;
        let _ = crate::graph::StageGraph::build(&m);
        Ok(m.stages
            .iter()
            .map(|stage| {
                let Ok(r) = crate::plan::Renderer::new(&m, stage, base.clone()) else {
                    return false;
                };
                if let Some(Ok(jobs)) = crate::jobs::expand_static(&m, stage) {
                    for j in jobs.iter().take(max_jobs) {
                        let _ = r.plan(j);
                    }
                }
                true
            })
            .collect())
    }

    /// Asks Grid Engine (`qstat`) for these arrays; the tasks it lists, as text.
    ///
    /// # Errors
    /// The failed call.
    pub fn sge_query(job_ids: &[String]) -> Result<String, CallError> {
        crate::backend::sge::Sge
            .query(job_ids)
            .map(|tasks| format!("{tasks:?}"))
    }

    /// Submits a script to Grid Engine (`qsub`); its job id.
    ///
    /// # Errors
    /// The failed call.
    pub fn sge_submit(script: &Path) -> Result<String, CallError> {
        crate::backend::sge::Sge.submit(script)
    }
}

use std::ffi::OsString;
use std::io::{IsTerminal, Write};

use clap::Parser;

use crate::cli::{Cli, Cmd, ColorChoice};
use crate::error::{EXIT_INVALID_INPUT, EXIT_SUCCESS, Result};
use crate::signals::Signals;
use crate::summary::Verbosity;

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
        Cmd::Validate { .. } | Cmd::Plan { .. } | Cmd::Run(_) => Signals::install(),
        _ => Signals::none(),
    };
    let ctx = cmd::Ctx {
        g,
        color,
        verbosity,
        signals: &signals,
    };
    let mut stdout = std::io::stdout().lock();
    match &cli.command {
        Cmd::Schema => cmd::schema::run(&mut stdout),
        Cmd::Validate { manifest } => cmd::validate::run(manifest.as_deref(), &ctx, &mut stdout),
        Cmd::Plan {
            manifest,
            stages,
            out,
        } => cmd::plan::run(manifest.as_deref(), stages, out.as_ref(), &ctx, &mut stdout),
        Cmd::Watchdog { live } => {
            runner::watchdog(live);
            Ok(EXIT_SUCCESS)
        }
        Cmd::Cancel { manifest } => cmd::cancel::run(manifest.as_deref(), g),
        Cmd::Run(args) => cmd::run::run(args, &ctx, &mut stdout),
        Cmd::Status { manifest } => cmd::status::run(manifest.as_deref(), &ctx, &mut stdout),
        Cmd::Results(args) => cmd::results::run(args, g, &mut stdout),
        Cmd::Report(args) => cmd::report::run(args, g),
        Cmd::Logs(args) => cmd::logs::run(args, g, &mut stdout),
        Cmd::Init { dir, force } => cmd::init::run(dir.as_deref(), *force, &mut stdout),
        Cmd::Templates { action } => cmd::templates::run(action, &mut stdout),
        Cmd::Completions { shell } => cmd::completions::completions(*shell, &mut stdout),
        Cmd::Man { out } => cmd::completions::man(out.as_deref(), &mut stdout),
        Cmd::Graph { manifest, format } => {
            cmd::graph::run(manifest.as_deref(), *format, g, &mut stdout)
        }
    }
}
