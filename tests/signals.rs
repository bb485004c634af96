//! Signals, generators and `cancel` never hang; a killed runner never leaves a job running
//! while the next one starts it again (issue #11, §2 and §3).

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::harness::{Test, attempts};

/// Generous: these bound a hang, they do not measure speed.
const LIMIT: Duration = Duration::from_secs(60);

/// Whether a process is alive (zombies count as dead: PID 1 here may not reap orphans).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().unwrap_or("").split_whitespace().next() != Some("Z"))
        .unwrap_or(false)
}

/// Live members of process group `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let rest: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        if rest[0] != "Z" && rest[2].parse::<u32>() == Ok(pgid) {
            out.push(pid);
        }
    }
    out
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + LIMIT;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for `child` to exit within [`LIMIT`]; kills it and fails the test otherwise.
fn wait_exit(child: &mut Child, what: &str) -> Option<i32> {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, sig: Signal) {
    kill(Pid::from_raw(i32::try_from(child.id()).unwrap()), sig).unwrap();
}

fn read_pid(t: &Test, file: &str) -> u32 {
    t.read(file).trim().parse().unwrap()
}

/// A generator that records its group (its shell's pid) and a background child, then hangs.
const HANGING_GENERATOR: &str =
    "echo $$ > gen.pid; sleep 300 & echo $! > child.pid; touch gen.ready; wait";

fn assert_generator_group_gone(t: &Test) {
    let pgid = read_pid(t, "gen.pid");
    let child = read_pid(t, "child.pid");
    let deadline = Instant::now() + LIMIT;
    while !group_members(pgid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "generator group {pgid} survived: {:?}",
            group_members(pgid)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(child), "the generator's child {child} survived");
}

/// Stage `a` (one job), then stage `b` whose generator hangs after writing `gen.ready`.
fn dependent_generator_workflow() -> Test {
    Test::new().manifest(&format!(
        r#"
[workflow]
name = "w"
[stages.a]
jobs = [1]
run = "true"
[stages.b]
needs = ["a"]
generate = "{HANGING_GENERATOR}"
run = "true"
"#
    ))
}

/// A dependent stage's generator runs inside the runner; a signal then ends the run with 130,
/// stops the generator's whole group and records what ran.
fn signal_during_dependent_generator(sig: Signal) {
    let t = dependent_generator_workflow();
    let mut runner = t.command(&["run"]).stderr(Stdio::piped()).spawn().unwrap();
    wait_for(&t.path().join("gen.ready"));
    signal(&runner, sig);
    let code = wait_exit(&mut runner, "the runner");
    let mut err = String::new();
    std::io::Read::read_to_string(runner.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(code, Some(130), "{err}");
    assert_generator_group_gone(&t);
    assert!(!err.contains("generator failed"), "{err}");
    // Stage `a` finished before and is recorded; the summary says interrupted.
    assert_eq!(
        attempts(&t, "w", "a")[&0],
        vec![(1, "succeeded".to_owned())]
    );
    let summary = crate::harness::summary(&t, "w");
    assert_eq!(summary["verdict"], "interrupted");
}

#[test]
fn sigint_during_a_dependent_generator() {
    signal_during_dependent_generator(Signal::SIGINT);
}

#[test]
fn sigterm_during_a_dependent_generator() {
    signal_during_dependent_generator(Signal::SIGTERM);
}

/// Generators of stages that need nothing run before the runner starts (while validating).
fn signal_during_first_generator(args: &[&str], sig: Signal) {
    let t = Test::new().manifest(&format!(
        "[workflow]\nname = 'w'\n[stages.a]\ngenerate = '{HANGING_GENERATOR}'\nrun = 'true'\n"
    ));
    let mut p = t.command(args).stderr(Stdio::piped()).spawn().unwrap();
    wait_for(&t.path().join("gen.ready"));
    signal(&p, sig);
    let code = wait_exit(&mut p, "poolparty");
    let mut err = String::new();
    std::io::Read::read_to_string(p.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("interrupted by signal"), "{err}");
    assert_generator_group_gone(&t);
}

#[test]
fn sigint_during_validate_generator() {
    signal_during_first_generator(&["validate"], Signal::SIGINT);
}

#[test]
fn sigterm_during_run_planning_generator() {
    signal_during_first_generator(&["run"], Signal::SIGTERM);
}

#[test]
fn hanging_generator_hits_its_time_limit() {
    let t = Test::new().manifest(
        "[workflow]\nname = 'w'\n[stages.a]\ngenerate = 'echo [1]; echo working >&2; sleep 300'\ngenerate_time = '1s'\nrun = 'true'\n",
    );
    let mut p = t
        .command(&["validate"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let code = wait_exit(&mut p, "validate");
    let mut err = String::new();
    std::io::Read::read_to_string(p.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("stopped after running for 1s"), "{err}");
    assert!(err.contains("generate_time"), "{err}");
    assert!(err.contains("working"), "stderr tail shown: {err}");
}

#[test]
fn invalid_generate_time_is_refused() {
    Test::new()
        .manifest("[workflow]\nname = 'w'\n[stages.a]\ngenerate = 'echo [1]'\ngenerate_time = 'soon'\nrun = 'true'\n")
        .run(&["validate"])
        .code(2)
        .stderr_has("soon");
}

#[test]
fn generator_with_a_background_child_finishes() {
    let t = Test::new().manifest(
        "[workflow]\nname = 'w'\n[stages.a]\ngenerate = 'sleep 300 & echo $! > child.pid; echo [1, 2]'\nrun = 'true'\n",
    );
    let mut p = t.command(&["run"]).stderr(Stdio::piped()).spawn().unwrap();
    let code = wait_exit(&mut p, "run");
    assert_eq!(code, Some(0));
    assert!(
        !alive(read_pid(&t, "child.pid")),
        "the pipe holder was stopped"
    );
    assert_eq!(attempts(&t, "w", "a").len(), 2);
}

#[test]
fn cancel_during_a_generator_returns() {
    let t = dependent_generator_workflow();
    let mut runner = t.command(&["run", "-q"]).spawn().unwrap();
    wait_for(&t.path().join("gen.ready"));
    let mut cancel = t
        .command(&["cancel"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let code = wait_exit(&mut cancel, "cancel");
    let mut err = String::new();
    std::io::Read::read_to_string(cancel.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("stopped"), "{err}");
    assert_eq!(wait_exit(&mut runner, "the runner"), Some(130));
    assert_generator_group_gone(&t);
}

#[test]
fn signal_while_jobs_run_still_exits_130() {
    let t = Test::new().manifest(
        "[workflow]\nname = 'w'\n[stages.a]\njobs = [1]\nrun = 'echo $$ > job.pid; touch ready; sleep 300'\n",
    );
    let mut runner = t.command(&["run", "-q"]).spawn().unwrap();
    wait_for(&t.path().join("ready"));
    signal(&runner, Signal::SIGTERM);
    assert_eq!(wait_exit(&mut runner, "the runner"), Some(130));
    assert!(group_members(read_pid(&t, "job.pid")).is_empty());
    assert_eq!(
        attempts(&t, "w", "a")[&0],
        vec![(1, "interrupted".to_owned())]
    );
}

/// Counts the lines of `file` (below the test folder) that start with `word`, per job id.
fn stamps(t: &Test, file: &str, word: &str) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    if let Ok(text) = std::fs::read_to_string(t.path().join(file)) {
        for l in text.lines() {
            let mut it = l.split_whitespace();
            if it.next() == Some(word) {
                *m.entry(it.next().unwrap().to_owned()).or_default() += 1;
            }
        }
    }
    m
}

/// The job: holds a lock on its own file for as long as anything of it runs (`flock` keeps
/// the lock through its children), so a second copy started while the first still runs finds
/// it taken and says so. The job's shell is the group leader and `flock` and `sleep` are its
/// children: a killed runner's death signal reaches only the shell, the rest must be found and
/// stopped by whoever comes next.
const GUARDED_JOB: &str = "flock -n locks/$POOLPARTY_JOB_ID sh -c 'echo start $POOLPARTY_JOB_ID >> stamps; sleep 1; echo end $POOLPARTY_JOB_ID >> stamps' || echo overlap $POOLPARTY_JOB_ID >> overlaps";

/// Issue #11 §2: SIGKILL the runner while local jobs run, then rerun at once: every job starts
/// once per attempt, never two copies at the same time, and the jobs the killed runner left are
/// recorded as interrupted.
#[test]
fn kill_then_rerun_never_runs_a_job_twice_at_once() {
    let t = Test::new()
        .manifest(&format!(
            "[workflow]\nname = 'w'\n[stages.a]\njobs = {}\nmax_parallel = 4\nrun = \"{GUARDED_JOB}\"\n",
            crate::harness::numbers(20)
        ))
        .file("locks/.keep", "");
    let mut runner = t.command(&["run", "-q"]).spawn().unwrap();
    // Kill it while the second batch of four runs.
    let deadline = Instant::now() + LIMIT;
    while stamps(&t, "stamps", "start").len() < 6 {
        assert!(Instant::now() < deadline, "jobs never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(&runner, Signal::SIGKILL);
    runner.wait().unwrap();
    let mut rerun = t
        .command(&["run", "-q"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let code = wait_exit(&mut rerun, "the rerun");
    let mut err = String::new();
    std::io::Read::read_to_string(rerun.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("its runner was killed"), "{err}");
    assert!(
        !t.path().join("overlaps").exists(),
        "two copies of a job ran at once: {}",
        t.read("overlaps")
    );
    // Every job: at most one start per attempt (a copy killed early may not have written its
    // stamp yet); the attempts the killed runner left are recorded as interrupted.
    let starts = stamps(&t, "stamps", "start");
    let ends = stamps(&t, "stamps", "end");
    let ledger = crate::harness::read_lines(&t.state("w").join("a/ledger.jsonl"));
    let mut interrupted = 0;
    for (id, n) in &starts {
        let kinds: Vec<(u64, String)> = ledger
            .iter()
            .filter(|r| r["id"] == id.as_str())
            .map(|r| {
                (
                    r["attempt"].as_u64().unwrap(),
                    r["outcome"]["kind"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let once = vec![(1, "succeeded".to_owned())];
        let twice = vec![(1, "interrupted".to_owned()), (2, "succeeded".to_owned())];
        if kinds == twice {
            interrupted += 1;
        } else {
            assert_eq!(kinds, once, "job {id}");
        }
        assert!(
            *n <= kinds.len(),
            "job {id}: {n} starts, attempts {kinds:?}"
        );
        // An interrupted first copy may have finished its work after its shell was killed
        // (before the rerun stopped its children): at most one end per start.
        assert!(
            (1..=*n).contains(&ends[id]),
            "job {id}: {n} starts, {} ends",
            ends[id]
        );
    }
    assert_eq!(starts.len(), 20);
    assert!(interrupted >= 1, "the kill interrupted some job");
    assert!(!t.state("w").join(".live.jsonl").exists());
}

/// Starts a run of 4 long jobs (2 at once) whose shell leaves a child behind when killed, and
/// SIGKILLs the runner once both run. Returns the children's pids.
fn killed_runner_with_orphans(t: &Test) -> Vec<u32> {
    let mut runner = t.command(&["run", "-q"]).spawn().unwrap();
    for i in 0..2 {
        wait_for(&t.path().join(format!("ready{i}")));
    }
    signal(&runner, Signal::SIGKILL);
    runner.wait().unwrap();
    (0..2).map(|i| read_pid(t, &format!("child{i}"))).collect()
}

const ORPHAN_JOBS: &str = "[workflow]\nname = 'w'\n[stages.a]\njobs = [0, 1, 2, 3]\nmax_parallel = 2\nrun = 'sleep 300 & echo $! > child{{job}}; touch ready{{job}}; wait'\n";

#[test]
fn kill_then_status_tells_and_stops_what_was_left() {
    let t = Test::new().manifest(ORPHAN_JOBS);
    let children = killed_runner_with_orphans(&t);
    let ran = t.run(&["status"]);
    ran.code(130)
        .stderr_has("ended without recording the outcome of 2 local jobs (its runner was killed)")
        .stdout_has("interrupted");
    assert!(!ran.stdout.contains("in progress"), "{}", ran.stdout);
    for c in children {
        assert!(!alive(c), "job child {c} survived status");
    }
    let got = attempts(&t, "w", "a");
    assert_eq!(got[&0], vec![(1, "interrupted".to_owned())]);
    assert_eq!(got[&1], vec![(1, "interrupted".to_owned())]);
    // Said once: the record is gone.
    let again = t.run(&["status"]);
    assert!(
        !again.stderr.contains("runner was killed"),
        "{}",
        again.stderr
    );
}

#[test]
fn kill_then_cancel_stops_what_was_left() {
    let t = Test::new().manifest(ORPHAN_JOBS);
    let children = killed_runner_with_orphans(&t);
    t.run(&["cancel"])
        .code(0)
        .stderr_has("its runner was killed")
        .stderr_has("recorded them as interrupted");
    for c in children {
        assert!(!alive(c), "job child {c} survived cancel");
    }
}

/// The jobs die with a SIGKILLed runner (its watchdog stops their groups) even if nothing
/// runs poolparty again; the next `status` then records them.
#[test]
fn killed_runner_takes_its_jobs_along() {
    let t = Test::new().manifest(ORPHAN_JOBS);
    let children = killed_runner_with_orphans(&t);
    let deadline = Instant::now() + LIMIT;
    while children.iter().any(|&c| alive(c)) {
        assert!(
            Instant::now() < deadline,
            "jobs outlived their runner: {children:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    t.run(&["status"])
        .code(130)
        .stderr_has("ended without recording the outcome of 2 local jobs");
}
