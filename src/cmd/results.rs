//! `poolparty results`: prints the recorded results of a stage, and names the jobs without one.

use std::io::Write;
use std::path::Path;

use crate::cli::GlobalArgs;
use crate::error::{self, EXIT_SUCCESS, Result};
use crate::query;

/// `poolparty results [MANIFEST] [--stage S]`.
///
/// # Errors
/// A bad manifest, an unknown stage or unreadable state.
pub(crate) fn run(
    manifest: Option<&Path>,
    options: query::ResultsOptions,
    allow_missing: bool,
    g: &GlobalArgs,
    stdout: &mut impl Write,
) -> Result<u8> {
    let (m, _, layout) = super::load(manifest, g)?;
    let out = query::results(&m, &layout, &options)?;
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
    Ok(if allow_missing {
        EXIT_SUCCESS
    } else {
        error::EXIT_JOBS_FAILED
    })
}
