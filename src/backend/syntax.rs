//! The pure half of a cluster backend: how a scheduler's scripts and commands are written.
//!
//! A [`ScriptSyntax`] says how an array script is written (template, array indices and spec,
//! time and memory formats); the local backend's bundle script (`run-local.sh`) has one too.
//! A scheduler's [`Syntax`] adds what only a scheduler has: its task-index and job-id
//! variables, its driver job header and the shell lines a bundle's `submit.sh` submits, waits
//! and cancels with. Each is one `static` of plain data and functions in the backend's file.
//! [`ArrayScript`] renders an array script and its task file through a [`ScriptSyntax`]. Only
//! [`ArrayScript::new`] reads a file (a custom template); nothing here runs a command: the
//! runner (through [`super::cluster::ClusterBackend`]) and `plan --out` (`bundle.rs`) render
//! the same way, and the tests below check the output without a cluster.

use std::path::Path;

use serde_json::{Value, json};

use super::{Launch, StageSpec};
use crate::error::{Error, Result};
use crate::manifest::WallTime;
use crate::plan::Command;
use crate::template::{Quoting, Templates};

/// How an array script is written: what a scheduler's array scripts and the local bundle
/// script share. Pure; one `static` per backend.
#[derive(Debug)]
pub struct ScriptSyntax {
    /// The backend's name, as in manifests and `submissions.jsonl` (`slurm`, `local`).
    pub name: &'static str,
    /// The embedded script template.
    pub template: &'static str,
    /// The file name `poolparty templates eject` writes the template as.
    pub template_file: &'static str,
    /// What the template renders, for `poolparty templates list`.
    pub template_about: &'static str,
    /// The first array index (Slurm 0, Grid Engine 1).
    pub first_index: usize,
    /// The `array` value of the script header for a number of tasks and a throttle.
    pub array_spec: fn(usize, Option<u32>) -> String,
    /// The time limit in the scheduler's format.
    pub format_time: fn(WallTime) -> String,
    /// A memory size (`memory`, e.g. `4G`) in the scheduler's format.
    pub format_memory: fn(&str) -> String,
}

/// How one scheduler's scripts and commands are written: its [`ScriptSyntax`] and what only a
/// scheduler has. Pure; one `SYNTAX` static per scheduler, beside its
/// [`super::cluster::Client`] in `backend/<scheduler>.rs`, registered in
/// [`super::SCHEDULERS`].
#[derive(Debug)]
pub struct Syntax {
    /// How its array scripts are written.
    pub script: ScriptSyntax,
    /// The environment variable holding an array task's index (`SLURM_ARRAY_TASK_ID`).
    pub task_index_var: &'static str,
    /// The environment variable holding a batch job's own id inside it (`SLURM_JOB_ID`).
    pub job_id_var: &'static str,
    /// The header lines of a bundle's driver job script from its job name, log and working
    /// folder (shell-quoted already where they need it).
    pub driver_header: fn(&str, &str, &str) -> String,
    /// The body of `submit.sh`'s `pp_submit_<name> KIND "IDS" "ANY_IDS" SCRIPT [TASK_FILE]`:
    /// submits SCRIPT once IDS ended as KIND (`afterok` or `afterany`) and ANY_IDS ended in
    /// any way, telling the script where TASK_FILE (a path relative to `$pp_bundle`) is when
    /// given: as its first argument, or in `POOLPARTY_TASK_FILE` where the scheduler passes
    /// no arguments (PBS, LSF); prints the new job id.
    pub submit_function: &'static str,
    /// The body of `submit.sh`'s `pp_wait_<name> "IDS"`: returns once those jobs left the
    /// queue.
    pub wait_function: &'static str,
    /// The command a person cancels arrays with (`scancel`), named in messages.
    pub cancel_command: &'static str,
}

/// The job wrapper shared by both script templates (rendered, then inserted as `{{{wrapper}}}`).
pub const WRAPPER: &str = include_str!("../../templates/wrapper.sh");

/// An array script and the task file its tasks read their jobs from.
#[derive(Debug)]
pub struct Rendered {
    /// The script (its size does not depend on the jobs).
    pub script: String,
    /// The task file (see [`encode_tasks`]).
    pub task_file: Vec<u8>,
}

/// Length of one line of a task file's header: `OFFSET LENGTH\n`, each number 19 digits.
pub const TASK_HEADER_LINE: usize = 40;

/// The task file of an array: what each of its tasks runs, read by `pp_task` in
/// `templates/wrapper.sh`.
///
/// A header of one [`TASK_HEADER_LINE`]-byte line per task (`OFFSET LENGTH`, zero-padded
/// decimal, the byte range of the task's record in the file), then the records: per job, the
/// NUL-terminated fields `ARGC INDEX ID ATTEMPT JOB_JSON ARGV[0] .. ARGV[ARGC-1]`, where a
/// shell command is the argv `/bin/sh -c COMMAND`. A task seeks to its record (`tail -c`) and
/// reads the fields with `read -d ''`: the text reaches `exec` byte for byte, never parsed by
/// the shell. `tr '\0' '\n' < FILE` shows it.
///
/// # Errors
/// A field holding a NUL byte (no program argument can).
pub fn encode_tasks(tasks: &[Vec<Launch>]) -> std::result::Result<Vec<u8>, String> {
    fn field(out: &mut Vec<u8>, text: &str, id: &str) -> std::result::Result<(), String> {
        if text.contains('\0') {
            return Err(format!(
                "the command of job `{id}` holds a NUL byte, which no program argument can"
            ));
        }
        out.extend_from_slice(text.as_bytes());
        out.push(0);
        Ok(())
    }
    let header = tasks.len() * TASK_HEADER_LINE;
    let mut records: Vec<u8> = Vec::new();
    let mut ranges = Vec::with_capacity(tasks.len());
    for launches in tasks {
        let start = records.len();
        for l in launches {
            let id = l.job.id.as_str();
            let shell;
            let argv: &[String] = match &l.job.command {
                Command::Shell(c) => {
                    shell = ["/bin/sh".to_owned(), "-c".to_owned(), c.clone()];
                    &shell
                }
                Command::Argv(a) => a,
            };
            field(&mut records, &argv.len().to_string(), id)?;
            field(&mut records, &l.job.index.to_string(), id)?;
            field(&mut records, id, id)?;
            field(&mut records, &l.attempt.to_string(), id)?;
            field(&mut records, &l.job.json, id)?;
            for a in argv {
                field(&mut records, a, id)?;
            }
        }
        ranges.push((header + start, records.len() - start));
    }
    let mut out = Vec::with_capacity(header + records.len());
    for (offset, len) in ranges {
        out.extend_from_slice(format!("{offset:019} {len:019}\n").as_bytes());
    }
    out.extend_from_slice(&records);
    Ok(out)
}

/// The name of every array of a stage in a run: `pp-<workflow>-<stage>-<run>`.
#[must_use]
pub fn job_name(spec: &StageSpec) -> String {
    format!("pp-{}-{}-{}", spec.workflow, spec.name, spec.run)
}

/// A stage's compiled array script template, rendered through its backend's
/// [`ScriptSyntax`].
pub struct ArrayScript {
    syntax: &'static ScriptSyntax,
    templates: Templates,
}

impl ArrayScript {
    /// Compiles the stage's template (its `template` setting, or the scheduler's own) and the
    /// job wrapper.
    ///
    /// # Errors
    /// A custom template that cannot be read or compiled.
    pub fn new(syntax: &'static ScriptSyntax, spec: &StageSpec) -> Result<Self> {
        let template_text = match &spec.settings.template {
            Some((path, _)) => std::fs::read_to_string(path).map_err(|e| Error::Backend {
                backend: syntax.name,
                message: format!("cannot read template `{}`: {e}", path.display()),
                detail: None,
            })?,
            None => syntax.template.to_owned(),
        };
        let mut templates = Templates::new();
        for (name, text) in [("script", template_text.as_str()), ("wrapper", WRAPPER)] {
            templates
                .add(name, text, Quoting::Shell)
                .map_err(|f| Error::Backend {
                    backend: syntax.name,
                    message: format!("invalid {name} template: {}", f.message),
                    detail: None,
                })?;
        }
        Ok(Self { syntax, templates })
    }

    /// Renders the array script for `tasks` (each a list of launches) and its task file.
    ///
    /// The script does not hold the jobs: each array task reads its own jobs from the task
    /// file (see [`encode_tasks`]) at `data` (or at the script's first argument, when given),
    /// so the script's size depends only on the stage's settings, never on the number or
    /// size of its jobs.
    ///
    /// # Errors
    /// A render failure of a custom template, or a job argument holding a NUL byte.
    pub fn render(
        &self,
        spec: &StageSpec,
        tasks: &[Vec<Launch>],
        submission: &str,
        data: &str,
    ) -> Result<Rendered> {
        let s = &spec.settings;
        // Both are written into the script as they are: a name that is not a shell identifier
        // cannot be exported, and a line break in a directive would start a command.
        if let Some((k, _)) = spec.env.iter().find(|(k, _)| !is_identifier(k)) {
            return Err(self.render_error(spec, &format!(
                "environment variable `{k}` is not a shell identifier, so the job script cannot export it (use letters, digits and `_`)"
            )));
        }
        if let Some(x) = s.resources.extra.iter().find(|x| x.contains(['\n', '\r'])) {
            return Err(self.render_error(spec, &format!(
                "the `extra` directive {x:?} contains a line break; give each directive as its own list entry"
            )));
        }
        let env: Vec<Value> = spec
            .env
            .iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect();
        let p = |p: &Path| p.display().to_string();
        let base = json!({
            "logs_dir": p(&spec.paths.logs_dir),
            "results_dir": p(&spec.paths.results_dir),
            "staging_dir": p(&spec.paths.staging_dir),
            "env": env,
        });
        let wrapper = self
            .templates
            .render("wrapper", Quoting::Shell, &base)
            .map_err(|f| self.render_error(spec, &f.message))?;
        let first = self.syntax.first_index;
        let task_file = encode_tasks(tasks).map_err(|m| self.render_error(spec, &m))?;
        // Which jobs each task runs, for custom templates (the stock ones do not list them).
        let cases: Vec<Value> = tasks
            .iter()
            .enumerate()
            .map(|(t, launches)| {
                let jobs: Vec<Value> = launches
                    .iter()
                    .map(|l| json!({"index": l.job.index, "id": l.job.id.as_str(), "attempt": l.attempt}))
                    .collect();
                json!({"task": t + first, "jobs": jobs})
            })
            .collect();
        let throttle = s.max_parallel;
        // `time` limits one job; a bundled task runs its jobs one after another, so its limit
        // is that of its largest bundle.
        let per_task =
            u32::try_from(tasks.iter().map(Vec::len).max().unwrap_or(1).max(1)).unwrap_or(u32::MAX);
        let time = s.time.map(|t| {
            (self.syntax.format_time)(crate::manifest::WallTime(t.0.saturating_mul(per_task)))
        });
        let ctx = json!({
            "workflow": spec.workflow,
            "stage": spec.name,
            "submission": submission,
            "job_name": job_name(spec),
            "array": (self.syntax.array_spec)(tasks.len(), throttle),
            "throttle": throttle,
            "tasks": tasks.len(),
            "jobs": tasks.iter().map(Vec::len).sum::<usize>(),
            "cwd": p(&spec.cwd),
            "time": time,
            "cpus": s.resources.cpus,
            "memory": s.resources.memory.as_deref().map(self.syntax.format_memory),
            "partition": s.resources.partition,
            "account": s.resources.account,
            "qos": s.resources.qos,
            "queue": s.resources.queue,
            "project": s.resources.project,
            "pe": s.resources.pe,
            "extra": s.resources.extra,
            "wrapper": wrapper,
            "data": data,
            "cases": cases,
            "first": first,
            "last": first + tasks.len().saturating_sub(1),
            "parallel": throttle.map_or(spec.workers, |t| t as usize),
        });
        let script = self
            .templates
            .render("script", Quoting::Shell, &ctx)
            .map_err(|f| {
                self.render_error(
                    spec,
                    &format!(
                        "{}{}",
                        f.message,
                        f.help.map(|h| format!(" ({h})")).unwrap_or_default()
                    ),
                )
            })?;
        Ok(Rendered { script, task_file })
    }

    fn render_error(&self, spec: &StageSpec, message: &str) -> Error {
        Error::Backend {
            backend: self.syntax.name,
            message: format!(
                "cannot render the array script of stage `{}`: {message}",
                spec.name
            ),
            detail: None,
        }
    }
}

/// A POSIX shell variable name: `[A-Za-z_][A-Za-z0-9_]*`.
/// A memory size as a whole number and a one-letter unit (`4G` → `("4", 'G')`, the letter as
/// written), or `None` for anything else (schedulers pass that on as written).
pub fn size_and_unit(m: &str) -> Option<(&str, char)> {
    let (i, c) = m.char_indices().last()?;
    let n = &m[..i];
    (matches!(c.to_ascii_uppercase(), 'K' | 'M' | 'G' | 'T' | 'P')
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit()))
    .then_some((n, c))
}

fn is_identifier(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// What the tests of every scheduler's syntax share: a stage spec, launches, and a way to run
/// a `submit.sh` function with a stub scheduler command.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;
    use std::sync::Arc;

    use super::Syntax;
    use crate::backend::{Launch, StageSpec};
    use crate::jobs::JobId;
    use crate::plan::{Command, PlannedJob};

    /// The spec of stage `a` of a one-stage workflow on `backend`, with `settings` changed.
    pub(crate) fn spec(
        dir: &Path,
        backend: &str,
        settings: impl FnOnce(&mut crate::manifest::Settings),
    ) -> StageSpec {
        let text = format!(
            "[workflow]\nname = \"w\"\n[stages.a]\nbackend = \"{backend}\"\njobs = [1]\nrun = \"true\"\n"
        );
        let m = crate::manifest::parse(&dir.join("poolparty.toml"), text).unwrap();
        let mut spec = StageSpec {
            stage: 0,
            name: "a".into(),
            workflow: "w".into(),
            scripts_dir: dir.join("scripts"),
            settings: m.stages[0].settings.clone(),
            cwd: dir.to_path_buf(),
            env: Vec::new(),
            paths: crate::store::StagePaths {
                logs_dir: dir.join("logs"),
                results_dir: dir.join("results"),
                staging_dir: dir.join("staging"),
            },
            run: "r".into(),
            workers: 1,
            durations: Arc::default(),
            live: None,
        };
        settings(&mut spec.settings);
        spec
    }

    /// `n` launches of jobs `j0..`, each running `echo INDEX`.
    pub(crate) fn launches(n: usize) -> Vec<Launch> {
        (0..n)
            .map(|i| Launch {
                job: Arc::new(PlannedJob {
                    index: i,
                    id: JobId::new(&format!("j{i}")).unwrap(),
                    json: i.to_string(),
                    command: Command::Argv(vec!["echo".into(), format!("{i}")]),
                    fp: String::new(),
                }),
                attempt: 1,
            })
            .collect()
    }

    /// Runs `body` as a bash function called with `args` (shell words), with `program`
    /// replaced by a stub that prints `answer` and returns `status`; returns what the
    /// function printed and each call of the stub as its argument list. Where the call sets
    /// `POOLPARTY_TASK_FILE` or gives the stub a standard input (bsub reads its script so),
    /// the list ends with `env POOLPARTY_TASK_FILE=VALUE` and `stdin TEXT`.
    pub(crate) fn run_function(
        body: &str,
        program: &str,
        (answer, status): (&str, u8),
        args: &str,
    ) -> (String, Vec<Vec<String>>) {
        // The stub logs to a file: the functions may silence the command's stderr.
        let log = tempfile::NamedTempFile::new().unwrap();
        let extra = r#"if [ -n "${POOLPARTY_TASK_FILE+x}" ]; then printf 'env POOLPARTY_TASK_FILE=%s\0' "$POOLPARTY_TASK_FILE" >> "$PP_LOG"; fi; local pp_in; pp_in=$(cat); if [ -n "$pp_in" ]; then printf 'stdin %s\0' "$pp_in" >> "$PP_LOG"; fi"#;
        let script = format!(
            "pp_bundle=/b\n{program}() {{ printf '%s\\0' \"$@\" >> \"$PP_LOG\"; {extra}; printf '\\n' >> \"$PP_LOG\"; printf '%s\\n' '{answer}'; return {status}; }}\npp_f() {{\n{body}\n}}\npp_f {args}\n"
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &script])
            .env("PP_LOG", log.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{script}: {out:?}");
        let calls = std::fs::read_to_string(log.path())
            .unwrap()
            .lines()
            .map(|l| {
                l.split('\0')
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .collect();
        (String::from_utf8(out.stdout).unwrap(), calls)
    }

    /// `submit.sh`'s submit function of `syntax`, run with a stub `program` that prints
    /// `answer`: what it printed and the stub's one argument list.
    pub(crate) fn submit(
        syntax: &Syntax,
        program: &str,
        answer: &str,
        args: &str,
    ) -> (String, Vec<String>) {
        let (out, mut calls) = run_function(syntax.submit_function, program, (answer, 0), args);
        assert_eq!(calls.len(), 1, "{calls:?}");
        (out, calls.remove(0))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::testing::{launches, spec};
    use super::*;
    use crate::backend::{local, lsf, pbs, sge, slurm};

    fn render(syntax: &'static Syntax, spec: &StageSpec, tasks: &[Vec<Launch>]) -> String {
        render_script(&syntax.script, spec, tasks)
    }

    fn render_script(
        syntax: &'static ScriptSyntax,
        spec: &StageSpec,
        tasks: &[Vec<Launch>],
    ) -> String {
        ArrayScript::new(syntax, spec)
            .unwrap()
            .render(spec, tasks, "r-1", "/data/r-1.jobs")
            .unwrap()
            .script
    }

    /// Three tasks of up to two jobs each, throttled to 3, with resources.
    fn tasks_of_two() -> Vec<Vec<Launch>> {
        launches(5).chunks(2).map(<[Launch]>::to_vec).collect()
    }

    fn with_resources(s: &mut crate::manifest::Settings) {
        s.max_parallel = Some(3);
        s.time = Some(WallTime(std::time::Duration::from_secs(120)));
        s.resources.cpus = Some(4);
        s.resources.memory = Some("4G".into());
        s.resources.partition = Some("short".into());
        s.resources.queue = Some("all.q".into());
        s.resources.extra = vec!["--constraint=avx2".into()];
    }

    fn has_lines(script: &str, lines: &[&str]) {
        for l in lines {
            assert!(
                script.lines().any(|x| x == *l),
                "no line {l:?} in\n{script}"
            );
        }
    }

    /// The Slurm header: array of local indices with the throttle, the time limit of the
    /// largest bundle (2 jobs of 2 min) in `D-HH:MM:SS`, resources, extra lines verbatim.
    #[test]
    fn slurm_script_header() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), "slurm", with_resources);
        let script = render(&slurm::SYNTAX, &spec, &tasks_of_two());
        has_lines(
            &script,
            &[
                "#SBATCH --job-name=pp-w-a-r",
                "#SBATCH --array=0-2%3",
                "#SBATCH --time=0-00:04:00",
                "#SBATCH --cpus-per-task=4",
                "#SBATCH --mem=4G",
                "#SBATCH --partition=short",
                "#SBATCH --constraint=avx2",
                "pp_data=/data/r-1.jobs",
            ],
        );
        assert!(script.contains("${SLURM_ARRAY_TASK_ID:?not an array task} - 0"));
        assert!(
            !script.contains("all.q"),
            "a Grid Engine queue in a Slurm script"
        );
    }

    /// The Grid Engine header: 1-based array, `-tc` throttle, `h_rt` in `HH:MM:SS`.
    #[test]
    fn sge_script_header() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), "sge", with_resources);
        let script = render(&sge::SYNTAX, &spec, &tasks_of_two());
        has_lines(
            &script,
            &[
                "#$ -N pp-w-a-r",
                "#$ -t 1-3",
                "#$ -tc 3",
                "#$ -l h_rt=0:04:00",
                "#$ -l h_vmem=4G",
                "#$ -pe smp 4",
                "#$ -q all.q",
                "#$ --constraint=avx2",
            ],
        );
        assert!(script.contains("${SGE_TASK_ID:?not an array task} - 1"));
    }

    /// The PBS header (`qsub.1B`): 1-based `-J` range with its `%K` throttle, `walltime` in
    /// `H:MM:SS`, `ncpus`, memory in PBS units, the queue, extra lines verbatim; a `cd` to the
    /// stage's folder, since PBS starts jobs in the home folder. One task is the range `1-2:2`.
    #[test]
    fn pbs_script_header() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), "pbs", with_resources);
        let script = render(&pbs::SYNTAX, &spec, &tasks_of_two());
        has_lines(
            &script,
            &[
                "#PBS -N pp-w-a-r",
                "#PBS -J 1-3%3",
                "#PBS -l walltime=0:04:00",
                "#PBS -l ncpus=4",
                "#PBS -l mem=4gb",
                "#PBS -q all.q",
                "#PBS --constraint=avx2",
                "pp_data=/data/r-1.jobs",
            ],
        );
        assert!(script.contains("\ncd "), "{script}");
        assert!(script.contains("${PBS_ARRAY_INDEX:?not an array task} - 1"));
        assert!(
            !script.contains("short"),
            "a Slurm partition in a PBS script"
        );
        let one = render(&pbs::SYNTAX, &spec, &[launches(1)]);
        has_lines(&one, &["#PBS -J 1-2:2%3"]);
    }

    /// The LSF header (`bsub`): the array and its throttle in the job name
    /// (`-J "name[1-N]%K"`), the run limit in `H:MM` (whole minutes), slots on one host,
    /// memory in LSF units, the queue, extra lines verbatim.
    #[test]
    fn lsf_script_header() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), "lsf", with_resources);
        let script = render(&lsf::SYNTAX, &spec, &tasks_of_two());
        has_lines(
            &script,
            &[
                "#BSUB -J \"pp-w-a-r[1-3]%3\"",
                "#BSUB -W 0:04",
                "#BSUB -n 4",
                "#BSUB -R \"span[hosts=1]\"",
                "#BSUB -M 4GB",
                "#BSUB -q all.q",
                "#BSUB --constraint=avx2",
                "pp_data=/data/r-1.jobs",
            ],
        );
        assert!(script.contains("${LSB_JOBINDEX:?not an array task} - 1"));
        assert!(
            !script.contains("short"),
            "a Slurm partition in an LSF script"
        );
        let one = render(&lsf::SYNTAX, &spec, &[launches(1)]);
        has_lines(&one, &["#BSUB -J \"pp-w-a-r[1-1]%3\""]);
    }

    /// The local bundle script runs every task itself, `max_parallel` at a time.
    #[test]
    fn local_script_runs_its_tasks_with_xargs() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), "local", with_resources);
        let script = render_script(&local::SCRIPT, &spec, &tasks_of_two());
        has_lines(&script, &["  seq 0 2 | xargs -P 3 -n 1 bash \"$0\""]);
    }

    /// Every value a template sees is shell-quoted: a working folder with a space.
    #[test]
    fn paths_are_quoted_in_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = spec(dir.path(), "slurm", |_| {});
        spec.cwd = "/data/my work".into();
        let script = render(&slurm::SYNTAX, &spec, &[launches(1)]);
        has_lines(
            &script,
            &["#SBATCH --chdir='/data/my work'", "#SBATCH --array=0-0"],
        );
    }

    /// What cannot be written into a script safely is refused with the stage's name.
    #[test]
    fn unsafe_env_names_and_directives_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut bad_env = spec(dir.path(), "slurm", |_| {});
        bad_env.env = vec![("A;touch x".into(), "1".into())];
        let bad_extra = spec(dir.path(), "slurm", |s| {
            s.resources.extra = vec!["--a\n--b".into()];
        });
        for (spec, what) in [
            (bad_env, "not a shell identifier"),
            (bad_extra, "line break"),
        ] {
            let e = ArrayScript::new(&slurm::SYNTAX.script, &spec)
                .unwrap()
                .render(&spec, &[launches(1)], "r-1", "x.jobs")
                .unwrap_err()
                .to_string();
            assert!(e.contains("stage `a`") && e.contains(what), "{e}");
        }
    }

    /// A custom template replaces the scheduler's; one that does not compile is an error
    /// naming the backend.
    #[test]
    fn custom_templates_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t.hbs"),
            "#!/bin/sh\n# {{array}} {{job_name}}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("bad.hbs"), "{{#if}}").unwrap();
        let with = |file: &str| {
            let path = dir.path().join(file);
            spec(dir.path(), "sge", |s| {
                s.template = Some((path, miette::SourceSpan::from(0..0)));
            })
        };
        let good = with("t.hbs");
        assert_eq!(
            render(&sge::SYNTAX, &good, &[launches(2)]),
            "#!/bin/sh\n# 1-1 pp-w-a-r\n"
        );
        let e = ArrayScript::new(&sge::SYNTAX.script, &with("bad.hbs"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("sge backend failed: invalid script template"),
            "{e}"
        );
    }

    /// An array script's size does not depend on the number or the size of its jobs: they
    /// are in the task file, which holds every argument byte for byte.
    #[test]
    fn script_size_does_not_grow_with_the_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let spec = spec(dir.path(), "slurm", |_| {});
        let script = ArrayScript::new(&slurm::SYNTAX.script, &spec).unwrap();
        let big = "'\"$(x)`y`\\\n é".repeat(10_000);
        let many: Vec<Vec<Launch>> = launches(1000)
            .into_iter()
            .map(|mut l| {
                Arc::make_mut(&mut l.job).command = Command::Shell(format!("printf %s {big}"));
                vec![l]
            })
            .collect();
        let one = vec![launches(1)];
        let small = script.render(&spec, &one, "s", "/data/x.jobs").unwrap();
        let large = script.render(&spec, &many, "s", "/data/x.jobs").unwrap();
        assert!(small.script.len() < 8 * 1024, "{}", small.script);
        // Only the digits of the task and job counts differ.
        assert!(
            large.script.len() <= small.script.len() + 32,
            "{} -> {}",
            small.script.len(),
            large.script.len()
        );
        assert!(large.task_file.len() > 1000 * big.len());
        let text = &large.task_file[1000 * TASK_HEADER_LINE..];
        let fields: Vec<&[u8]> = text.split(|&b| b == 0).collect();
        assert_eq!(fields[0], b"3");
        assert_eq!(
            fields[5..8],
            [
                &b"/bin/sh"[..],
                b"-c",
                format!("printf %s {big}").as_bytes()
            ]
        );
    }

    #[test]
    fn only_shell_identifiers_are_exported_by_the_wrapper() {
        for ok in ["A", "_x", "POOLPARTY_NEEDS_MAP_DIR", "a1"] {
            assert!(is_identifier(ok), "{ok}");
        }
        for bad in ["", "1a", "A B", "A;touch x", "A-B", "é"] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }
}
