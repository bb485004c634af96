//! Every error poolparty reports, and the exit codes they map to.
//!
//! Errors are `miette` diagnostics: input errors carry the source they point into (the
//! manifest, a generator's output, a jobs file) and a labelled span. The exit code of each
//! variant is decided in one exhaustive `match` ([`Error::exit_code`]), so adding a variant
//! forces a decision.

use std::path::PathBuf;

use miette::{Diagnostic, NamedSource, SourceSpan};

/// Exit code: every job succeeded.
pub const EXIT_SUCCESS: u8 = 0;
/// Exit code: some job failed, was lost, or was not run.
pub const EXIT_JOBS_FAILED: u8 = 1;
/// Exit code: invalid manifest, jobs, template or usage; nothing was started.
pub const EXIT_INVALID_INPUT: u8 = 2;
/// Exit code: a backend (scheduler, file system, process spawning) failed.
pub const EXIT_BACKEND_ERROR: u8 = 3;
/// Exit code: interrupted by SIGINT or SIGTERM (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: u8 = 130;

/// A source text with a name, shared by the diagnostics that point into it.
pub type Source = NamedSource<String>;

/// Everything that can go wrong before, during or after a run.
#[derive(Debug, thiserror::Error, Diagnostic)]
pub enum Error {
    /// The manifest file could not be read.
    #[error("failed to read manifest `{path}`")]
    #[diagnostic(
        code(poolparty::manifest::read),
        help("pass the manifest path or the folder that holds `poolparty.toml`")
    )]
    ReadManifest {
        /// The path that was tried.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The manifest is not valid TOML, or does not match the manifest's shape.
    #[error("{message}")]
    #[diagnostic(code(poolparty::manifest::syntax))]
    ManifestSyntax {
        /// What the TOML parser said.
        message: String,
        /// The manifest.
        #[source_code]
        src: Source,
        /// Where.
        #[label("here")]
        span: Option<SourceSpan>,
        /// A suggestion such as the nearest valid key.
        #[help]
        help: Option<String>,
    },

    /// A value in the manifest is well-formed TOML but not acceptable.
    #[error("{message}")]
    #[diagnostic(code(poolparty::manifest::invalid))]
    InvalidManifest {
        /// What is wrong.
        message: String,
        /// The manifest.
        #[source_code]
        src: Source,
        /// Where.
        #[label("{label}")]
        span: SourceSpan,
        /// The label text.
        label: String,
        /// How to fix it.
        #[help]
        help: Option<String>,
    },

    /// A stage names a stage in `needs` (or `for_each`) that does not exist.
    #[error("stage `{stage}` needs unknown stage `{unknown}`")]
    #[diagnostic(code(poolparty::graph::unknown_stage))]
    UnknownStage {
        /// The stage whose `needs` is wrong.
        stage: String,
        /// The unknown name.
        unknown: String,
        /// The manifest.
        #[source_code]
        src: Source,
        /// Where the unknown name stands.
        #[label("no stage has this name")]
        span: SourceSpan,
        /// Did you mean.
        #[help]
        help: Option<String>,
    },

    /// The stages' `needs` form a cycle.
    #[error("stages form a cycle: {}", cycle.join(" → "))]
    #[diagnostic(
        code(poolparty::graph::cycle),
        help("remove one of the `needs` entries on the cycle")
    )]
    Cycle {
        /// The stages on the cycle, in order, first repeated at the end.
        cycle: Vec<String>,
        /// The manifest.
        #[source_code]
        src: Source,
        /// One label per `needs` entry on the cycle.
        #[label(collection)]
        spans: Vec<miette::LabeledSpan>,
    },

    /// Two jobs of a stage have the same id.
    #[error("jobs {first} and {second} of stage `{stage}` have the same id `{id}`")]
    #[diagnostic(
        code(poolparty::jobs::duplicate_id),
        help(
            "job ids must be unique within a stage: give each job a distinct `id` field, or remove the duplicate job"
        )
    )]
    DuplicateJobId {
        /// The stage.
        stage: String,
        /// The id.
        id: String,
        /// Index of the first job.
        first: usize,
        /// Index of the second job.
        second: usize,
        /// The jobs' source (manifest, generator output or jobs file).
        #[source_code]
        src: Source,
        /// The two places.
        #[label(collection)]
        spans: Vec<miette::LabeledSpan>,
    },

    /// A job is unusable (a bad `id`, or not valid JSON).
    #[error("invalid job {index} of stage `{stage}`: {message}")]
    #[diagnostic(code(poolparty::jobs::invalid))]
    InvalidJob {
        /// The stage.
        stage: String,
        /// The job's index (0-based).
        index: usize,
        /// What is wrong.
        message: String,
        /// The jobs' source.
        #[source_code]
        src: Source,
        /// Where the job stands.
        #[label("{message}")]
        span: Option<SourceSpan>,
        /// How to fix it.
        #[help]
        help: Option<String>,
    },

    /// The jobs' source did not parse (generator output or jobs file).
    #[error("{what} of stage `{stage}` is not valid JSON or JSON Lines: {message}")]
    #[diagnostic(
        code(poolparty::jobs::parse),
        help("print one JSON array, or one JSON value per line (JSON Lines)")
    )]
    JobsParse {
        /// The stage.
        stage: String,
        /// "the generator's output" or "jobs file `x`".
        what: String,
        /// The JSON error.
        message: String,
        /// The text.
        #[source_code]
        src: Source,
        /// Where.
        #[label("{message}")]
        span: SourceSpan,
    },

    /// A job generator could not be started or exited non-zero.
    #[error("job generator of stage `{stage}` failed: {status}")]
    #[diagnostic(code(poolparty::jobs::generator_failed))]
    GeneratorFailed {
        /// The stage.
        stage: String,
        /// The exit status, or the spawn error.
        status: String,
        /// The manifest.
        #[source_code]
        src: Source,
        /// The `generate` key.
        #[label("this command failed")]
        span: SourceSpan,
        /// The last lines of the generator's stderr.
        #[help]
        stderr: Option<String>,
    },

    /// A jobs file could not be read.
    #[error("failed to read jobs file `{path}` of stage `{stage}`")]
    #[diagnostic(code(poolparty::jobs::file))]
    JobsFile {
        /// The stage.
        stage: String,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
        /// The manifest.
        #[source_code]
        src: Source,
        /// The `jobs_file` key.
        #[label("this file")]
        span: SourceSpan,
    },

    /// A template did not compile or did not render.
    #[error("{message}")]
    #[diagnostic(code(poolparty::template))]
    Template {
        /// What failed, with the job when a job's render failed.
        message: String,
        /// The manifest or template file.
        #[source_code]
        src: Source,
        /// The template.
        #[label("{label}")]
        span: SourceSpan,
        /// The label.
        label: String,
        /// Did you mean, or the variables that exist.
        #[help]
        help: Option<String>,
        /// The undefined variable's path (`job.result.x`), when that is what failed.
        undefined: Option<String>,
    },

    /// Usage error that is not about the manifest (flags, stage selection).
    #[error("{message}")]
    #[diagnostic(code(poolparty::usage))]
    Usage {
        /// What is wrong.
        message: String,
        /// How to fix it.
        #[help]
        help: Option<String>,
    },

    /// Another runner holds the workflow's state folder.
    #[error("workflow state `{path}` is in use by another poolparty run ({holder})")]
    #[diagnostic(
        code(poolparty::store::locked),
        help(
            "wait for that run to end, or stop it; a lock left by a dead runner is released automatically"
        )
    )]
    Locked {
        /// The state folder.
        path: PathBuf,
        /// Who holds it: pid, host, start time.
        holder: String,
    },

    /// Reading or writing poolparty's own state failed.
    #[error("failed to {action} `{path}`")]
    #[diagnostic(code(poolparty::store::io))]
    Store {
        /// What was being done ("write", "read", "create").
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The state folder holds records poolparty cannot read.
    #[error("corrupt state in `{path}`: {message}")]
    #[diagnostic(code(poolparty::store::corrupt))]
    CorruptState {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
        /// How to recover.
        #[help]
        help: String,
    },

    /// A backend failed in a way that stops the run (e.g. `sbatch` refused the script).
    #[error("{backend} backend failed: {message}")]
    #[diagnostic(code(poolparty::backend))]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What failed.
        message: String,
        /// More detail (the scheduler's stderr).
        #[help]
        detail: Option<String>,
    },

    /// SIGINT or SIGTERM arrived before the run started (e.g. while a generator ran); what
    /// was running was stopped.
    #[error("interrupted by signal {signal} {during}")]
    #[diagnostic(code(poolparty::interrupted))]
    Interrupted {
        /// The signal number.
        signal: i32,
        /// What was happening, e.g. "while the job generator of stage `a` ran; it was stopped".
        during: String,
    },
}

impl Error {
    /// The process exit code for this error (see the table in README.md).
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::ReadManifest { .. }
            | Self::ManifestSyntax { .. }
            | Self::InvalidManifest { .. }
            | Self::UnknownStage { .. }
            | Self::Cycle { .. }
            | Self::DuplicateJobId { .. }
            | Self::InvalidJob { .. }
            | Self::JobsParse { .. }
            | Self::GeneratorFailed { .. }
            | Self::JobsFile { .. }
            | Self::Template { .. }
            | Self::Usage { .. }
            | Self::Locked { .. } => EXIT_INVALID_INPUT,
            Self::Store { .. } | Self::CorruptState { .. } | Self::Backend { .. } => {
                EXIT_BACKEND_ERROR
            }
            Self::Interrupted { .. } => EXIT_INTERRUPTED,
        }
    }

    /// A state I/O error.
    pub(crate) fn store(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Store {
            action,
            path: path.into(),
            source,
        }
    }
}

/// The nearest of `candidates` to `name` (Levenshtein distance below 3), as a help text.
#[must_use]
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::levenshtein(name, c), c))
        .filter(|(d, _)| *d < 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

/// `n` followed by `word`, pluralized with an `s` when `n != 1`.
#[must_use]
pub fn count(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Convenient result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestion_picks_nearest() {
        assert_eq!(
            did_you_mean("analyze", ["analyse", "reduce"]).as_deref(),
            Some("did you mean `analyse`?")
        );
        assert_eq!(did_you_mean("zzzzzz", ["analyse"]), None);
    }

    #[test]
    fn plural() {
        assert_eq!(count(1, "job"), "1 job");
        assert_eq!(count(0, "job"), "0 jobs");
    }
}
