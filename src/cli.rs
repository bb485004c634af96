//! Command-line types (clap derive) only. `lib.rs` turns them into plain options; clap types
//! stop there.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::graph::GraphFormat;
use crate::manifest::BackendKind;

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
    /// Run every stage on this backend (`local`, `slurm`, `sge`), whatever the manifest says.
    #[arg(long, global = true, value_name = "NAME")]
    pub backend: Option<BackendKind>,
    /// Override every stage's `max_parallel`.
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
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
    Run {
        /// The manifest, or a folder holding `poolparty.toml` (default: `./poolparty.toml`).
        manifest: Option<PathBuf>,
        /// Run only these stages (and what they need). Repeatable.
        #[arg(long = "stage", value_name = "NAME")]
        stages: Vec<String>,
        /// Rerun every job, even those recorded as succeeded.
        #[arg(long, conflicts_with = "retry_failed")]
        force: bool,
        /// Rerun only jobs that did not succeed: recorded successes are kept even if the
        /// manifest changed what they would run.
        #[arg(long)]
        retry_failed: bool,
        /// Submit the whole DAG with scheduler dependencies and exit (see `plan --out`);
        /// follow it with `poolparty status`.
        #[arg(long)]
        detach: bool,
        /// Wait for another run holding the workflow to end instead of refusing.
        #[arg(long)]
        wait: bool,
    },
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
    Results {
        /// The manifest or its folder.
        manifest: Option<PathBuf>,
        /// The stage (required when the manifest has several).
        #[arg(long)]
        stage: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = ResultsFormat::Json)]
        format: ResultsFormat,
        /// Add each job's value (jsonl, csv, tsv).
        #[arg(long)]
        with_job: bool,
        /// Exit 0 even when some job has no result.
        #[arg(long)]
        allow_missing: bool,
    },
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
    /// Internal: started by each runner to stop its local jobs if it is killed.
    #[command(name = "__watchdog", hide = true)]
    Watchdog {
        /// The run's `.live.jsonl`.
        live: PathBuf,
    },
}

/// Formats of `poolparty results`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
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
