//! The local backend end to end: outcomes, aggregation, logs, retries, signals.

use crate::harness::Test;

#[test]
fn all_succeed_exit_0_and_results_in_order() {
    let t = Test::new().manifest(
        r#"
[workflow]
name = "w"
[defaults]
max_parallel = 3
[stages.a]
jobs = [3, 1, 2, 0]
run = "sleep 0.{{job}}; echo {{job}} > $POOLPARTY_RESULT"
"#,
    );
    t.run(&["run"]).code(0).stderr_has("every job succeeded");
    // Jobs finish in reverse order of their sleep, but results keep job order.
    let r = t.run(&["results"]);
    r.code(0);
    assert_eq!(r.stdout, "[3, 1, 2, 0]\n");
}

#[test]
fn failure_names_job_code_and_log() {
    let t = Test::new().manifest(
        r#"
[workflow]
name = "w"
[stages.a]
jobs = [{id = "good"}, {id = "bad"}]
run = "if [ {{job.id}} = bad ]; then echo boom >&2; exit 7; fi"
"#,
    );
    let r = t.run(&["run"]);
    r.code(1)
        .stderr_has("a job 1 `bad`: exit code 7")
        .stderr_has("/.poolparty/w/a/logs/bad.err")
        .stderr_has("│ boom");
    let summary: serde_json::Value =
        serde_json::from_str(&t.read(".poolparty/w/summary.json")).unwrap();
    assert_eq!(summary["verdict"], "jobs_failed");
    assert_eq!(summary["stages"][0]["failed"][0]["exit_code"], 7);
}

#[test]
fn quiet_job_creates_no_log_files() {
    let t = Test::new().manifest("[workflow]\nname='w'\n[stages.a]\njobs=[1,2]\nrun='true'\n");
    t.run(&["run"]).code(0);
    let logs: Vec<_> = std::fs::read_dir(t.state("w").join("a/logs"))
        .unwrap()
        .collect();
    assert!(logs.is_empty(), "{logs:?}");
}

#[test]
fn retries_rerun_failed_jobs_and_record_every_attempt() {
    let t = Test::new().manifest(
        r#"
[workflow]
name = "w"
[stages.a]
jobs = [1]
retries = 2
run = "echo x >> tries; [ $(wc -l < tries) -ge 3 ]"
"#,
    );
    t.run(&["run"]).code(0);
    let ledger = t.read(".poolparty/w/a/ledger.jsonl");
    let attempts: Vec<u64> = ledger
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["attempt"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(attempts, [1, 2, 3]);
}

#[test]
fn rerun_reuses_successes_and_reruns_changed_jobs() {
    let t = Test::new()
        .manifest("[workflow]\nname='w'\n[stages.a]\njobs=[1,2,3]\nrun='echo {{job}} >> ran'\n");
    t.run(&["run"]).code(0);
    t.run(&["run"]).code(0);
    assert_eq!(t.read("ran").lines().count(), 3, "second run reran jobs");
    let t =
        t.manifest("[workflow]\nname='w'\n[stages.a]\njobs=[1,2,4]\nrun='echo {{job}} >> ran'\n");
    t.run(&["run"]).code(0);
    // Only the new job ran.
    assert_eq!(t.read("ran").lines().last(), Some("4"));
    assert_eq!(t.read("ran").lines().count(), 4);
    t.run(&["run", "--force"]).code(0);
    assert_eq!(t.read("ran").lines().count(), 7);
}

#[test]
fn shell_injection_is_inert() {
    let t = Test::new().manifest(
        r#"
[workflow]
name = "w"
[stages.a]
jobs = [{s = "$(touch pwned); `touch pwned2`; ' \" \n ; rm -rf /"}]
run = "printf '%s' {{job.s}} > $POOLPARTY_RESULT"
"#,
    );
    t.run(&["run"]).code(0);
    assert!(!t.path().join("pwned").exists());
    assert!(!t.path().join("pwned2").exists());
    let r = t.run(&["results"]);
    assert_eq!(
        r.stdout,
        "[\"$(touch pwned); `touch pwned2`; ' \\\" \\n ; rm -rf /\"]\n"
    );
}

#[test]
fn job_env_carries_exact_json() {
    let t = Test::new().manifest(
        "[workflow]\nname='w'\n[stages.a]\njobs=[{x=0.1, y='q\"'}]\nrun=['sh','-c','printf %s \"$POOLPARTY_JOB\" > \"$POOLPARTY_RESULT\"']\n",
    );
    t.run(&["run"]).code(0);
    assert_eq!(
        t.run(&["results"]).stdout,
        "[{\"x\":0.1,\"y\":\"q\\\"\"}]\n"
    );
}

#[test]
fn timeout_stops_the_job() {
    let t = Test::new()
        .manifest("[workflow]\nname='w'\n[stages.a]\njobs=[1]\ntime='1s'\nrun='sleep 30'\n");
    let start = std::time::Instant::now();
    t.run(&["run"]).code(1).stderr_has("timed out");
    assert!(start.elapsed().as_secs() < 20);
}

/// State of a process from /proc (None when gone); zombies count as dead since PID 1 here
/// may not reap orphans.
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
        .map(|s| s.rsplit(')').next().unwrap_or("").split_whitespace().next() != Some("Z"))
        .unwrap_or(false)
}

#[test]
fn sigint_stops_jobs_records_interrupted_and_exits_130() {
    let t = Test::new().manifest(
        r#"
[workflow]
name = "w"
[defaults]
max_parallel = 2
[stages.a]
jobs = [0, 1, 2, 3]
run = "sleep 300 & echo $! > child{{job}}; touch ready{{job}}; wait"
"#,
    );
    let mut child = t
        .command(&["run"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !(t.path().join("ready0").exists() && t.path().join("ready1").exists()) {
        assert!(std::time::Instant::now() < deadline, "jobs never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    for n in ["child0", "child1"] {
        assert!(!alive(&t.read(n)), "{n} survived");
    }
    let ledger = t.read(".poolparty/w/a/ledger.jsonl");
    let kinds: Vec<String> = ledger
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["outcome"]["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "interrupted").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "not_run").count(),
        2,
        "{kinds:?}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&t.read(".poolparty/w/summary.json")).unwrap();
    assert_eq!(summary["verdict"], "interrupted");
}

#[test]
fn second_runner_is_refused_naming_the_holder() {
    let t = Test::new()
        .manifest("[workflow]\nname='w'\n[stages.a]\njobs=[1]\nrun='touch ready; sleep 30'\n");
    let mut first = t.command(&["run", "-q"]).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !t.path().join("ready").exists() {
        assert!(std::time::Instant::now() < deadline, "job never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    t.run(&["run"])
        .code(2)
        .stderr_has("in use by another poolparty run")
        .stderr_has(&format!("pid {}", first.id()));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(first.wait().unwrap().code(), Some(130));
}

#[test]
fn cancel_stops_a_live_runner() {
    let t = Test::new()
        .manifest("[workflow]\nname='w'\n[stages.a]\njobs=[1]\nrun='touch ready; sleep 300'\n");
    let mut runner = t.command(&["run", "-q"]).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !t.path().join("ready").exists() {
        assert!(std::time::Instant::now() < deadline, "job never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    t.run(&["status"]).stdout_has("is in progress");
    t.run(&["cancel"]).code(0).stderr_has("stopped");
    assert_eq!(runner.wait().unwrap().code(), Some(130));
    t.run(&["status"]).code(130).stdout_has("interrupted");
    t.run(&["cancel"]).code(0).stderr_has("nothing to cancel");
}

/// A stage starts as soon as its needs are done, not at the runner's next tick (it used to
/// wait up to 1 s). The gaps between a chain of stages are taken from the ledgers' recorded
/// start and end times; the smallest of three must be far below the old 1 s tick, a bound loose
/// enough for a loaded machine (`bench/transition.sh` measures the gap itself).
#[test]
fn dependent_stage_starts_without_waiting_for_a_tick() {
    let t = Test::new().manifest(
        r#"
[workflow]
name = "w"
[stages.a]
jobs = [1]
run = "true"
[stages.b]
needs = ["a"]
jobs = [1]
run = "true"
[stages.c]
needs = ["b"]
jobs = [1]
run = "true"
[stages.d]
needs = ["c"]
jobs = [1]
run = "true"
"#,
    );
    t.run(&["run"]).code(0);
    let times = |stage: &str| {
        let r = &crate::harness::read_lines(&t.state("w").join(stage).join("ledger.jsonl"))[0];
        (r["start"].as_f64().unwrap(), r["end"].as_f64().unwrap())
    };
    let gaps: Vec<f64> = [("a", "b"), ("b", "c"), ("c", "d")]
        .iter()
        .map(|(up, down)| times(down).0 - times(up).1)
        .collect();
    let best = gaps.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(best < 0.5, "gaps between stages (s): {gaps:?}");
}

fn executable(t: &Test, path: &str, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    let p = t.path().join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// An argv program is looked up on `PATH` once per worker (#14): each job still gets the
/// program's name, not the path it was found at, as `argv[0]`.
#[test]
fn an_argv_program_keeps_its_name_as_argv0() {
    let t = Test::new().manifest(
        r#"
[workflow]
name = "w"
[stages.a]
jobs = [{id = "x"}, {id = "y"}]
run = ["sh", "-c", 'tr "\000" " " < /proc/$$/cmdline']
max_parallel = 1
"#,
    );
    t.run(&["run"]).code(0);
    for id in ["x", "y"] {
        let out = t.read(&format!(".poolparty/w/a/logs/{id}.out"));
        assert!(out.starts_with("sh -c tr "), "{id}: {out:?}");
    }
}

/// A program found on `PATH` that is gone by the next job is looked up again (#14).
#[test]
fn a_program_gone_from_where_it_was_found_is_looked_up_again() {
    let t = Test::new().manifest(
        r#"
[workflow]
name = "w"
[stages.a]
jobs = [{id = "first"}, {id = "second"}]
run = ["tool"]
max_parallel = 1
"#,
    );
    executable(&t, "bin1/tool", "#!/bin/sh\nrm \"$0\"\necho one\n");
    executable(&t, "bin2/tool", "#!/bin/sh\necho two\n");
    let path = format!(
        "{}:{}:/usr/bin:/bin",
        t.path().join("bin1").display(),
        t.path().join("bin2").display()
    );
    let t = t.env("PATH", &path);
    t.run(&["run"]).code(0);
    assert_eq!(t.read(".poolparty/w/a/logs/first.out"), "one\n");
    assert_eq!(t.read(".poolparty/w/a/logs/second.out"), "two\n");
}

/// A stage's `env` that sets `PATH` decides where its programs are found (#14).
#[test]
fn a_stage_path_finds_the_program() {
    let t = Test::new();
    let bin = t.path().join("bin");
    let t = t.manifest(&format!(
        r#"
[workflow]
name = "w"
[stages.a]
jobs = [{{id = "x"}}]
run = ["only-here"]
env = {{ PATH = "{}:/usr/bin:/bin" }}
"#,
        bin.display()
    ));
    executable(&t, "bin/only-here", "#!/bin/sh\necho found\n");
    t.run(&["run"]).code(0);
    assert_eq!(t.read(".poolparty/w/a/logs/x.out"), "found\n");
}

/// A `$POOLPARTY_RESULT` file left in the results folder by an earlier run is not taken for a
/// new attempt's result: the local backend lists the folder once when the stage starts and
/// removes such a file before its job runs (#14 item 6: no `unlink` for the other jobs).
#[test]
fn a_result_file_left_by_an_earlier_run_is_not_a_new_result() {
    let t = Test::new()
        .manifest(
            "[workflow]\nname='w'\n[stages.a]\njobs=[{id='a'},{id='b'},{id='c'}]\nrun='[ {{job.id}} = a ] && echo 2 > $POOLPARTY_RESULT; true'\n",
        )
        .file(".poolparty/w/a/results/a", "1\n")
        .file(".poolparty/w/a/results/b", "1\n");
    t.run(&["run", "-q"]).code(0);
    let r = t.run(&["results"]);
    r.code(1)
        .stderr_has("job 1 `b`: succeeded but wrote no result");
    assert_eq!(r.stdout, "[2, null, null]\n");
    assert!(!t.state("w").join("a/results/b").exists());
}

/// A retry never sees the result file of its job's earlier attempt, even one too large to be
/// read (which stays in place as the failed attempt's result).
#[test]
fn a_retry_does_not_inherit_the_result_file_of_its_failed_attempt() {
    let t = Test::new().manifest(
        "[workflow]\nname='w'\n[stages.a]\njobs=[{id='a'}]\nretries=1\nresult_max_bytes=10\nrun='if [ -e tried ]; then exit 0; fi; touch tried; seq 100 > $POOLPARTY_RESULT; exit 3'\n",
    );
    t.run(&["run", "-q"]).code(0);
    let r = t.run(&["results"]);
    r.code(1)
        .stderr_has("job 0 `a`: succeeded but wrote no result");
    assert_eq!(r.stdout, "[null]\n");
}
