//! Grid Engine: `qsub -terse` per array, one `qstat -xml` per poll, `qdel` (the [`Client`]);
//! `#$` scripts with 1-based local indices (`-t 1-N`, `-tc` throttle), `h_rt` as `HH:MM:SS`,
//! `-hold_jid` in bundles ([`SYNTAX`]). Tasks in an error state (`Eqw`) are deleted and
//! resubmitted.
//!
//! `qstat` forgets a task as soon as it ends, so a task killed at its time limit (`h_rt`) would
//! look like any other task that vanished without an outcome. When a whole array is still asked
//! about one poll after it left the queue (its outcomes did not come), `qacct` says how its
//! tasks ended: Grid Engine's "failed 37" (a limit enforced) is reported as timed out.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::{Mutex, OnceLock, PoisonError};

use super::cluster::{ArrayLimit, CallError, Client, LimitQuery, TaskState, call};
use super::syntax::{ScriptSyntax, Syntax};
use crate::error::Result;
use crate::manifest::WallTime;

/// The embedded qsub template.
pub const TEMPLATE: &str = include_str!("../../templates/sge.qsub.hbs");

const TRANSIENT: &[&str] = &[
    "unable to send message to qmaster",
    "unable to contact qmaster",
    "failed receiving gdi request",
    "commlib error",
    "got send error",
];

/// The Grid Engine scheduler's [`Client`] (its syntax is `SYNTAX`).
#[derive(Debug, Default)]
pub struct Sge;

/// How Grid Engine's scripts and commands are written.
pub static SYNTAX: Syntax = Syntax {
    script: ScriptSyntax {
        name: "sge",
        template: TEMPLATE,
        template_file: "sge.qsub.hbs",
        template_about: "the qsub script of one Grid Engine array job",
        first_index: 1,
        // The throttle is its own header line (`-tc`).
        array_spec: |tasks, _throttle| format!("1-{tasks}"),
        format_time: WallTime::hms,
        format_memory: str::to_owned,
    },
    task_index_var: "SGE_TASK_ID",
    job_id_var: "JOB_ID",
    driver_header,
    // `-hold_jid` waits for the end of IDS and ANY_IDS whatever their outcome.
    submit_function: r#"  local ids hold=""
  ids=$(echo $2 $3 | tr ' ' ',')
  if [ -n "$ids" ]; then hold="-hold_jid $ids"; fi
  qsub -terse $hold "$4" ${5:+"$pp_bundle/$5"} | cut -d. -f1"#,
    wait_function: r#"  for id in $1; do while qstat -j "$id" >/dev/null 2>&1; do sleep 10; done; done"#,
    cancel_command: "qdel",
};

/// The `#$` lines of a driver job: name, bash, one log, working folder.
#[must_use]
pub fn driver_header(job_name: &str, log: &str, cwd: &str) -> String {
    format!("#$ -N {job_name}\n#$ -S /bin/bash\n#$ -j y\n#$ -o {log}\n#$ -wd {cwd}")
}

/// Where the cluster keeps its array limit, and the documented default.
pub static LIMIT: LimitQuery = LimitQuery {
    command: ("qconf", &["-sconf"]),
    transient: TRANSIENT,
    parse: parse_max_aj_tasks,
    asked: "the cluster",
    setting: "max_aj_tasks",
    default: (DEFAULT_MAX_AJ_TASKS, "Grid Engine's default `max_aj_tasks`"),
};

impl Client for Sge {
    fn max_array_tasks(&mut self) -> Result<ArrayLimit> {
        // The count bound (`max_aj_tasks`, global configuration), asked once per process:
        // every stage of a run submits to the same cluster, and a stage starting while the
        // qmaster is unreachable then needs no answer from it. A configuration that cannot be
        // read falls back to Grid Engine's default (not remembered, so the next stage asks
        // again); 0 means unlimited.
        static MAX_AJ_TASKS: OnceLock<ArrayLimit> = OnceLock::new();
        Ok(LIMIT
            .ask(&MAX_AJ_TASKS)
            .unwrap_or_else(|e| LIMIT.fallback(&e.message)))
    }
    fn submit(&mut self, script: &Path) -> std::result::Result<String, CallError> {
        let path = script.display().to_string();
        let out = call("qsub", &["-terse", &path], TRANSIENT)?;
        let id = out.trim().split('.').next().unwrap_or("").trim().to_owned();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CallError {
                message: format!("qsub printed no job id: {out:?}"),
                transient: false,
            });
        }
        Ok(id)
    }
    fn query(
        &mut self,
        job_ids: &[String],
    ) -> std::result::Result<HashMap<(String, usize), TaskState>, CallError> {
        if job_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let out = call("qstat", &["-xml"], TRANSIENT)?;
        let mut map = parse_qstat_xml(&out);
        map.retain(|(job, _), _| job_ids.contains(job));
        let listed: HashSet<String> = map.keys().map(|(job, _)| job.clone()).collect();
        let mut absent = ABSENT.lock().unwrap_or_else(PoisonError::into_inner);
        for job in job_ids {
            if listed.contains(job) {
                absent.remove(job);
            } else if !absent.insert(job.clone()) {
                // Gone at the previous query too, yet still asked about: a task of it ended
                // without an outcome (normally outcomes are collected in the poll its array
                // leaves the queue). Ask the accounting why; no answer (records are written
                // every `flush_time`) leaves the task gone, and it is asked again next poll.
                if let Ok(acct) = call("qacct", &["-j", job], TRANSIENT) {
                    for (task, state) in parse_qacct(&acct) {
                        map.insert((job.clone(), task), state);
                    }
                }
            }
        }
        Ok(map)
    }
    fn cancel(&mut self, job_ids: &[String]) -> std::result::Result<(), CallError> {
        let args: Vec<&str> = job_ids.iter().map(String::as_str).collect();
        // qdel exits 1 when a job already left the queue, saying so on stdout (`denied: job
        // "N" does not exist`): that is not a failure here. Anything on stderr is.
        match call("qdel", &args, TRANSIENT) {
            Err(e)
                if !e.transient
                    && (e.message.ends_with("): ") || e.message.contains("does not exist")) =>
            {
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }
    fn cancel_tasks(
        &mut self,
        job_id: &str,
        indices: &[usize],
    ) -> std::result::Result<(), CallError> {
        let list: Vec<String> = indices.iter().map(usize::to_string).collect();
        match call("qdel", &[job_id, "-t", &list.join(",")], TRANSIENT) {
            Err(e) if !e.transient => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

/// Job ids asked about that `qstat` did not list at the previous query. Job ids are unique on a
/// cluster, so one set serves every stage of the process.
static ABSENT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Grid Engine's `failed` code for a limit the execution daemon enforced (`h_rt`, `h_cpu`,
/// `h_vmem`): "qmaster enforced h_rt, h_cpu, or h_vmem limit".
const FAILED_LIMIT: u32 = 37;

/// Parses `qacct -j ID`: how each task of an ended array ended, by task number (records of a
/// task that ran more than once: the last). `failed 0` is done (whatever the exit status: the
/// outcome file has it), [`FAILED_LIMIT`] timed out, anything else ended abnormally.
#[must_use]
pub fn parse_qacct(text: &str) -> HashMap<usize, TaskState> {
    let mut map = HashMap::new();
    let mut task: Option<usize> = None;
    let mut failed: Option<String> = None;
    let mut flush = |task: &mut Option<usize>, failed: &mut Option<String>| {
        if let (Some(t), Some(f)) = (task.take(), failed.take()) {
            let code = f
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse::<u32>().ok());
            let state = match code {
                Some(0) => TaskState::Done,
                Some(FAILED_LIMIT) => TaskState::TimedOut,
                _ => TaskState::Ended(format!("qacct: failed {f}")),
            };
            map.insert(t, state);
        }
    };
    for line in text.lines() {
        if line.starts_with("==") {
            flush(&mut task, &mut failed);
            continue;
        }
        let line = line.trim_end();
        let (key, value) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        match key {
            // `undefined` for a job that is not an array.
            "taskid" => task = value.trim().parse().ok(),
            "failed" => failed = Some(value.trim().to_owned()),
            _ => {}
        }
    }
    flush(&mut task, &mut failed);
    map
}

/// Grid Engine's documented default `max_aj_tasks`.
pub const DEFAULT_MAX_AJ_TASKS: usize = 75_000;

/// What `max_aj_tasks = 0` (no limit) is read as: large, yet times any `bundle` still fits a
/// `usize`.
const UNLIMITED: usize = i32::MAX as usize;

/// `max_aj_tasks` from `qconf -sconf`; `0` (no limit) is read as [`UNLIMITED`].
#[must_use]
pub fn parse_max_aj_tasks(conf: &str) -> Option<usize> {
    conf.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        if it.next() != Some("max_aj_tasks") {
            return None;
        }
        match it.next()?.parse::<usize>().ok()? {
            0 => Some(UNLIMITED),
            n => Some(n),
        }
    })
}

fn tag<'a>(block: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = block.find(&open)? + open.len();
    let end = block[start..].find(&close)? + start;
    Some(block[start..end].trim())
}

/// Parses `qstat -xml`: one `<job_list>` per running task, one per group of pending tasks
/// (`<tasks>5-30:1</tasks>`, also `1,3,5-9:2`).
#[must_use]
pub fn parse_qstat_xml(xml: &str) -> HashMap<(String, usize), TaskState> {
    let mut map = HashMap::new();
    for block in xml.split("<job_list").skip(1) {
        let block = block.split("</job_list>").next().unwrap_or("");
        let (Some(job), Some(state)) = (tag(block, "JB_job_number"), tag(block, "state")) else {
            continue;
        };
        let st = if state.contains('E') {
            TaskState::Error(format!("state {state}"))
        } else {
            TaskState::Active
        };
        let Some(tasks) = tag(block, "tasks") else {
            continue;
        };
        for part in tasks.split(',') {
            let (range, step) = part.split_once(':').unwrap_or((part, "1"));
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            let (Ok(a), Ok(b), Ok(step)) = (
                a.parse::<usize>(),
                b.parse::<usize>(),
                step.parse::<usize>(),
            ) else {
                continue;
            };
            for t in (a..=b).step_by(step.max(1)) {
                map.insert((job.to_owned(), t), st.clone());
            }
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::syntax::testing;

    #[test]
    fn qacct() {
        let text = "==============================================================
qname        all.q
jobname      pp-tl-a-x
jobnumber    97
taskid       2
failed       0
exit_status  0
==============================================================
qname        all.q
jobnumber    97
taskid       1
failed       37  : qmaster enforced h_rt, h_cpu, or h_vmem limit
exit_status  137                  (Killed)
==============================================================
jobnumber    97
taskid       3
failed       100 : assumedly after job
exit_status  137                  (Killed)
==============================================================
jobnumber    98
taskid       undefined
failed       0
";
        let m = parse_qacct(text);
        assert_eq!(m.len(), 3, "{m:?}");
        assert_eq!(m[&2], TaskState::Done);
        assert_eq!(m[&1], TaskState::TimedOut);
        assert_eq!(
            m[&3],
            TaskState::Ended("qacct: failed 100 : assumedly after job".into())
        );
        assert!(parse_qacct("error: job id 5 not found\n").is_empty());
    }

    #[test]
    fn array_specs_and_times() {
        // The throttle is its own directive (`-tc`), not part of the range.
        assert_eq!((SYNTAX.script.array_spec)(10, Some(2)), "1-10");
        assert_eq!((SYNTAX.script.array_spec)(1, None), "1-1");
        let t = |s| WallTime(std::time::Duration::from_secs(s));
        assert_eq!((SYNTAX.script.format_time)(t(90_061)), "25:01:01");
        assert_eq!((SYNTAX.script.format_time)(t(59)), "0:00:59");
    }

    #[test]
    fn driver_header() {
        assert_eq!(
            super::driver_header("pp-w-b-driver", "/s/b/driver.log", "/w"),
            "#$ -N pp-w-b-driver\n#$ -S /bin/bash\n#$ -j y\n#$ -o /s/b/driver.log\n#$ -wd /w"
        );
    }

    /// `pp_submit_sge`: every id waited for with one `-hold_jid` (Grid Engine cannot tell
    /// `afterok` from `afterany`), the task file after the script, and the job id without
    /// the task range.
    #[test]
    fn dependency_lines() {
        let submit = |args| testing::submit(&SYNTAX, "qsub", "42.1-3:1", args);
        let (out, argv) = submit(r#"afterok "1 2" "3" s.sh a/t.jobs"#);
        assert_eq!(out, "42\n");
        assert_eq!(
            argv,
            ["-terse", "-hold_jid", "1,2,3", "s.sh", "/b/a/t.jobs"]
        );
        let (_, argv) = submit(r#"afterany "" "" d.sh"#);
        assert_eq!(argv, ["-terse", "d.sh"]);
        // Waiting asks about each job until `qstat -j` fails (the job is unknown).
        let (_, calls) = testing::run_function(SYNTAX.wait_function, "qstat", ("", 1), r#""7 8""#);
        assert_eq!(calls, [["-j", "7"], ["-j", "8"]]);
    }

    #[test]
    fn max_aj_tasks() {
        let conf = "#global:\nmax_aj_instances             2000\nmax_aj_tasks                 10\nmax_u_jobs 0\n";
        assert_eq!(parse_max_aj_tasks(conf), Some(10));
        assert_eq!(parse_max_aj_tasks("max_aj_tasks 0\n"), Some(UNLIMITED));
        assert_eq!(parse_max_aj_tasks("max_aj_instances 2000\n"), None);
    }

    #[test]
    fn qstat_xml() {
        let xml = r"<job_info><queue_info><job_list state='running'><JB_job_number>7</JB_job_number><state>r</state><tasks>2</tasks></job_list></queue_info>
<job_info><job_list state='pending'><JB_job_number>7</JB_job_number><state>qw</state><tasks>4-8:2</tasks></job_list>
<job_list state='pending'><JB_job_number>9</JB_job_number><state>Eqw</state><tasks>1</tasks></job_list></job_info></job_info>";
        let m = parse_qstat_xml(xml);
        assert_eq!(m[&("7".into(), 2)], TaskState::Active);
        assert_eq!(m[&("7".into(), 6)], TaskState::Active);
        assert!(!m.contains_key(&("7".into(), 5)));
        assert!(matches!(m[&("9".into(), 1)], TaskState::Error(_)));
    }
}
