//! `poolparty templates list|show|eject`: the script templates embedded in the binary.
//!
//! Each backend renders its scripts from one handlebars template (see `templates/`); a stage's
//! `template` key replaces it with a file. `eject` writes the embedded text to such a file, to
//! edit and point `template` at.

use std::io::Write;
use std::path::PathBuf;

use crate::backend;
use crate::cli::TemplatesCmd;
use crate::error::{EXIT_SUCCESS, Result};

use super::write_new;

/// Runs `poolparty templates ACTION`.
///
/// # Errors
/// An existing file without `--force`, a file that cannot be written.
pub(crate) fn run(action: &TemplatesCmd, out: &mut dyn Write) -> Result<u8> {
    match action {
        TemplatesCmd::List => {
            // The schedulers', then the local bundle script's.
            for t in backend::SCHEDULERS
                .iter()
                .map(|s| &s.syntax.script)
                .chain([&backend::local::SCRIPT])
            {
                let _ = writeln!(
                    out,
                    "{:<6} {:<17} {}",
                    t.name, t.template_file, t.template_about
                );
            }
        }
        TemplatesCmd::Show { backend } => {
            let _ = out.write_all(backend::syntax(*backend).template.as_bytes());
        }
        TemplatesCmd::Eject {
            backend,
            dir,
            force,
        } => {
            let t = backend::syntax(*backend);
            let dir = dir.clone().unwrap_or_else(|| PathBuf::from("."));
            let path = dir.join(t.template_file);
            write_new(&path, t.template, *force)?;
            let _ = writeln!(out, "wrote {}", path.display());
            eprintln!(
                "poolparty: use it with `template = \"{}\"` (relative to the manifest) in `[defaults]` or a stage; it must keep `{{{{{{wrapper}}}}}}` and the `case` over the tasks",
                path.display()
            );
        }
    }
    Ok(EXIT_SUCCESS)
}
