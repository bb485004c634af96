//! PBS Pro / OpenPBS: `qsub` per array (`-J` with 1-based local indices and a `%K` throttle),
//! one `qstat -f -F json -x -t` per poll for all of the stage's arrays, `qdel`.
//!
//! The syntax (array range, time and memory formats, id and status parsing, the limit from
//! `qmgr`) is in pure functions tested below; [`Pbs`] runs the commands. Formats follow the
//! OpenPBS reference pages (`qsub.1B`, `qstat.1B`, `pbs_server_attributes.7B`, `job.h` exit
//! codes); poolparty is tested against a fake `qsub`/`qstat`/`qdel`/`qmgr` that replays them
//! (`tests/fakes/pbs`), not against a live PBS server.
//!
//! Facts the code relies on:
//! - `qsub` prints the array's id, `123[].server`; a subjob is `123[4].server`.
//! - `-J X-Y[:Z][%K]` needs X < Y (`chk_Jrange`), so a one-task array is `1-2:2` (index 1 only).
//! - `max_array_size` (server attribute, default 10000) bounds the subjob **count**.
//! - A subjob that ended is in state `X` with its `Exit_status`: 0..255 the script's exit code,
//!   256+N killed by signal N, negative a PBS failure (`-29` walltime exceeded).
//! - Without job history (`job_history_enable`, off by default) an array that ended is
//!   forgotten: `qstat` and `qdel` then say `Unknown Job Id`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use serde_json::Value;

use super::cluster::{ArrayLimit, CallError, Client, LimitQuery, TaskState, call, query_known_ids};
use super::syntax::{ScriptSyntax, Syntax};
use crate::error::Result;
use crate::manifest::WallTime;

/// The embedded qsub template.
pub const TEMPLATE: &str = include_str!("../../templates/pbs.qsub.hbs");

/// The server's `max_array_size` when it cannot be read (the documented default).
pub const DEFAULT_MAX_ARRAY_SIZE: usize = 10_000;

/// Error texts that mean "the server is unreachable, try again".
const TRANSIENT: &[&str] = &[
    "cannot connect to server",
    "Connection refused",
    "Communication failure",
    "Server shutting down",
    "Request not allowed: Server shutting down",
    "pbs_iff",
    "End of File",
];

/// What `qstat`/`qdel` say about a job the server no longer knows.
const UNKNOWN: &str = "Unknown Job Id";

/// The PBS Pro / OpenPBS scheduler.
#[derive(Debug, Default)]
pub struct Pbs;

// --- syntax: pure, no command runs ------------------------------------------------------------

/// The `-J` range of an array of `tasks` subjobs indexed from 1, with an optional `%K` throttle.
/// PBS refuses `X-Y` unless X < Y, so one subjob is written `1-2:2`.
#[must_use]
pub fn array_spec(tasks: usize, throttle: Option<u32>) -> String {
    let mut s = if tasks <= 1 {
        "1-2:2".to_owned()
    } else {
        format!("1-{tasks}")
    };
    if let Some(t) = throttle {
        s.push_str(&format!("%{t}"));
    }
    s
}

/// `walltime` in PBS's `HH:MM:SS` (hours may exceed 24).
#[must_use]
pub fn format_time(t: WallTime) -> String {
    t.hms()
}

/// A memory size in PBS's units: `4G` → `4gb`, `512M` → `512mb`; PBS sizes take `b`/`kb`/
/// `mb`/`gb`/`tb` and no bare `K`/`M`/`G`/`T`. Anything else is passed as written.
#[must_use]
pub fn format_memory(m: &str) -> String {
    let m = m.trim();
    match super::syntax::size_and_unit(m) {
        Some((n, unit)) => format!("{n}{}b", unit.to_ascii_lowercase()),
        None => m.to_owned(),
    }
}

/// The array id `qsub` printed (`123[].server`), checked.
///
/// # Errors
/// When the output is not an array id.
pub fn parse_submitted(out: &str) -> std::result::Result<String, String> {
    let id = out.trim();
    match id.split_once("[]") {
        Some((seq, _)) if !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(id.to_owned())
        }
        _ => Err(format!("qsub printed no array job id: {out:?}")),
    }
}

/// The sequence number of a job id: `123` of `123[].server`, `123[4].server` or `123.server`.
#[must_use]
pub fn sequence(id: &str) -> &str {
    let end = id.find(['[', '.']).unwrap_or(id.len());
    &id[..end]
}

/// The id of subjob `index` of array `job_id`: `123[].server` → `123[4].server`.
#[must_use]
pub fn subjob_id(job_id: &str, index: usize) -> String {
    match job_id.split_once("[]") {
        Some((seq, rest)) => format!("{seq}[{index}]{rest}"),
        None => format!("{job_id}[{index}]"),
    }
}

/// `max_array_size` from `qmgr -c "list server"` (`    max_array_size = 10000`).
#[must_use]
pub fn parse_max_array_size(text: &str) -> Option<usize> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        let k = k.trim();
        // `qmgr -c "print server"` writes `set server max_array_size = N`.
        (k == "max_array_size" || k.ends_with(" max_array_size")).then(|| v.trim().parse().ok())?
    })
}

/// `Exit_status` of PBS's `JOB_EXEC_KILL_WALLTIME`: killed for exceeding its walltime.
const EXIT_WALLTIME: i64 = -29;

/// Maps a subjob's `job_state` and `Exit_status` to a task state.
#[must_use]
pub fn task_state(state: &str, exit: Option<i64>) -> TaskState {
    match state {
        // Ended (`X` for a subjob, `F` for a finished job shown with `-x`).
        "X" | "F" => match exit {
            Some(0..=255) => TaskState::Done,
            Some(EXIT_WALLTIME) => TaskState::TimedOut,
            Some(n) if n > 256 => TaskState::Ended(format!("killed by signal {}", n - 256)),
            Some(n) => TaskState::Ended(format!("Exit_status {n}")),
            None => TaskState::Ended("deleted before it ran".into()),
        },
        // Queued, running, exiting, held, waiting, suspended, moving, begun.
        _ => TaskState::Active,
    }
}

/// Parses `qstat -f -F json -x -t`: every subjob listed (`123[4].server`), keyed by the
/// sequence number of its array and its index. Array parents (`123[]`) and plain jobs are
/// skipped.
///
/// # Errors
/// Output that is not JSON.
pub fn parse_qstat_json(
    text: &str,
) -> std::result::Result<HashMap<(String, usize), TaskState>, String> {
    let mut map = HashMap::new();
    if text.trim().is_empty() {
        return Ok(map);
    }
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("qstat printed no JSON ({e})"))?;
    let Some(jobs) = v.get("Jobs").and_then(Value::as_object) else {
        return Ok(map);
    };
    for (id, attrs) in jobs {
        let Some((seq, rest)) = id.split_once('[') else {
            continue;
        };
        let Some(index) = rest.split(']').next().and_then(|i| i.parse::<usize>().ok()) else {
            continue;
        };
        let state = attrs.get("job_state").and_then(Value::as_str).unwrap_or("");
        let exit = attrs.get("Exit_status").and_then(|e| {
            e.as_i64()
                .or_else(|| e.as_str().and_then(|s| s.trim().parse().ok()))
        });
        map.insert((seq.to_owned(), index), task_state(state, exit));
    }
    Ok(map)
}

/// The job ids an error message says are unknown (`qstat: Unknown Job Id 123[].server`).
#[must_use]
pub fn unknown_ids(message: &str) -> Vec<String> {
    message
        .match_indices(UNKNOWN)
        .filter_map(|(at, _)| {
            message[at + UNKNOWN.len()..]
                .split_whitespace()
                .next()
                .map(str::to_owned)
        })
        .collect()
}

/// The body of `submit.sh`'s `pp_submit_pbs KIND "IDS" "ANY_IDS" SCRIPT [TASK_FILE]`:
/// `-W depend=KIND:IDS,afterany:ANY_IDS`; the task file goes in the environment
/// (`-v POOLPARTY_TASK_FILE=`), since PBS passes no arguments to a script.
///
/// Syntax from OpenPBS `qsub.1B`, option `-W depend=<type>:<arg list>[,<type>:<arg list>]`
/// with job ids joined by `:`. The ids are arrays as qsub printed them (`123[].server`,
/// `qsub.1B` DESCRIPTION): a dependency on an array is on the whole array, ended when every
/// subjob has (the server refuses one on a single subjob, `req_register.c`). A dependency that
/// can never be met (`afterok` on a failed job) gets the dependent job deleted by the server,
/// which is why a bundle's driver jobs wait with `afterany` and apply `on_failure` themselves.
const SUBMIT_FUNCTION: &str = r#"  local dep="" opts=()
  if [ -n "$2" ]; then dep="$1:$(echo $2 | tr ' ' ':')"; fi
  if [ -n "$3" ]; then dep="${dep:+$dep,}afterany:$(echo $3 | tr ' ' ':')"; fi
  if [ -n "$dep" ]; then opts+=(-W "depend=$dep"); fi
  if [ -n "${5:-}" ]; then opts+=(-v "POOLPARTY_TASK_FILE=$pp_bundle/$5"); fi
  qsub ${opts[@]+"${opts[@]}"} "$4""#;

/// The body of `submit.sh`'s `pp_wait_pbs "IDS"`: until each job is finished (`F`, with job
/// history) or forgotten (`qstat` fails).
const WAIT_FUNCTION: &str = r#"  for id in $1; do while qstat -x -f -F json "$id" 2>/dev/null | grep -q '"job_state":"[^FX]"'; do sleep 10; done; done"#;

/// How PBS's scripts and commands are written.
pub static SYNTAX: Syntax = Syntax {
    script: ScriptSyntax {
        name: "pbs",
        template: TEMPLATE,
        template_file: "pbs.qsub.hbs",
        template_about: "the qsub script of one PBS Pro / OpenPBS array job",
        first_index: 1,
        array_spec,
        format_time,
        format_memory,
    },
    task_index_var: "PBS_ARRAY_INDEX",
    job_id_var: "PBS_JOBID",
    driver_header,
    submit_function: SUBMIT_FUNCTION,
    wait_function: WAIT_FUNCTION,
    cancel_command: "qdel",
};

/// The `#PBS` lines of a driver job: name, bash, one log; then a `cd` to its folder.
#[must_use]
pub fn driver_header(job_name: &str, log: &str, cwd: &str) -> String {
    // PBS has no option for the starting folder (jobs start in $HOME): the script cds.
    format!("#PBS -N {job_name}\n#PBS -S /bin/bash\n#PBS -j oe\n#PBS -o {log}\ncd {cwd} || exit 2")
}

// --- client: runs qsub, qstat, qdel, qmgr -----------------------------------------------------

impl Pbs {
    /// One `qstat` for these arrays. qstat fails when any of them is unknown (forgotten once
    /// ended, without job history): those named `Unknown Job Id` are dropped and the call made
    /// once more for the rest, so a poll normally costs at most two calls.
    fn qstat(
        job_ids: &[String],
    ) -> std::result::Result<HashMap<(String, usize), TaskState>, CallError> {
        query_known_ids(
            job_ids,
            |ids| {
                let mut args = vec!["-f", "-F", "json", "-x", "-t"];
                args.extend(ids);
                let out = call("qstat", &args, TRANSIENT)?;
                parse_qstat_json(&out).map_err(|message| CallError {
                    message,
                    transient: false,
                })
            },
            |e, id| {
                e.message.contains(UNKNOWN)
                    && unknown_ids(&e.message)
                        .iter()
                        .any(|u| sequence(u) == sequence(id))
            },
        )
    }
}

/// Where the server keeps its array limit, and the documented default.
pub static LIMIT: LimitQuery = LimitQuery {
    command: ("qmgr", &["-c", "list server"]),
    transient: TRANSIENT,
    parse: parse_max_array_size,
    asked: "the server",
    setting: "max_array_size",
    default: (DEFAULT_MAX_ARRAY_SIZE, "PBS's default `max_array_size`"),
};

impl Client for Pbs {
    fn max_array_tasks(&mut self) -> Result<ArrayLimit> {
        // Asked once per process (every stage of a run submits to the same server). A server
        // that cannot be asked gives PBS's documented default, not remembered.
        static MAX_ARRAY_SIZE: OnceLock<ArrayLimit> = OnceLock::new();
        Ok(LIMIT
            .ask(&MAX_ARRAY_SIZE)
            .unwrap_or_else(|e| LIMIT.fallback(&e.message)))
    }
    fn submit(&mut self, script: &Path) -> std::result::Result<String, CallError> {
        let path = script.display().to_string();
        let out = call("qsub", &[&path], TRANSIENT)?;
        parse_submitted(&out).map_err(|message| CallError {
            message,
            transient: false,
        })
    }
    fn query(
        &mut self,
        job_ids: &[String],
    ) -> std::result::Result<HashMap<(String, usize), TaskState>, CallError> {
        let states = Self::qstat(job_ids)?;
        // Keyed by the ids as submitted (the server part of an id may be written otherwise).
        let by_seq: HashMap<&str, &String> = job_ids.iter().map(|j| (sequence(j), j)).collect();
        Ok(states
            .into_iter()
            .filter_map(|((seq, index), st)| {
                by_seq
                    .get(seq.as_str())
                    .map(|job| (((*job).clone(), index), st))
            })
            .collect())
    }
    fn cancel(&mut self, job_ids: &[String]) -> std::result::Result<(), CallError> {
        let args: Vec<&str> = job_ids.iter().map(String::as_str).collect();
        // An array that already ended is unknown (or finished, with job history): not a failure.
        match call("qdel", &args, TRANSIENT) {
            Err(e)
                if !e.transient
                    && e.message
                        .lines()
                        .filter(|l| l.starts_with("qdel:"))
                        .all(|l| l.contains(UNKNOWN) || l.contains("Job has finished")) =>
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
        let ids: Vec<String> = indices.iter().map(|&i| subjob_id(job_id, i)).collect();
        let args: Vec<&str> = ids.iter().map(String::as_str).collect();
        match call("qdel", &args, TRANSIENT) {
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

    /// The driver job's header: name, bash, one log for stdout and stderr, then a `cd`
    /// (PBS has no option for the starting folder).
    #[test]
    fn driver_header() {
        assert_eq!(
            super::driver_header("pp-w-b-driver", "'/s/b/driver.log'", "/w"),
            "#PBS -N pp-w-b-driver\n#PBS -S /bin/bash\n#PBS -j oe\n#PBS -o '/s/b/driver.log'\ncd /w || exit 2"
        );
    }

    /// `pp_submit_pbs`: `-W depend=afterok:A:B,afterany:C` (qsub.1B, `-W depend=<type>:<arg
    /// list>[,<type>:<arg list>]`, job ids joined with `:`) naming arrays by the ids qsub
    /// printed (`1[].srv`: a dependency on an array is on the whole array; the server refuses
    /// one on a single subjob); the task file in `-v POOLPARTY_TASK_FILE=`; the id as printed.
    #[test]
    fn dependency_lines() {
        let submit = |args| testing::submit(&SYNTAX, "qsub", "42[].srv", args);
        let (out, argv) = submit(r#"afterok "1[].srv 2[].srv" "" s.sh a/t.jobs"#);
        assert_eq!(out, "42[].srv\n");
        assert_eq!(
            argv,
            [
                "-W",
                "depend=afterok:1[].srv:2[].srv",
                "-v",
                "POOLPARTY_TASK_FILE=/b/a/t.jobs",
                "s.sh"
            ]
        );
        let (_, argv) = submit(r#"afterany "" "3[].srv 4[].srv" d.sh"#);
        assert_eq!(argv, ["-W", "depend=afterany:3[].srv:4[].srv", "d.sh"]);
        let (_, argv) = submit(r#"afterok "1[].srv" "3[].srv" s.sh"#);
        assert_eq!(
            argv,
            ["-W", "depend=afterok:1[].srv,afterany:3[].srv", "s.sh"]
        );
        let (_, argv) = submit(r#"afterok "" "" s.sh"#);
        assert_eq!(argv, ["s.sh"]);
        // Waiting asks about each job (with history); a finished one ends its wait.
        let (_, calls) = testing::run_function(
            WAIT_FUNCTION,
            "qstat",
            (r#"{"Jobs":{"7[].srv":{"job_state":"F"}}}"#, 0),
            r#""7[].srv 8[].srv""#,
        );
        assert_eq!(
            calls,
            [
                ["-x", "-f", "-F", "json", "7[].srv"],
                ["-x", "-f", "-F", "json", "8[].srv"]
            ]
        );
    }

    #[test]
    fn array_ranges() {
        assert_eq!(array_spec(10, None), "1-10");
        assert_eq!(array_spec(10, Some(3)), "1-10%3");
        // X-Y needs X < Y: one subjob is the range 1-2 stepping by 2.
        assert_eq!(array_spec(1, None), "1-2:2");
        assert_eq!(array_spec(1, Some(1)), "1-2:2%1");
    }

    #[test]
    fn times_and_memory() {
        assert_eq!(
            format_time(WallTime(Duration::from_secs(90_061))),
            "25:01:01"
        );
        assert_eq!(format_memory("4G"), "4gb");
        assert_eq!(format_memory("512m"), "512mb");
        assert_eq!(format_memory("4gb"), "4gb");
        assert_eq!(format_memory("1000"), "1000");
    }

    #[test]
    fn submitted_ids() {
        assert_eq!(
            parse_submitted("1234[].pbs-server\n").unwrap(),
            "1234[].pbs-server"
        );
        assert_eq!(parse_submitted("7[]").unwrap(), "7[]");
        assert!(parse_submitted("1234.pbs-server\n").is_err());
        assert!(parse_submitted("").is_err());
        assert_eq!(sequence("1234[].s"), "1234");
        assert_eq!(sequence("1234[5].s"), "1234");
        assert_eq!(sequence("1234.s"), "1234");
        assert_eq!(subjob_id("12[].srv.example", 4), "12[4].srv.example");
    }

    #[test]
    fn limit_from_qmgr() {
        let list = "Server pbs\n    server_state = Active\n    max_array_size = 25\n    default_queue = workq\n";
        assert_eq!(parse_max_array_size(list), Some(25));
        assert_eq!(
            parse_max_array_size("set server max_array_size = 7\n"),
            Some(7)
        );
        assert_eq!(
            parse_max_array_size("Server pbs\n    default_queue = workq\n"),
            None
        );
    }

    /// The shape of `qstat -f -F json` in `qstat.1B` (timestamp, version, server, then `Jobs`
    /// by id), with an array parent and its subjobs as `-t` lists them.
    #[test]
    fn qstat_json() {
        let text = r#"{
    "timestamp":1479277336,
    "pbs_version":"19.1.3",
    "pbs_server":"vbox",
    "Jobs":{
        "12[].vbox":{"Job_Name":"pp-w-a-r","job_state":"B","array":"True","array_indices_submitted":"1-6"},
        "12[1].vbox":{"job_state":"X","Exit_status":0,"array_index":1},
        "12[2].vbox":{"job_state":"X","Exit_status":1,"array_index":2},
        "12[3].vbox":{"job_state":"R","array_index":3},
        "12[4].vbox":{"job_state":"X","Exit_status":-29},
        "12[5].vbox":{"job_state":"X","Exit_status":271},
        "12[6].vbox":{"job_state":"X"},
        "13[1].vbox":{"job_state":"Q"},
        "14.vbox":{"job_state":"R"}
    }
}"#;
        let m = parse_qstat_json(text).unwrap();
        let at = |j: &str, i: usize| m[&(j.to_owned(), i)].clone();
        assert_eq!(m.len(), 7, "{m:?}");
        assert_eq!(at("12", 1), TaskState::Done);
        // The wrapper exits 1 when a job failed: the outcome file says which.
        assert_eq!(at("12", 2), TaskState::Done);
        assert_eq!(at("12", 3), TaskState::Active);
        assert_eq!(at("12", 4), TaskState::TimedOut);
        assert_eq!(at("12", 5), TaskState::Ended("killed by signal 15".into()));
        assert_eq!(
            at("12", 6),
            TaskState::Ended("deleted before it ran".into())
        );
        assert_eq!(at("13", 1), TaskState::Active);
        assert!(parse_qstat_json("").unwrap().is_empty());
        assert!(parse_qstat_json("qstat: oops").is_err());
    }

    #[test]
    fn unknown_job_ids_in_errors() {
        let e = "`qstat -f` failed (exit status: 153): qstat: Unknown Job Id 12[].vbox\nqstat: Unknown Job Id 13[].vbox";
        assert_eq!(unknown_ids(e), ["12[].vbox", "13[].vbox"]);
        assert!(unknown_ids("qstat: cannot connect to server vbox").is_empty());
    }
}
