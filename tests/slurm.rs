//! The Slurm backend against a real single-node Slurm cluster (`tests/clusters/slurm-up.sh`,
//! run once per test binary with `MaxArraySize=11`). The cluster must come up: if it does not,
//! every test here fails (they never skip). The tests share the cluster (and one of them stops
//! its controller), so they run one at a time.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Ran, Test};
use crate::harness::{
    assert_each_ran_once, assert_each_succeeded_once, attempts, clusters_dir, copy_tree,
    has_submission, large_values, largest_script, numbers, read_json, read_lines, summary,
    task_file,
};

/// `MaxArraySize` of the test cluster: arrays have at most 11 tasks.
const MAX_ARRAY_SIZE: usize = 11;

/// Fast polling for every manifest here.
const POLL: &str = "poll_interval = \"1s\"\npoll_max = \"2s\"\n";

static UP: OnceLock<Result<String, String>> = OnceLock::new();

/// Exclusive use of the cluster for one test. If the test panics, Slurm jobs of its workflow
/// that are still queued or running are cancelled, so they do not slow down the next tests.
struct Cluster {
    workflow: String,
    _serial: MutexGuard<'static, ()>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let Ok(out) = std::process::Command::new("squeue")
            .args(["-h", "-o", "%F|%j"])
            .output()
        else {
            return;
        };
        let prefix = format!("pp-{}-", self.workflow);
        let ids: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('|'))
            .filter(|(_, name)| name.starts_with(&prefix))
            .map(|(id, _)| id.to_owned())
            .collect();
        if !ids.is_empty() {
            let _ = std::process::Command::new("scancel").args(&ids).status();
        }
    }
}

/// Brings the cluster up (once per test binary; a failure fails the test) and takes the lock
/// that serializes the Slurm tests. `workflow` names the test's workflow (for cleanup).
fn cluster(workflow: &str) -> Cluster {
    let serial = crate::harness::hold(&crate::harness::SLURM);
    let up = UP.get_or_init(|| {
        let out = std::process::Command::new("bash")
            .arg(clusters_dir().join("slurm-up.sh"))
            .env("SLURM_MAX_ARRAY_SIZE", MAX_ARRAY_SIZE.to_string())
            .output();
        match out {
            Ok(o) => {
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                );
                if o.status.success() {
                    Ok(text)
                } else {
                    Err(format!("{} ({})", text, o.status))
                }
            }
            Err(e) => Err(format!("cannot run bash: {e}")),
        }
    });
    if let Err(out) = up {
        panic!("tests/clusters/slurm-up.sh failed, the Slurm cluster is not usable:\n{out}");
    }
    Cluster {
        workflow: workflow.to_owned(),
        _serial: serial,
    }
}

/// A manifest header: workflow `name` on Slurm with fast polling, plus `defaults`.
fn header(name: &str, defaults: &str) -> String {
    format!("[workflow]\nname = \"{name}\"\n[defaults]\nbackend = \"slurm\"\n{POLL}{defaults}\n")
}

/// A `poolparty` process started in the background, its output going to files.
struct Running {
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Running {
    fn start(t: &Test, args: &[&str], tag: &str) -> Self {
        let out = t.path().join(format!("{tag}.stdout"));
        let err = t.path().join(format!("{tag}.stderr"));
        let child = t
            .command(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("poolparty starts");
        Self { child, out, err }
    }

    fn output(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            std::fs::read_to_string(&self.out).unwrap_or_default(),
            std::fs::read_to_string(&self.err).unwrap_or_default()
        )
    }

    /// Waits (up to `secs`) until `ready` holds; panics if the run ends first or time is up.
    fn wait_until(&mut self, what: &str, secs: u64, ready: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !ready() {
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!("the run ended ({st}) before {what}\n{}", self.output());
            }
            assert!(
                Instant::now() < deadline,
                "no {what} after {secs} s\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (up to `secs`) for the run to end.
    fn wait(mut self, secs: u64) -> Ran {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "the run did not end within {secs} s\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        Ran {
            code: status.code(),
            stdout: std::fs::read_to_string(&self.out).unwrap(),
            stderr: std::fs::read_to_string(&self.err).unwrap(),
        }
    }

    /// SIGKILL, as an OOM killer or a lost login session would.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The submissions of a stage (`submissions.jsonl`), once at least one is recorded.
fn submissions(t: &Test, wf: &str, stage: &str) -> Vec<Value> {
    read_lines(&t.state(wf).join(stage).join("submissions.jsonl"))
}

/// Wrapper scripts for the Slurm commands that log every call (`<epoch> <command> <args>`) to
/// `calls.log` and then run the real command from /usr/bin; put `<dir>/bin` first on PATH.
fn call_logger(t: &Test) -> (String, PathBuf) {
    let bin = t.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = t.path().join("calls.log");
    for cmd in ["sbatch", "squeue", "scancel", "scontrol"] {
        let script = format!(
            "#!/bin/sh\nprintf '%s {cmd} %s\\n' \"$(date +%s.%N)\" \"$*\" >> '{}'\nexec /usr/bin/{cmd} \"$@\"\n",
            log.display()
        );
        let p = bin.join(cmd);
        std::fs::write(&p, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (path, log)
}

/// Each job writes a small JSON result; the same manifest on the local backend gives
/// byte-identical `results` (several formats, with and without the jobs). Scheduler calls,
/// logged by wrappers on PATH: one `scontrol show config` per run, one `sbatch` per recorded
/// array (stage `a`'s 10 jobs fit one), no `scancel`, and one `squeue` per poll of each stage.
#[test]
fn results_match_the_local_backend_with_one_squeue_per_poll() {
    let _c = cluster("slok");
    let n = 10;
    let manifest = format!(
        "{}[stages.a]\njobs = {}\nrun = \"printf '{{\\\"n\\\": %s, \\\"sq\\\": %s, \\\"s\\\": \\\"x%s\\\"}}' {{{{job}}}} $(( {{{{job}}}} * {{{{job}}}} )) {{{{job}}}} > $POOLPARTY_RESULT\"\n\
         [stages.b]\nfor_each = \"a\"\nresult = \"stdout\"\nrun = \"echo {{{{job.result}}}}\"\n",
        header("slok", ""),
        numbers(n)
    );
    let t = Test::new().manifest(&manifest);
    let (path, log) = call_logger(&t);
    let t = t.env("PATH", &path);
    let local = Test::new().manifest(&manifest);

    let started = Instant::now();
    t.run(&["run"]).code(0).stderr_has("every job succeeded");
    let wall = started.elapsed();
    local
        .run(&["run", "--backend", "local"])
        .code(0)
        .stderr_has("every job succeeded");

    assert_each_succeeded_once(&t, "slok", "a", n);
    assert_each_succeeded_once(&t, "slok", "b", n);
    let s = summary(&t, "slok");
    assert_eq!(s["verdict"], "succeeded");
    assert_eq!(s["stages"][0]["backend"], "slurm");
    assert_eq!(s["stages"][0]["stats"]["succeeded"], n);

    for args in [
        &["results", "--stage", "a"][..],
        &["results", "--stage", "b"],
        &["results", "--stage", "a", "--format", "jsonl", "--with-job"],
        &["results", "--stage", "b", "--format", "csv", "--with-job"],
    ] {
        let (cluster, local) = (t.run(args), local.run(args));
        cluster.code(0);
        local.code(0);
        assert_eq!(cluster.stdout, local.stdout, "{args:?}");
    }
    // Stage `b` got each upstream result through its job and echoed it back.
    let a: Vec<Value> = serde_json::from_str(&t.run(&["results", "--stage", "a"]).stdout).unwrap();
    let b: Vec<Value> = serde_json::from_str(&t.run(&["results", "--stage", "b"]).stdout).unwrap();
    assert_eq!(a, b);
    for (i, r) in a.iter().enumerate() {
        let i = i as u64;
        assert_eq!(
            r,
            &serde_json::json!({"n": i, "sq": i * i, "s": format!("x{i}")})
        );
    }

    // Scheduler calls, from the logging wrappers.
    let calls = std::fs::read_to_string(&log).unwrap();
    let count = |cmd: &str| {
        calls
            .lines()
            .filter(|l| l.split(' ').nth(1) == Some(cmd))
            .count()
    };
    let squeue: Vec<f64> = calls
        .lines()
        .filter(|l| l.split(' ').nth(1) == Some("squeue"))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    eprintln!(
        "slurm calls for {n}+{n} jobs in {:.1}s: sbatch {}, squeue {}, scontrol {}, scancel {}",
        wall.as_secs_f64(),
        count("sbatch"),
        count("squeue"),
        count("scontrol"),
        count("scancel")
    );
    // One configuration read per run, no cancel; stage `a` is one array.
    assert_eq!(count("scontrol"), 1, "{calls}");
    assert_eq!(count("scancel"), 0, "{calls}");
    let a_arrays = submissions(&t, "slok", "a");
    assert_eq!(a_arrays.len(), 1, "{a_arrays:?}");
    let arrays = a_arrays.len() + submissions(&t, "slok", "b").len();
    assert_eq!(count("sbatch"), arrays, "{calls}");
    // One squeue per poll of each stage: the two stages poll independently, so per stage the
    // calls are a poll interval (1 s) apart; together at most two per second.
    assert!(!squeue.is_empty());
    for w in squeue.windows(3) {
        assert!(
            w[2] - w[0] >= 0.5,
            "three squeue calls within {:.3}s: not one per poll\n{calls}",
            w[2] - w[0]
        );
    }
    assert!(
        squeue.len() as f64 <= 2.0 * (wall.as_secs_f64() + 1.0),
        "{} squeue calls in {:.1}s\n{calls}",
        squeue.len(),
        wall.as_secs_f64()
    );
}

/// Failed jobs, and only those, are named with their exit code and log; the verdict says so.
#[test]
fn failing_jobs_are_named_with_code_and_log() {
    let _c = cluster("slfail");
    let t = Test::new().manifest(&format!(
        "{}[stages.a]\njobs = [{{id = \"ok1\", code = 0}}, {{id = \"bad3\", code = 3}}, {{id = \"ok2\", code = 0}}, {{id = \"bad7\", code = 7}}, {{id = \"ok3\", code = 0}}]\n\
         run = \"echo doing {{{{job.id}}}}; if [ {{{{job.code}}}} != 0 ]; then echo boom-{{{{job.id}}}} >&2; fi; exit {{{{job.code}}}}\"\n",
        header("slfail", "")
    ));
    let r = t.run(&["run"]);
    r.code(1)
        .stderr_has("a job 1 `bad3`: exit code 3")
        .stderr_has("a job 3 `bad7`: exit code 7")
        .stderr_has("/.poolparty/slfail/a/logs/bad3.err")
        .stderr_has("/.poolparty/slfail/a/logs/bad7.err")
        .stderr_has("boom-bad7");
    for ok in ["ok1", "ok2", "ok3"] {
        assert!(
            !r.stderr.contains(&format!("`{ok}`")),
            "{ok} succeeded but is named:\n{}",
            r.stderr
        );
    }
    let s = summary(&t, "slfail");
    assert_eq!(s["verdict"], "jobs_failed");
    let mut failed: Vec<(String, i64)> = s["stages"][0]["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap().to_owned(),
                f["exit_code"].as_i64().unwrap(),
            )
        })
        .collect();
    failed.sort();
    assert_eq!(failed, [("bad3".to_owned(), 3), ("bad7".to_owned(), 7)]);
    assert_eq!(s["stages"][0]["stats"]["succeeded"], 3);
    let got = attempts(&t, "slfail", "a");
    assert_eq!(got[&1], [(1, "failed".to_owned())]);
    assert_eq!(got[&3], [(1, "failed".to_owned())]);
    for i in [0, 2, 4] {
        assert_eq!(got[&i], [(1, "succeeded".to_owned())]);
    }
    assert_eq!(t.read(".poolparty/slfail/a/logs/bad3.err"), "boom-bad3\n");
    assert_eq!(t.read(".poolparty/slfail/a/logs/ok2.out"), "doing ok2\n");
}

/// 30 jobs with MaxArraySize 11 go in at least three arrays of at most 11 tasks, and every job
/// runs exactly once.
#[test]
fn arrays_are_chunked_below_max_array_size() {
    let _c = cluster("slchunk");
    let n = 30;
    let t = Test::new().manifest(&format!(
        "{}[stages.a]\njobs = {}\nresult = \"none\"\nrun = \"echo {{{{job}}}} >> {{{{workflow.dir}}}}/ran\"\n",
        header("slchunk", ""),
        numbers(n)
    ));
    t.run(&["run"]).code(0).stderr_has("every job succeeded");
    assert_each_ran_once(&t, "ran", n);
    assert_each_succeeded_once(&t, "slchunk", "a", n);
    let subs = submissions(&t, "slchunk", "a");
    assert!(subs.len() >= 3, "{} arrays: {subs:?}", subs.len());
    let mut indices = Vec::new();
    let mut job_ids = BTreeSet::new();
    for s in &subs {
        let tasks = s["tasks"].as_array().unwrap();
        assert!(
            !tasks.is_empty() && tasks.len() <= MAX_ARRAY_SIZE,
            "array of {} tasks",
            tasks.len()
        );
        assert!(job_ids.insert(s["job_id"].as_str().unwrap().to_owned()));
        for task in tasks {
            for j in task.as_array().unwrap() {
                indices.push(j["index"].as_u64().unwrap());
            }
        }
    }
    indices.sort_unstable();
    assert_eq!(indices, (0..n).collect::<Vec<_>>());
    let scripts = std::fs::read_dir(t.state("slchunk").join("a/scripts"))
        .unwrap()
        .count();
    assert_eq!(scripts, subs.len());
}

/// `max_parallel = 3` bounds the jobs running at once, measured by the jobs themselves.
#[test]
fn max_parallel_throttles_running_tasks() {
    let _c = cluster("slthrottle");
    let n = 12;
    let t = Test::new()
        .manifest(&format!(
            "{}[stages.a]\njobs = {}\nresult = \"none\"\nrun = \"sh {{{{workflow.dir}}}}/count.sh {{{{job}}}}\"\n",
            header("slthrottle", "max_parallel = 3"),
            numbers(n)
        ))
        .file("cur", "0\n")
        .file(
            "count.sh",
            r#"d=$POOLPARTY_WORKFLOW_DIR
flock "$d/lock" sh -c 'n=$(( $(cat "$1/cur") + 1 )); echo $n > "$1/cur"; echo $n >> "$1/seen"' _ "$d"
sleep 1
flock "$d/lock" sh -c 'echo $(( $(cat "$1/cur") - 1 )) > "$1/cur"; echo "$2" >> "$1/ran"' _ "$d" "$1"
"#,
        );
    t.run(&["run"]).code(0).stderr_has("every job succeeded");
    assert_each_ran_once(&t, "ran", n);
    assert_each_succeeded_once(&t, "slthrottle", "a", n);
    let seen: Vec<u32> = t.read("seen").lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(seen.len() as u64, n);
    let max = seen.iter().copied().max().unwrap();
    assert!(max <= 3, "{max} jobs ran at once: {seen:?}");
    // The counter really measures concurrency (16 CPUs, so the throttle is what limits).
    assert!(max >= 2, "never more than one job at once: {seen:?}");
    assert_eq!(t.read("cur").trim(), "0");
    for s in submissions(&t, "slthrottle", "a") {
        let script = std::fs::read_to_string(s["script"].as_str().unwrap()).unwrap();
        let tasks = s["tasks"].as_array().unwrap().len();
        assert!(
            script.contains(&format!("#SBATCH --array=0-{}%3\n", tasks - 1)),
            "{script}"
        );
    }
}

/// `bundle = 4`: 10 jobs run in 3 array tasks (4, 4, 2), each job with its own outcome, log
/// and result. The task's time limit covers its four jobs (`time` limits one job).
#[test]
fn bundles_put_several_jobs_in_one_task() {
    let _c = cluster("slbundle");
    let n = 10;
    let t = Test::new().manifest(&format!(
        "{}[stages.a]\njobs = {}\nrun = \"echo out-{{{{job}}}}; echo err-{{{{job}}}} >&2; echo {{{{job}}}} > $POOLPARTY_RESULT\"\n",
        header("slbundle", "bundle = 4\ntime = \"1m\""),
        numbers(n)
    ));
    t.run(&["run"]).code(0).stderr_has("every job succeeded");
    assert_each_succeeded_once(&t, "slbundle", "a", n);
    assert_eq!(t.run(&["results"]).stdout, format!("{}\n", numbers(n)));

    let scripts: Vec<PathBuf> = std::fs::read_dir(t.state("slbundle").join("a/scripts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(scripts.len(), 1, "{scripts:?}");
    let script = std::fs::read_to_string(&scripts[0]).unwrap();
    assert!(script.contains("#SBATCH --array=0-2\n"), "{script}");
    assert!(script.contains("#SBATCH --time=0-00:04:00\n"), "{script}");
    let runs_per_task: Vec<usize> = task_file(
        &scripts[0]
            .parent()
            .unwrap()
            .with_file_name("tasks")
            .join(scripts[0].file_name().unwrap())
            .with_extension("jobs"),
    )
    .iter()
    .map(Vec::len)
    .collect();
    assert_eq!(runs_per_task, [4, 4, 2], "{script}");
    let subs = submissions(&t, "slbundle", "a");
    assert_eq!(subs.len(), 1);
    let sizes: Vec<usize> = subs[0]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [4, 4, 2]);

    // Every job has its own logs.
    for r in read_lines(&t.state("slbundle").join("a/ledger.jsonl")) {
        let (id, i) = (r["id"].as_str().unwrap(), r["index"].as_u64().unwrap());
        assert_eq!(
            t.read(&format!(".poolparty/slbundle/a/logs/{id}.out")),
            format!("out-{i}\n")
        );
        assert_eq!(
            t.read(&format!(".poolparty/slbundle/a/logs/{id}.err")),
            format!("err-{i}\n")
        );
    }
}

/// A task cancelled from outside (`scancel`) is lost, then resubmitted and succeeds.
#[test]
fn task_cancelled_from_outside_is_lost_then_resubmitted() {
    let _c = cluster("slcancel");
    let t = Test::new().manifest(&format!(
        "{}[stages.a]\njobs = [0, 1, 2]\n\
         run = \"if [ {{{{job}}}} = 0 ] && [ $POOLPARTY_ATTEMPT = 1 ]; then touch {{{{workflow.dir}}}}/ready; sleep 300; fi; echo {{{{job}}}} > $POOLPARTY_RESULT\"\n",
        header("slcancel", "")
    ));
    let mut run = Running::start(&t, &["run"], "run");
    let ready = t.path().join("ready");
    run.wait_until("job 0 running", 60, || {
        ready.exists() && has_submission(&t, "slcancel", "a")
    });
    let subs = submissions(&t, "slcancel", "a");
    let job_id = subs[0]["job_id"].as_str().unwrap().to_owned();
    let task = subs[0]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .position(|t| t.as_array().unwrap().iter().any(|j| j["index"] == 0))
        .expect("job 0 submitted");
    let st = std::process::Command::new("scancel")
        .arg(format!("{job_id}_{task}"))
        .status()
        .unwrap();
    assert!(st.success(), "scancel {job_id}_{task}: {st}");

    let r = run.wait(180);
    r.code(0).stderr_has("every job succeeded");
    let got = attempts(&t, "slcancel", "a");
    assert_eq!(
        got[&0],
        [(1, "lost".to_owned()), (2, "succeeded".to_owned())],
        "{}",
        r.stderr
    );
    assert_eq!(got[&1], [(1, "succeeded".to_owned())]);
    assert_eq!(got[&2], [(1, "succeeded".to_owned())]);
    assert_eq!(t.run(&["results"]).stdout, "[0, 1, 2]\n");
    // The resubmission is a second array.
    assert_eq!(submissions(&t, "slcancel", "a").len(), 2);
    assert_eq!(summary(&t, "slcancel")["verdict"], "succeeded");
}

/// The runner is SIGKILLed while jobs run; a new `poolparty run` reattaches to the queued and
/// running tasks and collects what finished meanwhile: every job runs exactly once.
#[test]
fn killed_runner_is_restarted_and_every_job_runs_once() {
    let _c = cluster("slkill");
    let n = 10;
    let t = Test::new()
        .manifest(&format!(
            "{}[stages.a]\njobs = {}\n\
             run = \"touch {{{{workflow.dir}}}}/ready/{{{{job}}}}; sleep 2; echo {{{{job}}}} >> {{{{workflow.dir}}}}/ran; echo {{{{job}}}} > $POOLPARTY_RESULT\"\n",
            header("slkill", "max_parallel = 4"),
            numbers(n)
        ))
        .file("ready/.keep", "");
    let mut first = Running::start(&t, &["run"], "first");
    let ready = t.path().join("ready");
    run_until_a_job_started(&mut first, &t, &ready, "slkill");
    first.kill();

    let r = Running::start(&t, &["run"], "second").wait(240);
    r.code(0)
        .stderr_has("reattached to")
        .stderr_has("every job succeeded");
    assert_each_ran_once(&t, "ran", n);
    // Nothing was submitted again: the second run adopted the first run's array.
    let subs = submissions(&t, "slkill", "a");
    assert_eq!(subs.len(), 1, "{subs:?}");
    let got = attempts(&t, "slkill", "a");
    assert_eq!(got.len() as u64, n);
    for (i, a) in &got {
        let ok = a.iter().filter(|(_, k)| k == "succeeded").count();
        assert_eq!(ok, 1, "job {i}: {a:?}");
        assert!(a.iter().all(|(n, _)| *n == 1), "job {i}: {a:?}");
    }
    assert_eq!(t.run(&["results"]).stdout, format!("{}\n", numbers(n)));
}

fn run_until_a_job_started(run: &mut Running, t: &Test, ready: &Path, wf: &str) {
    run.wait_until("a running job", 60, || {
        std::fs::read_dir(ready).is_ok_and(|d| d.count() > 1) && has_submission(t, wf, "a")
    });
}

/// Starts the controller again when dropped (also when the test fails).
struct ControllerBack(bool);

impl ControllerBack {
    fn ctl(what: &str) {
        let out = std::process::Command::new("bash")
            .arg(clusters_dir().join("slurm-ctl.sh"))
            .arg(what)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "slurm-ctl.sh {what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for ControllerBack {
    fn drop(&mut self) {
        if !self.0 {
            let _ = std::process::Command::new("bash")
                .arg(clusters_dir().join("slurm-ctl.sh"))
                .arg("start-controller")
                .status();
        }
    }
}

/// slurmctld is down for 20 s while jobs run and wait; the run rides it out: exit 0, every job
/// exactly once.
#[test]
fn controller_outage_is_survived() {
    let _c = cluster("sloutage");
    let n = 20;
    let t = Test::new()
        .manifest(&format!(
            "{}[stages.a]\njobs = {}\n\
             run = \"touch {{{{workflow.dir}}}}/ready/{{{{job}}}}; sleep $(( {{{{job}}}} % 2 + 1 )); echo {{{{job}}}} >> {{{{workflow.dir}}}}/ran; echo {{{{job}}}} > $POOLPARTY_RESULT\"\n",
            header("sloutage", "max_parallel = 4"),
            numbers(n)
        ))
        .file("ready/.keep", "");
    let mut run = Running::start(&t, &["run"], "run");
    let ready = t.path().join("ready");
    run_until_a_job_started(&mut run, &t, &ready, "sloutage");

    let mut back = ControllerBack(false);
    ControllerBack::ctl("stop-controller");
    std::thread::sleep(Duration::from_secs(20));
    ControllerBack::ctl("start-controller");
    back.0 = true;

    let r = run.wait(300);
    r.code(0).stderr_has("every job succeeded");
    assert_each_ran_once(&t, "ran", n);
    let got = attempts(&t, "sloutage", "a");
    assert_eq!(got.len() as u64, n);
    for (i, a) in &got {
        assert_eq!(
            a.iter().filter(|(_, k)| k == "succeeded").count(),
            1,
            "job {i}: {a:?}\n{}",
            r.stderr
        );
    }
    assert_eq!(t.run(&["results"]).stdout, format!("{}\n", numbers(n)));
}

/// An array script sbatch refuses (unknown partition) is a backend error: exit 3, sbatch's
/// reason shown, nothing ran.
#[test]
fn refused_submission_is_a_backend_error() {
    let _c = cluster("slrefused");
    let t = Test::new().manifest(&format!(
        "{}[stages.a]\njobs = [1, 2]\nrun = \"echo {{{{job}}}} >> {{{{workflow.dir}}}}/ran\"\n",
        header("slrefused", "partition = \"nope\"")
    ));
    let r = t.run(&["run"]);
    r.code(3);
    assert!(
        r.stderr.to_lowercase().contains("invalid partition"),
        "stderr lacks the refusal:\n{}",
        r.stderr
    );
    assert!(!t.path().join("ran").exists());
    assert!(!has_submission(&t, "slrefused", "a"));
    let ledger = t.state("slrefused").join("a/ledger.jsonl");
    assert!(
        std::fs::read_to_string(&ledger)
            .unwrap_or_default()
            .trim()
            .is_empty(),
        "a job has an outcome"
    );
}

/// `examples/telescope`, unchanged, runs on Slurm with the same results as on the local
/// backend.
#[test]
fn telescope_example_runs_unchanged_on_slurm() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/telescope");
    assert!(
        example.join("poolparty.toml").is_file(),
        "examples/telescope is missing"
    );
    let _c = cluster("telescope");
    let (slurm, local) = (Test::new(), Test::new());
    for t in [&slurm, &local] {
        copy_tree(&example, &t.path().join("examples/telescope"));
    }
    slurm
        .run(&["run", "--backend", "slurm", "examples/telescope"])
        .code(0)
        .stderr_has("every job succeeded");
    local
        .run(&["run", "--backend", "local", "examples/telescope"])
        .code(0);
    let state = slurm.path().join("examples/telescope/.poolparty/telescope");
    let s = read_json(&state.join("summary.json"));
    assert_eq!(s["verdict"], "succeeded");
    for st in s["stages"].as_array().unwrap() {
        assert_eq!(st["backend"], "slurm", "{st}");
    }
    assert!(
        std::fs::read_dir(state.join("analyse/scripts"))
            .unwrap()
            .count()
            >= 1,
        "no array script"
    );
    let results = |t: &Test| {
        let r = t.run(&["results", "examples/telescope", "--stage", "analyse"]);
        r.code(0);
        r.stdout
    };
    let got = results(&slurm);
    let parsed: Vec<Value> = serde_json::from_str(&got).unwrap();
    assert_eq!(parsed.len(), 8, "{got}");
    assert_eq!(got, results(&local));
}

/// SIGINT stops the run (exit 130): every array of the stage is cancelled, so nothing is left
/// running or queued on the cluster, and every job is recorded as interrupted.
#[test]
fn interrupt_cancels_every_task_on_the_cluster() {
    let _c = cluster("slint");
    let n = 15;
    let t = Test::new()
        .manifest(&format!(
            "{}[stages.a]\njobs = {}\nrun = \"touch {{{{workflow.dir}}}}/ready/{{{{job}}}}; sleep 300\"\n",
            header("slint", ""),
            numbers(n)
        ))
        .file("ready/.keep", "");
    let mut run = Running::start(&t, &["run"], "run");
    let ready = t.path().join("ready");
    run_until_a_job_started(&mut run, &t, &ready, "slint");
    let st = std::process::Command::new("kill")
        .args(["-INT", &run.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let r = run.wait(60);
    r.code(130);
    let s = summary(&t, "slint");
    assert_eq!(s["verdict"], "interrupted");
    let got = attempts(&t, "slint", "a");
    assert_eq!(got.len() as u64, n);
    for (i, a) in &got {
        assert_eq!(a, &[(1, "interrupted".to_owned())], "job {i}");
    }
    // 15 jobs: two arrays, both cancelled.
    let ids: Vec<String> = submissions(&t, "slint", "a")
        .iter()
        .map(|s| s["job_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 2);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = std::process::Command::new("squeue")
            .args(["-h", "-t", "all", "-o", "%i|%T", "-j", &ids.join(",")])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let active: Vec<&str> = text
            .lines()
            .filter(|l| !l.ends_with("|CANCELLED") && !l.ends_with("|COMPLETED"))
            .collect();
        if out.status.success() && active.is_empty() {
            assert!(text.contains("|CANCELLED"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tasks still active 60 s after the interrupt:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `sbatch` failing with "Unable to contact slurm controller" (an unreachable controller) does
/// not end the run: the jobs stay queued and each poll tries again, without blocking.
#[test]
fn transient_sbatch_failures_are_retried_at_later_polls() {
    let _c = cluster("slflaky");
    let n = 4;
    let t = Test::new().manifest(&format!(
        "{}[stages.a]\njobs = {}\nrun = \"echo {{{{job}}}} >> {{{{workflow.dir}}}}/ran; echo {{{{job}}}} > $POOLPARTY_RESULT\"\n",
        header("slflaky", ""),
        numbers(n)
    ));
    let bin = t.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let counter = t.path().join("sbatch-calls");
    let sbatch = bin.join("sbatch");
    std::fs::write(
        &sbatch,
        format!(
            "#!/bin/sh\nc='{}'\nn=$(( $(cat \"$c\" 2>/dev/null || echo 0) + 1 ))\necho $n > \"$c\"\n\
             if [ $n -le 4 ]; then\n  echo 'sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)' >&2\n  exit 1\nfi\n\
             exec /usr/bin/sbatch \"$@\"\n",
            counter.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sbatch, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let t = t.env("PATH", &path);
    t.run(&["run"]).code(0).stderr_has("every job succeeded");
    assert_eq!(t.read("sbatch-calls").trim(), "5");
    assert_each_ran_once(&t, "ran", n);
    assert_each_succeeded_once(&t, "slflaky", "a", n);
    assert_eq!(submissions(&t, "slflaky", "a").len(), 1);
    // The scripts of the failed tries are gone.
    let scripts = std::fs::read_dir(t.state("slflaky").join("a/scripts"))
        .unwrap()
        .count();
    assert_eq!(scripts, 1);
}

/// `poolparty logs` (and `--follow`) of a Slurm job while it runs and after (issue #15).
#[test]
fn logs_of_a_job_while_it_runs_and_after() {
    let _c = cluster("sllogs");
    crate::commands::logs_during_and_after_a_run(&header("sllogs", ""), "sllogs");
}

/// The run report tells queue wait (the array's submission to the job's start) from run time
/// on a cluster: `submissions.jsonl` records when each array was submitted.
#[test]
fn report_tells_queue_wait_from_run_time() {
    let _c = cluster("slreport");
    let t = Test::new().manifest(&format!(
        "{}[stages.a]\njobs = [1, 2, 3, 4]\nrun = \"sleep 1\"\nresult = \"none\"\n",
        header("slreport", "max_parallel = 2")
    ));
    t.run(&["run", "--report", "r.html"]).code(0);
    for s in submissions(&t, "slreport", "a") {
        assert!(s["submitted"].as_f64().is_some(), "{s}");
    }
    let d = crate::report::embedded(&t.read("r.html"));
    let a = &d["stages"][0];
    assert_eq!(a["queue_known"], true);
    assert!(
        a["queue_wait"][3].as_f64().unwrap() >= 0.0,
        "{}",
        a["queue_wait"]
    );
    let tl = &a["timeline"];
    let (submit, start) = (
        tl["submit"].as_array().unwrap(),
        tl["start"].as_array().unwrap(),
    );
    assert_eq!(submit.len(), 4);
    for (q, s) in submit.iter().zip(start) {
        let (q, s) = (q.as_i64().unwrap(), s.as_i64().unwrap());
        assert!(q >= 0 && q <= s, "submit {q} after start {s}");
    }
    // Two at a time: the last two wait at least about one job's run time in the queue.
    let mut waits: Vec<i64> = submit
        .iter()
        .zip(start)
        .map(|(q, s)| s.as_i64().unwrap() - q.as_i64().unwrap())
        .collect();
    waits.sort_unstable();
    assert!(waits[3] >= 900, "{waits:?}");
    t.run(&["report", "--format", "text"])
        .code(0)
        .stdout_has("queue wait (submit to start): min ")
        .stdout_has("queued over time");
}

/// A `scancel` first on PATH that fails its first `failures` calls (all of them with
/// `u32::MAX`) like an unreachable controller, then runs the real one; counts its calls in
/// `scancel-calls`. Returns the PATH to use.
fn failing_scancel(t: &Test, failures: u32) -> String {
    let bin = t.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let counter = t.path().join("scancel-calls");
    let script = bin.join("scancel");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nc='{}'\nn=$(( $(cat \"$c\" 2>/dev/null || echo 0) + 1 ))\necho $n > \"$c\"\n\
             if [ $n -le {failures} ]; then\n  echo 'scancel: error: Kill job error: fake failure' >&2\n  exit 1\nfi\n\
             exec /usr/bin/scancel \"$@\"\n",
            counter.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Three jobs of 300 s on stage `a`; each touches `ready/<job>` when it starts.
fn sleepers(wf: &str) -> Test {
    Test::new()
        .manifest(&format!(
            "{}[stages.a]\njobs = [1, 2, 3]\nrun = \"touch {{{{workflow.dir}}}}/ready/{{{{job}}}}; sleep 300\"\n",
            header(wf, "")
        ))
        .file("ready/.keep", "")
}

fn interrupt(run: &Running) {
    let st = std::process::Command::new("kill")
        .args(["-INT", &run.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// States of the tasks of `ids` (`squeue -t all`).
fn task_states(ids: &[String]) -> String {
    let out = std::process::Command::new("squeue")
        .args(["-h", "-t", "all", "-o", "%i|%T", "-j", &ids.join(",")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `scancel` that fails twice is tried again: the third try cancels every task, and the
/// jobs are recorded as interrupted (exit 130).
#[test]
fn failed_scancel_is_retried_on_interrupt() {
    let wf = "slscretry";
    let _c = cluster(wf);
    let t = sleepers(wf);
    let path = failing_scancel(&t, 2);
    let t = t.env("PATH", &path);
    let mut run = Running::start(&t, &["run"], "run");
    run_until_a_job_started(&mut run, &t, &t.path().join("ready"), wf);
    interrupt(&run);
    let r = run.wait(60);
    r.code(130);
    assert_eq!(t.read("scancel-calls").trim(), "3");
    for (i, a) in &attempts(&t, wf, "a") {
        assert_eq!(a, &[(1, "interrupted".to_owned())], "job {i}");
    }
}

/// A `scancel` that keeps failing: the run does not pretend the jobs were interrupted. It
/// exits 3 naming the arrays that may still run and how to cancel them, records no outcome
/// for their jobs, and `poolparty cancel` later cancels them.
#[test]
fn scancel_that_keeps_failing_names_the_arrays_left_running() {
    let wf = "slscfail";
    let _c = cluster(wf);
    let t = sleepers(wf);
    let path = failing_scancel(&t, u32::MAX);
    let t = t.env("PATH", &path);
    let mut run = Running::start(&t, &["run"], "run");
    run_until_a_job_started(&mut run, &t, &t.path().join("ready"), wf);
    interrupt(&run);
    let r = run.wait(60);
    let ids: Vec<String> = submissions(&t, wf, "a")
        .iter()
        .map(|s| s["job_id"].as_str().unwrap().to_owned())
        .collect();
    r.code(3);
    // The diagnostic, without miette's line wrapping.
    let flat: Vec<&str> = r.stderr.split_whitespace().filter(|w| *w != "│").collect();
    let flat = flat.join(" ");
    for needle in [
        "cancelling failed",
        "1 array may still be running on the cluster",
        "fake failure (tried 4 times)",
        "cancel them with `poolparty cancel",
        &format!("slurm array ({})", ids[0]),
    ] {
        assert!(
            flat.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            r.stderr
        );
    }
    assert_eq!(t.read("scancel-calls").trim(), "4");
    // No job is recorded as interrupted: they still run.
    assert!(
        attempts(&t, wf, "a").is_empty(),
        "{:?}",
        attempts(&t, wf, "a")
    );
    assert!(
        task_states(&ids).contains("|RUNNING"),
        "{}",
        task_states(&ids)
    );

    // Once scancel works again, `poolparty cancel` finds and cancels them.
    let t = t.env("PATH", &std::env::var("PATH").unwrap_or_default());
    t.run(&["cancel"]).code(0).stderr_has("cancelled");
    let deadline = Instant::now() + Duration::from_secs(60);
    while task_states(&ids).contains("|RUNNING") {
        assert!(Instant::now() < deadline, "{}", task_states(&ids));
        std::thread::sleep(Duration::from_millis(200));
    }
    for (i, a) in &attempts(&t, wf, "a") {
        assert_eq!(a, &[(1, "interrupted".to_owned())], "job {i}");
    }
}

/// Issue #14: 45 jobs of 100 KB values each, 5 per task, in one array (4.5 MB of jobs, more
/// than Slurm's default `max_script_size` of 4 MB if the script held them). The script stays
/// small (its size does not depend on the jobs), and every value reaches its job's command
/// byte for byte, shell metacharacters included.
#[test]
fn large_values_run_from_a_script_of_bounded_size() {
    let _c = cluster("sllarge");
    let (jobs, values) = large_values(45, 100_000);
    let t = Test::new()
        .manifest(&format!(
            "{}[stages.a]\njobs_file = \"jobs.jsonl\"\nrun = \"printf '%s' {{{{job.v}}}} > $POOLPARTY_RESULT\"\n",
            header("sllarge", "bundle = 5")
        ))
        .file("jobs.jsonl", &jobs);
    t.run(&["run"]).code(0).stderr_has("every job succeeded");
    let state = t.state("sllarge");
    let script = largest_script(&state, "a");
    assert!(script < 8 * 1024, "an array script of {script} bytes");
    let got: Vec<String> = serde_json::from_str(&t.run(&["results"]).stdout).unwrap();
    assert_eq!(got.len(), values.len());
    for (i, (g, v)) in got.iter().zip(&values).enumerate() {
        assert!(g == v, "job {i}: the value did not arrive byte for byte");
    }
}

/// Issue #14: `bundle = "auto"`. With nothing recorded, `plan` says a first wave is measured;
/// the run submits 5 jobs one per task, then packs the other 35 into 10 tasks. Once durations
/// are recorded, `plan` (text and JSON) shows the packing, and a changed command runs in
/// packed tasks at once, with no wave.
#[test]
fn auto_bundling_packs_jobs_after_a_first_wave() {
    let _c = cluster("slauto");
    let n = 40;
    let stage = |cmd: &str| {
        format!(
            "{}[stages.a]\njobs = {}\nrun = \"{cmd} {{{{job}}}} > $POOLPARTY_RESULT\"\n",
            header("slauto", "bundle = \"auto\"\ntask_time = \"5m\""),
            numbers(n)
        )
    };
    let t = Test::new().manifest(&stage("echo"));
    t.run(&["plan"]).code(0).stdout_has(
        "bundle auto (task_time 0:05:00): no durations recorded yet: a first wave of 5 jobs runs one per task, then the other 35 are packed",
    );
    t.run(&["run"]).code(0).stderr_has("every job succeeded");
    assert_each_succeeded_once(&t, "slauto", "a", n);
    assert_eq!(t.run(&["results"]).stdout, format!("{}\n", numbers(n)));
    let sizes = |subs: &[Value]| -> Vec<Vec<usize>> {
        subs.iter()
            .map(|s| {
                s["tasks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_array().unwrap().len())
                    .collect()
            })
            .collect()
    };
    let first = sizes(&submissions(&t, "slauto", "a"));
    assert_eq!(first[0], [1, 1, 1, 1, 1], "{first:?}");
    let packed: Vec<usize> = first[1..].iter().flatten().copied().collect();
    assert_eq!(packed.len(), 10, "{first:?}");
    assert_eq!(packed.iter().sum::<usize>(), 35, "{first:?}");

    // The command changes: every job runs again, packed by the recorded durations.
    let t = t.manifest(&stage("echo  "));
    let plan = t.run(&["plan"]);
    plan.code(0)
        .stdout_has("bundle auto (task_time 0:05:00): 40 jobs in 10 tasks of at most ");
    plan.stdout_has("(durations recorded for 40 of them)");
    let json: Value = serde_json::from_str(&t.run(&["plan", "--json"]).stdout).unwrap();
    let b = &json["stages"][0]["bundling"];
    assert_eq!(b["mode"], "auto", "{json}");
    assert_eq!(b["packing"]["tasks"], 10, "{json}");
    assert_eq!(b["packing"]["recorded"], 40, "{json}");
    t.run(&["run"]).code(0).stderr_has("every job succeeded");
    let all = sizes(&submissions(&t, "slauto", "a"));
    let second: Vec<usize> = all[first.len()..].iter().flatten().copied().collect();
    // Measured durations differ a little, so the tasks may too.
    assert_eq!(second.len(), 10, "{all:?}");
    assert_eq!(second.iter().sum::<usize>(), 40, "{all:?}");
    assert_eq!(t.run(&["results"]).stdout, format!("{}\n", numbers(n)));
}

/// Issue #14, many chunks and few status calls: 30 jobs with MaxArraySize 11 are 3 arrays,
/// all submitted before the first status call (one `sbatch` each, one `scontrol` per run).
/// Outcomes are harvested from files at every poll, while `squeue` follows its own cadence:
/// 1 s after the submissions, then doubling up to `status_interval` (8 s here).
#[test]
fn chunks_go_in_at_once_and_status_calls_keep_their_own_cadence() {
    let _c = cluster("slcadence");
    let n = 30;
    let t = Test::new().manifest(&format!(
        "{}[stages.a]\njobs = {}\nresult = \"none\"\nrun = \"sleep 2\"\n",
        header("slcadence", "status_interval = \"8s\""),
        numbers(n)
    ));
    let (path, log) = call_logger(&t);
    let t = t.env("PATH", &path);
    let started = Instant::now();
    t.run(&["run"]).code(0).stderr_has("every job succeeded");
    let wall = started.elapsed().as_secs_f64();
    assert_each_succeeded_once(&t, "slcadence", "a", n);
    let calls = std::fs::read_to_string(&log).unwrap();
    let of = |cmd: &str| -> Vec<f64> {
        calls
            .lines()
            .filter(|l| l.split(' ').nth(1) == Some(cmd))
            .map(|l| l.split(' ').next().unwrap().parse().unwrap())
            .collect()
    };
    let (sbatch, squeue) = (of("sbatch"), of("squeue"));
    let arrays = submissions(&t, "slcadence", "a").len();
    assert_eq!(arrays, 3, "{calls}");
    assert_eq!(sbatch.len(), arrays, "{calls}");
    assert_eq!(of("scontrol").len(), 1, "{calls}");
    assert!(
        squeue.first().is_none_or(|q| sbatch.iter().all(|s| s < q)),
        "a status call before every array was submitted\n{calls}"
    );
    // 1, 2, 4, 8, 8, .. s apart: a few early calls, then one per 8 s.
    assert!(
        squeue.len() as f64 <= 4.0 + wall / 8.0 + 1.0,
        "{} squeue calls in {wall:.1} s\n{calls}",
        squeue.len()
    );
    for w in squeue.windows(2) {
        assert!(
            w[1] - w[0] >= 0.9,
            "squeue calls {:.2} s apart\n{calls}",
            w[1] - w[0]
        );
    }
}
