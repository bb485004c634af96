//! `poolparty templates list|show|eject`: the script templates embedded in the binary.
//!
//! Each backend renders its scripts from one handlebars template (see `templates/`); a stage's
//! `template` key replaces it with a file. `eject` writes the embedded text to such a file, to
//! edit and point `template` at.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::backend;
use crate::cli::TemplatesCmd;
use crate::error::{EXIT_SUCCESS, Error, Result};

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

/// Writes a file that must not exist yet (unless `force`), creating its folder.
///
/// # Errors
/// The file exists and `force` is off, or it cannot be written.
pub(crate) fn write_new(path: &Path, text: &str, force: bool) -> Result<()> {
    if !force && path.exists() {
        return Err(Error::Usage {
            message: format!("`{}` already exists", path.display()),
            help: Some("pass `--force` to overwrite it".to_owned()),
        });
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::store("create", parent, e))?;
    }
    std::fs::write(path, text).map_err(|e| Error::store("write", path, e))
}
