//! `poolparty init [DIR]`: a starter workflow that validates and runs as written.
//!
//! Writes a commented `poolparty.toml` (with the `#:schema` line editors use), the JSON
//! Schema it points at, a job generator and a job script. Nothing is overwritten without
//! `--force`, and nothing is written when any of the files exists.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{EXIT_SUCCESS, Error, Result};

use super::write_new;

const MANIFEST: &str = r#"#:schema ./poolparty.schema.json
# A poolparty workflow. Try: poolparty validate, poolparty plan, poolparty run,
# poolparty status, poolparty results --stage square, poolparty logs n3.
# The schema line above lets editors with TOML schema support (Taplo, "Even Better TOML")
# check and complete this file; `poolparty schema` prints the schema again.

[workflow]
name = "{{name}}"           # [A-Za-z0-9_-]+; state and logs go to .poolparty/{{name}}/

[defaults]                    # inherited by every stage; any stage may override these
backend = "local"             # {{clusters}} for a cluster (or `--backend slurm`)
# max_parallel = 4            # jobs at once (default: the CPUs here; none on a cluster)
# retries = 1                 # reruns of a job that failed
# time = "10m"                # per-job time limit
# env = { OMP_NUM_THREADS = "1" }

# Stage `square`: one job per line that the generator prints.
[stages.square]
generate = "sh jobs.sh"       # JSON Lines (or one JSON array) on stdout; runs in this folder
run = "sh job.sh {{job.n}}"   # each job's command; every {{value}} is shell-quoted
# A job's result is what it writes to $POOLPARTY_RESULT (`result = "stdout"` takes its stdout).

# Stage `total`: starts once every `square` job succeeded and reads their results, in job
# order, one per line.
[stages.total]
needs = ["square"]
jobs = [{ id = "total" }]
run = '''awk '{ s += $1 } END { print s }' {{needs.square.results}} > "$POOLPARTY_RESULT"'''
"#;

const GENERATOR: &str = r#"#!/bin/sh
# The job generator of stage `square`: prints one JSON value per line; each is one job.
# An object's `id` names the job (its logs, its result, what a rerun reuses); without an
# `id`, a job is named by a hash of its value.
for n in 1 2 3 4 5; do
  printf '{"id": "n%s", "n": %s}\n' "$n" "$n"
done
"#;

const JOB: &str = r#"#!/bin/sh
# One job of stage `square`: $1 is the job's `n` (see `run` in poolparty.toml); the whole job
# is in $POOLPARTY_JOB as JSON. A non-zero exit marks the job failed.
set -eu
n=$1
echo "squaring $n"                    # the job's log: `poolparty logs n$n`
echo $((n * n)) > "$POOLPARTY_RESULT"
"#;

/// The workflow name for a folder: its name with anything but `[A-Za-z0-9_-]` as `-`.
fn workflow_name(dir: &Path) -> String {
    let name: String = std::path::absolute(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches(['-', '_']);
    if name.is_empty() {
        "starter".to_owned()
    } else {
        name.to_owned()
    }
}

/// The cluster backends, for a comment: `"slurm", "sge", "pbs" or "lsf"`.
fn clusters() -> String {
    let names: Vec<String> = crate::backend::SCHEDULERS
        .iter()
        .map(|s| format!("\"{}\"", s.kind))
        .collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => names.concat(),
    }
}

/// Runs `poolparty init`.
///
/// # Errors
/// A file that exists (without `force`), or a file that cannot be written.
pub(crate) fn run(dir: Option<&Path>, force: bool, out: &mut dyn Write) -> Result<u8> {
    let dir = dir.map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let name = workflow_name(&dir);
    let schema = crate::manifest::json_schema();
    let manifest = MANIFEST
        .replace("{{name}}", &name)
        .replace("{{clusters}}", &clusters());
    let files: [(&str, &str); 4] = [
        ("poolparty.toml", &manifest),
        ("poolparty.schema.json", &schema),
        ("jobs.sh", GENERATOR),
        ("job.sh", JOB),
    ];
    let existing: Vec<String> = files
        .iter()
        .map(|(f, _)| dir.join(f))
        .filter(|p| p.exists())
        .map(|p| format!("`{}`", p.display()))
        .collect();
    if !force && !existing.is_empty() {
        return Err(Error::Usage {
            message: format!("not overwriting {}", existing.join(", ")),
            help: Some("pass `--force` to overwrite, or choose another folder".to_owned()),
        });
    }
    for (file, text) in files {
        write_new(&dir.join(file), text, true)?;
        let _ = writeln!(out, "wrote {}", dir.join(file).display());
    }
    // Quoted, so the line can be pasted into a shell whatever the folder is called.
    let shown = dir.display().to_string();
    let _ = writeln!(
        out,
        "next: poolparty validate {0} && poolparty run {0}",
        crate::quoting::shell_quote(&shown)
    );
    Ok(EXIT_SUCCESS)
}

#[cfg(test)]
mod tests {
    /// The starter manifest names every cluster backend, from the registry.
    #[test]
    fn the_starter_names_every_cluster() {
        assert_eq!(super::clusters(), r#""slurm", "sge", "pbs" or "lsf""#);
    }
}
