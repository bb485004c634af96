//! Script bundles: `plan --out DIR` writes, for every selected stage, the exact scripts `run`
//! would submit, and a `submit.sh` that submits the whole DAG with scheduler dependencies;
//! `run --detach` writes a bundle into the state folder and runs its `submit.sh`.
//!
//! Outcomes of bundled jobs land in the stages' staging folders and the submitted arrays are
//! appended to `submissions.jsonl`, so `poolparty status`/`results` read them, and a later
//! `poolparty run` adopts them instead of running anything twice.
//!
//! Stages whose jobs cannot be known when the bundle is written (a generator that needs
//! another stage, an element-wise stage) are run by a small driver job: `poolparty run
//! --stage NAME --wait` submitted with a dependency on what the stage needs. Driver jobs are
//! recorded in the stage's `drivers.jsonl` (and marked done there when they end), so
//! `poolparty cancel` can cancel them too.
//!
//! `submit.sh` refers to the bundle's own files by paths relative to its folder, so a bundle
//! can be moved, and two bundles of the same state differ only where their jobs differ.
//! Local stages run in `submit.sh` itself, in the stage's working folder; their jobs are
//! recorded in the stage's `bundled.jsonl` with their fingerprints, and [`collect_local`]
//! (called by `poolparty run`) moves their outcomes into the ledger.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::backend::cluster::ArrayLimit;
use crate::backend::syntax::ArrayScript;
use crate::backend::{self, Launch, StageSpec, packing};
use crate::error::{Error, Result};
use crate::graph::StageGraph;
use crate::jobs::Jobs;
use crate::manifest::{BackendKind, JobSource, Manifest, OnFailure};
use crate::plan::StagePlan;
use crate::resume::{self, Collect, Policy, ResultSpec, StageHistory};
use crate::runner::Prepared;
use crate::store::{self, Layout, SubmittedJob};
use crate::template::shell_quote;

/// The run label of bundled submissions: fixed, so two bundles of the same state diff cleanly.
pub const BUNDLE_RUN: &str = "bundle";

/// Choices for a bundle.
#[derive(Clone, Debug)]
pub struct BundleOptions {
    /// Where to write.
    pub out: PathBuf,
    /// The command line's overrides (`--backend`, `--max-parallel`), already in the stages'
    /// settings, as flags for the driver jobs' `poolparty run` (which loads the manifest
    /// again): empty, or starting with a space.
    pub driver_flags: String,
    /// The poolparty executable drivers run.
    pub exe: PathBuf,
    /// How recorded outcomes are treated (`run --detach --force` or `--retry-failed`): which
    /// jobs the scripts launch, and what the drivers are told.
    pub policy: Policy,
}

/// What a bundle holds.
#[derive(Debug, Default)]
pub struct BundleSummary {
    /// Per stage: name, backend, jobs bundled, arrays (or "driver"/"local").
    pub stages: Vec<(String, BackendKind, usize, String)>,
    /// The array limits the scripts were cut by, and where each came from.
    pub limits: Vec<(BackendKind, ArrayLimit)>,
}

/// Moves the outcomes of jobs that local bundle scripts ran (outcome files in a stage's
/// staging folder, listed in its `bundled.jsonl`) into the stage's ledger, with the
/// fingerprint each job had when bundled, so that `run` reuses them like jobs it ran itself.
/// Returns how many were recorded.
///
/// # Errors
/// When the state cannot be read or written.
pub fn collect_local(m: &Manifest, layout: &Layout) -> Result<usize> {
    let mut n = 0;
    for stage in &m.stages {
        let name = stage.name.as_str();
        if !layout.bundled(name).exists() {
            continue;
        }
        let result = ResultSpec {
            mode: stage.settings.result,
            max_bytes: stage.settings.result_max_bytes,
        };
        n += resume::collect_staged(layout, name, result, BUNDLE_RUN, Collect::Bundled)?;
    }
    Ok(n)
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::store("write", path, e)
}

fn q(p: &Path) -> String {
    shell_quote(&p.display().to_string()).into_owned()
}

/// Writes a bundle.
///
/// # Errors
/// I/O errors, template errors, or a scheduler that cannot tell its array limit.
pub fn write(
    m: &Manifest,
    graph: &StageGraph,
    layout: &Layout,
    prepared: &Prepared,
    selected: &[bool],
    opts: &BundleOptions,
) -> Result<BundleSummary> {
    std::fs::create_dir_all(&opts.out).map_err(io(&opts.out))?;
    let mut b = Bundle {
        m,
        layout,
        opts,
        sh: String::new(),
        summary: BundleSummary::default(),
        asked: HashMap::new(),
    };
    let _ = writeln!(
        b.sh,
        "#!/bin/bash\n# poolparty bundle of workflow `{}` ({}).\n# Submits every stage in dependency order with scheduler dependencies. Outcomes land in\n#   {}\n# where `poolparty status` and `poolparty results` read them; a later `poolparty run` adopts\n# what this submitted instead of running it again.\nset -euo pipefail\ncd \"$(dirname \"$0\")\"\npp_bundle=$(pwd)\n",
        m.name,
        m.path.display(),
        layout.root().display()
    );
    b.sh.push_str(HELPERS);
    b.sh.push_str(&scheduler_functions(
        graph
            .order()
            .iter()
            .filter(|&&i| selected[i])
            .map(|&i| m.stages[i].settings.backend),
    ));
    // Shell variable holding the scheduler ids of each stage, and its scheduler.
    let mut ids_var: HashMap<usize, (String, BackendKind)> = HashMap::new();
    for &i in graph.order() {
        if !selected[i] {
            continue;
        }
        let stage = &m.stages[i];
        let name = stage.name.as_str();
        let kind = stage.settings.backend;
        let s = StageFiles {
            name,
            kind,
            var: format!("ids_{}", name.replace('-', "_")),
            dir: opts.out.join(name),
            // The bundle's own files, relative to its folder (submit.sh runs there).
            rel: Path::new(name),
            state_dir: layout.stage_dir(name),
        };
        std::fs::create_dir_all(&s.dir).map_err(io(&s.dir))?;
        // What this stage waits for: scheduler ids of needed cluster stages of the same kind;
        // other needs ran (local) or are awaited (other schedulers) before it.
        let needs = graph.needs(i);
        let mut waits = String::new();
        let mut dep_ids: Vec<String> = Vec::new();
        for n in &needs {
            if let Some((v, k)) = ids_var.get(n) {
                if *k == kind && kind != BackendKind::Local {
                    dep_ids.push(format!("${{{v}}}"));
                } else if *k != BackendKind::Local {
                    let _ = writeln!(waits, "pp_wait_{} \"${{{v}}}\"", k.as_str());
                }
            }
        }
        let _ = writeln!(
            b.sh,
            "\n# stage `{name}` ({kind})\n{}=\"\"\npp_prepare {} {}",
            s.var,
            q(&s.state_dir),
            q(&s.rel.join("jobs.jsonl"))
        );
        b.sh.push_str(&waits);
        let element_wise = matches!(stage.source, JobSource::ForEach(_));
        // A stage that needs another runs in a driver job, as an attached run would run it: it
        // reads its needs' results and outcomes files, which only a runner writes, and the
        // runner applies `on_failure`.
        let static_plan = prepared[i]
            .as_ref()
            .filter(|_| !element_wise && needs.is_empty());
        match static_plan {
            Some((jobs, plan)) => b.static_stage(&s, jobs, plan)?,
            None => {
                // With `on_failure = "stop"`, a need with a job that did not succeed keeps
                // the stage from running.
                let guarded: &[usize] = if stage.on_failure == OnFailure::Stop && !element_wise {
                    &needs
                } else {
                    &[]
                };
                b.driver_stage(&s, guarded, &dep_ids)?;
            }
        }
        ids_var.insert(i, (s.var, kind));
    }
    let _ = writeln!(
        b.sh,
        "\necho \"submitted; follow with: poolparty status {}\"",
        q(&m.path)
    );
    let path = opts.out.join("submit.sh");
    std::fs::write(&path, b.sh).map_err(io(&path))?;
    Ok(b.summary)
}

/// A bundle being written: its `submit.sh` so far and its summary.
struct Bundle<'a> {
    m: &'a Manifest,
    layout: &'a Layout,
    opts: &'a BundleOptions,
    /// `submit.sh`.
    sh: String,
    summary: BundleSummary,
    /// The array limit of each scheduler, asked once per bundle.
    asked: HashMap<BackendKind, ArrayLimit>,
}

/// Where one stage's part of a bundle goes.
struct StageFiles<'a> {
    name: &'a str,
    kind: BackendKind,
    /// The `submit.sh` variable that holds the stage's scheduler job ids.
    var: String,
    /// Its folder in the bundle.
    dir: PathBuf,
    /// The same, relative to the bundle's folder.
    rel: &'a Path,
    /// Its folder in the state.
    state_dir: PathBuf,
}

impl Bundle<'_> {
    /// A stage whose jobs are known now (it needs no other stage, so its arrays wait for
    /// nothing): the scripts of the jobs that would be launched (arrays, or one local
    /// script), cut and packed as `run` would.
    fn static_stage(&mut self, s: &StageFiles, jobs: &Jobs, plan: &StagePlan) -> Result<()> {
        let (m, layout, name, kind) = (self.m, self.layout, s.name, s.kind);
        store::write_jobs(&s.dir.join("jobs.jsonl"), jobs)?;
        let launches =
            StageHistory::load(layout, name)?.launches(&plan.all_jobs(jobs)?, self.opts.policy);
        let workers = crate::backend::local_workers(plan.settings.max_parallel, jobs.len());
        let spec = StageSpec::new(plan, layout, &m.name, BUNDLE_RUN, workers);
        let throttled = spec.settings.max_parallel.is_some();
        let bundle = spec.settings.bundle.max(1) as usize;
        // `bundle = "auto"`: packed by the durations earlier runs recorded (a bundle
        // cannot measure a first wave; without any, one job per task).
        let auto = spec
            .settings
            .auto_bundle
            .filter(|_| kind != BackendKind::Local);
        let min_tasks = packing::min_tasks(spec.settings.max_parallel);
        let script = ArrayScript::new(backend::syntax(kind), &spec)?;
        if launches.is_empty() {
            let _ = writeln!(self.sh, "echo \"stage {name}: every job is done already\"");
            self.summary
                .stages
                .push((name.to_owned(), kind, 0, "nothing to run".into()));
            return Ok(());
        }
        // A local script runs every task itself; arrays are bounded by their scheduler.
        let max_tasks = match backend::scheduler(kind) {
            None => usize::MAX,
            Some(sched) => self.array_limit(kind, sched, spec.settings.max_array_size),
        };
        let all_tasks: Vec<Vec<Launch>> = match auto {
            Some(target) => {
                let known = packing::recorded_durations(&store::read_ledger(&layout.ledger(name))?);
                match packing::estimate(launches.iter().map(|l| l.job.id.as_str()), &known) {
                    Some(d) => {
                        let (bins, _) = packing::pack(&d, 0, target.as_secs_f64(), min_tasks);
                        bins.into_iter()
                            .map(|b| b.into_iter().map(|i| launches[i].clone()).collect())
                            .collect()
                    }
                    None => launches.iter().map(|l| vec![l.clone()]).collect(),
                }
            }
            None => launches.chunks(bundle).map(<[Launch]>::to_vec).collect(),
        };
        let mut arrays = 0;
        for (k, tasks) in all_tasks.chunks(max_tasks).enumerate() {
            let label = if kind == BackendKind::Local {
                "run-local".to_owned()
            } else {
                format!("array-{}", k + 1)
            };
            // The task file is named relative to the script: `submit.sh` passes its
            // place to cluster scripts, the local script finds it next to itself.
            let data_name = format!("{label}.jobs");
            let rendered =
                script.render(&spec, tasks, &format!("{BUNDLE_RUN}-{}", k + 1), &data_name)?;
            let path = s.dir.join(format!("{label}.sh"));
            std::fs::write(&path, rendered.script).map_err(io(&path))?;
            let data_path = s.dir.join(&data_name);
            std::fs::write(&data_path, rendered.task_file).map_err(io(&data_path))?;
            let tasks_path = s.dir.join(format!("{label}.tasks.json"));
            std::fs::write(&tasks_path, tasks_json(tasks)).map_err(io(&tasks_path))?;
            let rel_path = s.rel.join(format!("{label}.sh"));
            let rel_tasks = s.rel.join(format!("{label}.tasks.json"));
            arrays += 1;
            if kind == BackendKind::Local {
                // Jobs run in the stage's working folder, as with `poolparty run`.
                let _ = writeln!(
                    self.sh,
                    "pp_record_local {} {} {}\n(cd {} && bash \"$pp_bundle\"/{}) || true",
                    q(&s.state_dir),
                    q(&rel_path),
                    q(&rel_tasks),
                    q(&spec.cwd),
                    q(&rel_path),
                );
            } else {
                // With a throttle, arrays of a stage run one after another; they wait for
                // nothing else (no IDS, so the kind `afterok` is never used).
                let after_prev = if throttled && k > 0 { "$prev" } else { "" };
                let var = &s.var;
                let _ = writeln!(
                    self.sh,
                    "prev=$(pp_submit_{} afterok \"\" \"{after_prev}\" {} {})\npp_record {} \"$prev\" {} {} {}\n{var}=\"${{{var}}}${{{var}:+ }}$prev\"",
                    kind.as_str(),
                    q(&rel_path),
                    q(&s.rel.join(&data_name)),
                    q(&s.state_dir),
                    q(&rel_path),
                    kind.as_str(),
                    q(&rel_tasks),
                );
            }
        }
        self.summary.stages.push((
            name.to_owned(),
            kind,
            launches.len(),
            format!("{arrays} script(s)"),
        ));
        Ok(())
    }

    /// The most tasks in one array of scheduler `kind`: the stage's `max_array_size`, or the
    /// scheduler's limit (asked once per bundle); `submit.sh` says which, once per limit.
    fn array_limit(
        &mut self,
        kind: BackendKind,
        sched: &backend::Scheduler,
        max_array_size: Option<u32>,
    ) -> usize {
        let limit = match max_array_size {
            Some(n) => ArrayLimit {
                tasks: n as usize,
                source: "the `max_array_size` setting".into(),
            },
            None => self
                .asked
                .entry(kind)
                .or_insert_with(|| array_limit(sched))
                .clone(),
        };
        if !self
            .summary
            .limits
            .iter()
            .any(|(k, l)| *k == kind && *l == limit)
        {
            let _ = writeln!(
                self.sh,
                "# {kind} arrays of at most {} tasks: {}",
                limit.tasks, limit.source
            );
            self.summary.limits.push((kind, limit.clone()));
        }
        limit.tasks.max(1)
    }

    /// A stage whose jobs are known only once what it needs is done: a driver job (`poolparty
    /// run --stage NAME --wait`) submitted after its needs, or run in `submit.sh` for a local
    /// stage. It does not run when a need in `guarded` had a job that did not succeed.
    fn driver_stage(
        &mut self,
        s: &StageFiles,
        guarded: &[usize],
        dep_ids: &[String],
    ) -> Result<()> {
        let (m, opts, name, kind) = (self.m, self.opts, s.name, s.kind);
        let mut cmd = format!(
            "{} run {} --stage {} --wait --recorded-needs -q{}",
            q(&opts.exe),
            q(&m.path),
            shell_quote(name),
            opts.driver_flags
        );
        if opts.policy.force {
            cmd.push_str(" --force");
        }
        if opts.policy.retry_failed {
            cmd.push_str(" --retry-failed");
        }
        // Checked here (from the needs' recorded and staged outcomes) because the driver's
        // `run --stage` would otherwise run the failed jobs of the needs once more first.
        let guards: Vec<String> = guarded
            .iter()
            .map(|&n| {
                format!(
                    "{} results {} --stage {} --format jsonl --allow-missing -q 2>/dev/null | grep -qv '\"outcome\":\"succeeded\"'",
                    q(&opts.exe),
                    q(&m.path),
                    shell_quote(m.stages[n].name.as_str())
                )
            })
            .collect();
        if !guards.is_empty() {
            cmd = format!(
                "if {}; then\n  echo \"poolparty: a stage that \\`{name}\\` needs had jobs that did not succeed: \\`{name}\\` does not run\" >&2\n  false\nelse\n  {cmd}\nfi",
                guards.join(" || ")
            );
        }
        if let Some(scheduler) = backend::scheduler(kind) {
            let log = s.state_dir.join("driver.log");
            let path = s.dir.join("driver.sh");
            let syntax = scheduler.syntax;
            let header = (syntax.driver_header)(
                &format!("pp-{}-{name}-driver", m.name),
                &q(&log),
                &q(&m.dir),
            );
            // Not `exec`: the driver marks itself done in drivers.jsonl when the run
            // ends (a cancelled driver is killed before that, with its runner, which
            // gets the scheduler's SIGTERM too).
            let drivers = self.layout.drivers(name);
            let script = format!(
                "#!/bin/bash\n# poolparty driver of stage `{name}`: its jobs are known only once what it needs is done.\n{header}\n{cmd}\nrc=$?\nprintf '{{\"job_id\":\"%s\",\"done\":true}}\\n' \"${{{}:-}}\" >> {}\nexit \"$rc\"\n",
                syntax.job_id_var,
                q(&drivers)
            );
            std::fs::write(&path, script).map_err(io(&path))?;
            // `afterany`: the driver runs however its needs ended and applies
            // `on_failure` itself; `afterok` would leave it pending forever (Slurm,
            // LSF) or get it deleted (PBS) when a need failed, unexplained.
            let _ = writeln!(
                self.sh,
                "prev=$(pp_submit_{} afterany \"{}\" \"\" {})\npp_record_driver {} \"$prev\" {} {}\n{}=\"$prev\"",
                kind.as_str(),
                dep_ids.join(" "),
                q(&s.rel.join("driver.sh")),
                q(&s.state_dir),
                q(&s.rel.join("driver.sh")),
                kind.as_str(),
                s.var,
            );
        } else {
            let _ = writeln!(self.sh, "{cmd} || true");
        }
        self.summary
            .stages
            .push((name.to_owned(), kind, 0, "driver".into()));
        Ok(())
    }
}

/// A script's `.tasks.json`: one task per line, so bundles diff line by line. Local scripts
/// (`bundled.jsonl`) and arrays (`submissions.jsonl`) record their jobs alike; local
/// scripts record each job's fingerprint there: nothing else will.
fn tasks_json(tasks: &[Vec<Launch>]) -> String {
    let lines: Vec<String> = tasks
        .iter()
        .map(|t| {
            let r: Vec<SubmittedJob> = t.iter().map(SubmittedJob::from).collect();
            serde_json::to_string(&r).expect("serializes")
        })
        .collect();
    format!("[\n{}\n]\n", lines.join(",\n"))
}

/// The array limit of a scheduler for a bundle: the cluster's when its client can tell
/// (`scontrol`/`qconf` may be missing where bundles are written), otherwise the scheduler's
/// documented default; either way it says which.
fn array_limit(s: &backend::Scheduler) -> ArrayLimit {
    (s.client)().max_array_tasks().unwrap_or_else(|e| {
        s.limit.fallback(&match e {
            Error::Backend {
                message,
                detail: Some(d),
                ..
            } => format!("{message}: {d}"),
            e => e.to_string(),
        })
    })
}

/// `submit.sh`'s `pp_submit_<scheduler>` and `pp_wait_<scheduler>` of each scheduler the
/// bundle's stages use (in [`backend::SCHEDULERS`] order), from its syntax.
fn scheduler_functions(kinds: impl Iterator<Item = BackendKind>) -> String {
    let kinds: HashSet<BackendKind> = kinds.collect();
    let mut out = String::new();
    for s in backend::SCHEDULERS
        .iter()
        .filter(|s| kinds.contains(&s.kind))
    {
        let name = s.syntax.script.name;
        let _ = write!(
            out,
            "# pp_submit_{name} KIND \"IDS\" \"ANY_IDS\" SCRIPT [TASK_FILE]: submits after IDS ended as KIND\n\
             # (afterok or afterany) and ANY_IDS ended in any way, telling an array script where its\n\
             # task file is (drivers have none); prints the job id.\n\
             pp_submit_{name}() {{\n{}\n}}\n\
             # pp_wait_{name} \"IDS\": waits until those jobs left the queue.\n\
             pp_wait_{name}() {{\n{}\n}}\n",
            s.syntax.submit_function, s.syntax.wait_function,
        );
    }
    out
}

/// Shell functions of `submit.sh`.
const HELPERS: &str = r#"
# pp_prepare STATE_DIR JOBS: create the stage's state folders and its job list.
pp_prepare() {
  mkdir -p "$1/logs" "$1/results" "$1/staging"
  if [ -f "$2" ]; then cp "$2" "$1/jobs.jsonl"; fi
}
# pp_record STATE_DIR ID SCRIPT SCHEDULER TASKS: appends to submissions.jsonl (SCRIPT and
# TASKS relative to this folder).
pp_record() {
  printf '{"job_id":"%s","script":"%s","run":"bundle","scheduler":"%s","tasks":%s}\n' \
    "$2" "$pp_bundle/$3" "$4" "$(tr -d '\n' < "$5")" >> "$1/submissions.jsonl"
}
# pp_record_local STATE_DIR SCRIPT TASKS: appends to bundled.jsonl, where `poolparty run`
# finds the local jobs whose outcomes it collects.
pp_record_local() {
  printf '{"script":"%s","tasks":%s}\n' "$pp_bundle/$2" "$(tr -d '\n' < "$3")" >> "$1/bundled.jsonl"
}
# pp_record_driver STATE_DIR ID SCRIPT SCHEDULER: appends to drivers.jsonl, where
# `poolparty cancel` finds the driver jobs.
pp_record_driver() {
  printf '{"job_id":"%s","script":"%s","scheduler":"%s"}\n' \
    "$2" "$pp_bundle/$3" "$4" >> "$1/drivers.jsonl"
}
"#;
