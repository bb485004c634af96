//! `poolparty results`: prints the recorded results of a stage, and names the jobs without one.

use std::io::Write;

use crate::cli::{GlobalArgs, ResultsArgs};
use crate::error::{self, EXIT_SUCCESS, Result};
use crate::query;

/// `poolparty results [MANIFEST] [--stage S]`.
///
/// # Errors
/// A bad manifest, an unknown stage or unreadable state.
pub(crate) fn run(args: &ResultsArgs, g: &GlobalArgs, stdout: &mut impl Write) -> Result<u8> {
    let (m, _, layout) = super::load(args.manifest.as_deref(), g)?;
    let options = query::ResultsOptions {
        stage: args.stage.clone(),
        format: args.format,
        with_job: args.with_job,
    };
    let out = {
        let mut buffered = std::io::BufWriter::with_capacity(1 << 16, &mut *stdout);
        let out = query::results(&m, &layout, &options, &mut buffered)?;
        let _ = buffered.flush();
        out
    };
    let mut err = std::io::stderr().lock();
    for n in &out.notes {
        let _ = writeln!(err, "poolparty: {n}");
    }
    if out.missing_total == 0 {
        return Ok(EXIT_SUCCESS);
    }
    if !g.quiet {
        let _ = writeln!(
            err,
            "poolparty: {} without a result:",
            error::count(out.missing_total, "job")
        );
        for line in &out.missing {
            let _ = writeln!(err, "  {line}");
        }
        if out.missing_total > out.missing.len() {
            let _ = writeln!(
                err,
                "  … and {} more",
                out.missing_total - out.missing.len()
            );
        }
    }
    Ok(if args.allow_missing {
        EXIT_SUCCESS
    } else {
        error::EXIT_JOBS_FAILED
    })
}
