//! `poolparty templates list|show|eject`: the script templates embedded in the binary.
//!
//! Each backend renders its scripts from one handlebars template (see `templates/`); a stage's
//! `template` key replaces it with a file. `eject` writes the embedded text to such a file, to
//! edit and point `template` at.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cli::TemplatesCmd;
use crate::error::{self, EXIT_SUCCESS, Error, Result};

/// One embedded template: a backend's script.
struct Embedded {
    /// The name the command takes (a backend's name).
    name: &'static str,
    /// The file name it is ejected as.
    file: &'static str,
    /// What it renders.
    about: &'static str,
    text: &'static str,
}

/// Every backend's template: the schedulers', then the local bundle script's.
fn templates() -> Vec<Embedded> {
    crate::backend::SCHEDULERS
        .iter()
        .map(|s| &s.syntax.script)
        .chain([&crate::backend::local::SCRIPT])
        .map(|s| Embedded {
            name: s.name,
            file: s.template_file,
            about: s.template_about,
            text: s.template,
        })
        .collect()
}

fn get(name: &str) -> Result<Embedded> {
    let mut all = templates();
    if let Some(i) = all.iter().position(|t| t.name == name || t.file == name) {
        return Ok(all.swap_remove(i));
    }
    let names = || all.iter().map(|t| t.name);
    Err(Error::Usage {
        message: format!("there is no template `{name}`"),
        help: error::did_you_mean(name, names()).or_else(|| {
            Some(format!(
                "templates: {}",
                names().collect::<Vec<_>>().join(", ")
            ))
        }),
    })
}

/// Runs `poolparty templates ACTION`.
///
/// # Errors
/// An unknown template, an existing file without `--force`, a file that cannot be written.
pub(crate) fn run(action: &TemplatesCmd, out: &mut dyn Write) -> Result<u8> {
    match action {
        TemplatesCmd::List => {
            for t in templates() {
                let _ = writeln!(out, "{:<6} {:<17} {}", t.name, t.file, t.about);
            }
        }
        TemplatesCmd::Show { name } => {
            let _ = out.write_all(get(name)?.text.as_bytes());
        }
        TemplatesCmd::Eject { name, dir, force } => {
            let t = get(name)?;
            let dir = dir.clone().unwrap_or_else(|| PathBuf::from("."));
            let path = dir.join(t.file);
            write_new(&path, t.text, *force)?;
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
