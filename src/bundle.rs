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
//! --stage NAME --wait` submitted with a dependency on what the stage needs.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::cluster::{
    CallError, ClusterBackend, Scheduler, Submission, SubmittedJob, TaskState,
};
use crate::backend::{Launch, StageSpec, sge::Sge, slurm::Slurm};
use crate::error::{Error, Result};
use crate::graph::StageGraph;
use crate::manifest::{BackendKind, JobSource, Manifest, OnFailure, WallTime};
use crate::plan::PlannedJob;
use crate::runner::Prepared;
use crate::store::{self, Layout};
use crate::template::shell_quote;

/// The run label of bundled submissions: fixed, so two bundles of the same state diff cleanly.
pub const BUNDLE_RUN: &str = "bundle";

/// Choices for a bundle.
#[derive(Clone, Debug)]
pub struct BundleOptions {
    /// Where to write.
    pub out: PathBuf,
    /// `--backend` override.
    pub backend: Option<BackendKind>,
    /// `--max-parallel` override.
    pub max_parallel: Option<u32>,
    /// The poolparty executable drivers run.
    pub exe: PathBuf,
}

/// What a bundle holds.
#[derive(Debug, Default)]
pub struct BundleSummary {
    /// Per stage: name, backend, jobs bundled, arrays (or "driver"/"local").
    pub stages: Vec<(String, BackendKind, usize, String)>,
}

/// Renders the local script: the same wrapper and task table as the cluster scripts.
struct LocalScript;

const LOCAL_TEMPLATE: &str = include_str!("../templates/local.sh.hbs");

impl Scheduler for LocalScript {
    fn name(&self) -> &'static str {
        "local"
    }
    fn default_template(&self) -> &'static str {
        LOCAL_TEMPLATE
    }
    fn first_index(&self) -> usize {
        0
    }
    fn max_array_tasks(&mut self) -> Result<usize> {
        Ok(usize::MAX)
    }
    fn array_spec(&self, tasks: usize, _: Option<u32>) -> String {
        format!("0-{}", tasks.saturating_sub(1))
    }
    fn format_time(&self, t: WallTime) -> String {
        t.hms()
    }
    fn submit(&mut self, _: &Path) -> std::result::Result<String, CallError> {
        Err(CallError {
            message: "local scripts are not submitted".into(),
            transient: false,
        })
    }
    fn query(
        &mut self,
        _: &[String],
    ) -> std::result::Result<HashMap<(String, usize), TaskState>, CallError> {
        Ok(HashMap::new())
    }
    fn cancel(&mut self, _: &[String]) -> std::result::Result<(), CallError> {
        Ok(())
    }
    fn cancel_task(&mut self, _: &str, _: usize) -> std::result::Result<(), CallError> {
        Ok(())
    }
}

fn scheduler(kind: BackendKind) -> Box<dyn Scheduler> {
    match kind {
        BackendKind::Local => Box::new(LocalScript),
        BackendKind::Slurm => Box::new(Slurm),
        BackendKind::Sge => Box::new(Sge),
    }
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::store("write", path, e)
}

fn q(p: &Path) -> String {
    shell_quote(&p.display().to_string()).into_owned()
}

/// The jobs of a planned stage that `run` would launch now (not reusable successes), with
/// the attempt number each would get.
fn launches(layout: &Layout, stage: &str, jobs: &[Arc<PlannedJob>]) -> Result<Vec<Launch>> {
    let records = store::read_ledger(&layout.ledger(stage))?;
    let subs: Vec<Submission> = store::read_lines(&layout.submissions(stage))?;
    let mut last: HashMap<String, u32> = HashMap::new();
    for r in &records {
        let a = last.entry(r.id.clone()).or_default();
        *a = (*a).max(r.attempt);
    }
    for j in subs.iter().flat_map(|s| s.tasks.iter().flatten()) {
        let a = last.entry(j.id.clone()).or_default();
        *a = (*a).max(j.attempt);
    }
    let latest = store::latest(records);
    Ok(jobs
        .iter()
        .filter(|j| {
            !latest
                .get(j.id.as_str())
                .is_some_and(|r| r.outcome.is_success() && r.fp == j.fp)
        })
        .map(|j| Launch {
            job: Arc::clone(j),
            attempt: last.get(j.id.as_str()).copied().unwrap_or(0) + 1,
        })
        .collect())
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
    let mut summary = BundleSummary::default();
    let mut limits: HashMap<BackendKind, usize> = HashMap::new();
    let mut sh = String::new();
    let _ = writeln!(
        sh,
        "#!/bin/bash\n# poolparty bundle of workflow `{}` ({}).\n# Submits every stage in dependency order with scheduler dependencies. Outcomes land in\n#   {}\n# where `poolparty status` and `poolparty results` read them; a later `poolparty run` adopts\n# what this submitted instead of running it again.\nset -euo pipefail\ncd \"$(dirname \"$0\")\"\n",
        m.name,
        m.path.display(),
        layout.root().display()
    );
    sh.push_str(HELPERS);
    // Shell variable holding the scheduler ids of each stage, and its scheduler.
    let mut ids_var: HashMap<usize, (String, BackendKind)> = HashMap::new();
    for &i in graph.order() {
        if !selected[i] {
            continue;
        }
        let stage = &m.stages[i];
        let name = stage.name.as_str();
        let kind = opts.backend.unwrap_or(stage.settings.backend);
        let var = format!("ids_{}", name.replace('-', "_"));
        let dir = opts.out.join(name);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let state_dir = layout.stage_dir(name);
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
        let dep_kind = if stage.on_failure == OnFailure::Continue {
            "afterany"
        } else {
            "afterok"
        };
        let _ = writeln!(
            sh,
            "\n# stage `{name}` ({kind})\n{var}=\"\"\npp_prepare {} {}",
            q(&state_dir),
            q(&dir.join("jobs.jsonl"))
        );
        sh.push_str(&waits);
        let element_wise = matches!(stage.source, JobSource::ForEach(_));
        let static_plan = prepared[i].as_ref().filter(|_| !element_wise);
        match static_plan {
            Some((jobs, plan)) => {
                store::write_jobs(&dir.join("jobs.jsonl"), jobs)?;
                let launches = launches(layout, name, &plan.jobs)?;
                let workers = opts
                    .max_parallel
                    .or(plan.settings.max_parallel)
                    .map_or_else(
                        || std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
                        |n| n as usize,
                    );
                let mut settings_plan_spec =
                    StageSpec::new(plan, layout, &m.name, BUNDLE_RUN, workers);
                if let Some(mp) = opts.max_parallel {
                    settings_plan_spec.settings.max_parallel = Some(mp);
                }
                let throttled = settings_plan_spec.settings.max_parallel.is_some();
                let bundle = settings_plan_spec.settings.bundle.max(1) as usize;
                let mut sched = scheduler(kind);
                let max_tasks = match limits.get(&kind) {
                    Some(&n) => n,
                    None => {
                        let n = sched.max_array_tasks()?;
                        limits.insert(kind, n);
                        n
                    }
                };
                let (tx, _rx) = std::sync::mpsc::channel();
                let backend = ClusterBackend::new(sched, settings_plan_spec, tx, dir.clone())?;
                if launches.is_empty() {
                    let _ = writeln!(sh, "echo \"stage {name}: every job is done already\"");
                    summary
                        .stages
                        .push((name.to_owned(), kind, 0, "nothing to run".into()));
                    ids_var.insert(i, (var, kind));
                    continue;
                }
                let per_array = if kind == BackendKind::Local {
                    launches.len()
                } else {
                    max_tasks.saturating_mul(bundle)
                };
                let mut arrays = 0;
                for (k, chunk) in launches.chunks(per_array.max(1)).enumerate() {
                    let tasks: Vec<Vec<Launch>> =
                        chunk.chunks(bundle).map(<[Launch]>::to_vec).collect();
                    let label = if kind == BackendKind::Local {
                        "run-local".to_owned()
                    } else {
                        format!("array-{}", k + 1)
                    };
                    let script = backend.render(&tasks, &format!("{BUNDLE_RUN}-{}", k + 1))?;
                    let path = dir.join(format!("{label}.sh"));
                    std::fs::write(&path, script).map_err(io(&path))?;
                    let record: Vec<Vec<SubmittedJob>> = tasks
                        .iter()
                        .map(|t| {
                            t.iter()
                                .map(|l| SubmittedJob {
                                    index: l.job.index,
                                    id: l.job.id.to_string(),
                                    attempt: l.attempt,
                                })
                                .collect()
                        })
                        .collect();
                    let tasks_path = dir.join(format!("{label}.tasks.json"));
                    std::fs::write(
                        &tasks_path,
                        serde_json::to_string(&record).expect("serializes"),
                    )
                    .map_err(io(&tasks_path))?;
                    arrays += 1;
                    match kind {
                        BackendKind::Local => {
                            let _ = writeln!(sh, "bash {} || true", q(&path));
                        }
                        _ => {
                            // With a throttle, arrays of a stage run one after another.
                            let after_prev = if throttled && k > 0 { "$prev" } else { "" };
                            let _ = writeln!(
                                sh,
                                "prev=$(pp_submit_{} {dep_kind} \"{}\" \"{after_prev}\" {})\npp_record {} \"$prev\" {} {} {}\n{var}=\"${{{var}}}${{{var}:+ }}$prev\"",
                                kind.as_str(),
                                dep_ids.join(" "),
                                q(&path),
                                q(&state_dir),
                                q(&path),
                                kind.as_str(),
                                q(&tasks_path),
                            );
                        }
                    }
                }
                summary.stages.push((
                    name.to_owned(),
                    kind,
                    launches.len(),
                    format!("{arrays} script(s)"),
                ));
            }
            None => {
                let mut cmd = format!(
                    "{} run {} --stage {} --wait -q",
                    q(&opts.exe),
                    q(&m.path),
                    shell_quote(name)
                );
                if let Some(b) = opts.backend {
                    let _ = write!(cmd, " --backend {b}");
                }
                if kind == BackendKind::Local {
                    let _ = writeln!(sh, "{cmd} || true");
                } else {
                    let log = state_dir.join("driver.log");
                    let path = dir.join("driver.sh");
                    let header = match kind {
                        BackendKind::Slurm => format!(
                            "#SBATCH --job-name=pp-{}-{name}-driver\n#SBATCH --output={}\n#SBATCH --chdir={}",
                            m.name,
                            q(&log),
                            q(&m.dir)
                        ),
                        _ => format!(
                            "#$ -N pp-{}-{name}-driver\n#$ -S /bin/bash\n#$ -j y\n#$ -o {}\n#$ -wd {}",
                            m.name,
                            q(&log),
                            q(&m.dir)
                        ),
                    };
                    let script = format!(
                        "#!/bin/bash\n# poolparty driver of stage `{name}`: its jobs are known only once what it needs is done.\n{header}\nexec {cmd}\n"
                    );
                    std::fs::write(&path, script).map_err(io(&path))?;
                    let _ = writeln!(
                        sh,
                        "prev=$(pp_submit_{} afterany \"{}\" \"\" {})\n{var}=\"$prev\"",
                        kind.as_str(),
                        dep_ids.join(" "),
                        q(&path)
                    );
                }
                summary
                    .stages
                    .push((name.to_owned(), kind, 0, "driver".into()));
            }
        }
        ids_var.insert(i, (var, kind));
    }
    let _ = writeln!(
        sh,
        "\necho \"submitted; follow with: poolparty status {}\"",
        q(&m.path)
    );
    let path = opts.out.join("submit.sh");
    std::fs::write(&path, sh).map_err(io(&path))?;
    Ok(summary)
}

/// Shell functions of `submit.sh`.
const HELPERS: &str = r#"
# pp_prepare STATE_DIR JOBS: create the stage's state folders and its job list.
pp_prepare() {
  mkdir -p "$1/logs" "$1/results" "$1/staging"
  if [ -f "$2" ]; then cp "$2" "$1/jobs.jsonl"; fi
}
# pp_submit_slurm KIND "IDS" "ANY_IDS" SCRIPT: submits after IDS ended as KIND (afterok or
# afterany) and ANY_IDS ended in any way; prints the job id.
pp_submit_slurm() {
  local dep=""
  if [ -n "$2" ]; then dep="$1:$(echo $2 | tr ' ' ':')"; fi
  if [ -n "$3" ]; then dep="${dep:+$dep,}afterany:$(echo $3 | tr ' ' ':')"; fi
  sbatch --parsable ${dep:+--dependency=$dep} "$4" | cut -d';' -f1
}
# pp_submit_sge KIND "IDS" "ANY_IDS" SCRIPT: Grid Engine's -hold_jid waits for the end of
# IDS and ANY_IDS whatever their outcome; prints the job id.
pp_submit_sge() {
  local ids hold=""
  ids=$(echo $2 $3 | tr ' ' ',')
  if [ -n "$ids" ]; then hold="-hold_jid $ids"; fi
  qsub -terse $hold "$4" | cut -d. -f1
}
# pp_record STATE_DIR ID SCRIPT SCHEDULER TASKS: appends to submissions.jsonl.
pp_record() {
  printf '{"job_id":"%s","script":"%s","run":"bundle","scheduler":"%s","tasks":%s}\n' \
    "$2" "$3" "$4" "$(cat "$5")" >> "$1/submissions.jsonl"
}
# pp_wait_slurm "IDS" / pp_wait_sge "IDS": wait until those jobs left the queue.
pp_wait_slurm() {
  while [ -n "$(squeue -h -j "$(echo $1 | tr ' ' ',')" -t PD,R,CG,S,CF 2>/dev/null)" ]; do sleep 10; done
}
pp_wait_sge() {
  for id in $1; do while qstat -j "$id" >/dev/null 2>&1; do sleep 10; done; done
}
"#;
