//! `poolparty validate`: loads the manifest and expands and renders every job that can be known
//! before a run, so bad input fails here with the diagnostic a run would give.

use std::io::Write;

use crate::error::{self, EXIT_SUCCESS, Result};
use crate::manifest;

use super::Ctx;

/// `poolparty validate [MANIFEST]`.
///
/// # Errors
/// A bad manifest, template, generator or unreadable state.
pub(crate) fn run(
    manifest: Option<&std::path::Path>,
    ctx: &Ctx<'_>,
    stdout: &mut impl Write,
) -> Result<u8> {
    let Ctx { g, signals, .. } = *ctx;
    let (m, graph, layout) = super::load(manifest, g)?;
    manifest::check_template_backends(&m, false, &crate::backend::task_index_vars())?;
    let selected = vec![true; m.stages.len()];
    let prepared = super::prepare(&m, &graph, &layout, &selected, signals)?;
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
