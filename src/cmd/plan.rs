//! `poolparty plan`: shows what a run would do (each stage's jobs, rendered, and how many
//! would run or be reused), or with `--out` writes a bundle of scheduler scripts.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{self, EXIT_SUCCESS, Error, Result};
use crate::graph::StageGraph;
use crate::jobs::Jobs;
use crate::manifest::{self, JobSource, Manifest};
use crate::resume::{Counts, Decision, Policy, StageHistory};
use crate::runner::Prepared;
use crate::store::{self, Layout};
use crate::summary::Verbosity;
use crate::{plan, report};

use super::Ctx;

/// `poolparty plan [MANIFEST] [--stage S]… [--out DIR]`.
///
/// # Errors
/// A bad manifest, template, generator, unreadable state or an unwritable bundle.
pub(crate) fn run(
    manifest: Option<&Path>,
    stages: &[String],
    out: Option<&PathBuf>,
    ctx: &Ctx<'_>,
    stdout: &mut impl Write,
) -> Result<u8> {
    let Ctx {
        g,
        verbosity,
        signals,
        ..
    } = *ctx;
    let (m, graph, layout) = super::load(manifest, g)?;
    manifest::check_template_backends(&m, out.is_some(), &crate::backend::task_index_vars())?;
    let selected = super::select(&m, &graph, stages)?;
    if let Some(out) = out {
        let prepared = super::prepare(&m, &graph, &layout, &selected, signals)?;
        let out = std::path::absolute(out).map_err(|e| Error::store("resolve", out, e))?;
        let s = super::write_bundle(
            &m,
            &graph,
            &layout,
            &prepared,
            &selected,
            g,
            Policy::default(),
            &out,
        )?;
        let _ = stdout.write_all(s.as_bytes());
        return Ok(EXIT_SUCCESS);
    }
    // What is recorded of each stage is read while its jobs are expanded, on another thread:
    // the two take about as long for a stage of a million jobs.
    let (prepared, mut histories) = std::thread::scope(|scope| {
        let histories = scope.spawn(|| read_histories(&m, &layout, &selected));
        let prepared = super::prepare(&m, &graph, &layout, &selected, signals);
        let histories = histories
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (prepared, histories)
    });
    let prepared = prepared?;
    // Written as it is made (a stage of a million jobs lists a million commands), after
    // everything that can fail has been read.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout);
    let h = &mut histories;
    if g.json {
        plan_json(&m, &graph, &layout, &prepared, h, &selected, &mut out)?;
    } else {
        plan_text(
            &m, &graph, &layout, &prepared, h, &selected, verbosity, &mut out,
        )?;
    }
    let _ = out.flush();
    Ok(EXIT_SUCCESS)
}

/// Each selected stage's recorded state, read ahead (`None` where its jobs are only known at
/// run time); a stage whose state cannot be read keeps its error for when it is shown.
type Histories = Vec<Option<Result<StageHistory>>>;

fn read_histories(m: &Manifest, layout: &Layout, selected: &[bool]) -> Histories {
    m.stages
        .iter()
        .zip(selected)
        .map(|(s, &on)| {
            let static_jobs = !matches!(s.source, JobSource::ForEach(_));
            (on && static_jobs).then(|| StageHistory::load(layout, s.name.as_str()))
        })
        .collect()
}

fn resume_counts(
    layout: &Layout,
    name: &str,
    jobs: &Jobs,
    p: &plan::StagePlan,
    read: Option<Result<StageHistory>>,
) -> Result<Counts> {
    let history = match read {
        Some(h) => h?,
        None => StageHistory::load(layout, name)?,
    };
    Ok(history.counts(jobs, &p.fps))
}

/// How `bundle = "auto"` would pack a cluster stage's jobs that would run: by the durations
/// earlier runs recorded, or after a measured first wave when none is recorded. `None` when
/// the stage does not bundle automatically or nothing would run.
fn auto_bundling(
    layout: &Layout,
    name: &str,
    jobs: &Jobs,
    p: &plan::StagePlan,
    kind: manifest::BackendKind,
) -> Result<Option<serde_json::Value>> {
    use crate::backend::packing;
    let Some(target) = p.settings.auto_bundle else {
        return Ok(None);
    };
    if kind == manifest::BackendKind::Local {
        return Ok(None);
    }
    let known = packing::recorded_durations(&store::read_ledger(&layout.ledger(name))?);
    let history = StageHistory::load(layout, name)?;
    let ids: Vec<&str> = jobs
        .iter()
        .zip(&p.fps)
        .filter(|(j, fp)| {
            matches!(
                history.decide(j.id, fp.as_str(), Policy::default()),
                Decision::Launch { .. }
            )
        })
        .map(|(j, _)| j.id)
        .collect();
    if ids.is_empty() {
        return Ok(None);
    }
    let task_time = target.as_secs_f64();
    let v = match packing::estimate(ids.iter().copied(), &known) {
        Some(d) => {
            let recorded = ids.iter().filter(|id| known.contains_key(**id)).count();
            let min_tasks = packing::min_tasks(p.settings.max_parallel);
            let (_, packing) = packing::pack(&d, recorded, task_time, min_tasks);
            serde_json::json!({"mode": "auto", "task_time": task_time, "packing": packing})
        }
        None => serde_json::json!({
            "mode": "auto",
            "task_time": task_time,
            "first_wave": packing::FIRST_WAVE.min(ids.len()),
            "jobs": ids.len(),
        }),
    };
    Ok(Some(v))
}

/// The `plan` line of an automatic bundling (see [`auto_bundling`]).
fn auto_bundling_line(v: &serde_json::Value) -> String {
    let time = manifest::WallTime(std::time::Duration::from_secs_f64(
        v["task_time"].as_f64().unwrap_or(0.0),
    ))
    .hms();
    let n = |v: &serde_json::Value| usize::try_from(v.as_u64().unwrap_or(0)).unwrap_or(0);
    if let Some(p) = v.get("packing") {
        format!(
            "  bundle auto (task_time {time}): {} in {} of at most {}, the longest about {:.1} s (durations recorded for {} of them)",
            error::count(n(&p["jobs"]), "job"),
            error::count(n(&p["tasks"]), "task"),
            error::count(n(&p["max_jobs_per_task"]), "job"),
            p["longest_task"].as_f64().unwrap_or(0.0),
            n(&p["recorded"]),
        )
    } else {
        let jobs = n(&v["jobs"]);
        let wave = n(&v["first_wave"]);
        format!(
            "  bundle auto (task_time {time}): no durations recorded yet: a first wave of {} runs one per task, then the other {} are packed by its measured durations",
            error::count(wave, "job"),
            jobs - wave
        )
    }
}

#[expect(clippy::too_many_arguments, reason = "the parts of one `plan` listing")]
fn plan_text(
    m: &Manifest,
    graph: &StageGraph,
    layout: &Layout,
    prepared: &Prepared,
    histories: &mut Histories,
    selected: &[bool],
    verbosity: Verbosity,
    stdout: &mut impl Write,
) -> Result<()> {
    use std::fmt::Write as _;
    // Each stage's lines before its jobs, all made first: reading the state can fail.
    let mut heads = Vec::new();
    for &i in graph.order() {
        if !selected[i] {
            continue;
        }
        let mut out = String::new();
        let s = &m.stages[i];
        let backend = s.settings.backend;
        let needs: Vec<&str> = s.needs.iter().map(|n| n.stage.as_str()).collect();
        let _ = write!(out, "stage `{}` ({backend}", s.name);
        if !needs.is_empty() {
            let _ = write!(out, ", after {}", needs.join(", "));
        }
        out.push_str(")\n");
        match &prepared[i] {
            Some((jobs, p)) => {
                let read = histories[i].take();
                let Counts {
                    new,
                    changed,
                    failed,
                    done,
                } = resume_counts(layout, s.name.as_str(), jobs, p, read)?;
                let _ = writeln!(
                    out,
                    "  {}: {} would run ({new} new, {changed} changed, {failed} failed before), {done} done and reused",
                    error::count(jobs.len(), "job"),
                    new + changed + failed
                );
                if let Some(v) = auto_bundling(layout, s.name.as_str(), jobs, p, backend)? {
                    let _ = writeln!(out, "{}", auto_bundling_line(&v));
                }
            }
            None => {
                let why = match &s.source {
                    JobSource::ForEach(up) => format!(
                        "one job per job of `{up}`, each started when its upstream job succeeds"
                    ),
                    _ => "jobs are generated at run time, once its needs are done".to_owned(),
                };
                let _ = writeln!(out, "  {why}");
            }
        }
        heads.push((i, out));
    }
    let limit = if verbosity == Verbosity::Verbose {
        usize::MAX
    } else {
        10
    };
    for (i, head) in heads {
        let _ = stdout.write_all(head.as_bytes());
        let Some((jobs, p)) = &prepared[i] else {
            continue;
        };
        let mut line = String::new();
        for job in jobs.iter().take(limit) {
            let j = p.job(job)?;
            line.clear();
            let _ = writeln!(
                line,
                "  [{}] {}: {}",
                j.index,
                j.id,
                report::text::clean(&j.command.display().to_string())
            );
            let _ = stdout.write_all(line.as_bytes());
        }
        if jobs.len() > limit {
            let _ = writeln!(
                stdout,
                "  … {} more (use -v to list all)",
                jobs.len() - limit
            );
        }
    }
    Ok(())
}

/// The jobs of a stage in `plan --json`, each planned again as it is written.
struct JobsJson<'a> {
    jobs: &'a Jobs,
    plan: &'a plan::StagePlan,
    /// The error that stopped the writing, if one did.
    failed: &'a std::cell::RefCell<Option<Error>>,
}

impl serde::Serialize for JobsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeSeq};
        let mut seq = s.serialize_seq(Some(self.jobs.len()))?;
        for job in self.jobs {
            match self.plan.job(job) {
                Ok(j) => seq.serialize_element(&serde_json::json!({
                    "index": j.index,
                    "id": j.id.as_str(),
                    "command": j.command.display(),
                    "fingerprint": j.fp,
                }))?,
                Err(e) => {
                    let message = e.to_string();
                    *self.failed.borrow_mut() = Some(e);
                    return Err(S::Error::custom(message));
                }
            }
        }
        seq.end()
    }
}

/// A stage in `plan --json`: its fields in order, `jobs` written by [`JobsJson`].
struct StageJson<'a> {
    fields: serde_json::Map<String, serde_json::Value>,
    jobs: Option<JobsJson<'a>>,
}

impl serde::Serialize for StageJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.fields.len()))?;
        for (k, v) in &self.fields {
            match (k.as_str(), &self.jobs) {
                ("jobs", Some(jobs)) => map.serialize_entry(k, jobs)?,
                _ => map.serialize_entry(k, v)?,
            }
        }
        map.end()
    }
}

fn plan_json(
    m: &Manifest,
    graph: &StageGraph,
    layout: &Layout,
    prepared: &Prepared,
    histories: &mut Histories,
    selected: &[bool],
    stdout: &mut impl Write,
) -> Result<()> {
    let stopped = std::cell::RefCell::new(None);
    let mut stages = Vec::new();
    for &i in graph.order() {
        if !selected[i] {
            continue;
        }
        let s = &m.stages[i];
        let mut v = serde_json::json!({
            "name": s.name.as_str(),
            "backend": s.settings.backend,
            "needs": s.needs.iter().map(|n| n.stage.as_str()).collect::<Vec<_>>(),
        });
        let mut jobs_json = None;
        if let Some((jobs, p)) = &prepared[i] {
            let read = histories[i].take();
            let Counts {
                new,
                changed,
                failed,
                done,
            } = resume_counts(layout, s.name.as_str(), jobs, p, read)?;
            v["counts"] =
                serde_json::json!({"new": new, "changed": changed, "failed": failed, "done": done});
            let kind = s.settings.backend;
            if let Some(b) = auto_bundling(layout, s.name.as_str(), jobs, p, kind)? {
                v["bundling"] = b;
            }
            // Holds the place of the jobs, which are written as they are planned.
            v["jobs"] = serde_json::Value::Null;
            jobs_json = Some(JobsJson {
                jobs,
                plan: p,
                failed: &stopped,
            });
        }
        let serde_json::Value::Object(fields) = v else {
            unreachable!("a stage is a JSON object")
        };
        stages.push(StageJson {
            fields,
            jobs: jobs_json,
        });
    }
    // The keys sorted, as `serde_json::Map` (and so a `json!` document) keeps them.
    let written = serde_json::to_writer_pretty(&mut *stdout, &DocJson(&m.name, &stages));
    if let Some(e) = stopped.into_inner() {
        return Err(e);
    }
    if written.is_ok() {
        let _ = stdout.write_all(b"\n");
    }
    Ok(())
}

/// The `plan --json` document: its stages and the workflow's name.
struct DocJson<'a>(&'a str, &'a [StageJson<'a>]);

impl serde::Serialize for DocJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("stages", self.1)?;
        map.serialize_entry("workflow", self.0)?;
        map.end()
    }
}
