//! `poolparty status`: what the store says of every job, after recovering what a dead runner
//! left; it never asks a scheduler.

use std::io::Write;
use std::path::Path;

use crate::error::Result;
use crate::{query, runner, store, summary};

use super::Ctx;

/// `poolparty status [MANIFEST]`: returns the recorded verdict as the exit code.
///
/// # Errors
/// A bad manifest or unreadable state.
pub(crate) fn run(manifest: Option<&Path>, ctx: &Ctx<'_>, stdout: &mut impl Write) -> Result<u8> {
    let Ctx {
        g,
        color,
        verbosity,
        ..
    } = *ctx;
    let (m, _, layout) = super::load(manifest, g)?;
    // A runner that died left jobs without an outcome: say what became of them.
    if layout.live_file().exists() {
        if let Ok(_lock) = store::lock(&layout, "status") {
            if let Some(r) = runner::recover(&layout)? {
                eprintln!("poolparty: {}", r.message());
            }
        }
    }
    let report = query::status(&m, &layout)?;
    if g.json {
        let _ = writeln!(
            stdout,
            "{}",
            serde_json::to_string_pretty(&report).expect("serializes")
        );
    } else {
        // A live runner on this host: say so, since jobs without an outcome are
        // then still to come rather than not run.
        if let Some(h) = store::read_holder(&layout).filter(|h| {
            // (Not this process: it may have held the lock to recover a dead run.)
            h.pid != std::process::id() && h.is_live_here()
        }) {
            let _ = writeln!(
                stdout,
                "run {} is in progress (pid {}, started {})",
                h.run,
                h.pid,
                store::format_time(h.started)
            );
        }
        let _ = stdout.write_all(summary::format_report(&report, color, verbosity).as_bytes());
    }
    Ok(report.verdict.exit_code())
}
