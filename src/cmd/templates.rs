//! `poolparty templates list|show|eject`: the script templates embedded in the binary.
//!
//! Each backend renders its scripts from one handlebars template (see `templates/`); a stage's
//! `template` key replaces it with a file. `eject` writes the embedded text to such a file, to
//! edit and point `template` at.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::cli::TemplatesCmd;
use crate::error::{self, EXIT_SUCCESS, Error, Result};

/// One embedded template.
struct Embedded {
    /// The name the command takes (a backend's name).
    name: &'static str,
    /// The file name it is ejected as.
    file: &'static str,
    /// What it renders.
    about: &'static str,
    text: &'static str,
}

const TEMPLATES: [Embedded; 5] = [
    Embedded {
        name: "slurm",
        file: "slurm.sbatch.hbs",
        about: "the sbatch script of one Slurm job array (one array task per bundle of jobs)",
        text: crate::backend::slurm::TEMPLATE,
    },
    Embedded {
        name: "sge",
        file: "sge.qsub.hbs",
        about: "the qsub script of one Grid Engine array job",
        text: crate::backend::sge::TEMPLATE,
    },
    Embedded {
        name: "pbs",
        file: "pbs.qsub.hbs",
        about: "the qsub script of one PBS Pro / OpenPBS array job",
        text: crate::backend::pbs::TEMPLATE,
    },
    Embedded {
        name: "lsf",
        file: "lsf.bsub.hbs",
        about: "the bsub script of one LSF job array (submitted as `bsub < SCRIPT`)",
        text: crate::backend::lsf::TEMPLATE,
    },
    Embedded {
        name: "local",
        file: "local.sh.hbs",
        about: "the `run-local.sh` script of a local stage in a bundle (`plan --out`, `run --detach`)",
        text: crate::bundle::LOCAL_TEMPLATE,
    },
];

fn get(name: &str) -> Result<&'static Embedded> {
    TEMPLATES
        .iter()
        .find(|t| t.name == name || t.file == name)
        .ok_or_else(|| Error::Usage {
            message: format!("there is no template `{name}`"),
            help: error::did_you_mean(name, TEMPLATES.iter().map(|t| t.name)).or_else(|| {
                Some(format!(
                    "templates: {}",
                    TEMPLATES
                        .iter()
                        .map(|t| t.name)
                        .collect::<Vec<_>>()
                        .join(", ")
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
            for t in &TEMPLATES {
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
