//! `poolparty report` and `run --report`: load the manifest, pick the run, collect its facts
//! ([`crate::report::collect`]) and write them as HTML or text.

use std::io::Write;
use std::path::Path;

use crate::cli::{GlobalArgs, ReportArgs};
use crate::error::{EXIT_SUCCESS, Result};
use crate::graph::StageGraph;
use crate::manifest::Manifest;
use crate::report::{self, Format};
use crate::store::Layout;
use crate::summary::RunReport;

/// `poolparty report`: writes the report of the latest run (or `--run ID`); with `json`, prints
/// the report's data as JSON on stdout instead.
///
/// # Errors
/// A bad manifest, no recorded run, unreadable state or an unwritable output.
pub fn run(args: &ReportArgs, g: &GlobalArgs) -> Result<u8> {
    let json = g.json;
    let (m, graph, layout) = super::load(args.manifest.as_deref(), g)?;
    let chosen = report::load_run(&m, &layout, args.run.as_deref())?;
    let data = report::collect(&m, &graph, &layout, &chosen)?;
    if json {
        let text = serde_json::to_string_pretty(&data).expect("the report serializes");
        let _ = writeln!(std::io::stdout().lock(), "{text}");
        return Ok(EXIT_SUCCESS);
    }
    let text = report::render(&data, args.format);
    let to_stdout = match (&args.output, args.format) {
        (Some(p), _) => p.as_os_str() == "-",
        (None, Format::Text) => true,
        (None, Format::Html) => false,
    };
    if to_stdout {
        let _ = std::io::stdout().lock().write_all(text.as_bytes());
        return Ok(EXIT_SUCCESS);
    }
    let out = args
        .output
        .clone()
        .unwrap_or_else(|| layout.root().join("report.html"));
    crate::store::atomic_write(&out, text.as_bytes())?;
    eprintln!(
        "poolparty: report of run {} written to {} ({} KB)",
        data.run,
        out.display(),
        text.len().div_ceil(1024)
    );
    Ok(EXIT_SUCCESS)
}

/// `run --report FILE`: writes the HTML report of the run that just ended.
///
/// # Errors
/// Unreadable state or an unwritable output.
pub fn after_run(
    m: &Manifest,
    graph: &StageGraph,
    layout: &Layout,
    run: &RunReport,
    out: &Path,
) -> Result<()> {
    let mut chosen = report::load_run(m, layout, Some(&run.run))?;
    chosen.report = run.clone();
    let data = report::collect(m, graph, layout, &chosen)?;
    report::write(&data, out, Format::Html)
}
