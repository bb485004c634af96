//! The stage graph (#3): order, concurrency, streaming element-wise stages, failure policy.

use crate::harness::Test;

/// Waits (in the job's shell) until a file exists, failing the job after 30 s.
const WAIT: &str =
    "n=0; while [ ! -e \"$f\" ]; do n=$((n+1)); [ $n -gt 600 ] && exit 9; sleep 0.05; done";

#[test]
fn generator_runs_after_every_needed_job_ended() {
    let t = Test::new().manifest(
        r#"
[workflow]
name = "w"
[stages.a]
jobs = [1, 2, 3, 4]
max_parallel = 4
run = "sleep 0.{{job}}; echo a-end >> trace"
[stages.b]
needs = ["a"]
generate = "echo gen-start >> trace; cat $POOLPARTY_NEEDS_A_JOBS | wc -l | sed 's/ //g'"
run = "echo b{{job}} >> trace"
"#,
    );
    t.run(&["run"]).code(0);
    let trace = t.read("trace");
    let lines: Vec<&str> = trace.lines().collect();
    assert_eq!(
        lines[..5],
        ["a-end", "a-end", "a-end", "a-end", "gen-start"],
        "{trace}"
    );
    assert_eq!(lines[5], "b4");
}

#[test]
fn independent_stages_run_at_the_same_time() {
    // Each job waits for the other's file: they finish only if both run at once.
    let job = |me: &str, other: &str| format!("touch {me}; f={other}; {WAIT}");
    let t = Test::new().manifest(&format!(
        "[workflow]\nname='w'\n[defaults]\nmax_parallel=1\n[stages.x]\njobs=[1]\nrun='''{}'''\n[stages.y]\njobs=[1]\nrun='''{}'''\n[stages.z]\nneeds=['x','y']\njobs=[1]\nrun='true'\n",
        job("x.ready", "y.ready"),
        job("y.ready", "x.ready")
    ));
    t.run(&["run"]).code(0);
}

#[test]
fn element_wise_job_starts_before_its_upstream_stage_ends() {
    // a's job 1 waits until b's job 0 ran: with a barrier between stages this would fail.
    let t = Test::new().manifest(&format!(
        r#"
[workflow]
name = "w"
[stages.a]
jobs = [{{id = "j0"}}, {{id = "j1"}}]
max_parallel = 2
run = '''if [ {{{{job.id}}}} = j1 ]; then f=b-saw-j0; {WAIT}; fi; printf %s {{{{job.id}}}} > $POOLPARTY_RESULT'''
[stages.b]
for_each = "a"
run = "touch b-saw-{{{{job.id}}}}; echo got-{{{{job.result}}}} > $POOLPARTY_RESULT"
"#
    ));
    t.run(&["run"]).code(0);
    assert_eq!(
        t.run(&["results", "--stage", "b"]).stdout,
        "[\"got-j0\\n\", \"got-j1\\n\"]\n"
    );
}

#[test]
fn failed_need_stops_dependents_but_not_independent_branches() {
    let t = Test::new().manifest(
        r#"
[workflow]
name = "w"
[stages.a]
jobs = [1, 2]
run = "test {{job}} = 1"
[stages.b]
needs = ["a"]
jobs = [1]
run = "touch b-ran"
[stages.c]
jobs = [1]
run = "touch c-ran"
[stages.d]
needs = ["a"]
on_failure = "continue"
jobs = [1]
run = "echo {{needs.a.failed}} > d-saw"
"#,
    );
    let r = t.run(&["run"]);
    r.code(1).stderr_has("needed stage `a` had failed jobs");
    assert!(!t.path().join("b-ran").exists());
    assert!(t.path().join("c-ran").exists());
    assert_eq!(t.read("d-saw").trim(), "[\"d4735e3a265e16ee\"]");
    let summary: serde_json::Value =
        serde_json::from_str(&t.read(".poolparty/w/summary.json")).unwrap();
    let b = summary["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "b")
        .unwrap();
    assert!(b["not_started"].as_str().unwrap().contains("failed jobs"));
}

#[test]
fn element_wise_job_of_failed_upstream_is_not_run() {
    let t = Test::new().manifest(
        "[workflow]\nname='w'\n[stages.a]\njobs=[1,2]\nrun='test {{job}} = 1'\n[stages.b]\nfor_each='a'\nrun='true'\n",
    );
    t.run(&["run"]).code(1);
    let l = t.run(&["results", "--stage", "b", "--format", "jsonl"]);
    let lines: Vec<serde_json::Value> = l
        .stdout
        .lines()
        .map(|x| serde_json::from_str(x).unwrap())
        .collect();
    assert_eq!(lines[0]["outcome"], "succeeded");
    assert_eq!(lines[1]["outcome"], "not_run");
}

#[test]
fn stage_flag_runs_the_stage_and_its_needs_only() {
    let t = Test::new().manifest(
        "[workflow]\nname='w'\n[stages.a]\njobs=[1]\nrun='touch a'\n[stages.b]\nneeds=['a']\njobs=[1]\nrun='touch b'\n[stages.c]\njobs=[1]\nrun='touch c'\n",
    );
    t.run(&["run", "--stage", "b"]).code(0);
    assert!(t.path().join("a").exists() && t.path().join("b").exists());
    assert!(!t.path().join("c").exists());
    t.run(&["run", "--stage", "nope"])
        .code(2)
        .stderr_has("no stage `nope`");
}

#[test]
fn graph_formats() {
    let t = Test::new().manifest(
        "[workflow]\nname='w'\n[stages.map]\nmatrix={x=[1,2,3]}\nrun='true'\n[stages.reduce]\nneeds=['map']\njobs=[1]\nrun='true'\n",
    );
    let text = t.run(&["graph"]);
    text.code(0);
    assert_eq!(
        text.stdout,
        "map (3 jobs, local)\nreduce (1 job, local)  <- needs map\n"
    );
    t.run(&["graph", "--format", "dot"])
        .code(0)
        .stdout_has("\"map\" -> \"reduce\";");
    t.run(&["graph", "--format", "mermaid"])
        .code(0)
        .stdout_has("map --> reduce");
}

/// `--backend` and `--max-parallel` are applied to the settings once, when the manifest is
/// loaded, so `graph` shows the backend a run would really use (#13).
#[test]
fn graph_shows_the_backend_given_on_the_command_line() {
    let t = Test::new().manifest(
        "[workflow]\nname='w'\n[stages.map]\nmatrix={x=[1,2,3]}\nrun='true'\n[stages.reduce]\nneeds=['map']\njobs=[1]\nrun='true'\n",
    );
    let text = t.run(&["--backend", "slurm", "graph"]);
    text.code(0);
    assert_eq!(
        text.stdout,
        "map (3 jobs, slurm)\nreduce (1 job, slurm)  <- needs map\n"
    );
}

#[test]
fn cycle_is_rejected_before_anything_runs() {
    let t = Test::new().manifest(
        "[workflow]\nname='w'\n[stages.a]\nneeds=['b']\njobs=[1]\nrun='touch ran'\n[stages.b]\nneeds=['a']\njobs=[1]\nrun='touch ran'\n",
    );
    t.run(&["run"])
        .code(2)
        .stderr_has("stages form a cycle: b → a → b")
        .stderr_has("`a` needs `b`")
        .stderr_has("`b` needs `a`");
    assert!(!t.path().join("ran").exists());
}

#[test]
fn needed_stage_outcomes_reach_the_dependent_stage() {
    let t = Test::new().manifest(
        r#"
[workflow]
name = "w"
[stages.a]
jobs = [{id = "ok"}, {id = "bad"}]
run = "echo out-{{job.id}}; [ {{job.id}} = ok ]"
[stages.b]
needs = ["a"]
on_failure = "continue"
jobs = [1]
run = "cp $POOLPARTY_NEEDS_A_OUTCOMES seen.jsonl"
"#,
    );
    t.run(&["run"]).code(1);
    let lines: Vec<serde_json::Value> = t
        .read("seen.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], "ok");
    assert_eq!(lines[0]["exit_code"], 0);
    assert_eq!(lines[0]["job"]["id"], "ok");
    assert_eq!(lines[1]["succeeded"], false);
    assert_eq!(lines[1]["exit_code"], 1);
    let out = lines[1]["stdout"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(out).unwrap(), "out-bad\n");
    assert!(lines[1]["stderr"].is_null());
}

/// `validate` renders an element-wise stage's command for every upstream job before any
/// result exists: a field of the upstream result (`job.result.name`) cannot be checked yet
/// and passes, while any other undefined variable is refused.
#[test]
fn validate_lets_upstream_result_fields_pass_but_not_other_undefined_variables() {
    let manifest = |run: &str| {
        format!(
            "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1, 2]\nrun = \"true\"\n[stages.b]\nfor_each = \"a\"\nrun = \"echo {run}\"\n"
        )
    };
    let t = Test::new().manifest(&manifest("{{job.result.name}}"));
    t.run(&["validate"]).code(0);
    let t = Test::new().manifest(&manifest("{{job.nosuch}}"));
    t.run(&["validate"])
        .code(2)
        .stderr_has("`job.nosuch` is not");
}
