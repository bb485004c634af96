//! The Grid Engine backend against a real single-node Son of Grid Engine cluster
//! (`tests/clusters/sge-up.sh`, run once per test binary). The cluster must come up: if it
//! does not, every test here fails (they never skip). The tests share the cluster (one of them
//! stops the qmaster, one lowers `max_aj_tasks`), so they run one at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::flock_bounded;
use crate::harness::{Ran, Test};
use crate::harness::{
    assert_each_ran_once, assert_each_succeeded_once, attempts, clusters_dir, copy_tree,
    has_submission, large_values, largest_script, numbers, read_json, read_lines, summary,
    task_file,
};

/// Fast polling for every manifest here.
const POLL: &str = "poll_interval = \"1s\"\npoll_max = \"2s\"\n";

static UP: OnceLock<Result<String, String>> = OnceLock::new();

/// Runs a command, returning (success, stdout + stderr).
fn sh(program: &str, args: &[&str]) -> (bool, String) {
    match std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) => (false, format!("cannot run {program}: {e}")),
    }
}

/// One `<job_list>` of `qstat -xml`: job id and name.
#[derive(Debug, Clone)]
struct Listed {
    id: String,
    name: String,
}

fn xml_tag<'a>(block: &'a str, name: &str) -> &'a str {
    let open = format!("<{name}>");
    let Some(start) = block.find(&open).map(|s| s + open.len()) else {
        return "";
    };
    let end = block[start..].find("</").map_or(block.len(), |e| e + start);
    block[start..end].trim()
}

/// What `qstat -xml` lists (all of root's jobs); `None` when qstat fails.
fn qstat() -> Option<Vec<Listed>> {
    let out = std::process::Command::new("qstat")
        .arg("-xml")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let xml = String::from_utf8_lossy(&out.stdout);
    Some(
        xml.split("<job_list")
            .skip(1)
            .map(|b| {
                let b = b.split("</job_list>").next().unwrap_or("");
                Listed {
                    id: xml_tag(b, "JB_job_number").to_owned(),
                    name: xml_tag(b, "JB_name").to_owned(),
                }
            })
            .collect(),
    )
}

/// Exclusive use of the cluster for one test. If the test panics, Grid Engine jobs of its
/// workflow that are still queued or running are deleted, so they do not slow down the next
/// tests.
struct Cluster {
    workflow: String,
    _across: nix::fcntl::Flock<std::fs::File>,
    _serial: MutexGuard<'static, ()>,
}

/// Held by the test using the cluster, across processes: another `cargo test` running these
/// tests at the same time (another checkout, another engineer) waits instead of stopping the
/// qmaster under this one.
const LOCK_FILE: &str = "/tmp/poolparty-sge-tests.lock";

impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let prefix = format!("pp-{}-", self.workflow);
        let ids: BTreeSet<String> = qstat()
            .unwrap_or_default()
            .into_iter()
            .filter(|j| j.name.starts_with(&prefix))
            .map(|j| j.id)
            .collect();
        if !ids.is_empty() {
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            let _ = sh("qdel", &ids);
        }
    }
}

/// Brings the cluster up (once per test binary; a failure fails the test) and takes the locks
/// that serialize the Grid Engine tests: `harness::SGE` in this test binary (shared with the
/// other modules' Grid Engine tests), [`LOCK_FILE`] across processes. `workflow` names the
/// test's workflow (for cleanup).
fn cluster(workflow: &str) -> Cluster {
    let serial = crate::harness::hold(&crate::harness::SGE);
    let across = flock_bounded(LOCK_FILE, Duration::from_secs(900));
    let up = UP.get_or_init(|| {
        let script = clusters_dir().join("sge-up.sh");
        let (ok, out) = sh("bash", &[script.to_str().unwrap()]);
        if ok { Ok(out) } else { Err(out) }
    });
    if let Err(out) = up {
        panic!("tests/clusters/sge-up.sh failed, the Grid Engine cluster is not usable:\n{out}");
    }
    Cluster {
        workflow: workflow.to_owned(),
        _across: across,
        _serial: serial,
    }
}

/// A manifest header: workflow `name` on Grid Engine with fast polling, plus `defaults`.
fn header(name: &str, defaults: &str) -> String {
    format!("[workflow]\nname = \"{name}\"\n[defaults]\nbackend = \"sge\"\n{POLL}{defaults}\n")
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

/// The submissions of a stage (`submissions.jsonl`).
fn submissions(t: &Test, wf: &str, stage: &str) -> Vec<Value> {
    read_lines(&t.state(wf).join(stage).join("submissions.jsonl"))
}

/// The array job id and 1-based task number that ran job `index` in submission `s`.
fn task_of(s: &Value, index: u64) -> Option<(String, usize)> {
    let position = s["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .position(|t| t.as_array().unwrap().iter().any(|j| j["index"] == index))?;
    Some((s["job_id"].as_str().unwrap().to_owned(), position + 1))
}

/// Wrapper scripts for the Grid Engine commands that log every call (`<epoch> <command>
/// <args>`) to `calls.log` and then run the real command from /usr/bin; put `<dir>/bin` first on
/// PATH.
fn call_logger(t: &Test) -> (String, PathBuf) {
    let bin = t.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = t.path().join("calls.log");
    for cmd in ["qsub", "qstat", "qdel", "qconf"] {
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

/// The logged calls of `cmd` (their arguments).
fn logged(log: &Path, cmd: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ' ');
            let _time = it.next()?;
            (it.next()? == cmd).then(|| it.next().unwrap_or("").to_owned())
        })
        .collect()
}

/// Each job writes a small JSON result; the same manifest on the local backend gives
/// byte-identical `results` (both formats, with and without the jobs). The scheduler is asked
/// once per poll: one `qconf -sconf` per run, one `qsub` per array (stage `a` fits one), and
/// `qstat` calls at least a poll interval apart.
#[test]
fn results_match_the_local_backend_with_one_qstat_per_poll() {
    let _c = cluster("sgeok");
    let n = 10;
    let manifest = format!(
        "{}[stages.a]\njobs = {}\nrun = \"printf '{{\\\"n\\\": %s, \\\"sq\\\": %s, \\\"s\\\": \\\"x%s\\\"}}' {{{{job}}}} $(( {{{{job}}}} * {{{{job}}}} )) {{{{job}}}} > $POOLPARTY_RESULT\"\n\
         [stages.b]\nfor_each = \"a\"\nresult = \"stdout\"\nrun = \"echo {{{{job.result}}}}\"\n",
        header("sgeok", ""),
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

    assert_each_succeeded_once(&t, "sgeok", "a", n);
    assert_each_succeeded_once(&t, "sgeok", "b", n);
    let s = summary(&t, "sgeok");
    assert_eq!(s["verdict"], "succeeded");
    assert_eq!(s["stages"][0]["backend"], "sge");
    assert_eq!(s["stages"][1]["backend"], "sge");
    assert_eq!(s["stages"][0]["stats"]["succeeded"], n);
    assert_eq!(s["stages"][1]["stats"]["succeeded"], n);

    for args in [
        &["results", "--stage", "a"][..],
        &["results", "--stage", "b"],
        &["results", "--stage", "a", "--format", "jsonl", "--with-job"],
        &["results", "--stage", "b", "--format", "csv", "--with-job"],
        &["results", "--stage", "a", "--format", "tsv"],
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
    let count = |cmd: &str| logged(&log, cmd).len();
    let qstat_times: Vec<f64> = calls
        .lines()
        .filter(|l| l.split(' ').nth(1) == Some("qstat"))
        .map(|l| l.split(' ').next().unwrap().parse().unwrap())
        .collect();
    let a_arrays = submissions(&t, "sgeok", "a");
    let b_arrays = submissions(&t, "sgeok", "b");
    eprintln!(
        "sge calls for {n}+{n} jobs in {:.1}s: qsub {} (stage a {} arrays, stage b {}), qstat {}, qconf {}, qdel {}",
        wall.as_secs_f64(),
        count("qsub"),
        a_arrays.len(),
        b_arrays.len(),
        count("qstat"),
        count("qconf"),
        count("qdel")
    );
    // One configuration read per run, no delete; stage `a` is one array.
    assert_eq!(count("qconf"), 1, "{calls}");
    assert!(
        logged(&log, "qconf").iter().all(|a| a == "-sconf"),
        "{calls}"
    );
    assert_eq!(count("qdel"), 0, "{calls}");
    assert_eq!(a_arrays.len(), 1, "{a_arrays:?}");
    assert_eq!(count("qsub"), a_arrays.len() + b_arrays.len(), "{calls}");
    for args in logged(&log, "qsub") {
        assert!(args.starts_with("-terse "), "{args}");
    }
    // One qstat per poll of each stage: the two stages poll independently, so per stage the
    // calls are a poll interval (1 s) apart; together at most two per second.
    assert!(!qstat_times.is_empty());
    for w in qstat_times.windows(3) {
        assert!(
            w[2] - w[0] >= 0.5,
            "three qstat calls within {:.3}s: not one per poll\n{calls}",
            w[2] - w[0]
        );
    }
    assert!(
        qstat_times.len() as f64 <= 2.0 * (wall.as_secs_f64() + 1.0),
        "{} qstat calls in {:.1}s\n{calls}",
        qstat_times.len(),
        wall.as_secs_f64()
    );
    // Nothing of the run stays in the queue (a task that wrote its outcome may still be
    // listed for a moment while it exits).
    assert_leaves_queue("pp-sgeok-", &BTreeSet::new());
}

/// Waits (up to 60 s) until no job named `prefix...` or numbered in `ids` is listed.
#[track_caller]
fn assert_leaves_queue(prefix: &str, ids: &BTreeSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left: Vec<Listed> = qstat()
            .expect("qstat answers")
            .into_iter()
            .filter(|j| j.name.starts_with(prefix) || ids.contains(&j.id))
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still listed by qstat after 60 s: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Failed jobs, and only those, are named with their exit code and log; the verdict says so.
#[test]
fn failing_jobs_are_named_with_code_and_log() {
    let _c = cluster("sgefail");
    let t = Test::new().manifest(&format!(
        "{}[stages.a]\njobs = [{{id = \"ok1\", code = 0}}, {{id = \"bad3\", code = 3}}, {{id = \"ok2\", code = 0}}, {{id = \"bad7\", code = 7}}, {{id = \"ok3\", code = 0}}]\n\
         run = \"echo doing {{{{job.id}}}}; if [ {{{{job.code}}}} != 0 ]; then echo boom-{{{{job.id}}}} >&2; fi; exit {{{{job.code}}}}\"\n",
        header("sgefail", "")
    ));
    let r = t.run(&["run"]);
    r.code(1)
        .stderr_has("a job 1 `bad3`: exit code 3")
        .stderr_has("a job 3 `bad7`: exit code 7")
        .stderr_has("/.poolparty/sgefail/a/logs/bad3.err")
        .stderr_has("/.poolparty/sgefail/a/logs/bad7.err")
        .stderr_has("boom-bad7");
    for ok in ["ok1", "ok2", "ok3"] {
        assert!(
            !r.stderr.contains(&format!("`{ok}`")),
            "{ok} succeeded but is named:\n{}",
            r.stderr
        );
    }
    let s = summary(&t, "sgefail");
    assert_eq!(s["verdict"], "jobs_failed");
    assert_eq!(s["stages"][0]["backend"], "sge");
    // In the order the jobs ended.
    let mut failed: Vec<(String, i64, String)> = s["stages"][0]["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap().to_owned(),
                f["exit_code"].as_i64().unwrap(),
                f["stderr_log"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    failed.sort();
    assert_eq!(failed.len(), 2, "{failed:?}");
    for ((id, code, log), (want_id, want_code)) in failed.iter().zip([("bad3", 3), ("bad7", 7)]) {
        assert_eq!((id.as_str(), *code), (want_id, want_code));
        assert!(
            log.ends_with(&format!("/.poolparty/sgefail/a/logs/{want_id}.err")),
            "{log}"
        );
    }
    assert_eq!(s["stages"][0]["stats"]["succeeded"], 3);
    let got = attempts(&t, "sgefail", "a");
    assert_eq!(got[&1], [(1, "failed".to_owned())]);
    assert_eq!(got[&3], [(1, "failed".to_owned())]);
    for i in [0, 2, 4] {
        assert_eq!(got[&i], [(1, "succeeded".to_owned())]);
    }
    assert_eq!(t.read(".poolparty/sgefail/a/logs/bad3.err"), "boom-bad3\n");
    assert_eq!(t.read(".poolparty/sgefail/a/logs/ok2.out"), "doing ok2\n");
}

/// Lowers the global `max_aj_tasks` (how many tasks one array may have) and restores the
/// original global configuration when dropped, also when the test fails.
struct MaxAjTasks {
    original: String,
    dir: tempfile::TempDir,
}

impl MaxAjTasks {
    fn set(n: usize) -> Self {
        let (ok, original) = sh("qconf", &["-sconf", "global"]);
        assert!(ok, "qconf -sconf global: {original}");
        assert!(
            original.lines().any(|l| l.starts_with("max_aj_tasks ")),
            "no max_aj_tasks in the global configuration:\n{original}"
        );
        let changed: String = original
            .lines()
            .map(|l| {
                if l.split_whitespace().next() == Some("max_aj_tasks") {
                    format!("max_aj_tasks                 {n}\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        // The guard exists before the change, so a half-applied change is restored too.
        let guard = Self {
            original,
            dir: tempfile::tempdir().unwrap(),
        };
        if let Err(e) = guard.apply(&changed) {
            panic!("cannot set max_aj_tasks {n}: {e}");
        }
        guard
    }

    /// `qconf -Mconf` needs a file named `global`.
    fn apply(&self, text: &str) -> Result<(), String> {
        let file = self.dir.path().join("global");
        std::fs::write(&file, text).map_err(|e| e.to_string())?;
        let (ok, out) = sh("qconf", &["-Mconf", file.to_str().unwrap()]);
        if ok { Ok(()) } else { Err(out) }
    }
}

impl Drop for MaxAjTasks {
    fn drop(&mut self) {
        if let Err(e) = self.apply(&self.original) {
            eprintln!("cannot restore the global Grid Engine configuration: {e}");
            if !std::thread::panicking() {
                panic!("cannot restore the global Grid Engine configuration: {e}");
            }
        }
    }
}

/// With `max_aj_tasks` 10 (Grid Engine refuses an 11-task array), 25 jobs go in at least
/// three arrays of at most 10 tasks, and every job runs exactly once.
#[test]
fn arrays_are_chunked_below_max_aj_tasks() {
    let _c = cluster("sgechunk");
    let limit = 10;
    let n = 25;
    let guard = MaxAjTasks::set(limit);
    let (ok, conf) = sh("qconf", &["-sconf"]);
    assert!(
        ok && conf
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["max_aj_tasks", "10"]),
        "{conf}"
    );
    // The bound is real: an 11-task array is refused.
    let (accepted, out) = sh(
        "qsub",
        &[
            "-terse",
            "-h",
            "-N",
            "pp-sgechunk-probe",
            "-o",
            "/dev/null",
            "-e",
            "/dev/null",
            "-b",
            "y",
            "-t",
            "1-11",
            "/bin/true",
        ],
    );
    if accepted {
        let id = out.trim().split('.').next().unwrap_or("").to_owned();
        let _ = sh("qdel", &[&id]);
        panic!("Grid Engine accepted an 11-task array with max_aj_tasks 10: {out}");
    }

    let t = Test::new().manifest(&format!(
        "{}[stages.a]\njobs = {}\nresult = \"none\"\nrun = \"echo {{{{job}}}} >> {{{{workflow.dir}}}}/ran\"\n",
        header("sgechunk", ""),
        numbers(n)
    ));
    let r = t.run(&["run"]);
    drop(guard);
    r.code(0).stderr_has("every job succeeded");
    assert_each_ran_once(&t, "ran", n);
    assert_each_succeeded_once(&t, "sgechunk", "a", n);
    let subs = submissions(&t, "sgechunk", "a");
    assert!(subs.len() >= 3, "{} arrays: {subs:?}", subs.len());
    let mut indices = Vec::new();
    let mut job_ids = BTreeSet::new();
    for s in &subs {
        let tasks = s["tasks"].as_array().unwrap();
        assert!(
            !tasks.is_empty() && tasks.len() <= limit,
            "array of {} tasks",
            tasks.len()
        );
        assert!(job_ids.insert(s["job_id"].as_str().unwrap().to_owned()));
        let script = std::fs::read_to_string(s["script"].as_str().unwrap()).unwrap();
        assert!(
            script.contains(&format!("\n#$ -t 1-{}\n", tasks.len())),
            "{script}"
        );
        for task in tasks {
            for j in task.as_array().unwrap() {
                indices.push(j["index"].as_u64().unwrap());
            }
        }
    }
    indices.sort_unstable();
    assert_eq!(indices, (0..n).collect::<Vec<_>>());
    let scripts = std::fs::read_dir(t.state("sgechunk").join("a/scripts"))
        .unwrap()
        .count();
    assert_eq!(scripts, subs.len());
    // Restored.
    let (_, conf) = sh("qconf", &["-sconf"]);
    assert!(
        !conf
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["max_aj_tasks", "10"]),
        "max_aj_tasks not restored:\n{conf}"
    );
}

/// `max_parallel = 3` (`-tc 3`) bounds the jobs running at once, measured by the jobs
/// themselves.
#[test]
fn max_parallel_throttles_running_tasks() {
    let _c = cluster("sgethrottle");
    let n = 12;
    let t = Test::new()
        .manifest(&format!(
            "{}[stages.a]\njobs = {}\nresult = \"none\"\nrun = \"sh {{{{workflow.dir}}}}/count.sh {{{{job}}}}\"\n",
            header("sgethrottle", "max_parallel = 3"),
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
    assert_each_succeeded_once(&t, "sgethrottle", "a", n);
    let seen: Vec<u32> = t.read("seen").lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(seen.len() as u64, n);
    let max = seen.iter().copied().max().unwrap();
    assert!(max <= 3, "{max} jobs ran at once: {seen:?}");
    // The counter really measures concurrency (16 slots, so the throttle is what limits).
    assert!(max >= 2, "never more than one job at once: {seen:?}");
    assert_eq!(t.read("cur").trim(), "0");
    let subs = submissions(&t, "sgethrottle", "a");
    assert!(!subs.is_empty());
    for s in subs {
        let script = std::fs::read_to_string(s["script"].as_str().unwrap()).unwrap();
        let tasks = s["tasks"].as_array().unwrap().len();
        assert!(
            script.contains(&format!("\n#$ -t 1-{tasks}\n#$ -tc 3\n")),
            "{script}"
        );
    }
}

/// `bundle = 4`: 10 jobs run in 3 array tasks (4, 4, 2), each job with its own outcome, log
/// and result.
#[test]
fn bundles_put_several_jobs_in_one_task() {
    let _c = cluster("sgebundle");
    let n = 10;
    let t = Test::new().manifest(&format!(
        "{}[stages.a]\njobs = {}\nrun = \"echo out-{{{{job}}}}; echo err-{{{{job}}}} >&2; echo {{{{job}}}} > $POOLPARTY_RESULT; [ {{{{job}}}} != 5 ] || exit 4\"\n",
        header("sgebundle", "bundle = 4"),
        numbers(n)
    ));
    // Job 5 fails: its bundle mates still succeed, each job has its own outcome.
    t.run(&["run"]).code(1).stderr_has("a job 5 `");
    let got = attempts(&t, "sgebundle", "a");
    let want: BTreeMap<u64, Vec<(u64, String)>> = (0..n)
        .map(|i| {
            let kind = if i == 5 { "failed" } else { "succeeded" };
            (i, vec![(1, kind.to_owned())])
        })
        .collect();
    assert_eq!(got, want);
    let s = summary(&t, "sgebundle");
    assert_eq!(s["stages"][0]["stats"]["succeeded"], n - 1);
    assert_eq!(s["stages"][0]["failed"][0]["index"], 5);
    assert_eq!(s["stages"][0]["failed"][0]["exit_code"], 4);
    assert_eq!(s["stages"][0]["failed"].as_array().unwrap().len(), 1);
    let r = t.run(&["results", "--allow-missing"]);
    r.code(0);
    assert_eq!(r.stdout, "[0, 1, 2, 3, 4, null, 6, 7, 8, 9]\n");

    let scripts: Vec<PathBuf> = std::fs::read_dir(t.state("sgebundle").join("a/scripts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(scripts.len(), 1, "{scripts:?}");
    let script = std::fs::read_to_string(&scripts[0]).unwrap();
    assert!(script.contains("\n#$ -t 1-3\n"), "{script}");
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
    let subs = submissions(&t, "sgebundle", "a");
    assert_eq!(subs.len(), 1);
    let sizes: Vec<usize> = subs[0]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [4, 4, 2]);

    // Every job has its own logs.
    for r in read_lines(&t.state("sgebundle").join("a/ledger.jsonl")) {
        let (id, i) = (r["id"].as_str().unwrap(), r["index"].as_u64().unwrap());
        assert_eq!(
            t.read(&format!(".poolparty/sgebundle/a/logs/{id}.out")),
            format!("out-{i}\n")
        );
        assert_eq!(
            t.read(&format!(".poolparty/sgebundle/a/logs/{id}.err")),
            format!("err-{i}\n")
        );
    }
}

/// A running task deleted from outside (`qdel JOB -t TASK`) is lost (after the grace period),
/// then resubmitted, and succeeds.
#[test]
fn task_deleted_from_outside_is_lost_then_resubmitted() {
    let _c = cluster("sgeqdel");
    let t = Test::new().manifest(&format!(
        "{}[stages.a]\njobs = [0, 1, 2]\n\
         run = \"if [ {{{{job}}}} = 0 ] && [ $POOLPARTY_ATTEMPT = 1 ]; then touch {{{{workflow.dir}}}}/ready; sleep 300; fi; echo {{{{job}}}} > $POOLPARTY_RESULT\"\n",
        header("sgeqdel", "")
    ));
    let mut run = Running::start(&t, &["run"], "run");
    let ready = t.path().join("ready");
    run.wait_until("job 0 running", 90, || {
        ready.exists() && has_submission(&t, "sgeqdel", "a")
    });
    let subs = submissions(&t, "sgeqdel", "a");
    let (job_id, task) = task_of(&subs[0], 0).expect("job 0 submitted");
    let (ok, out) = sh("qdel", &[&job_id, "-t", &task.to_string()]);
    assert!(ok, "qdel {job_id} -t {task}: {out}");

    let r = run.wait(180);
    r.code(0).stderr_has("every job succeeded");
    let got = attempts(&t, "sgeqdel", "a");
    assert_eq!(
        got[&0],
        [(1, "lost".to_owned()), (2, "succeeded".to_owned())],
        "{}",
        r.stderr
    );
    assert_eq!(got[&1], [(1, "succeeded".to_owned())]);
    assert_eq!(got[&2], [(1, "succeeded".to_owned())]);
    assert_eq!(t.run(&["results"]).stdout, "[0, 1, 2]\n");
    // The resubmission is a second array, of job 0's second attempt only.
    let subs = submissions(&t, "sgeqdel", "a");
    assert_eq!(subs.len(), 2, "{subs:?}");
    assert_eq!(subs[1]["tasks"][0][0]["index"], 0);
    assert_eq!(subs[1]["tasks"][0][0]["attempt"], 2);
    let s = summary(&t, "sgeqdel");
    assert_eq!(s["verdict"], "succeeded");
    assert_eq!(s["stages"][0]["stats"]["succeeded"], 3);
}

/// The marker a custom template puts on the first attempts: an output path in a folder that
/// does not exist, which puts every task of the array in the error state `Eqw`.
const EQW_OUTPUT: &str = "/nonexistent-poolparty-eqw/";

/// A task stuck in `Eqw` is deleted and recorded lost, then resubmitted and succeeds. The
/// custom template sends the tasks of an array with a first attempt to a missing output
/// folder (Grid Engine then holds them in `Eqw` forever); second attempts run normally.
#[test]
fn task_in_error_state_is_deleted_and_resubmitted() {
    let _c = cluster("sgeeqw");
    let stock = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/sge.qsub.hbs"),
    )
    .unwrap();
    let anchor = "#$ -wd {{cwd}}\n";
    assert!(stock.contains(anchor), "{stock}");
    let template = stock.replacen(
        anchor,
        &format!(
            "{anchor}{{{{#each cases}}}}{{{{#each jobs}}}}{{{{#if (eq attempt 1)}}}}\n#$ -o {EQW_OUTPUT}\n{{{{/if}}}}{{{{/each}}}}{{{{/each}}}}\n"
        ),
        1,
    );
    let t = Test::new()
        .manifest(&format!(
            "{}[stages.a]\njobs = [0, 1, 2]\nrun = \"echo {{{{job}}}} >> {{{{workflow.dir}}}}/ran; echo {{{{job}}}} > $POOLPARTY_RESULT\"\n",
            header("sgeeqw", "template = \"my.qsub.hbs\"")
        ))
        .file("my.qsub.hbs", &template);
    let (path, log) = call_logger(&t);
    let t = t.env("PATH", &path);
    let r = Running::start(&t, &["run"], "run").wait(180);
    r.code(0).stderr_has("every job succeeded");

    let got = attempts(&t, "sgeeqw", "a");
    for i in 0..3 {
        assert_eq!(
            got[&i],
            [(1, "lost".to_owned()), (2, "succeeded".to_owned())],
            "job {i}\n{}",
            r.stderr
        );
    }
    // Only the second attempts ran.
    assert_each_ran_once(&t, "ran", 3);
    assert_eq!(t.run(&["results"]).stdout, "[0, 1, 2]\n");
    let subs = submissions(&t, "sgeeqw", "a");
    assert!(subs.len() >= 2, "{subs:?}");
    let first = &subs[0];
    let first_id = first["job_id"].as_str().unwrap().to_owned();
    let script = std::fs::read_to_string(first["script"].as_str().unwrap()).unwrap();
    assert!(
        script.contains(&format!("\n#$ -o {EQW_OUTPUT}\n")),
        "{script}"
    );
    for s in &subs[1..] {
        let script = std::fs::read_to_string(s["script"].as_str().unwrap()).unwrap();
        assert!(!script.contains(EQW_OUTPUT), "{script}");
        for task in s["tasks"].as_array().unwrap() {
            for j in task.as_array().unwrap() {
                assert_eq!(j["attempt"], 2, "{s}");
            }
        }
    }
    // Each stuck task was deleted by poolparty (`qdel JOB -t TASK`), and the array is gone.
    let qdel = logged(&log, "qdel");
    // One `qdel JOB -t 1,2,3` per array and poll, not one call per task.
    let mut deleted: Vec<usize> = qdel
        .iter()
        .filter_map(|a| {
            let parts: Vec<&str> = a.split(' ').collect();
            match parts[..] {
                [id, "-t", tasks] if id == first_id => Some(
                    tasks
                        .split(',')
                        .filter_map(|t| t.parse().ok())
                        .collect::<Vec<usize>>(),
                ),
                _ => None,
            }
        })
        .flatten()
        .collect();
    assert!(qdel.len() <= 3, "one qdel per array per poll: {qdel:?}");
    deleted.sort_unstable();
    deleted.dedup();
    assert_eq!(deleted, [1, 2, 3], "qdel calls: {qdel:?}");
    assert_leaves_queue("pp-sgeeqw-", &BTreeSet::from([first_id]));
    assert_eq!(summary(&t, "sgeeqw")["verdict"], "succeeded");
}

/// The runner is SIGKILLed while jobs run; a new `poolparty run` reattaches to the queued and
/// running tasks and collects what finished meanwhile: every job runs exactly once.
#[test]
fn killed_runner_is_restarted_and_every_job_runs_once() {
    let _c = cluster("sgekill");
    let n = 10;
    let t = Test::new()
        .manifest(&format!(
            "{}[stages.a]\njobs = {}\n\
             run = \"touch {{{{workflow.dir}}}}/ready/{{{{job}}}}; sleep 2; echo {{{{job}}}} >> {{{{workflow.dir}}}}/ran; echo {{{{job}}}} > $POOLPARTY_RESULT\"\n",
            header("sgekill", "max_parallel = 4"),
            numbers(n)
        ))
        .file("ready/.keep", "");
    let mut first = Running::start(&t, &["run"], "first");
    let ready = t.path().join("ready");
    run_until_a_job_started(&mut first, &t, &ready, "sgekill");
    first.kill();

    let r = Running::start(&t, &["run"], "second").wait(240);
    r.code(0)
        .stderr_has("reattached to")
        .stderr_has("every job succeeded");
    assert_each_ran_once(&t, "ran", n);
    // Nothing was submitted again: the second run adopted the first run's array.
    let subs = submissions(&t, "sgekill", "a");
    assert_eq!(subs.len(), 1, "{subs:?}");
    let got = attempts(&t, "sgekill", "a");
    assert_eq!(got.len() as u64, n);
    for (i, a) in &got {
        let ok = a.iter().filter(|(_, k)| k == "succeeded").count();
        assert_eq!(ok, 1, "job {i}: {a:?}");
        assert!(a.iter().all(|(n, _)| *n == 1), "job {i}: {a:?}");
    }
    assert_eq!(t.run(&["results"]).stdout, format!("{}\n", numbers(n)));
    assert_eq!(summary(&t, "sgekill")["verdict"], "succeeded");
}

fn run_until_a_job_started(run: &mut Running, t: &Test, ready: &Path, wf: &str) {
    run.wait_until("a running job", 90, || {
        std::fs::read_dir(ready).is_ok_and(|d| d.count() > 1) && has_submission(t, wf, "a")
    });
}

/// Starts the qmaster again when dropped (also when the test fails).
struct QmasterBack(bool);

impl QmasterBack {
    fn ctl(what: &str) {
        let script = clusters_dir().join("sge-ctl.sh");
        let (ok, out) = sh("bash", &[script.to_str().unwrap(), what]);
        assert!(ok, "sge-ctl.sh {what}: {out}");
    }
}

impl Drop for QmasterBack {
    fn drop(&mut self) {
        if !self.0 {
            let script = clusters_dir().join("sge-ctl.sh");
            let _ = sh("bash", &[script.to_str().unwrap(), "start-master"]);
        }
    }
}

/// sge_qmaster is down for 20 s while jobs run and wait; the run rides it out: exit 0, every
/// job exactly once. Meanwhile `qstat` and `qsub` fail in ways the backend reads as worth
/// retrying.
#[test]
fn qmaster_outage_is_survived() {
    let _c = cluster("sgeoutage");
    let n = 20;
    let t = Test::new()
        .manifest(&format!(
            "{}[stages.a]\njobs = {}\n\
             run = \"touch {{{{workflow.dir}}}}/ready/{{{{job}}}}; sleep $(( {{{{job}}}} % 2 + 3 )); echo {{{{job}}}} >> {{{{workflow.dir}}}}/ran; echo {{{{job}}}} > $POOLPARTY_RESULT\"\n",
            header("sgeoutage", "max_parallel = 4"),
            numbers(n)
        ))
        .file("ready/.keep", "")
        .file(
            "probe.sh",
            "#!/bin/sh\n#$ -h\n#$ -N pp-sgeoutage-probe\n#$ -o /dev/null\n#$ -e /dev/null\ntrue\n",
        );
    let mut run = Running::start(&t, &["run"], "run");
    let ready = t.path().join("ready");
    run_until_a_job_started(&mut run, &t, &ready, "sgeoutage");

    let mut back = QmasterBack(false);
    QmasterBack::ctl("stop-master");
    // The outage hits the run with work left (20 jobs of 3-4 s, 4 at a time, take > 17 s).
    let ran = std::fs::read_to_string(t.path().join("ran")).unwrap_or_default();
    assert!(
        (ran.lines().count() as u64) < n,
        "every job ran before the qmaster stopped: the test tests nothing"
    );
    match poolparty::testing::sge_query(&["1".to_owned()]) {
        Ok(m) => panic!("qstat answered while the qmaster is down: {m}"),
        Err(e) => assert!(e.transient, "qstat failure not transient: {}", e.message),
    }
    match poolparty::testing::sge_submit(&t.path().join("probe.sh")) {
        Ok(id) => {
            let _ = sh("qdel", &[&id]);
            panic!("qsub succeeded while the qmaster is down: {id}");
        }
        Err(e) => assert!(e.transient, "qsub failure not transient: {}", e.message),
    }
    std::thread::sleep(Duration::from_secs(20));
    QmasterBack::ctl("start-master");
    back.0 = true;

    let r = run.wait(300);
    r.code(0).stderr_has("every job succeeded");
    assert_each_ran_once(&t, "ran", n);
    let got = attempts(&t, "sgeoutage", "a");
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
    assert_eq!(summary(&t, "sgeoutage")["verdict"], "succeeded");
}

/// SIGINT stops the run (exit 130): every array of the stage is deleted, so nothing is left
/// running or queued on the cluster, and every job is recorded as interrupted. Five tasks run
/// (`-tc 5`), ten wait; the interrupt comes once the five run their command (a task killed while
/// its login shell starts may leave the shell's dotfiles in a bad state).
#[test]
fn interrupt_deletes_every_task_on_the_cluster() {
    let _c = cluster("sgeint");
    let n = 15;
    let t = Test::new()
        .manifest(&format!(
            "{}[stages.a]\njobs = {}\nrun = \"touch {{{{workflow.dir}}}}/ready/{{{{job}}}}; sleep 300\"\n",
            header("sgeint", "max_parallel = 5"),
            numbers(n)
        ))
        .file("ready/.keep", "");
    let mut run = Running::start(&t, &["run"], "run");
    let ready = t.path().join("ready");
    run.wait_until("five running jobs", 180, || {
        std::fs::read_dir(&ready).is_ok_and(|d| d.count() > 5) && has_submission(&t, "sgeint", "a")
    });
    let st = std::process::Command::new("kill")
        .args(["-INT", &run.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let r = run.wait(60);
    r.code(130);
    let s = summary(&t, "sgeint");
    assert_eq!(s["verdict"], "interrupted");
    let got = attempts(&t, "sgeint", "a");
    assert_eq!(got.len() as u64, n);
    for (i, a) in &got {
        assert_eq!(a, &[(1, "interrupted".to_owned())], "job {i}");
    }
    let ids: BTreeSet<String> = submissions(&t, "sgeint", "a")
        .iter()
        .map(|s| s["job_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1);
    assert_leaves_queue("pp-sgeint-", &ids);
}

/// A job killed at its time limit (`time`, Grid Engine's `h_rt`) is recorded as timed out
/// (from Grid Engine's accounting), not as lost, so it is not resubmitted.
#[test]
fn job_over_its_time_limit_is_timed_out() {
    let _c = cluster("sgetime");
    let t = Test::new().manifest(&format!(
        "{}[stages.a]\njobs = [0, 1]\ntime = \"5s\"\n\
         run = \"if [ {{{{job}}}} = 0 ]; then sleep 120; fi; echo {{{{job}}}} > $POOLPARTY_RESULT\"\n",
        header("sgetime", "")
    ));
    let r = Running::start(&t, &["run"], "run").wait(180);
    // The job's id is a hash of its value, so its value (`0`) follows it (issue #15).
    r.code(1).stderr_has("` 0: timed out");
    let got = attempts(&t, "sgetime", "a");
    assert_eq!(got[&0], [(1, "timed_out".to_owned())], "{}", r.stderr);
    assert_eq!(got[&1], [(1, "succeeded".to_owned())]);
    let s = summary(&t, "sgetime");
    assert_eq!(s["verdict"], "jobs_failed");
    assert_eq!(s["stages"][0]["failed"][0]["index"], 0);
    assert_eq!(s["stages"][0]["failed"][0]["outcome"]["kind"], "timed_out");
    let subs = submissions(&t, "sgetime", "a");
    assert_eq!(subs.len(), 1, "{subs:?}");
    let script = std::fs::read_to_string(subs[0]["script"].as_str().unwrap()).unwrap();
    assert!(script.contains("\n#$ -l h_rt=0:00:05\n"), "{script}");
}

/// `qsub` failing because the qmaster cannot be reached (Grid Engine's own message) does not
/// end the run: the jobs stay queued and each poll tries again, without blocking.
#[test]
fn transient_qsub_failures_are_retried_at_later_polls() {
    let _c = cluster("sgeflaky");
    let n = 4;
    let t = Test::new().manifest(&format!(
        "{}[stages.a]\njobs = {}\nrun = \"echo {{{{job}}}} >> {{{{workflow.dir}}}}/ran; echo {{{{job}}}} > $POOLPARTY_RESULT\"\n",
        header("sgeflaky", ""),
        numbers(n)
    ));
    let bin = t.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let counter = t.path().join("qsub-calls");
    let qsub = bin.join("qsub");
    std::fs::write(
        &qsub,
        format!(
            "#!/bin/sh\nc='{}'\nn=$(( $(cat \"$c\" 2>/dev/null || echo 0) + 1 ))\necho $n > \"$c\"\n\
             if [ $n -le 4 ]; then\n  echo 'error: commlib error: got select error (Connection refused)' >&2\n  \
             echo 'Unable to run job: unable to send message to qmaster using port 6444 on host \"'\"$(hostname)\"'\": got send error.' >&2\n  \
             echo 'Exiting.' >&2\n  exit 1\nfi\n\
             exec /usr/bin/qsub \"$@\"\n",
            counter.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&qsub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let t = t.env("PATH", &path);
    t.run(&["run"]).code(0).stderr_has("every job succeeded");
    assert_eq!(t.read("qsub-calls").trim(), "5");
    assert_each_ran_once(&t, "ran", n);
    assert_each_succeeded_once(&t, "sgeflaky", "a", n);
    assert_eq!(submissions(&t, "sgeflaky", "a").len(), 1);
    // The scripts of the failed tries are gone.
    let scripts = std::fs::read_dir(t.state("sgeflaky").join("a/scripts"))
        .unwrap()
        .count();
    assert_eq!(scripts, 1);
}

/// An array script qsub refuses (unknown queue) is a backend error: exit 3, qsub's reason
/// shown, nothing ran.
#[test]
fn refused_submission_is_a_backend_error() {
    let _c = cluster("sgerefused");
    let t = Test::new().manifest(&format!(
        "{}[stages.a]\njobs = [1, 2]\nrun = \"echo {{{{job}}}} >> {{{{workflow.dir}}}}/ran\"\n",
        header("sgerefused", "queue = \"nope.q\"")
    ));
    let r = t.run(&["run"]);
    r.code(3).stderr_has("nope.q");
    assert!(!t.path().join("ran").exists());
    assert!(!has_submission(&t, "sgerefused", "a"));
    let ledger = t.state("sgerefused").join("a/ledger.jsonl");
    assert!(
        std::fs::read_to_string(&ledger)
            .unwrap_or_default()
            .trim()
            .is_empty(),
        "a job has an outcome"
    );
}

/// `examples/telescope`, unchanged, runs on Grid Engine with the same results as on the local
/// backend.
#[test]
fn telescope_example_runs_unchanged_on_sge() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/telescope");
    assert!(
        example.join("poolparty.toml").is_file(),
        "examples/telescope is missing"
    );
    let _c = cluster("telescope");
    let (sge, local) = (Test::new(), Test::new());
    for t in [&sge, &local] {
        copy_tree(&example, &t.path().join("examples/telescope"));
    }
    sge.run(&["run", "--backend", "sge", "examples/telescope"])
        .code(0)
        .stderr_has("every job succeeded");
    local
        .run(&["run", "--backend", "local", "examples/telescope"])
        .code(0);
    let state = sge.path().join("examples/telescope/.poolparty/telescope");
    let s = read_json(&state.join("summary.json"));
    assert_eq!(s["verdict"], "succeeded");
    for st in s["stages"].as_array().unwrap() {
        assert_eq!(st["backend"], "sge", "{st}");
    }
    let scripts = std::fs::read_dir(state.join("analyse/scripts"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<Vec<_>>();
    assert!(!scripts.is_empty(), "no array script");
    assert!(scripts.iter().all(|s| s.contains("\n#$ -tc 4\n")));
    let results = |t: &Test| {
        let r = t.run(&["results", "examples/telescope", "--stage", "analyse"]);
        r.code(0);
        r.stdout
    };
    let got = results(&sge);
    let parsed: Vec<Value> = serde_json::from_str(&got).unwrap();
    assert_eq!(parsed.len(), 8, "{got}");
    assert_eq!(got, results(&local));
}

/// `poolparty logs` (and `--follow`) of a Grid Engine job while it runs and after (issue #15).
#[test]
fn logs_of_a_job_while_it_runs_and_after() {
    let _c = cluster("sglogs");
    crate::commands::logs_during_and_after_a_run(&header("sglogs", ""), "sglogs");
}

/// A `qdel` that fails (an error on stderr, not "does not exist") when a run is interrupted
/// is tried again; when it keeps failing, the run exits 3 naming the array and how to cancel
/// it, and records no outcome for its jobs; `poolparty cancel` then deletes them.
#[test]
fn qdel_that_keeps_failing_names_the_array_left_running() {
    let wf = "sgeqdelfail";
    let _c = cluster(wf);
    let bin_dir = tempfile::tempdir().unwrap();
    let counter = bin_dir.path().join("qdel-calls");
    let qdel = bin_dir.path().join("qdel");
    std::fs::write(
        &qdel,
        format!(
            "#!/bin/sh\nc='{}'\necho $(( $(cat \"$c\" 2>/dev/null || echo 0) + 1 )) > \"$c\"\n\
             echo 'error: fake failure' >&2\nexit 1\n",
            counter.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&qdel, std::fs::Permissions::from_mode(0o755)).unwrap();
    let real_path = std::env::var("PATH").unwrap_or_default();
    let t = Test::new()
        .manifest(&format!(
            "{}[stages.a]\njobs = [1, 2]\nrun = \"touch {{{{workflow.dir}}}}/ready/{{{{job}}}}; sleep 300\"\n",
            header(wf, "")
        ))
        .file("ready/.keep", "")
        .env("PATH", &format!("{}:{real_path}", bin_dir.path().display()));
    let mut run = Running::start(&t, &["run"], "run");
    let ready = t.path().join("ready");
    run.wait_until("a running job", 180, || {
        std::fs::read_dir(&ready).is_ok_and(|d| d.count() > 1) && has_submission(&t, wf, "a")
    });
    let st = std::process::Command::new("kill")
        .args(["-INT", &run.child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let r = run.wait(60);
    r.code(3);
    let flat: Vec<&str> = r.stderr.split_whitespace().filter(|w| *w != "│").collect();
    let flat = flat.join(" ");
    let ids: BTreeSet<String> = submissions(&t, wf, "a")
        .iter()
        .map(|s| s["job_id"].as_str().unwrap().to_owned())
        .collect();
    let id = ids.iter().next().unwrap().clone();
    for needle in [
        "cancelling failed",
        "fake failure (tried 4 times)",
        "poolparty cancel",
        &format!("sge array ({id})"),
    ] {
        assert!(
            flat.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            r.stderr
        );
    }
    assert_eq!(std::fs::read_to_string(&counter).unwrap().trim(), "4");
    assert!(attempts(&t, wf, "a").is_empty());
    // With the real qdel, `poolparty cancel` deletes the array.
    let t = t.env("PATH", &real_path);
    t.run(&["cancel"]).code(0).stderr_has("cancelled");
    assert_leaves_queue(&format!("pp-{wf}-"), &ids);
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
    let _c = cluster("sgelarge");
    let (jobs, values) = large_values(45, 100_000);
    let t = Test::new()
        .manifest(&format!(
            "{}[stages.a]\njobs_file = \"jobs.jsonl\"\nrun = \"printf '%s' {{{{job.v}}}} > $POOLPARTY_RESULT\"\n",
            header("sgelarge", "bundle = 5")
        ))
        .file("jobs.jsonl", &jobs);
    t.run(&["run"]).code(0).stderr_has("every job succeeded");
    let state = t.state("sgelarge");
    let script = largest_script(&state, "a");
    assert!(script < 8 * 1024, "an array script of {script} bytes");
    let got: Vec<String> = serde_json::from_str(&t.run(&["results"]).stdout).unwrap();
    assert_eq!(got.len(), values.len());
    for (i, (g, v)) in got.iter().zip(&values).enumerate() {
        assert!(g == v, "job {i}: the value did not arrive byte for byte");
    }
}
