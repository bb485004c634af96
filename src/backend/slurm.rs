//! Slurm: `sbatch --parsable` per array, one `squeue -t all` per poll for all of the stage's
//! arrays, `scancel` (the [`Client`]); `#SBATCH` scripts, `--array=0-N%K`, `D-HH:MM:SS`,
//! `--dependency=afterany:` in bundles ([`SYNTAX`]). Array indices are local to each array
//! (0..k-1), bounded by the cluster's `MaxArraySize`, which bounds the index rather than the
//! count.

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use super::cluster::{ArrayLimit, CallError, Client, LimitQuery, TaskState, call};
use super::syntax::{ScriptSyntax, Syntax};
use crate::error::{Error, Result};
use crate::manifest::WallTime;

/// The embedded sbatch template.
pub const TEMPLATE: &str = include_str!("../../templates/slurm.sbatch.hbs");

/// Error texts that mean "the controller is unreachable, try again".
const TRANSIENT: &[&str] = &[
    "Unable to contact",
    "Socket timed out",
    "connect failure",
    "temporarily unavailable",
    "Slurm temporarily unable",
    "Zero Bytes were transmitted",
];

/// The Slurm scheduler's [`Client`] (its syntax is [`SYNTAX`]).
#[derive(Debug, Default)]
pub struct Slurm;

/// Slurm's documented default `MaxArraySize` (slurm.conf): indices 0..=1000.
pub const DEFAULT_MAX_ARRAY_SIZE: usize = 1001;

/// How Slurm's scripts and commands are written.
pub static SYNTAX: Syntax = Syntax {
    script: ScriptSyntax {
        name: "slurm",
        template: TEMPLATE,
        template_file: "slurm.sbatch.hbs",
        template_about: "the sbatch script of one Slurm job array (one array task per bundle of jobs)",
        first_index: 0,
        array_spec,
        format_time: WallTime::slurm,
        format_memory: str::to_owned,
    },
    task_index_var: "SLURM_ARRAY_TASK_ID",
    job_id_var: "SLURM_JOB_ID",
    driver_header,
    submit_function: r#"  local dep=""
  if [ -n "$2" ]; then dep="$1:$(echo $2 | tr ' ' ':')"; fi
  if [ -n "$3" ]; then dep="${dep:+$dep,}afterany:$(echo $3 | tr ' ' ':')"; fi
  sbatch --parsable ${dep:+--dependency=$dep} "$4" ${5:+"$pp_bundle/$5"} | cut -d';' -f1"#,
    wait_function: r#"  while [ -n "$(squeue -h -j "$(echo $1 | tr ' ' ',')" -t PD,R,CG,S,CF 2>/dev/null)" ]; do sleep 10; done"#,
    cancel_command: "scancel",
};

/// `--array=0-N[%K]`: local indices from 0, with the throttle.
#[must_use]
pub fn array_spec(tasks: usize, throttle: Option<u32>) -> String {
    let mut s = format!("0-{}", tasks.saturating_sub(1));
    if let Some(t) = throttle {
        s.push_str(&format!("%{t}"));
    }
    s
}

/// The `#SBATCH` lines of a driver job: name, log, working folder.
#[must_use]
pub fn driver_header(job_name: &str, log: &str, cwd: &str) -> String {
    format!("#SBATCH --job-name={job_name}\n#SBATCH --output={log}\n#SBATCH --chdir={cwd}")
}

/// Where the cluster keeps its array limit, and the documented default.
pub static LIMIT: LimitQuery = LimitQuery {
    command: ("scontrol", &["show", "config"]),
    transient: TRANSIENT,
    parse: parse_max_array_size,
    asked: "the cluster",
    setting: "MaxArraySize",
    default: (
        DEFAULT_MAX_ARRAY_SIZE,
        "the documented default `MaxArraySize` of slurm",
    ),
};

impl Client for Slurm {
    fn max_array_tasks(&mut self) -> Result<ArrayLimit> {
        // Asked once per process: every stage of a run submits to the same cluster, and a
        // stage starting while the controller is unreachable then needs no answer from it.
        static MAX_ARRAY_SIZE: OnceLock<ArrayLimit> = OnceLock::new();
        LIMIT.ask(&MAX_ARRAY_SIZE).map_err(|e| Error::Backend {
            backend: "slurm",
            message: "cannot read the cluster's configuration".into(),
            detail: Some(e.message),
        })
    }
    fn submit(&mut self, script: &Path) -> std::result::Result<String, CallError> {
        let path = script.display().to_string();
        let out = call("sbatch", &["--parsable", &path], TRANSIENT)?;
        let id = out.trim().split(';').next().unwrap_or("").trim().to_owned();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CallError {
                message: format!("sbatch printed no job id: {out:?}"),
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
        let ids = job_ids.join(",");
        match call(
            "squeue",
            &["-h", "-t", "all", "-j", &ids, "-o", "%i|%T"],
            TRANSIENT,
        ) {
            Ok(out) => Ok(parse_squeue(&out)),
            // Every listed job was purged from the controller's memory: none is listed.
            Err(e) if !e.transient && e.message.contains("Invalid job id") => Ok(HashMap::new()),
            Err(e) => Err(e),
        }
    }
    fn cancel(&mut self, job_ids: &[String]) -> std::result::Result<(), CallError> {
        let mut args = vec!["--quiet"];
        args.extend(job_ids.iter().map(String::as_str));
        call("scancel", &args, TRANSIENT).map(|_| ())
    }
    fn cancel_tasks(
        &mut self,
        job_id: &str,
        indices: &[usize],
    ) -> std::result::Result<(), CallError> {
        let list: Vec<String> = indices.iter().map(usize::to_string).collect();
        call(
            "scancel",
            &["--quiet", &format!("{job_id}_[{}]", list.join(","))],
            TRANSIENT,
        )
        .map(|_| ())
    }
}

/// `MaxArraySize = N` from `scontrol show config`: the largest array index is N-1, so N tasks.
#[must_use]
pub fn parse_max_array_size(config: &str) -> Option<usize> {
    config.lines().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "MaxArraySize").then(|| v.trim().parse().ok())?
    })
}

/// Maps a Slurm job state to a task state.
#[must_use]
pub fn task_state(state: &str) -> TaskState {
    match state {
        "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING" | "SUSPENDED" | "REQUEUED"
        | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESIZING" | "SIGNALING" | "STAGE_OUT" | "STOPPED"
        | "SPECIAL_EXIT" => TaskState::Active,
        "COMPLETED" | "FAILED" => TaskState::Done,
        "TIMEOUT" => TaskState::TimedOut,
        other => TaskState::Ended(other.to_owned()),
    }
}

/// Parses `squeue -h -o '%i|%T'` lines: `123_4|RUNNING`, `123_[5-9%2]|PENDING`,
/// `123_[1,3,7-8]|PENDING`.
#[must_use]
pub fn parse_squeue(out: &str) -> HashMap<(String, usize), TaskState> {
    let mut map = HashMap::new();
    for line in out.lines() {
        let Some((id, state)) = line.trim().split_once('|') else {
            continue;
        };
        let Some((job, tasks)) = id.split_once('_') else {
            continue;
        };
        let st = task_state(state.trim());
        if let Some(inner) = tasks.strip_prefix('[') {
            let inner = inner.trim_end_matches(']');
            let inner = inner.split('%').next().unwrap_or("");
            for part in inner.split(',') {
                let (a, b) = part.split_once('-').unwrap_or((part, part));
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    for t in a..=b {
                        map.insert((job.to_owned(), t), st.clone());
                    }
                }
            }
        } else if let Ok(t) = tasks.parse::<usize>() {
            map.insert((job.to_owned(), t), st);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::syntax::testing;

    #[test]
    fn squeue_lines() {
        let m = parse_squeue(
            "12_3|RUNNING\n12_[5-7%2]|PENDING\n12_1|COMPLETED\n12_0|CANCELLED\n13_[1,4]|PENDING\n12_2|TIMEOUT\n",
        );
        assert_eq!(m[&("12".into(), 3)], TaskState::Active);
        assert_eq!(m[&("12".into(), 6)], TaskState::Active);
        assert_eq!(m[&("12".into(), 1)], TaskState::Done);
        assert_eq!(m[&("12".into(), 0)], TaskState::Ended("CANCELLED".into()));
        assert_eq!(m[&("12".into(), 2)], TaskState::TimedOut);
        assert!(m.contains_key(&("13".into(), 4)));
        assert!(!m.contains_key(&("13".into(), 2)));
    }

    #[test]
    fn array_specs_and_times() {
        assert_eq!(array_spec(10, None), "0-9");
        assert_eq!(array_spec(10, Some(2)), "0-9%2");
        assert_eq!(array_spec(1, None), "0-0");
        let t = |s| WallTime(std::time::Duration::from_secs(s));
        assert_eq!((SYNTAX.script.format_time)(t(90_061)), "1-01:01:01");
        assert_eq!((SYNTAX.script.format_time)(t(59)), "0-00:00:59");
    }

    #[test]
    fn driver_header() {
        assert_eq!(
            super::driver_header("pp-w-b-driver", "'/s/b/driver.log'", "/w"),
            "#SBATCH --job-name=pp-w-b-driver\n#SBATCH --output='/s/b/driver.log'\n#SBATCH --chdir=/w"
        );
    }

    /// `pp_submit_slurm`: `afterok`/`afterany` ids joined with `:`, the two kinds with `,`,
    /// the task file after the script, and the job id without the cluster name.
    #[test]
    fn dependency_lines() {
        let submit = |args| testing::submit(&SYNTAX, "sbatch", "42;cluster", args);
        let (out, argv) = submit(r#"afterok "1 2" "" s.sh a/t.jobs"#);
        assert_eq!(out, "42\n");
        assert_eq!(
            argv,
            [
                "--parsable",
                "--dependency=afterok:1:2",
                "s.sh",
                "/b/a/t.jobs"
            ]
        );
        let (_, argv) = submit(r#"afterany "" "3 4" d.sh"#);
        assert_eq!(argv, ["--parsable", "--dependency=afterany:3:4", "d.sh"]);
        let (_, argv) = submit(r#"afterok "1" "3" s.sh"#);
        assert_eq!(
            argv,
            ["--parsable", "--dependency=afterok:1,afterany:3", "s.sh"]
        );
        let (_, argv) = submit(r#"afterok "" "" s.sh"#);
        assert_eq!(argv, ["--parsable", "s.sh"]);
        // Waiting asks for the jobs still in the queue; an empty answer ends the wait.
        let (_, calls) = testing::run_function(SYNTAX.wait_function, "squeue", ("", 0), r#""7 8""#);
        assert_eq!(calls, [["-h", "-j", "7,8", "-t", "PD,R,CG,S,CF"]]);
    }

    /// Every source of an array limit is worded by [`LimitQuery`]: found, not set, or the
    /// documented default because the cluster could not be asked.
    #[test]
    fn limit_sources() {
        let query = |out: &'static [&'static str]| LimitQuery {
            command: ("echo", out),
            ..LIMIT
        };
        let found = query(&["MaxArraySize = 7"]).ask(&OnceLock::new()).unwrap();
        assert_eq!(found.tasks, 7);
        assert_eq!(
            found.source,
            "the cluster's `MaxArraySize` (`echo \"MaxArraySize = 7\"`)"
        );
        let none = query(&["Foo = 1"]).ask(&OnceLock::new()).unwrap();
        assert_eq!(none.tasks, DEFAULT_MAX_ARRAY_SIZE);
        assert_eq!(
            none.source,
            "the documented default `MaxArraySize` of slurm (`echo \"Foo = 1\"` has none)"
        );
        let fallback = LIMIT.fallback("cannot run `scontrol`");
        assert_eq!(fallback.tasks, DEFAULT_MAX_ARRAY_SIZE);
        assert_eq!(
            fallback.source,
            "the documented default `MaxArraySize` of slurm (the cluster could not be asked: cannot run `scontrol`)"
        );
    }

    #[test]
    fn max_array_size() {
        assert_eq!(
            parse_max_array_size("Foo = 1\nMaxArraySize            = 11\n"),
            Some(11)
        );
    }
}
