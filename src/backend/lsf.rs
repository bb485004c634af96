//! IBM Spectrum LSF: `bsub < SCRIPT` per array (`-J "name[1-N]%K"`, 1-based local indices),
//! one `bjobs -a -json -o ...` per poll for all of the stage's arrays, `bkill`.
//!
//! The syntax (array range, time and memory formats, id and status parsing, the limit from
//! `bparams`) is in pure functions tested below; [`Lsf`] runs the commands. Formats follow the
//! LSF command reference (`bsub`, `bjobs -o`/`-json`, `bkill`, `bparams`, `lsb.params`);
//! poolparty is tested against a fake `bsub`/`bjobs`/`bkill`/`bparams` that replays them
//! (`tests/fakes/lsf`), not against a live LSF cluster.
//!
//! Facts the code relies on:
//! - `bsub` reads `#BSUB` lines only from a script given on its standard input, and prints
//!   `Job <123> is submitted to queue <normal>.`; an array element is `123[4]`.
//! - `MAX_JOB_ARRAY_SIZE` (`lsb.params`, default 1000) bounds the array; a larger one is
//!   refused with `Job array index too large. Job not submitted.` Local indices 1..N keep both
//!   the count and the largest index within it.
//! - `bjobs -json` prints `{"COMMAND":"bjobs","JOBS":N,"RECORDS":[{"JOBID":"123",
//!   "JOBINDEX":"4","STAT":"RUN","EXIT_CODE":"", ...}]}`, every value a string; `-a` keeps
//!   jobs that ended within `CLEAN_PERIOD` (an hour by default), after which they are `not
//!   found`.
//! - States: `PEND`, `RUN`, `PSUSP`, `USUSP`, `SSUSP`, `WAIT`, `PROV` are active; `DONE`
//!   exited 0; `EXIT` exited non-zero or was killed (`EXIT_REASON` says why: `TERM_RUNLIMIT`
//!   for the run limit); `ZOMBI` was killed while unreachable; `UNKWN` has lost contact with
//!   its host and may still run.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use serde_json::Value;

use super::cluster::{ArrayLimit, CallError, Client, LimitQuery, TaskState, call, query_known_ids};
use super::syntax::{ScriptSyntax, Syntax};
use crate::error::Result;
use crate::manifest::WallTime;

/// The embedded bsub template.
pub const TEMPLATE: &str = include_str!("../../templates/lsf.bsub.hbs");

/// `MAX_JOB_ARRAY_SIZE` when it cannot be read (the documented default).
pub const DEFAULT_MAX_JOB_ARRAY_SIZE: usize = 1000;

/// The `bjobs -o` fields asked for.
pub const BJOBS_FIELDS: &str = "jobid jobindex stat exit_code exit_reason";

/// Error texts that mean "the batch daemon is unreachable, try again".
const TRANSIENT: &[&str] = &[
    "LSF is down",
    "Cannot connect to LSF",
    "Please wait",
    "not responding",
    "Failed in an LSF library call",
    "Batch system not responding",
    "Timeout",
];

/// The LSF scheduler.
#[derive(Debug, Default)]
pub struct Lsf;

// --- syntax: pure, no command runs ------------------------------------------------------------

/// The index list of an array of `tasks` elements (`1-N`); the throttle is written by the
/// template after the brackets (`name[1-N]%K`).
#[must_use]
pub fn array_spec(tasks: usize) -> String {
    format!("1-{}", tasks.max(1))
}

/// The run limit in bsub's `-W [hours:]minutes`, rounded up to whole minutes.
#[must_use]
pub fn format_time(t: WallTime) -> String {
    let minutes = t.0.as_secs().div_ceil(60).max(1);
    format!("{}:{:02}", minutes / 60, minutes % 60)
}

/// A memory size in bsub's units: `4G` → `4GB`, `512m` → `512MB`; anything else as written.
#[must_use]
pub fn format_memory(m: &str) -> String {
    let m = m.trim();
    match super::syntax::size_and_unit(m) {
        Some((n, unit)) => format!("{n}{}B", unit.to_ascii_uppercase()),
        None => m.to_owned(),
    }
}

/// The job id in bsub's answer (`Job <123> is submitted to queue <normal>.`), which may follow
/// other lines (messages of a site's `esub`).
///
/// # Errors
/// When no line holds a job id.
pub fn parse_submitted(out: &str) -> std::result::Result<String, String> {
    out.lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix("Job <")?;
            let (id, _) = rest.split_once('>')?;
            (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit())).then(|| id.to_owned())
        })
        .ok_or_else(|| format!("bsub printed no job id: {out:?}"))
}

/// `MAX_JOB_ARRAY_SIZE` from `bparams -a` (`    MAX_JOB_ARRAY_SIZE = 1000`).
#[must_use]
pub fn parse_max_job_array_size(text: &str) -> Option<usize> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "MAX_JOB_ARRAY_SIZE").then(|| v.trim().parse().ok())?
    })
}

/// Maps an element's `STAT` and `EXIT_REASON` to a task state.
#[must_use]
pub fn task_state(stat: &str, exit_reason: &str) -> TaskState {
    match stat {
        "DONE" => TaskState::Done,
        "EXIT" if exit_reason.contains("TERM_RUNLIMIT") => TaskState::TimedOut,
        // Killed (`TERM_OWNER`, `TERM_ADMIN`, `TERM_MEMLIMIT` ...): it did not run to its end.
        "EXIT" if exit_reason.trim_start().starts_with("TERM_") => {
            TaskState::Ended(exit_reason.trim().to_owned())
        }
        // The script exited non-zero on its own (a job failed: its outcome file says which).
        "EXIT" => TaskState::Done,
        "ZOMBI" => TaskState::Ended("ZOMBI: killed while its host was unreachable".into()),
        // PEND, RUN, PSUSP, USUSP, SSUSP, WAIT, PROV, UNKWN (may still run).
        _ => TaskState::Active,
    }
}

fn text(record: &Value, key: &str) -> String {
    match record.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// Parses `bjobs -a -json -o "jobid jobindex stat exit_code exit_reason"`: every array element
/// listed, keyed by (job id, index). Records without an index (plain jobs) and error records
/// (`{"ERROR": "Job <12> is not found"}`) are skipped.
///
/// # Errors
/// Output that is not JSON.
pub fn parse_bjobs_json(
    out: &str,
) -> std::result::Result<HashMap<(String, usize), TaskState>, String> {
    let mut map = HashMap::new();
    if out.trim().is_empty() {
        return Ok(map);
    }
    let v: Value = serde_json::from_str(out).map_err(|e| format!("bjobs printed no JSON ({e})"))?;
    let Some(records) = v.get("RECORDS").and_then(Value::as_array) else {
        return Ok(map);
    };
    for r in records {
        let id = text(r, "JOBID");
        // JOBID may be written `123[4]` too.
        let (job, index) = match id.split_once('[') {
            Some((job, rest)) => (job.to_owned(), rest.trim_end_matches(']').to_owned()),
            None => (id.clone(), text(r, "JOBINDEX")),
        };
        let Ok(index) = index.trim().parse::<usize>() else {
            continue;
        };
        if job.is_empty() || index == 0 {
            continue;
        }
        let state = task_state(text(r, "STAT").trim(), &text(r, "EXIT_REASON"));
        map.insert((job, index), state);
    }
    Ok(map)
}

/// The job ids an error message says are gone (`Job <123> is not found`).
#[must_use]
pub fn not_found_ids(message: &str) -> Vec<String> {
    message
        .lines()
        .flat_map(|l| l.split("Job <").skip(1))
        .filter_map(|rest| {
            let (id, tail) = rest.split_once('>')?;
            tail.trim_start()
                .starts_with("is not found")
                .then(|| id.to_owned())
        })
        .collect()
}

/// The body of `submit.sh`'s `pp_submit_lsf KIND "IDS" "ANY_IDS" SCRIPT [TASK_FILE]`:
/// `-w "done(ID) && ended(ID)"` (afterok is `done`, afterany `ended`), the script on stdin;
/// the task file goes in the environment, which bsub passes on (LSF passes no arguments to a
/// script read from stdin).
///
/// Syntax from the LSF command reference, `bsub -w 'dependency_expression'`: `done(job_ID)`
/// holds once the job is DONE, `ended(job_ID)` once it is DONE or EXIT, joined with `&&`. An
/// id is the array's own (`123`), not `123[*]`: "Job array dependencies" (whole array
/// dependency) makes a condition on an array's id hold once it holds for every element, while
/// `name[*]` pairs the elements of two arrays one to one. A condition that can never hold
/// (`done` of an element that exited) keeps the dependent job pending, which is why a bundle's
/// driver jobs wait with `ended` and apply `on_failure` themselves.
const SUBMIT_FUNCTION: &str = r#"  local dep="" id cond=done opts=()
  if [ "$1" = afterany ]; then cond=ended; fi
  for id in $2; do dep="${dep:+$dep && }$cond($id)"; done
  for id in $3; do dep="${dep:+$dep && }ended($id)"; done
  if [ -n "$dep" ]; then opts+=(-w "$dep"); fi
  POOLPARTY_TASK_FILE=${5:+$pp_bundle/$5} bsub ${opts[@]+"${opts[@]}"} < "$4" | sed -n 's/^Job <\([0-9]*\)>.*/\1/p'"#;

/// The body of `submit.sh`'s `pp_wait_lsf "IDS"`: until no element is pending or running
/// (or the job is cleaned and `not found`).
const WAIT_FUNCTION: &str = r#"  for id in $1; do while bjobs -noheader -o stat "$id" 2>/dev/null | grep -qv -e DONE -e EXIT; do sleep 10; done; done"#;

/// How LSF's scripts and commands are written.
pub static SYNTAX: Syntax = Syntax {
    script: ScriptSyntax {
        name: "lsf",
        template: TEMPLATE,
        template_file: "lsf.bsub.hbs",
        template_about: "the bsub script of one LSF job array (submitted as `bsub < SCRIPT`)",
        first_index: 1,
        // The throttle goes after the brackets, in the template (`name[1-N]%K`).
        array_spec: |tasks, _throttle| array_spec(tasks),
        format_time,
        format_memory,
    },
    task_index_var: "LSB_JOBINDEX",
    job_id_var: "LSB_JOBID",
    driver_header,
    submit_function: SUBMIT_FUNCTION,
    wait_function: WAIT_FUNCTION,
    cancel_command: "bkill",
};

/// The `#BSUB` lines of a driver job: name, one log (stdout and stderr), working folder.
#[must_use]
pub fn driver_header(job_name: &str, log: &str, cwd: &str) -> String {
    // Without `-e`, `-o` gets stdout and stderr.
    format!("#BSUB -J {job_name}\n#BSUB -o {log}\n#BSUB -cwd {cwd}")
}

// --- client: runs bsub, bjobs, bkill, bparams -------------------------------------------------

impl Lsf {
    /// One `bjobs` for these arrays. bjobs fails when any of them is no longer known (cleaned
    /// after `CLEAN_PERIOD`): those named `is not found` are dropped and the call made once
    /// more for the rest, so a poll normally costs at most two calls.
    fn bjobs(
        job_ids: &[String],
    ) -> std::result::Result<HashMap<(String, usize), TaskState>, CallError> {
        query_known_ids(
            job_ids,
            |ids| {
                let mut args = vec!["-a", "-json", "-o", BJOBS_FIELDS];
                args.extend(ids);
                let out = call("bjobs", &args, TRANSIENT)?;
                parse_bjobs_json(&out).map_err(|message| CallError {
                    message,
                    transient: false,
                })
            },
            |e, id| {
                e.message.contains("is not found")
                    && not_found_ids(&e.message).iter().any(|g| g == id)
            },
        )
    }
}

/// Where the cluster keeps its array limit, and the documented default.
pub static LIMIT: LimitQuery = LimitQuery {
    command: ("bparams", &["-a"]),
    transient: TRANSIENT,
    parse: parse_max_job_array_size,
    asked: "the cluster",
    setting: "MAX_JOB_ARRAY_SIZE",
    default: (
        DEFAULT_MAX_JOB_ARRAY_SIZE,
        "LSF's default `MAX_JOB_ARRAY_SIZE`",
    ),
};

impl Client for Lsf {
    fn max_array_tasks(&mut self) -> Result<ArrayLimit> {
        // Asked once per process (every stage of a run submits to the same cluster). A cluster
        // that cannot be asked gives LSF's documented default, not remembered.
        static MAX_JOB_ARRAY_SIZE: OnceLock<ArrayLimit> = OnceLock::new();
        Ok(LIMIT
            .ask(&MAX_JOB_ARRAY_SIZE)
            .unwrap_or_else(|e| LIMIT.fallback(&e.message)))
    }
    fn submit(&mut self, script: &Path) -> std::result::Result<String, CallError> {
        // bsub reads #BSUB lines only from its standard input; `call` gives none, so a shell
        // redirects the script (passed as an argument, never parsed by the shell).
        let path = script.display().to_string();
        let out = call(
            "sh",
            &["-c", "exec bsub < \"$1\"", "bsub", &path],
            TRANSIENT,
        )?;
        parse_submitted(&out).map_err(|message| CallError {
            message,
            transient: false,
        })
    }
    fn query(
        &mut self,
        job_ids: &[String],
    ) -> std::result::Result<HashMap<(String, usize), TaskState>, CallError> {
        Self::bjobs(job_ids)
    }
    fn cancel(&mut self, job_ids: &[String]) -> std::result::Result<(), CallError> {
        let args: Vec<&str> = job_ids.iter().map(String::as_str).collect();
        // A job that already ended is not a failure (`Job has already finished`, `No matching
        // job found`, `is not found`).
        match call("bkill", &args, TRANSIENT) {
            Err(e)
                if !e.transient
                    && e.message.lines().filter(|l| l.contains("Job <")).all(|l| {
                        l.contains("already finished")
                            || l.contains("No matching job")
                            || l.contains("is not found")
                            || l.contains("is being terminated")
                    }) =>
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
        match call(
            "bkill",
            &[&format!("{job_id}[{}]", list.join(","))],
            TRANSIENT,
        ) {
            Err(e) if !e.transient => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backend::syntax::testing;

    /// The driver job's header: name, one log for stdout and stderr, working folder.
    #[test]
    fn driver_header() {
        assert_eq!(
            super::driver_header("pp-w-b-driver", "'/s/b/driver.log'", "/w"),
            "#BSUB -J pp-w-b-driver\n#BSUB -o '/s/b/driver.log'\n#BSUB -cwd /w"
        );
    }

    /// `pp_submit_lsf`: `-w "done(A) && done(B) && ended(C)"` (bsub -w: `done` is state DONE,
    /// `ended` DONE or EXIT; a condition on an array's id holds once it holds for every
    /// element), the script on standard input, the task file in the environment, and the
    /// job id from `Job <42> is submitted ...`.
    #[test]
    fn dependency_lines() {
        let script = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(script.path(), "#BSUB -J x").unwrap();
        let s = script.path().display().to_string();
        let submit = |args: String| {
            testing::submit(
                &SYNTAX,
                "bsub",
                "Job <42> is submitted to queue <normal>.",
                &args,
            )
        };
        let stdin = "stdin #BSUB -J x";
        let (out, argv) = submit(format!(r#"afterok "1 2" "3" {s} a/t.jobs"#));
        assert_eq!(out, "42\n");
        assert_eq!(
            argv,
            [
                "-w",
                "done(1) && done(2) && ended(3)",
                "env POOLPARTY_TASK_FILE=/b/a/t.jobs",
                stdin
            ]
        );
        let (_, argv) = submit(format!(r#"afterany "1" "" {s}"#));
        assert_eq!(argv, ["-w", "ended(1)", "env POOLPARTY_TASK_FILE=", stdin]);
        let (_, argv) = submit(format!(r#"afterok "" "" {s}"#));
        assert_eq!(argv, ["env POOLPARTY_TASK_FILE=", stdin]);
        // Waiting asks about each job; one whose elements all ended ends its wait.
        let (_, calls) =
            testing::run_function(WAIT_FUNCTION, "bjobs", ("DONE\nEXIT", 0), r#""7 8""#);
        assert_eq!(
            calls,
            [
                ["-noheader", "-o", "stat", "7"],
                ["-noheader", "-o", "stat", "8"]
            ]
        );
    }

    #[test]
    fn arrays_times_and_memory() {
        assert_eq!(array_spec(10), "1-10");
        assert_eq!(array_spec(1), "1-1");
        assert_eq!(format_time(WallTime(Duration::from_secs(90))), "0:02");
        assert_eq!(format_time(WallTime(Duration::from_secs(3600))), "1:00");
        assert_eq!(format_time(WallTime(Duration::from_secs(1))), "0:01");
        assert_eq!(format_time(WallTime(Duration::from_secs(90_000))), "25:00");
        assert_eq!(format_memory("4G"), "4GB");
        assert_eq!(format_memory("512m"), "512MB");
        assert_eq!(format_memory("4GB"), "4GB");
    }

    #[test]
    fn submitted_ids() {
        assert_eq!(
            parse_submitted("Job <1234> is submitted to queue <normal>.\n").unwrap(),
            "1234"
        );
        assert_eq!(
            parse_submitted("Job array.\nJob <7> is submitted to default queue <normal>.\n")
                .unwrap(),
            "7"
        );
        assert!(parse_submitted("Job array index too large. Job not submitted.\n").is_err());
    }

    #[test]
    fn limit_from_bparams() {
        let text = "System default queues for automatic queue selection:\n    normal\n\nMBD_SLEEP_TIME = 10\n    MAX_JOB_ARRAY_SIZE = 40\n";
        assert_eq!(parse_max_job_array_size(text), Some(40));
        assert_eq!(parse_max_job_array_size("MBD_SLEEP_TIME = 10\n"), None);
    }

    /// The shape of `bjobs -json` in the LSF command reference: `COMMAND`, `JOBS`, and one
    /// record per element with string values.
    #[test]
    fn bjobs_json() {
        let out = r#"{
  "COMMAND":"bjobs",
  "JOBS":8,
  "RECORDS":[
    {"JOBID":"321","JOBINDEX":"1","STAT":"DONE","EXIT_CODE":"","EXIT_REASON":""},
    {"JOBID":"321","JOBINDEX":"2","STAT":"EXIT","EXIT_CODE":"1","EXIT_REASON":""},
    {"JOBID":"321","JOBINDEX":"3","STAT":"RUN","EXIT_CODE":"","EXIT_REASON":""},
    {"JOBID":"321","JOBINDEX":"4","STAT":"EXIT","EXIT_CODE":"140","EXIT_REASON":"TERM_RUNLIMIT: job killed after reaching LSF run time limit"},
    {"JOBID":"321","JOBINDEX":"5","STAT":"EXIT","EXIT_CODE":"130","EXIT_REASON":"TERM_OWNER: job killed by owner"},
    {"JOBID":"321","JOBINDEX":"6","STAT":"PSUSP","EXIT_CODE":"","EXIT_REASON":""},
    {"JOBID":"322[2]","STAT":"PEND"},
    {"JOBID":"400","JOBINDEX":"0","STAT":"RUN"},
    {"ERROR":"Job <9> is not found"}
  ]
}"#;
        let m = parse_bjobs_json(out).unwrap();
        let at = |j: &str, i: usize| m[&(j.to_owned(), i)].clone();
        assert_eq!(m.len(), 7, "{m:?}");
        assert_eq!(at("321", 1), TaskState::Done);
        assert_eq!(at("321", 2), TaskState::Done);
        assert_eq!(at("321", 3), TaskState::Active);
        assert_eq!(at("321", 4), TaskState::TimedOut);
        assert_eq!(
            at("321", 5),
            TaskState::Ended("TERM_OWNER: job killed by owner".into())
        );
        assert_eq!(at("321", 6), TaskState::Active);
        assert_eq!(at("322", 2), TaskState::Active);
        assert!(parse_bjobs_json("").unwrap().is_empty());
        assert!(parse_bjobs_json("No unfinished job found").is_err());
    }

    #[test]
    fn not_found_in_errors() {
        let e =
            "`bjobs -a` failed (exit status: 255): Job <12> is not found\nJob <13> is not found";
        assert_eq!(not_found_ids(e), ["12", "13"]);
        assert!(not_found_ids("Job <12> is submitted").is_empty());
    }
}
