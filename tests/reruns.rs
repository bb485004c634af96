//! Reproducible reruns, dry-run script bundles (`plan --out`) and detached runs
//! (`run --detach`), on the local backend and on the real single-node Slurm and Grid Engine
//! test clusters (`tests/clusters/*-up.sh`, brought up once per test binary; a cluster that
//! does not come up fails the test, never skips it).
//!
//! Every scenario is written once, as a function of the backend, and instantiated as one
//! `#[test]` per backend (`reruns::<scenario>::<backend>`). A cluster test holds
//! `harness::SLURM` / `harness::SGE` for its whole duration, and every wait is bounded.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc::channel;
use std::sync::{MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::flock_bounded;
use crate::harness::{self, Ran, Test};

/// How long one `poolparty` command may take (a cluster run of a few short jobs takes
/// seconds; the test machine's clusters are shared with other tests, so be generous).
const COMMAND_LIMIT: Duration = Duration::from_secs(300);
/// How long a detached or hand-submitted run may take to finish.
const DETACHED_LIMIT: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Local,
    Slurm,
    Sge,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Slurm => "slurm",
            Self::Sge => "sge",
        }
    }
}

/// One `#[test]` per backend for a scenario function: `backends!(f: local => Local, ...)`
/// makes `mod f { #[test] fn local() { super::f(Backend::Local) } ... }`.
macro_rules! backends {
    ($scenario:ident: $($test:ident => $backend:ident),+ $(,)?) => {
        mod $scenario {
            $(
                #[test]
                fn $test() {
                    super::$scenario(super::Backend::$backend);
                }
            )+
        }
    };
}

// ---------------------------------------------------------------------------------------
// Clusters

static SLURM_UP: OnceLock<Result<String, String>> = OnceLock::new();
static SGE_UP: OnceLock<Result<String, String>> = OnceLock::new();

/// The Grid Engine tests of `tests/sge.rs` also hold this file (flock) across processes, so
/// another `cargo test` does not stop the qmaster under a running test.
const SGE_LOCK_FILE: &str = "/tmp/poolparty-sge-tests.lock";

fn bring_up(script: &str, env: &[(&str, &str)]) -> Result<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clusters")
        .join(script);
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(&path).stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    match cmd.output() {
        Ok(o) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            if o.status.success() {
                Ok(text)
            } else {
                Err(format!("{text}({})", o.status))
            }
        }
        Err(e) => Err(format!("cannot run bash {}: {e}", path.display())),
    }
}

/// Exclusive use of a backend for one test. When it ends (passing or not), jobs of its
/// workflow still in the cluster's queue are cancelled so they do not load the next tests.
struct Guard {
    backend: Backend,
    workflow: String,
    _across: Option<nix::fcntl::Flock<std::fs::File>>,
    _lock: Option<MutexGuard<'static, ()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(ids) = queued(self.backend, &self.workflow) else {
            return;
        };
        if ids.is_empty() {
            return;
        }
        let program = if self.backend == Backend::Slurm {
            "scancel"
        } else {
            "qdel"
        };
        let _ = std::process::Command::new(program)
            .args(&ids)
            .stdin(Stdio::null())
            .output();
    }
}

/// Takes the backend for the test (the cluster's mutex, for the whole test) and brings the
/// cluster up once per test binary.
fn guard(backend: Backend, workflow: &str) -> Guard {
    let (lock, across) = match backend {
        Backend::Local => (None, None),
        Backend::Slurm => {
            let lock = harness::hold(&harness::SLURM);
            let up =
                SLURM_UP.get_or_init(|| bring_up("slurm-up.sh", &[("SLURM_MAX_ARRAY_SIZE", "11")]));
            if let Err(out) = up {
                panic!(
                    "tests/clusters/slurm-up.sh failed, the Slurm cluster is not usable:\n{out}"
                );
            }
            (Some(lock), None)
        }
        Backend::Sge => {
            let lock = harness::hold(&harness::SGE);
            let across = flock_bounded(SGE_LOCK_FILE, Duration::from_secs(900));
            let up = SGE_UP.get_or_init(|| bring_up("sge-up.sh", &[]));
            if let Err(out) = up {
                panic!(
                    "tests/clusters/sge-up.sh failed, the Grid Engine cluster is not usable:\n{out}"
                );
            }
            (Some(lock), Some(across))
        }
    };
    Guard {
        backend,
        workflow: workflow.to_owned(),
        _across: across,
        _lock: lock,
    }
}

/// Scheduler ids of the jobs of `workflow` (job names `pp-<workflow>-...`) still in the
/// queue; `None` when the scheduler cannot be asked (or for the local backend: no queue).
fn queued(backend: Backend, workflow: &str) -> Option<Vec<String>> {
    let prefix = format!("pp-{workflow}-");
    let out = match backend {
        Backend::Local => return None,
        Backend::Slurm => std::process::Command::new("squeue")
            .args(["-h", "-o", "%F|%j"])
            .stdin(Stdio::null())
            .output()
            .ok()?,
        Backend::Sge => std::process::Command::new("qstat")
            .arg("-xml")
            .stdin(Stdio::null())
            .output()
            .ok()?,
    };
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut ids: Vec<String> = if backend == Backend::Slurm {
        text.lines()
            .filter_map(|l| l.split_once('|'))
            .filter(|(_, name)| name.trim().starts_with(&prefix))
            .map(|(id, _)| id.trim().to_owned())
            .collect()
    } else {
        let tag = |block: &str, name: &str| -> String {
            let open = format!("<{name}>");
            block
                .find(&open)
                .map(|s| s + open.len())
                .and_then(|s| {
                    block[s..]
                        .find("</")
                        .map(|e| block[s..s + e].trim().to_owned())
                })
                .unwrap_or_default()
        };
        text.split("<job_list")
            .skip(1)
            .filter(|b| tag(b, "JB_name").starts_with(&prefix))
            .map(|b| tag(b, "JB_job_number"))
            .collect()
    };
    ids.sort();
    ids.dedup();
    Some(ids)
}

// ---------------------------------------------------------------------------------------
// Running poolparty and reading state

/// Runs `poolparty ARGS` in the test folder, stopping it (SIGTERM, so a runner cancels its
/// cluster jobs, then SIGKILL) and failing the test if it takes longer than `limit`.
fn run_bounded(t: &Test, args: &[&str], limit: Duration) -> Ran {
    let mut child = t
        .command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("poolparty starts");
    let (tx_out, rx_out) = channel();
    let (tx_err, rx_err) = channel();
    let mut so = child.stdout.take().expect("piped");
    let mut se = child.stderr.take().expect("piped");
    std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = so.read_to_end(&mut b);
        let _ = tx_out.send(String::from_utf8_lossy(&b).into_owned());
    });
    std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = se.read_to_end(&mut b);
        let _ = tx_err.send(String::from_utf8_lossy(&b).into_owned());
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let grace = Instant::now() + Duration::from_secs(20);
            while child.try_wait().expect("wait").is_none() && Instant::now() < grace {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = rx_out
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| "<stdout still open>".into());
    let stderr = rx_err
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| "<stderr still open>".into());
    let Some(status) = status else {
        panic!(
            "`poolparty {}` did not end within {limit:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            args.join(" ")
        );
    };
    Ran {
        code: status.code(),
        stdout,
        stderr,
    }
}

/// `poolparty ARGS` with the usual bound.
fn pp(t: &Test, args: &[&str]) -> Ran {
    run_bounded(t, args, COMMAND_LIMIT)
}

/// Runs `bash SCRIPT` in the test folder (a bundle's `submit.sh`), bounded.
fn bash_bounded(t: &Test, script: &Path) -> Ran {
    let mut child = std::process::Command::new("bash")
        .arg(script)
        .current_dir(t.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash starts");
    let deadline = Instant::now() + COMMAND_LIMIT;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`bash {}` did not end within {COMMAND_LIMIT:?}",
                script.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output").into()
}

/// A workflow name for a scenario on a backend, unique to this test process: cluster jobs are
/// named after it, and a test cancels its workflow's jobs when it ends (another `cargo test`
/// may run the same test on the same cluster at the same time).
fn workflow(scenario: &str, backend: Backend) -> String {
    format!("rr-{scenario}-{}-{}", backend.name(), std::process::id())
}

/// A manifest: workflow `wf` on `backend` with fast polling, then `stages`.
fn manifest(backend: Backend, wf: &str, stages: &str) -> String {
    format!(
        "[workflow]\nname = \"{wf}\"\n[defaults]\nbackend = \"{}\"\npoll_interval = \"1s\"\npoll_max = \"2s\"\n\n{stages}",
        backend.name()
    )
}

/// Lines of a file below the test folder (none when it does not exist).
fn lines(t: &Test, file: &str) -> Vec<String> {
    std::fs::read_to_string(t.path().join(file))
        .map(|s| s.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn json(text: &str, what: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{what} is not JSON: {e}\n{text}"))
}

/// A stage of a `status --json` / summary report.
fn stage<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no stage `{name}` in {report:#}"))
}

/// What to show when a wait on a cluster times out: the queue and the drivers' logs.
fn diagnostics(t: &Test, backend: Backend, wf: &str) -> String {
    let mut s = format!("queued jobs of {wf}: {:?}\n", queued(backend, wf));
    if let Ok(dir) = std::fs::read_dir(t.state(wf)) {
        for e in dir.flatten() {
            let log = e.path().join("driver.log");
            if let Ok(text) = std::fs::read_to_string(&log) {
                s.push_str(&format!("--- {}\n{text}\n", log.display()));
            }
        }
    }
    s
}

/// Polls `poolparty status --json` (every second, for at most `limit`) until `done` holds
/// for the report; returns that report.
fn wait_status(
    t: &Test,
    backend: Backend,
    wf: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    let last = loop {
        let r = pp(t, &["status", "--json"]);
        if !r.stdout.trim().is_empty() {
            let report = json(&r.stdout, "status --json");
            if done(&report) {
                return report;
            }
        }
        if Instant::now() >= deadline {
            break format!("{}\n{}", r.stdout, r.stderr);
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    panic!(
        "the run did not get there within {limit:?}; last status:\n{last}\n{}",
        diagnostics(t, backend, wf)
    );
}

/// Whether every job of every stage in a status report has an outcome.
fn all_ended(report: &Value) -> bool {
    report["stages"].as_array().is_some_and(|stages| {
        stages
            .iter()
            .all(|s| !s["jobs"].is_null() && s["stats"]["not_run"] == 0)
    })
}

/// Waits (at most `limit`) until the cluster lists no job of `wf`.
fn wait_queue_empty(t: &Test, backend: Backend, wf: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let q = queued(backend, wf);
        if q.as_ref().is_some_and(Vec::is_empty) {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "jobs of `{wf}` are still in the {} queue after {limit:?}: {q:?}\n{}",
                backend.name(),
                diagnostics(t, backend, wf)
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Four jobs with explicit ids `j0..j3` (values `v`), each appending its id to `ran.txt` and
/// returning `v`; the job whose id is `fail_id` fails (exit 3) while the file `fixed` does not
/// exist.
fn counting_stage(values: [i64; 4], fail_id: Option<&str>) -> String {
    let jobs: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{{id = \"j{i}\", v = {v}}}"))
        .collect();
    let fail = fail_id.map_or_else(String::new, |id| {
        format!(
            "if [ {{{{job.id}}}} = {id} ] && [ ! -e {{{{workflow.dir}}}}/fixed ]; then echo broken >&2; exit 3; fi; "
        )
    });
    format!(
        "[stages.a]\njobs = [{}]\nrun = '''echo {{{{job.id}}}} >> {{{{workflow.dir}}}}/ran.txt; {fail}echo {{{{job.v}}}} > \"$POOLPARTY_RESULT\"'''\n",
        jobs.join(", ")
    )
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------
// 1. A rerun after success runs nothing.

fn rerun_after_success_runs_nothing(backend: Backend) {
    let wf = workflow("noop", backend);
    let _g = guard(backend, &wf);
    let t = Test::new().manifest(&manifest(backend, &wf, &counting_stage([0, 1, 2, 3], None)));

    pp(&t, &["run"]).code(0);
    assert_eq!(sorted(lines(&t, "ran.txt")), ["j0", "j1", "j2", "j3"]);

    pp(&t, &["plan"])
        .code(0)
        .stdout_has("4 jobs: 0 would run (0 new, 0 changed, 0 failed before), 4 done and reused");

    pp(&t, &["run"]).code(0);
    assert_eq!(lines(&t, "ran.txt").len(), 4, "the rerun ran jobs again");
    let summary = json(
        &t.read(&format!(".poolparty/{wf}/summary.json")),
        "summary.json",
    );
    assert_eq!(stage(&summary, "a")["reused"], 4, "{summary:#}");
    assert_eq!(summary["verdict"], "succeeded");
    let r = pp(&t, &["results"]);
    r.code(0);
    assert_eq!(r.stdout, "[0, 1, 2, 3]\n");
}

backends!(rerun_after_success_runs_nothing: local => Local, slurm => Slurm, sge => Sge);

// ---------------------------------------------------------------------------------------
// 2. Changing one job's value reruns exactly that job.

fn changed_job_alone_reruns(backend: Backend) {
    let wf = workflow("changed", backend);
    let _g = guard(backend, &wf);
    let t = Test::new().manifest(&manifest(backend, &wf, &counting_stage([0, 1, 2, 3], None)));
    pp(&t, &["run"]).code(0);
    assert_eq!(lines(&t, "ran.txt").len(), 4);

    let t = t.manifest(&manifest(
        backend,
        &wf,
        &counting_stage([0, 1, 20, 3], None),
    ));
    pp(&t, &["plan"])
        .code(0)
        .stdout_has("4 jobs: 1 would run (0 new, 1 changed, 0 failed before), 3 done and reused");
    let plan = json(&pp(&t, &["plan", "--json"]).stdout, "plan --json");
    assert_eq!(
        plan["stages"][0]["counts"],
        serde_json::json!({"new": 0, "changed": 1, "failed": 0, "done": 3})
    );

    pp(&t, &["run"]).code(0);
    let ran = lines(&t, "ran.txt");
    assert_eq!(ran.len(), 5, "{ran:?}");
    assert_eq!(ran[4], "j2", "only the changed job reruns: {ran:?}");
    let summary = json(
        &t.read(&format!(".poolparty/{wf}/summary.json")),
        "summary.json",
    );
    assert_eq!(stage(&summary, "a")["reused"], 3, "{summary:#}");
    let r = pp(&t, &["results"]);
    r.code(0);
    assert_eq!(r.stdout, "[0, 1, 20, 3]\n");
}

backends!(changed_job_alone_reruns: local => Local, slurm => Slurm, sge => Sge);

// ---------------------------------------------------------------------------------------
// 3. `run --retry-failed` reruns only the failed job (keeping successes even when they
// changed); `run --force` reruns all.

fn retry_failed_and_force(backend: Backend) {
    let wf = workflow("force", backend);
    let _g = guard(backend, &wf);
    let t = Test::new().manifest(&manifest(
        backend,
        &wf,
        &counting_stage([0, 1, 2, 3], Some("j1")),
    ));
    pp(&t, &["run"])
        .code(1)
        .stderr_has("a job 1 `j1`: exit code 3");
    assert_eq!(sorted(lines(&t, "ran.txt")), ["j0", "j1", "j2", "j3"]);

    // Fix j1, and change j0: `--retry-failed` keeps j0's recorded success anyway.
    let t = t.file("fixed", "").manifest(&manifest(
        backend,
        &wf,
        &counting_stage([10, 1, 2, 3], Some("j1")),
    ));
    pp(&t, &["plan"])
        .code(0)
        .stdout_has("4 jobs: 2 would run (0 new, 1 changed, 1 failed before), 2 done and reused");
    pp(&t, &["run", "--retry-failed"]).code(0);
    let ran = lines(&t, "ran.txt");
    assert_eq!(
        ran[4..],
        ["j1"],
        "--retry-failed reruns only the failed job: {ran:?}"
    );
    let r = pp(&t, &["results"]);
    r.code(0);
    assert_eq!(r.stdout, "[0, 1, 2, 3]\n", "j0's old success is kept");

    pp(&t, &["run", "--force"]).code(0);
    let ran = lines(&t, "ran.txt");
    assert_eq!(
        sorted(ran[5..].to_vec()),
        ["j0", "j1", "j2", "j3"],
        "--force reruns every job once: {ran:?}"
    );
    let summary = json(
        &t.read(&format!(".poolparty/{wf}/summary.json")),
        "summary.json",
    );
    assert_eq!(stage(&summary, "a")["reused"], 0, "{summary:#}");
    let r = pp(&t, &["results"]);
    r.code(0);
    assert_eq!(r.stdout, "[10, 1, 2, 3]\n");
    // Nothing is left to do.
    pp(&t, &["plan"]).code(0).stdout_has("0 would run");
}

backends!(retry_failed_and_force: local => Local, slurm => Slurm, sge => Sge);

// ---------------------------------------------------------------------------------------
// 4. A detached two-stage run: `a`, then `b` whose jobs are generated from a's results (so b
// runs in a driver job).

/// Stage `a`'s jobs wait for the file `gate` (so a detached run provably returns before they
/// end), then append `a <id> <ns>` to `events.txt`; b's generator appends `gen <ns>` first;
/// b's jobs append `b <id> <ns>`.
fn two_stages(backend: Backend, wf: &str) -> String {
    manifest(
        backend,
        wf,
        r#"[stages.a]
jobs = [{id = "x", v = 1}, {id = "y", v = 2}, {id = "z", v = 3}]
run = '''i=0; while [ ! -e {{workflow.dir}}/gate ] && [ $i -lt 1500 ]; do sleep 0.2; i=$((i+1)); done; echo {{job.v}} > "$POOLPARTY_RESULT"; echo "a {{job.id}} $(date +%s%N)" >> {{workflow.dir}}/events.txt'''

[stages.b]
needs = ["a"]
generate = "sh gen.sh"
run = '''echo "b {{job.id}} $(date +%s%N)" >> {{workflow.dir}}/events.txt; echo {{job.w}} > "$POOLPARTY_RESULT"'''
"#,
    )
}

const GEN_SH: &str = r#"echo "gen $(date +%s%N)" >> events.txt
n=0
while read -r v; do
  echo "{\"id\": \"b$n\", \"w\": $((v * 10))}"
  n=$((n + 1))
done < "$POOLPARTY_NEEDS_A_RESULTS"
"#;

/// Parses `events.txt` into (kind, id, nanoseconds) in file order.
fn events(t: &Test) -> Vec<(String, String, u128)> {
    lines(t, "events.txt")
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (kind, id, ns) = match f.as_slice() {
                [k, ns] => (*k, "", *ns),
                [k, id, ns] => (*k, *id, *ns),
                _ => panic!("bad event line {l:?}"),
            };
            (
                kind.to_owned(),
                id.to_owned(),
                ns.parse().unwrap_or_else(|e| panic!("{l:?}: {e}")),
            )
        })
        .collect()
}

fn detached_two_stage_run(backend: Backend) {
    let wf = workflow("detach", backend);
    let _g = guard(backend, &wf);
    let t = Test::new()
        .manifest(&two_stages(backend, &wf))
        .file("gen.sh", GEN_SH);
    if backend == Backend::Local {
        // A local "detached" run runs in submit.sh itself: nothing to hold back.
        std::fs::write(t.path().join("gate"), "").unwrap();
    }
    let r = pp(&t, &["run", "--detach"]);
    r.code(0).stdout_has("bundle written to");
    if backend != Backend::Local {
        // It returned while a's jobs are still held at the gate.
        assert!(
            events(&t).is_empty(),
            "jobs ended before `run --detach` returned: {:?}",
            events(&t)
        );
        let early = json(&pp(&t, &["status", "--json"]).stdout, "status --json");
        assert_ne!(early["verdict"], "succeeded", "{early:#}");
        std::fs::write(t.path().join("gate"), "").unwrap();
    }
    let report = wait_status(&t, backend, &wf, DETACHED_LIMIT, |r| {
        r["verdict"] == "succeeded"
    });
    assert_eq!(stage(&report, "a")["stats"]["succeeded"], 3, "{report:#}");
    assert_eq!(stage(&report, "b")["stats"]["succeeded"], 3, "{report:#}");

    // Order: every a job ended before b's generator ran, b's jobs after it.
    let ev = events(&t);
    let kinds: Vec<&str> = ev.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        ["a", "a", "a", "gen", "b", "b", "b"],
        "events in file order: {ev:?}"
    );
    let a_end = ev.iter().filter(|e| e.0 == "a").map(|e| e.2).max().unwrap();
    let gen_at = ev.iter().find(|e| e.0 == "gen").unwrap().2;
    let b_start = ev.iter().filter(|e| e.0 == "b").map(|e| e.2).min().unwrap();
    assert!(a_end < gen_at && gen_at < b_start, "{ev:?}");
    assert_eq!(
        sorted(
            ev.iter()
                .filter(|e| e.0 == "a")
                .map(|e| e.1.clone())
                .collect()
        ),
        ["x", "y", "z"]
    );

    pp(&t, &["status"])
        .code(0)
        .stdout_has("every job succeeded");
    let r = pp(&t, &["results", "--stage", "b"]);
    r.code(0);
    assert_eq!(r.stdout, "[10, 20, 30]\n");
    let r = pp(&t, &["results", "--stage", "a"]);
    r.code(0);
    assert_eq!(r.stdout, "[1, 2, 3]\n");

    // Once the driver job has left the queue (it may still be finishing when status already
    // reads every outcome), a plain run runs no job again (b's generator runs, its jobs are
    // reused).
    if backend != Backend::Local {
        wait_queue_empty(&t, backend, &wf, Duration::from_secs(120));
    }
    pp(&t, &["run"]).code(0);
    let again: Vec<String> = events(&t).into_iter().map(|e| e.0).collect();
    assert_eq!(
        again.iter().filter(|k| *k == "a" || *k == "b").count(),
        6,
        "a run after the detached one ran jobs again: {again:?}"
    );
}

backends!(detached_two_stage_run: local => Local, slurm => Slurm, sge => Sge);

/// `run --detach --force` runs every job again, in the bundle's scripts and in the drivers
/// (it used to be ignored: the bundle reused every recorded success).
fn detached_force(backend: Backend) {
    let wf = workflow("detachforce", backend);
    let _g = guard(backend, &wf);
    let t = Test::new()
        .manifest(&two_stages(backend, &wf))
        .file("gen.sh", GEN_SH);
    std::fs::write(t.path().join("gate"), "").unwrap();
    pp(&t, &["run"]).code(0);
    pp(&t, &["run", "--detach", "--force"]).code(0);
    let report = wait_status(&t, backend, &wf, DETACHED_LIMIT, |r| {
        r["verdict"] == "succeeded"
    });
    assert_eq!(stage(&report, "b")["stats"]["succeeded"], 3, "{report:#}");
    let ev: Vec<String> = events(&t).into_iter().map(|e| e.0).collect();
    for kind in ["a", "b"] {
        assert_eq!(
            ev.iter().filter(|k| *k == kind).count(),
            6,
            "`run --detach --force` did not run every job of `{kind}` again: {ev:?}"
        );
    }
}

backends!(detached_force: local => Local);

/// A detached run where a job of `a` fails: b's driver does not run a's failed job again
/// (and b, `on_failure = "stop"`, does not run).
fn detached_run_with_a_failed_need(backend: Backend) {
    let wf = workflow("detachfail", backend);
    let _g = guard(backend, &wf);
    let t = Test::new().manifest(&manifest(
        backend,
        &wf,
        r#"[stages.a]
jobs = [{id = "x"}, {id = "bad"}, {id = "z"}]
run = '''echo "a {{job.id}}" >> {{workflow.dir}}/ran.txt; [ {{job.id}} != bad ]'''

[stages.b]
needs = ["a"]
generate = "echo '[1, 2]'"
run = '''echo "b {{job}}" >> {{workflow.dir}}/ran.txt'''
"#,
    ));
    pp(&t, &["run", "--detach"]).code(0);
    if backend != Backend::Local {
        // The driver job has ended once nothing of the workflow is queued.
        wait_queue_empty(&t, backend, &wf, DETACHED_LIMIT);
    }
    let report = wait_status(&t, backend, &wf, Duration::from_secs(30), |r| {
        stage(r, "a")["stats"]["not_run"] == 0
    });
    let a = stage(&report, "a");
    assert_eq!(a["stats"]["succeeded"], 2, "{report:#}");
    assert_eq!(a["stats"]["failed"], 1, "{report:#}");
    assert_eq!(a["failed"][0]["id"], "bad", "{report:#}");
    assert_eq!(
        a["failed"][0]["attempts"], 1,
        "the failed job ran again: {report:#}"
    );
    assert!(stage(&report, "b")["not_started"].is_string(), "{report:#}");
    assert_eq!(
        sorted(lines(&t, "ran.txt")),
        ["a bad", "a x", "a z"],
        "each job of a runs once, b not at all"
    );
    if backend != Backend::Local {
        let log = t.read(&format!(".poolparty/{wf}/b/driver.log"));
        assert!(log.contains("does not run"), "driver.log:\n{log}");
    }
    pp(&t, &["status"]).code(1).stdout_has("a job 1 `bad`");
}

backends!(detached_run_with_a_failed_need: local => Local, slurm => Slurm, sge => Sge);

// ---------------------------------------------------------------------------------------
// 5. `plan --out DIR`, then `bash DIR/submit.sh` by hand.

fn bundle_submitted_by_hand(backend: Backend) {
    let wf = workflow("bundle", backend);
    let _g = guard(backend, &wf);
    let t = Test::new().manifest(&manifest(backend, &wf, &counting_stage([0, 1, 2, 3], None)));
    let r = pp(&t, &["plan", "--out", "bundle"]);
    r.code(0)
        .stdout_has("bundle written to")
        .stdout_has("4 jobs");
    assert!(lines(&t, "ran.txt").is_empty(), "plan --out ran something");
    let b = bash_bounded(&t, &t.path().join("bundle/submit.sh"));
    b.code(0);

    let report = wait_status(&t, backend, &wf, DETACHED_LIMIT, |r| {
        r["verdict"] == "succeeded"
    });
    assert_eq!(stage(&report, "a")["stats"]["succeeded"], 4, "{report:#}");
    assert_eq!(sorted(lines(&t, "ran.txt")), ["j0", "j1", "j2", "j3"]);
    pp(&t, &["status"])
        .code(0)
        .stdout_has("every job succeeded (4 jobs");
    let r = pp(&t, &["results"]);
    r.code(0);
    assert_eq!(r.stdout, "[0, 1, 2, 3]\n");
    // `plan` counts the bundle's outcomes, which `run` collects, as done.
    pp(&t, &["plan"])
        .code(0)
        .stdout_has("4 jobs: 0 would run (0 new, 0 changed, 0 failed before), 4 done and reused");

    // A run adopts what the bundle did: no job runs again.
    pp(&t, &["run"]).code(0);
    assert_eq!(lines(&t, "ran.txt").len(), 4, "the run reran bundled jobs");
    pp(&t, &["plan"])
        .code(0)
        .stdout_has("4 jobs: 0 would run (0 new, 0 changed, 0 failed before), 4 done and reused");
    let r = pp(&t, &["results"]);
    r.code(0);
    assert_eq!(r.stdout, "[0, 1, 2, 3]\n");
}

backends!(bundle_submitted_by_hand: local => Local, slurm => Slurm, sge => Sge);

fn bundle_failure_named_by_status(backend: Backend) {
    let wf = workflow("bundlefail", backend);
    let _g = guard(backend, &wf);
    let t = Test::new().manifest(&manifest(
        backend,
        &wf,
        &counting_stage([0, 1, 2, 3], Some("j2")),
    ));
    pp(&t, &["plan", "--out", "bundle"]).code(0);
    bash_bounded(&t, &t.path().join("bundle/submit.sh")).code(0);
    let report = wait_status(&t, backend, &wf, DETACHED_LIMIT, all_ended);
    let a = stage(&report, "a");
    assert_eq!(a["stats"]["succeeded"], 3, "{report:#}");
    assert_eq!(a["stats"]["failed"], 1, "{report:#}");
    assert_eq!(a["failed"][0]["id"], "j2", "{report:#}");
    assert_eq!(a["failed"][0]["exit_code"], 3, "{report:#}");
    assert_eq!(report["verdict"], "jobs_failed");
    let r = pp(&t, &["status"]);
    r.code(1).stdout_has("a job 2 `j2`: exit code 3");
    // The job's stderr is named and shown.
    r.stdout_has("a/logs/j2.err").stdout_has("broken");
    pp(&t, &["plan"])
        .code(0)
        .stdout_has("4 jobs: 1 would run (0 new, 0 changed, 1 failed before), 3 done and reused");
    // A run keeps the bundle's successes. (Whether it runs j2 once more differs: a local
    // bundle's failure is an earlier attempt, rerun; a cluster's is adopted as this run's.)
    pp(&t, &["run"])
        .code(1)
        .stderr_has("a job 2 `j2`: exit code 3");
    let ran = lines(&t, "ran.txt");
    assert!(
        ran.len() <= 5 && ran[4..].iter().all(|l| l == "j2"),
        "the run reran bundled jobs that had succeeded: {ran:?}"
    );
    let r = pp(&t, &["results", "--format", "jsonl"]);
    r.code(1);
    let outcomes: Vec<String> = r
        .stdout
        .lines()
        .map(|l| {
            json(l, "results jsonl")["outcome"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(outcomes, ["succeeded", "succeeded", "failed", "succeeded"]);
}

backends!(bundle_failure_named_by_status: local => Local, slurm => Slurm, sge => Sge);

// ---------------------------------------------------------------------------------------
// 6. `poolparty cancel` after a detached run of long jobs.

fn cancel_detached_run(backend: Backend) {
    let wf = workflow("cancel", backend);
    let _g = guard(backend, &wf);
    // b is generated from a's results: a driver job waits for a in the queue.
    let t = Test::new().manifest(&manifest(
        backend,
        &wf,
        r#"[stages.a]
jobs = [{id = "x"}, {id = "y"}, {id = "z"}]
run = '''echo "start {{job.id}}" >> {{workflow.dir}}/started.txt; sleep 300'''

[stages.b]
needs = ["a"]
generate = "echo '[1, 2]'"
run = '''echo "b {{job}}" >> {{workflow.dir}}/started.txt'''
"#,
    ));
    pp(&t, &["run", "--detach"]).code(0);
    let listed = queued(backend, &wf).unwrap_or_default();
    assert!(
        listed.len() >= 2,
        "the array and the driver job should be queued: {listed:?}"
    );
    // Wait (bounded) until the three jobs run.
    let deadline = Instant::now() + DETACHED_LIMIT;
    while lines(&t, "started.txt").len() < 3 {
        assert!(
            Instant::now() < deadline,
            "a's jobs did not start within {DETACHED_LIMIT:?}: {:?}\n{}",
            lines(&t, "started.txt"),
            diagnostics(&t, backend, &wf)
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    let r = pp(&t, &["cancel"]);
    r.code(0).stderr_has("cancelled");
    // Every array and the driver leave the queue, and nothing is started again.
    wait_queue_empty(&t, backend, &wf, Duration::from_secs(120));
    let started = lines(&t, "started.txt");
    assert_eq!(
        sorted(started.clone()),
        ["start x", "start y", "start z"],
        "{started:?}"
    );

    let r = pp(&t, &["status"]);
    r.code(130);
    let report = json(&pp(&t, &["status", "--json"]).stdout, "status --json");
    assert_eq!(report["verdict"], "interrupted", "{report:#}");
    let a = stage(&report, "a");
    assert_eq!(a["stats"]["interrupted"], 3, "{report:#}");
    assert_eq!(a["stats"]["succeeded"], 0, "{report:#}");
    // A second cancel finds nothing left.
    pp(&t, &["cancel"]).code(0).stderr_has("nothing to cancel");
}

backends!(cancel_detached_run: slurm => Slurm, sge => Sge);

// ---------------------------------------------------------------------------------------
// 7. Provenance: one `.runs/<run>.json` per run.

fn provenance_of_each_run(backend: Backend) {
    use sha2::Digest as _;
    let wf = workflow("prov", backend);
    let _g = guard(backend, &wf);
    let first = manifest(backend, &wf, &counting_stage([0, 1, 2, 3], None));
    let second = manifest(backend, &wf, &counting_stage([0, 1, 2, 30], None));
    let sha = |text: &str| format!("{:x}", sha2::Sha256::digest(text.as_bytes()));

    let t = Test::new().manifest(&first);
    pp(&t, &["run"]).code(0);
    let t = t.manifest(&second);
    pp(&t, &["run"]).code(0);

    let runs_dir = t.state(&wf).join(".runs");
    let mut runs: Vec<Value> = std::fs::read_dir(&runs_dir)
        .unwrap_or_else(|e| panic!("{}: {e}", runs_dir.display()))
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| {
            json(
                &std::fs::read_to_string(e.path()).unwrap(),
                &e.path().display().to_string(),
            )
        })
        .collect();
    assert_eq!(runs.len(), 2, "{runs:#?}");
    runs.sort_by(|a, b| {
        a["started"]
            .as_f64()
            .partial_cmp(&b["started"].as_f64())
            .unwrap()
    });
    assert_ne!(runs[0]["run"], runs[1]["run"]);
    for (run, text) in runs.iter().zip([&first, &second]) {
        assert_eq!(run["manifest_sha256"], sha(text), "{run:#}");
        assert_eq!(
            run["poolparty_version"],
            env!("CARGO_PKG_VERSION"),
            "{run:#}"
        );
        assert_eq!(run["verdict"], "succeeded", "{run:#}");
        let stages = run["stages"].as_array().expect("stages");
        assert_eq!(stages.len(), 1, "{run:#}");
        assert_eq!(stages[0]["name"], "a");
        assert_eq!(stages[0]["stats"]["succeeded"], 4, "{run:#}");
    }
    // The second run reran only the changed job.
    assert_eq!(stage(&runs[1], "a")["reused"], 3, "{:#}", runs[1]);

    let r = pp(&t, &["status", "--json"]);
    r.code(0);
    let status = json(&r.stdout, "status --json");
    assert_eq!(status["verdict"], "succeeded", "{status:#}");
    assert_eq!(status["manifest_sha256"], sha(&second));
    assert_eq!(status["run"], runs[1]["run"], "status names the last run");
}

backends!(provenance_of_each_run: local => Local, slurm => Slurm, sge => Sge);

// ---------------------------------------------------------------------------------------
// 8. Bundles are deterministic: two bundles differ exactly in the changed job.

#[test]
fn bundles_differ_only_in_the_changed_job() {
    let wf = "rr-diff";
    let t = Test::new().manifest(&manifest(
        Backend::Local,
        wf,
        &counting_stage([0, 1, 2, 3], None),
    ));
    pp(&t, &["plan", "--out", "A"]).code(0);
    pp(&t, &["plan", "--out", "A2"]).code(0);
    let dir = t.path().to_path_buf();
    let diff = |a: &str, b: &str| -> (Option<i32>, String) {
        let o = std::process::Command::new("diff")
            .args(["-r", a, b])
            .current_dir(&dir)
            .output()
            .expect("diff runs");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    };
    let (code, out) = diff("A", "A2");
    assert_eq!(
        code,
        Some(0),
        "two bundles of the same state differ:\n{out}"
    );

    let t = t.manifest(&manifest(
        Backend::Local,
        wf,
        &counting_stage([0, 1, 22, 3], None),
    ));
    pp(&t, &["plan", "--out", "B"]).code(0);
    let (code, out) = diff("A", "B");
    assert_eq!(code, Some(1), "{out}");
    let changed: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("< ") || l.starts_with("> "))
        .collect();
    assert!(
        changed.iter().any(|l| l.starts_with("< ")) && changed.iter().any(|l| l.starts_with("> ")),
        "{out}"
    );
    // The temporary folder's random name may itself contain `j1` and the like.
    let tmp = t.path().display().to_string();
    for l in &changed {
        let l = l.replace(&tmp, "[TMP]");
        assert!(
            l.contains("j2") && !["j0", "j1", "j3"].iter().any(|o| l.contains(o)),
            "a changed line is not only job j2's: {l}\n--- diff -r A B\n{out}"
        );
    }
    assert!(
        changed
            .iter()
            .any(|l| l.starts_with("> ") && l.contains("22")),
        "{out}"
    );
    // Only files of stage a's job list and script differ, not submit.sh.
    let files: Vec<&str> = out.lines().filter(|l| l.starts_with("diff ")).collect();
    assert!(
        !files.is_empty() && files.iter().all(|f| f.contains("A/a/")),
        "{out}"
    );
    assert!(!out.contains("submit.sh"), "{out}");

    // Both bundles are usable: B's submit.sh runs the changed manifest's jobs.
    bash_bounded(&t, &t.path().join("B/submit.sh")).code(0);
    let r = pp(&t, &["results"]);
    r.code(0);
    assert_eq!(r.stdout, "[0, 1, 22, 3]\n");
}

// ---------------------------------------------------------------------------------------
// 8. `plan --out` needs no scheduler on the machine (issue #13): the array limit comes from
// `max_array_size`, else the cluster, else the scheduler's documented default, and the
// output says which.

/// The `PATH` of this process without any folder holding a scheduler client.
fn path_without_schedulers() -> String {
    let clients = ["scontrol", "sbatch", "squeue", "qconf", "qsub", "qstat"];
    let path = std::env::var("PATH").unwrap_or_default();
    let kept: Vec<&str> = path
        .split(':')
        .filter(|d| !d.is_empty() && !clients.iter().any(|c| Path::new(d).join(c).exists()))
        .collect();
    kept.join(":")
}

#[test]
fn bundles_need_no_scheduler_installed() {
    let path = path_without_schedulers();
    for c in ["scontrol", "qconf"] {
        assert!(
            !std::env::split_paths(&path).any(|d| d.join(c).exists()),
            "`{c}` is still on the test's PATH"
        );
    }
    let jobs: Vec<String> = (0..2003).map(|i| i.to_string()).collect();
    let t = Test::new()
        .manifest(&format!(
            "[workflow]\nname = \"rr-noclient\"\n\
             [stages.big]\nbackend = \"slurm\"\njobs = [{}]\nrun = \"echo {{{{job}}}}\"\n\
             [stages.small]\nbackend = \"sge\"\nmax_array_size = 2\njobs = [1, 2, 3]\nrun = \"true\"\n\
             [stages.other]\nbackend = \"sge\"\njobs = [1]\nrun = \"true\"\n",
            jobs.join(", ")
        ))
        .env("PATH", &path);
    let r = pp(&t, &["plan", "--out", "bundle"]);
    r.code(0)
        .stdout_has("bundle written to")
        .stdout_has(
            "slurm arrays of at most 1001 tasks: the documented default `MaxArraySize` of slurm (the cluster could not be asked: cannot read the cluster's configuration: cannot run `scontrol`",
        )
        .stdout_has("sge arrays of at most 2 tasks: the `max_array_size` setting")
        .stdout_has("sge arrays of at most 75000 tasks: Grid Engine's default `max_aj_tasks`")
        .stdout_has("stage `big` (slurm): 2003 jobs, 3 script(s)")
        .stdout_has("stage `small` (sge): 3 jobs, 2 script(s)");
    let script = |p: &str| t.read(&format!("bundle/{p}"));
    assert!(script("big/array-1.sh").contains("#SBATCH --array=0-1000\n"));
    assert!(script("big/array-2.sh").contains("#SBATCH --array=0-1000\n"));
    assert!(script("big/array-3.sh").contains("#SBATCH --array=0-0\n"));
    assert!(script("small/array-1.sh").contains("#$ -t 1-2\n"));
    assert!(script("small/array-2.sh").contains("#$ -t 1-1\n"));
    let submit = script("submit.sh");
    assert!(
        submit.contains("# slurm arrays of at most 1001 tasks: the documented default"),
        "{submit}"
    );
    assert!(submit.contains("pp_submit_slurm() {") && submit.contains("pp_submit_sge() {"));
    let n = |s: &str| submit.matches(s).count();
    assert_eq!(
        (n("prev=$(pp_submit_slurm "), n("prev=$(pp_submit_sge ")),
        (3, 3)
    );
}

// ---------------------------------------------------------------------------------------
// 8. Every example, detached, gives the results of an attached local run: stages that read
// their needs' results (map-reduce's `reduce`, telescope's generated `analyse`) see them.

/// A copy of `examples/<name>/` in a fresh test folder, its workflow renamed to `wf` (cluster
/// jobs are named after it).
fn example_copy(name: &str, wf: &str) -> Test {
    let t = Test::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    harness::copy_tree(&src, t.path());
    let path = t.path().join("poolparty.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    let old = table["workflow"]["name"].as_str().unwrap().to_owned();
    let renamed = text.replacen(&format!("name = \"{old}\""), &format!("name = \"{wf}\""), 1);
    assert_ne!(renamed, text, "examples/{name}: workflow name not found");
    std::fs::write(&path, renamed).unwrap();
    t
}

/// Every stage's `results`, in manifest order.
fn all_results(t: &Test) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(t.path().join("poolparty.toml")).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    let names: Vec<String> = table["stages"]
        .as_table()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    names
        .into_iter()
        .map(|s| {
            let r = pp(t, &["results", "--stage", &s]);
            r.code(0);
            (s, r.stdout)
        })
        .collect()
}

fn detached_examples(backend: Backend) {
    let examples = ["map-reduce", "std-dev", "telescope"];
    let on_disk: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().join("poolparty.toml").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
    assert_eq!(
        sorted(on_disk),
        examples,
        "a new example: add it to this test's list"
    );
    for name in examples {
        let wf = workflow(&format!("ex-{name}"), backend);
        let _g = guard(backend, &wf);
        let attached = example_copy(name, &wf);
        pp(&attached, &["run", "--backend", "local"]).code(0);
        let expected = all_results(&attached);

        let t = example_copy(name, &wf);
        pp(&t, &["run", "--backend", backend.name(), "--detach"]).code(0);
        let report = wait_status(&t, backend, &wf, DETACHED_LIMIT, |r| {
            r["verdict"] == "succeeded"
        });
        if backend != Backend::Local {
            wait_queue_empty(&t, backend, &wf, Duration::from_secs(120));
        }
        assert_eq!(
            all_results(&t),
            expected,
            "examples/{name} detached on {}: {report:#}",
            backend.name()
        );
        // The same by hand: `plan --out` and `bash submit.sh`.
        let by_hand = example_copy(name, &wf);
        pp(
            &by_hand,
            &["plan", "--backend", backend.name(), "--out", "bundle"],
        )
        .code(0);
        bash_bounded(&by_hand, &by_hand.path().join("bundle/submit.sh")).code(0);
        wait_status(&by_hand, backend, &wf, DETACHED_LIMIT, |r| {
            r["verdict"] == "succeeded"
        });
        if backend != Backend::Local {
            wait_queue_empty(&by_hand, backend, &wf, Duration::from_secs(120));
        }
        assert_eq!(
            all_results(&by_hand),
            expected,
            "examples/{name} bundled on {}",
            backend.name()
        );
        if name == "map-reduce" {
            assert_eq!(
                expected,
                [
                    (
                        "map".to_owned(),
                        pp(&t, &["results", "--stage", "map"]).stdout
                    ),
                    ("reduce".to_owned(), "[2870]\n".to_owned())
                ]
            );
        }
    }
}

backends!(detached_examples: local => Local, slurm => Slurm, sge => Sge);

/// A detached run where a job of `a` fails and `b` (static jobs, `on_failure = "continue"`)
/// reads its needs: b's driver runs b once with a's failed ids and a's outcomes file, and does
/// not run a's failed job again, exactly as an attached run would.
fn detached_run_continues_with_failed_ids(backend: Backend) {
    let wf = workflow("detachcont", backend);
    let _g = guard(backend, &wf);
    let t = Test::new().manifest(&manifest(
        backend,
        &wf,
        r#"[stages.a]
jobs = [{id = "x"}, {id = "bad"}, {id = "z"}]
run = '''echo "a {{job.id}}" >> {{workflow.dir}}/ran.txt; [ {{job.id}} != bad ]'''

[stages.b]
needs = ["a"]
on_failure = "continue"
jobs = [{id = "only"}]
run = '''echo b {{needs.a.failed}} >> {{workflow.dir}}/ran.txt; grep -c '"succeeded":true' "$POOLPARTY_NEEDS_A_OUTCOMES" > "$POOLPARTY_RESULT"'''
"#,
    ));
    pp(&t, &["run", "--detach"]).code(0);
    let report = wait_status(&t, backend, &wf, DETACHED_LIMIT, |r| {
        stage(r, "b")["stats"]["succeeded"] == 1
    });
    if backend != Backend::Local {
        wait_queue_empty(&t, backend, &wf, Duration::from_secs(120));
    }
    let a = stage(&report, "a");
    assert_eq!(a["stats"]["failed"], 1, "{report:#}");
    assert_eq!(a["failed"][0]["attempts"], 1, "{report:#}");
    assert_eq!(
        sorted(lines(&t, "ran.txt")),
        ["a bad", "a x", "a z", "b [\"bad\"]"],
        "each job of a runs once, b once with a's failed ids"
    );
    let r = pp(&t, &["results", "--stage", "b"]);
    r.code(0);
    assert_eq!(r.stdout, "[2]\n");
}

backends!(detached_run_continues_with_failed_ids: local => Local, slurm => Slurm, sge => Sge);
