//! `poolparty completions SHELL` and `poolparty man`: generated from the clap definition in
//! `cli.rs` (clap_complete, clap_mangen), so they never disagree with the real flags.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::{EXIT_SUCCESS, Error, Result};

/// Writes the completion script of `shell` to `out`.
pub(crate) fn completions(shell: clap_complete::Shell, out: &mut dyn Write) -> Result<u8> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "poolparty", out);
    Ok(EXIT_SUCCESS)
}

/// Writes the man page (roff) to `out`, or, with `dir`, one page per command into `dir`
/// (`poolparty.1`, `poolparty-run.1`, ...) and their names to `out`.
///
/// # Errors
/// When a page cannot be written.
pub(crate) fn man(dir: Option<&Path>, out: &mut dyn Write) -> Result<u8> {
    let cmd = Cli::command();
    match dir {
        None => clap_mangen::Man::new(cmd)
            .render(out)
            .map_err(|e| Error::store("write", "the man page", e))?,
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| Error::store("create", dir, e))?;
            clap_mangen::generate_to(cmd, dir).map_err(|e| Error::store("write", dir, e))?;
            let mut pages: Vec<String> = std::fs::read_dir(dir)
                .map_err(|e| Error::store("read", dir, e))?
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("poolparty") && n.ends_with(".1"))
                .collect();
            pages.sort();
            for p in pages {
                let _ = writeln!(out, "{}", dir.join(p).display());
            }
        }
    }
    Ok(EXIT_SUCCESS)
}
