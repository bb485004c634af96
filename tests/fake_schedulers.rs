//! PBS Pro / OpenPBS and LSF, neither of which can be installed here, against the fake
//! commands in `tests/fakes` (`qsub`/`qstat`/`qdel`/`qmgr`, `bsub`/`bjobs`/`bkill`/`bparams`).
//! The fakes replay the formats of the PBS and LSF references and really run each array's
//! tasks in the background, so `poolparty run` goes end to end: scripts rendered from the stock
//! templates, submitted, polled, outcomes and results collected. These prove poolparty speaks
//! the documented formats; they are not a live cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::{Ran, Test, assert_each_succeeded_once, attempts, read_lines};

/// One fake scheduler.
struct Sched {
    /// The backend's name.
    name: &'static str,
    /// Its fake commands' folder under `tests/fakes`.
    fakes: &'static str,
    /// The fake's array limit variable.
    limit_var: &'static str,
    /// The submit command (counted in the call log).
    submit: &'static str,
    /// What the scheduler says when it refuses an array over its limit.
    too_large: &'static str,
    /// The array task variable.
    index_var: &'static str,
}

const PBS: Sched = Sched {
    name: "pbs",
    fakes: "pbs",
    limit_var: "FAKE_PBS_MAX_ARRAY_SIZE",
    submit: "qsub",
    too_large: "Array job exceeds server or queue size limit",
    index_var: "PBS_ARRAY_INDEX",
};

const LSF: Sched = Sched {
    name: "lsf",
    fakes: "lsf",
    limit_var: "FAKE_LSF_MAX_JOB_ARRAY_SIZE",
    submit: "bsub",
    too_large: "Job array index too large. Job not submitted.",
    index_var: "LSB_JOBINDEX",
};

fn fakes_dir(s: &Sched) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fakes")
        .join(s.fakes)
}

/// A test folder whose `poolparty` finds the fake commands first on its `PATH`, with the fake's
/// state in `<dir>/sched` and its call log in `<dir>/calls.log`.
fn test(s: &Sched) -> Test {
    let t = Test::new();
    let path = format!(
        "{}:{}",
        fakes_dir(s).display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let state = t.path().join("sched").display().to_string();
    let calls = t.path().join("calls.log").display().to_string();
    t.env("PATH", &path)
        .env("FAKE_SCHED_DIR", &state)
        .env("FAKE_CALLS", &calls)
}

/// A manifest header: workflow `name` on the scheduler, polling fast.
fn header(s: &Sched, name: &str, defaults: &str) -> String {
    format!(
        "[workflow]\nname = \"{name}\"\n[defaults]\nbackend = \"{}\"\npoll_interval = \"1s\"\npoll_max = \"1s\"\nstatus_interval = \"1s\"\nlost_grace = \"2s\"\n{defaults}\n",
        s.name
    )
}

/// The scheduler commands `poolparty` ran, by name.
fn calls(t: &Test) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in std::fs::read_to_string(t.path().join("calls.log"))
        .unwrap_or_default()
        .lines()
    {
        *m.entry(l.split_whitespace().next().unwrap_or("").to_owned())
            .or_default() += 1;
    }
    m
}

fn submissions(t: &Test, wf: &str, stage: &str) -> Vec<Value> {
    read_lines(&t.state(wf).join(stage).join("submissions.jsonl"))
}

/// Runs `poolparty run` to its end (the fakes run tasks within seconds).
fn run(t: &Test) -> Ran {
    t.run(&["run"])
}

/// Every job of a two-stage workflow runs once through the fake and succeeds: outcomes and
/// results come back, arrays respect the limit the scheduler reports (chunks of 3) and the
/// throttle, a one-job stage is a valid one-task array, and tasks run in the stage's folder
/// with the scheduler's task index set.
fn run_completes(s: &Sched) {
    let wf = format!("{}ok", s.name);
    let t = test(s)
        .env(s.limit_var, "3")
        // PBS's default: no job history, so an array that ended is `Unknown Job Id`.
        .env("FAKE_PBS_HISTORY", "0")
        .manifest(&format!(
            "{}[stages.a]\njobs = [0, 1, 2, 3, 4]\nmax_parallel = 2\n\
             run = 'echo \"{{{{job}}}} ${idx} $(pwd)\" >> {{{{workflow.dir}}}}/ran.txt; echo $(( {{{{job}}}} * 10 )) > $POOLPARTY_RESULT'\n\
             [stages.b]\nneeds = [\"a\"]\njobs = [\"x\"]\nrun = 'printf one > $POOLPARTY_RESULT'\n",
            header(s, &wf, ""),
            idx = s.index_var,
        ));
    let r = run(&t);
    r.code(0).stderr_has("every job succeeded");
    assert_each_succeeded_once(&t, &wf, "a", 5);
    assert_each_succeeded_once(&t, &wf, "b", 1);
    assert_eq!(
        t.run(&["results", "--stage", "a"]).stdout,
        "[0, 10, 20, 30, 40]\n"
    );
    assert_eq!(t.run(&["results", "--stage", "b"]).stdout, "[\"one\"]\n");
    // Each job ran once, in the workflow's folder (PBS starts jobs in $HOME: the script cds),
    // as array task 1, 2, 3 of its array.
    let dir = t.path().canonicalize().unwrap();
    let mut ran: Vec<String> = t.read("ran.txt").lines().map(str::to_owned).collect();
    ran.sort();
    let want: Vec<String> = [(0, 1), (1, 2), (2, 3), (3, 1), (4, 2)]
        .iter()
        .map(|(job, task)| format!("{job} {task} {}", dir.display()))
        .collect();
    assert_eq!(ran, want);
    // Two arrays of at most 3 tasks for `a` (the limit the scheduler reported), one for `b`.
    let subs = submissions(&t, &wf, "a");
    let sizes: Vec<usize> = subs
        .iter()
        .map(|s| s["tasks"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [3, 2], "{subs:?}");
    assert!(subs.iter().all(|x| x["scheduler"] == s.name), "{subs:?}");
    assert_eq!(calls(&t)[s.submit], 3, "{:?}", calls(&t));
    let script = std::fs::read_to_string(subs[0]["script"].as_str().unwrap()).unwrap();
    match s.name {
        "pbs" => assert!(script.contains("#PBS -J 1-3%2\n"), "{script}"),
        _ => assert!(script.contains("[1-3]%2\"\n"), "{script}"),
    }
}

#[test]
fn pbs_run_completes_with_outcomes_and_results() {
    run_completes(&PBS);
}

#[test]
fn lsf_run_completes_with_outcomes_and_results() {
    run_completes(&LSF);
}

/// A job that exits non-zero is recorded as failed with its code; the run exits 1 naming it.
fn failing_job(s: &Sched) {
    let wf = format!("{}fail", s.name);
    let t = test(s).manifest(&format!(
        "{}[stages.a]\njobs = [0, 1, 2]\nrun = '[ {{{{job}}}} != 1 ] || exit 3'\n",
        header(s, &wf, "")
    ));
    let r = run(&t);
    r.code(1).stderr_has("exit code 3");
    let got = attempts(&t, &wf, "a");
    assert_eq!(got[&0], [(1, "succeeded".to_owned())]);
    assert_eq!(got[&1], [(1, "failed".to_owned())]);
    assert_eq!(got[&2], [(1, "succeeded".to_owned())]);
    let ledger = read_lines(&t.state(&wf).join("a/ledger.jsonl"));
    let failed = ledger.iter().find(|r| r["index"] == 1).unwrap();
    assert_eq!(failed["outcome"]["code"], 3, "{failed}");
}

#[test]
fn pbs_failing_job_is_recorded_with_its_code() {
    failing_job(&PBS);
}

#[test]
fn lsf_failing_job_is_recorded_with_its_code() {
    failing_job(&LSF);
}

/// An array task that vanishes without running (PBS: ended, no outcome file; LSF: forgotten)
/// is lost after the grace period, resubmitted, and then succeeds.
fn lost_task(s: &Sched) {
    let wf = format!("{}lost", s.name);
    let t = test(s).env("FAKE_LOSE", "2").manifest(&format!(
        "{}[stages.a]\njobs = [0, 1, 2]\nrun = 'echo {{{{job}}}} > $POOLPARTY_RESULT'\n",
        header(s, &wf, "")
    ));
    let r = run(&t);
    r.code(0).stderr_has("every job succeeded");
    let got = attempts(&t, &wf, "a");
    assert_eq!(
        got[&1],
        [(1, "lost".to_owned()), (2, "succeeded".to_owned())],
        "{}",
        r.stderr
    );
    assert_eq!(got[&0], [(1, "succeeded".to_owned())]);
    assert_eq!(got[&2], [(1, "succeeded".to_owned())]);
    assert_eq!(t.run(&["results"]).stdout, "[0, 1, 2]\n");
    assert_eq!(submissions(&t, &wf, "a").len(), 2);
}

#[test]
fn pbs_lost_task_is_lost_then_resubmitted() {
    lost_task(&PBS);
}

#[test]
fn lsf_lost_task_is_lost_then_resubmitted() {
    lost_task(&LSF);
}

/// When the limit cannot be read, the documented default is used; a server whose limit is
/// lower refuses the array, and the run stops with a backend error (exit 3) quoting it.
fn rejected_over_limit(s: &Sched) {
    let wf = format!("{}big", s.name);
    let t = test(s)
        .env(s.limit_var, "2")
        .env("FAKE_LIMIT_UNREADABLE", "1")
        .manifest(&format!(
            "{}[stages.a]\njobs = [0, 1, 2]\nrun = 'true'\n",
            header(s, &wf, "")
        ));
    let r = run(&t);
    r.code(3)
        .stderr_has("refused the array script")
        .stderr_has(s.too_large);
    // Nothing ran and nothing counts as done.
    assert!(
        !t.state(&wf).join("a/ledger.jsonl").exists()
            || attempts(&t, &wf, "a")
                .values()
                .all(|a| a.iter().all(|(_, k)| k != "succeeded"))
    );
}

#[test]
fn pbs_array_over_the_limit_is_refused() {
    rejected_over_limit(&PBS);
}

#[test]
fn lsf_array_over_the_limit_is_refused() {
    rejected_over_limit(&LSF);
}

/// A two-stage workflow with limits and a throttle: `a` is an array, `b` (needing `a`) a
/// driver job.
fn bundle_manifest(s: &Sched, wf: &str) -> String {
    format!(
        "{}[stages.a]\njobs = [1, 2, 3]\nrun = 'echo $(( {{{{job}}}} * 2 )) > $POOLPARTY_RESULT'\n\
         [stages.b]\nneeds = [\"a\"]\njobs = [\"x\"]\nrun = 'cat \"$POOLPARTY_NEEDS_A_RESULTS\" > $POOLPARTY_RESULT'\n",
        header(
            s,
            wf,
            "time = \"1h30m\"\nmemory = \"4G\"\ncpus = 2\nmax_parallel = 2\nqueue = \"short\"\nproject = \"p1\"",
        )
    )
}

/// `plan --out` writes the array script, the driver and the submission lines of `submit.sh`
/// (dependencies in the scheduler's syntax), with no scheduler command on the machine: the
/// array limit is the documented default.
fn plan_out(s: &Sched) {
    let wf = format!("{}plan", s.name);
    let t = Test::new()
        .env("PATH", "/usr/bin:/bin")
        .manifest(&bundle_manifest(s, &wf));
    t.run(&["plan", "--out", "bundle"]).code(0);
    let dir = t.path().display().to_string();
    let exe = env!("CARGO_BIN_EXE_poolparty");
    let clean = |text: String| text.replace(&dir, "[TMP]").replace(exe, "[EXE]");
    let submit = t.read("bundle/submit.sh");
    let stages = &submit[submit.find("\n# stage `").expect("stage lines")..];
    // The array script without the job wrapper shared by every scheduler (`{{{wrapper}}}`).
    let script = t.read("bundle/a/array-1.sh");
    let header = &script[..script.find("set -u\n").expect("the wrapper")];
    let tail = &script[script.find("# Each task reads").expect("the task lines")..];
    let driver_sh = t.read("bundle/b/driver.sh");
    let driver: Vec<&str> = driver_sh
        .lines()
        .filter(|l| l.starts_with('#') || l.starts_with("cd "))
        .collect();
    // How it submits with dependencies.
    let start = submit
        .find(&format!("pp_submit_{}() {{", s.name))
        .expect("the submit function");
    let function = &submit[start..start + submit[start..].find("\n}\n").unwrap() + 3];
    insta::assert_snapshot!(
        format!("{}_plan_out", s.name),
        clean(format!(
            "===== a/array-1.sh\n{header}[wrapper]\n{tail}===== b/driver.sh (header)\n{}\n===== submit.sh\n{function}{stages}",
            driver.join("\n"),
        ))
    );
}

#[test]
fn pbs_plan_out_scripts() {
    plan_out(&PBS);
}

#[test]
fn lsf_plan_out_scripts() {
    plan_out(&LSF);
}

/// `bash submit.sh` of a `plan --out` bundle on the fake: the array runs, the driver waits on
/// it through the scheduler's dependency, then runs `b`, whose result reads `a`'s.
fn bundle_runs(s: &Sched) {
    let wf = format!("{}bundle", s.name);
    let t = test(s).manifest(&bundle_manifest(s, &wf));
    t.run(&["plan", "--out", "bundle"]).code(0);
    // The test's environment (the fakes on PATH), as `poolparty` gets it.
    let cmd = t.command(&[]);
    let out = std::process::Command::new("bash")
        .arg(t.path().join("bundle/submit.sh"))
        .current_dir(t.path())
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "submit.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let r = t.run(&["results", "--stage", "b", "-q"]);
        if r.code == Some(0) && !r.stdout.trim().is_empty() {
            // `b` printed `a`'s results file: one result per line.
            assert_eq!(r.stdout, "[\"2\\n4\\n6\\n\"]\n");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "b has no result after 120 s: {}\n{}\ncalls: {:?}",
            r.stdout,
            r.stderr,
            std::fs::read_to_string(t.path().join("calls.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(t.run(&["results", "--stage", "a"]).stdout, "[2, 4, 6]\n");
    // The driver was submitted with a dependency on the array, in the scheduler's syntax.
    let log = std::fs::read_to_string(t.path().join("calls.log")).unwrap();
    let dep = log
        .lines()
        .find(|l| l.contains("depend=") || l.contains("-w"))
        .unwrap_or_else(|| panic!("no dependency in the calls:\n{log}"));
    match s.name {
        "pbs" => assert!(dep.contains("-W depend=afterany:1"), "{dep}"),
        _ => assert!(dep.contains("-w ended(1"), "{dep}"),
    }
    assert_driver_waits_for_the_array(s, &t, &wf);
}

/// The driver of `b` waits for the whole array of `a` to end, however its jobs ended:
/// `-W depend=afterany:<id>` with the array's id as qsub printed it, `<seq>[].<server>`
/// (qsub.1B `-W depend=`; a dependency on an array is on all of it), or `-w ended(<id>)`
/// (bsub -w; "Job array dependencies": a condition on an array's id holds once every element
/// meets it). Not `afterok` / `done()`: the driver applies `on_failure` itself, as on Slurm
/// (`--dependency=afterany:`) and Grid Engine (`-hold_jid`). No other submission waits.
fn assert_driver_waits_for_the_array(s: &Sched, t: &Test, wf: &str) {
    let log = std::fs::read_to_string(t.path().join("calls.log")).unwrap();
    let array = submissions(t, wf, "a")[0]["job_id"]
        .as_str()
        .expect("a's array id")
        .to_owned();
    let waiting: Vec<&str> = log
        .lines()
        .filter(|l| l.split_whitespace().next() == Some(s.submit))
        .filter(|l| l.contains("depend=") || l.contains(" -w "))
        .collect();
    let driver = match s.name {
        "pbs" => format!("qsub -W depend=afterany:{array} b/driver.sh"),
        _ => format!("bsub -w ended({array})"),
    };
    assert_eq!(waiting, [driver.as_str()], "{log}");
}

/// A need with a failed job: `b`'s driver still runs (its dependency is on the array's end,
/// not its success), finds the failure, says `b` does not run and ends; nothing is left
/// queued. With `afterok` / `done()` PBS would delete the driver (qsub.1B: a dependency that
/// cannot be met deletes the job) and LSF would keep it pending forever, and no log would say
/// why `b` never ran.
fn failed_need(s: &Sched) {
    let wf = format!("{}failneed", s.name);
    let t = test(s).manifest(&format!(
        "{}[stages.a]\njobs = [{{ id = \"x\" }}, {{ id = \"bad\" }}]\nrun = '[ {{{{job.id}}}} != bad ]'\n\
         [stages.b]\nneeds = [\"a\"]\njobs = [1]\nrun = 'echo b >> {{{{workflow.dir}}}}/b.txt'\n",
        header(s, &wf, "")
    ));
    t.run(&["plan", "--out", "bundle"]).code(0);
    let cmd = t.command(&[]);
    let out = std::process::Command::new("bash")
        .arg(t.path().join("bundle/submit.sh"))
        .current_dir(t.path())
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "submit.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The fake writes each job's output to `sched/jobs/<seq>.<index>.log`.
    let jobs = t.path().join("sched/jobs");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let texts: Vec<String> = std::fs::read_dir(&jobs)
            .map(|d| {
                d.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                    .collect()
            })
            .unwrap_or_default();
        let said = texts.iter().any(|x| x.contains("`b` does not run"));
        let open = texts
            .iter()
            .any(|x| x.contains("\"state\": \"running\"") || x.contains("\"state\": \"queued\""));
        if said && !open {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the driver did not end saying `b` does not run: {texts:?}\ncalls: {}",
            std::fs::read_to_string(t.path().join("calls.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(!t.path().join("b.txt").exists(), "b ran");
    t.run(&["status"]).code(1).stdout_has("a job 1 `bad`");
    assert_driver_waits_for_the_array(s, &t, &wf);
}

#[test]
fn pbs_failed_need_ends_its_driver() {
    failed_need(&PBS);
}

#[test]
fn lsf_failed_need_ends_its_driver() {
    failed_need(&LSF);
}

#[test]
fn pbs_bundle_runs_with_dependencies() {
    bundle_runs(&PBS);
}

#[test]
fn lsf_bundle_runs_with_dependencies() {
    bundle_runs(&LSF);
}

/// Ctrl-C while an array runs: one cancel call (`qdel` / `bkill`) for the stage's arrays; the
/// fake kills the running tasks; every job is recorded as interrupted and the run exits 130.
fn interrupted(s: &Sched, cancel: &str) {
    let wf = format!("{}int", s.name);
    let t = test(s).manifest(&format!(
        "{}[stages.a]\njobs = [0, 1]\nrun = 'touch {{{{workflow.dir}}}}/started.{{{{job}}}}; sleep 300'\n",
        header(s, &wf, "")
    ));
    let mut child = t
        .command(&["run"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("poolparty starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !(t.path().join("started.0").exists() && t.path().join("started.1").exists()) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its jobs started"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the jobs did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let r: Ran = child.wait_with_output().expect("the run ends").into();
    r.code(130);
    let got = attempts(&t, &wf, "a");
    for i in 0..2 {
        assert_eq!(got[&i], [(1, "interrupted".to_owned())], "job {i}");
    }
    assert_eq!(calls(&t)[cancel], 1, "{:?}", calls(&t));
    // The fake ended both tasks (killed by the cancel, not left running).
    let sched = t.path().join("sched/jobs");
    let job: Value = std::fs::read_dir(&sched)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
        .expect("the fake's job");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut job = job;
    while job["tasks"]
        .as_object()
        .unwrap()
        .values()
        .any(|t| t["state"] != "ended")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "tasks still running: {job}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
        let p = sched.join(format!("{}.json", job["seq"]));
        job = serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
    }
}

#[test]
fn pbs_interrupt_cancels_with_qdel() {
    interrupted(&PBS, "qdel");
}

#[test]
fn lsf_interrupt_cancels_with_bkill() {
    interrupted(&LSF, "bkill");
}

/// A task killed at its time limit (PBS `Exit_status -29`, LSF `TERM_RUNLIMIT`) is recorded as
/// timed out, not lost.
fn timed_out(s: &Sched, time: &str) {
    let wf = format!("{}time", s.name);
    let t = test(s)
        // An LSF run-limit minute lasts 2 s here.
        .env("FAKE_LSF_MINUTE", "2")
        .manifest(&format!(
            "{}[stages.a]\njobs = [0, 1]\nrun = '[ {{{{job}}}} = 0 ] || sleep 60'\n",
            header(s, &wf, &format!("time = \"{time}\""))
        ));
    let r = run(&t);
    r.code(1);
    let got = attempts(&t, &wf, "a");
    assert_eq!(got[&0], [(1, "succeeded".to_owned())], "{}", r.stderr);
    assert_eq!(got[&1], [(1, "timed_out".to_owned())], "{}", r.stderr);
}

#[test]
fn pbs_walltime_exceeded_is_timed_out() {
    timed_out(&PBS, "2s");
}

#[test]
fn lsf_run_limit_reached_is_timed_out() {
    timed_out(&LSF, "1m");
}

/// `run --detach` submits the bundle (an array and a driver job waiting on it); `poolparty
/// cancel` cancels both through the scheduler (`qdel` / `bkill`), and the jobs are recorded as
/// interrupted.
fn cancel_detached(s: &Sched, cancel: &str) {
    let wf = format!("{}detach", s.name);
    let t = test(s).manifest(&format!(
        "{}[stages.a]\njobs = [0, 1, 2]\nrun = 'echo start >> {{{{workflow.dir}}}}/started.{{{{job}}}}; sleep 300'\n\
         [stages.b]\nneeds = [\"a\"]\ngenerate = \"echo '[1, 2]'\"\nrun = 'echo b >> {{{{workflow.dir}}}}/b.txt'\n",
        header(s, &wf, "")
    ));
    t.run(&["run", "--detach"]).code(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !(0..3).all(|i| t.path().join(format!("started.{i}")).exists()) {
        assert!(
            std::time::Instant::now() < deadline,
            "a's jobs did not start: {:?}",
            calls(&t)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    t.run(&["cancel"]).code(0).stderr_has("cancelled");
    assert!(calls(&t)[cancel] >= 1, "{:?}", calls(&t));
    // The fake ends every job: the array's tasks killed, the driver never started.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let open: Vec<String> = std::fs::read_dir(t.path().join("sched/jobs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .filter_map(|p| std::fs::read_to_string(&p).ok())
            .filter(|text| {
                text.contains("\"state\": \"running\"") || text.contains("\"state\": \"queued\"")
            })
            .collect();
        if open.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running: {open:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(!t.path().join("b.txt").exists(), "b ran after the cancel");
    t.run(&["status"]).code(130);
    let got = attempts(&t, &wf, "a");
    for i in 0..3 {
        assert_eq!(got[&i], [(1, "interrupted".to_owned())], "job {i}");
    }
    t.run(&["cancel"]).code(0).stderr_has("nothing to cancel");
}

#[test]
fn pbs_cancel_of_a_detached_run() {
    cancel_detached(&PBS, "qdel");
}

#[test]
fn lsf_cancel_of_a_detached_run() {
    cancel_detached(&LSF, "bkill");
}
