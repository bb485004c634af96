//! Command-line types (clap derive) only. `lib.rs` hands each command (`cmd/`) its arguments;
//! `cmd::load` applies the global `--backend` and `--max-parallel` to the manifest's settings
//! once, so no module after `cmd` reads the command line: only `cmd/*` and `lib` import this
//! file. The value enums of `--format` flags belong to the module whose output they choose
//! (`graph`, `query`, `report`) and are imported here.

use std::ffi::OsStr;
use std::path::PathBuf;

use clap::builder::{PossibleValue, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::graph::GraphFormat;
use crate::manifest::BackendKind;
use crate::query::ResultsFormat;

/// Declarative Pool.map: run a TOML manifest's jobs on a local pool, Slurm or Grid Engine.
#[derive(Debug, Parser)]
#[command(name = "poolparty", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Cmd,
    /// Flags for every command.
    #[command(flatten)]
    pub global: GlobalArgs,
}

/// Flags accepted by every command.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Run every stage on this backend, whatever the manifest says.
    #[arg(long, global = true, value_name = "NAME", value_parser = BackendParser)]
    pub backend: Option<BackendKind>,
    /// Override every stage's `max_parallel`.
    #[arg(long, global = true, value_name = "N", allow_hyphen_values = true, value_parser = parse_max_parallel)]
    pub max_parallel: Option<u32>,
    /// Print every job as it ends.
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Print only failures and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print a machine-readable summary on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Colour: `auto` (a terminal, unless NO_COLOR is set), `always`, `never`.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

/// `--max-parallel`: a whole number from 1 to `u32::MAX`. Negative values reach this parser
/// (`allow_hyphen_values`) so they get this message, not clap's hint to write `-- -1`.
fn parse_max_parallel(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "`{text}` is not a number of jobs: write a whole number from 1 to {}",
            u32::MAX
        )),
    }
}

/// Parses a backend's name (unknown names get the manifest's "did you mean"); help and shell
/// completions list the names, from [`BackendKind::ALL`].
#[derive(Clone)]
struct BackendParser;

impl TypedValueParser for BackendParser {
    type Value = BackendKind;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<BackendKind, clap::Error> {
        (|s: &str| s.parse::<BackendKind>()).parse_ref(cmd, arg, value)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(BackendKind::names().map(PossibleValue::new)))
    }
}

/// When to use colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the manifest's stages (jobs that already succeeded unchanged are reused).
    Run(RunArgs),
    /// Stop a run: a live runner is asked to stop (it cancels its jobs); arrays left on a
    /// cluster by a killed runner are cancelled with one call per scheduler.
    Cancel {
        /// The manifest or its folder.
        manifest: Option<PathBuf>,
    },
    /// Check the manifest, expand every job that can be expanded and render every command.
    Validate {
        /// The manifest or its folder.
        manifest: Option<PathBuf>,
    },
    /// Show what `run` would run, without running anything.
    Plan {
        /// The manifest or its folder.
        manifest: Option<PathBuf>,
        /// Only these stages (and what they need).
        #[arg(long = "stage", value_name = "NAME")]
        stages: Vec<String>,
        /// Write the exact scripts `run` would submit, and a `submit.sh` that submits the
        /// whole DAG with scheduler dependencies, into this folder.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Show the recorded outcomes of every stage.
    Status {
        /// The manifest or its folder.
        manifest: Option<PathBuf>,
    },
    /// Print a stage's results in job order (the `Pool.map` list).
    Results(ResultsArgs),
    /// Print the stage graph.
    Graph {
        /// The manifest or its folder.
        manifest: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
    },
    /// Print the manifest's JSON Schema.
    Schema,
    /// Print a job's output (stdout, or stderr with `--stderr`), during or after a run.
    #[command(override_usage = "poolparty logs [OPTIONS] [MANIFEST] JOB")]
    Logs(LogsArgs),
    /// Write a commented starter manifest, a job generator and a job script into a folder.
    Init {
        /// The folder (default: the current one); created when missing.
        dir: Option<PathBuf>,
        /// Overwrite files that already exist.
        #[arg(long)]
        force: bool,
    },
    /// List, show or eject the embedded script templates (Slurm, Grid Engine, local).
    Templates {
        /// What to do with them.
        #[command(subcommand)]
        action: TemplatesCmd,
    },
    /// Print a shell completion script (where to put it: the README's Install section).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), or write one page per command into a folder.
    Man {
        /// Write `poolparty.1` and `poolparty-<command>.1` for every command into this folder.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Write a run's report: one self-contained HTML page (timelines, histograms,
    /// concurrency, retries, failures with log tails), or the same facts as text.
    Report(ReportArgs),
    /// Internal: started by each runner to stop its local jobs if it is killed.
    #[command(name = "__watchdog", hide = true)]
    Watchdog {
        /// The run's `.live.jsonl`.
        live: PathBuf,
    },
}

/// Arguments of `poolparty run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The manifest, or a folder holding `poolparty.toml` (default: `./poolparty.toml`).
    pub manifest: Option<PathBuf>,
    /// Run only these stages (and what they need). Repeatable.
    #[arg(long = "stage", value_name = "NAME")]
    pub stages: Vec<String>,
    /// Rerun every job, even those recorded as succeeded.
    #[arg(long, conflicts_with = "retry_failed")]
    pub force: bool,
    /// Rerun only jobs that did not succeed: recorded successes are kept even if the
    /// manifest changed what they would run.
    #[arg(long)]
    pub retry_failed: bool,
    /// Submit the whole DAG with scheduler dependencies and exit (see `plan --out`);
    /// follow it with `poolparty status`.
    #[arg(long)]
    pub detach: bool,
    /// Wait for another run holding the workflow to end instead of refusing.
    #[arg(long)]
    pub wait: bool,
    /// At the end, write the run's HTML report (as `poolparty report -o FILE`) here.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Take the stages that the `--stage` stages need as recorded: wait for their
    /// submitted jobs, launch or retry none (what a detached run's driver job uses).
    #[arg(long, hide = true, requires = "stages")]
    pub recorded_needs: bool,
}

/// Arguments of `poolparty results`.
#[derive(Debug, Args)]
pub struct ResultsArgs {
    /// The manifest or its folder.
    pub manifest: Option<PathBuf>,
    /// The stage (required when the manifest has several).
    #[arg(long)]
    pub stage: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ResultsFormat::Json)]
    pub format: ResultsFormat,
    /// Add each job's value (jsonl, csv, tsv).
    #[arg(long)]
    pub with_job: bool,
    /// Exit 0 even when some job has no result.
    #[arg(long)]
    pub allow_missing: bool,
}

/// Arguments of `poolparty report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The manifest or its folder.
    pub manifest: Option<PathBuf>,
    /// Write it to this file (default: `report.html` in the workflow's state folder for
    /// HTML; stdout for text; `-` is stdout).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The run to report (default: the latest recorded run).
    #[arg(long, value_name = "ID")]
    pub run: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = crate::report::Format::Html)]
    pub format: crate::report::Format,
}

/// Arguments of `poolparty logs`: `[MANIFEST] JOB`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The manifest or its folder (default: `./poolparty.toml`); with one argument, the job.
    #[arg(value_name = "MANIFEST")]
    pub first: Option<String>,
    /// The job: its id, a unique prefix of its id, or its index (`7`; `#7` is always an index).
    #[arg(value_name = "JOB")]
    pub second: Option<String>,
    /// The job's stage (needed when several stages have a job of that name).
    #[arg(long, value_name = "NAME")]
    pub stage: Option<String>,
    /// Print its stderr instead of its stdout.
    #[arg(long)]
    pub stderr: bool,
    /// Keep printing new output until the job's outcome is recorded.
    #[arg(short, long)]
    pub follow: bool,
}

/// `poolparty templates` actions.
#[derive(Debug, Subcommand)]
pub enum TemplatesCmd {
    /// List the embedded templates.
    List,
    /// Print an embedded template.
    Show {
        /// The backend whose template to print.
        #[arg(value_name = "NAME", value_parser = BackendParser)]
        backend: BackendKind,
    },
    /// Write an embedded template into a folder, to edit and use with the `template` key.
    Eject {
        /// The backend whose template to write.
        #[arg(value_name = "NAME", value_parser = BackendParser)]
        backend: BackendKind,
        /// The folder (default: the current one).
        dir: Option<PathBuf>,
        /// Overwrite the file if it exists.
        #[arg(long)]
        force: bool,
    },
}
