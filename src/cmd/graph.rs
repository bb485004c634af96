//! `poolparty graph`: draws the stages and their needs, with job counts where they are known.

use std::io::Write;
use std::path::Path;

use crate::cli::GlobalArgs;
use crate::error::{EXIT_SUCCESS, Result};
use crate::graph::GraphFormat;
use crate::{jobs, store};

/// `poolparty graph [MANIFEST] [--format F]`.
///
/// # Errors
/// A bad manifest.
pub(crate) fn run(
    manifest: Option<&Path>,
    format: GraphFormat,
    g: &GlobalArgs,
    stdout: &mut impl Write,
) -> Result<u8> {
    let (m, graph, layout) = super::load(manifest, g)?;
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
    let _ = stdout.write_all(graph.render(&m, &counts, format).as_bytes());
    Ok(EXIT_SUCCESS)
}
