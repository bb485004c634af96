//! `bundle = "auto"` in `plan`, without a cluster
//! (<https://github.com/poolparty/poolparty/issues/14>): `plan` only reads the ledger, so the
//! durations a local run recorded are enough to show how a Slurm stage would be packed. The
//! runs themselves are in tests/slurm.rs; packing is unit-tested in `backend::packing`.

use serde_json::Value;

use crate::harness::Test;

/// 30 jobs: every third one returns at once, the others sleep 0.1 or 0.2 s.
fn stage(backend: &str, sleep: &str) -> String {
    let jobs: Vec<String> = (0..30).map(|i| i.to_string()).collect();
    format!(
        "[workflow]\nname = \"auto\"\n[defaults]\nbackend = \"{backend}\"\nbundle = \"auto\"\n\
         task_time = \"1m\"\n[stages.a]\nmatrix = {{ i = [{}] }}\n\
         run = [\"sh\", \"-c\", \"{sleep} 0.$(({{{{job.i}}}} % 3))\"]\n",
        jobs.join(", ")
    )
}

/// Nothing recorded: `plan` says a first wave is measured (text and JSON).
#[test]
fn auto_bundling_plan_without_durations_announces_a_first_wave() {
    let t = Test::new().manifest(&stage("slurm", "sleep"));
    t.run(&["plan"]).code(0).stdout_has(
        "bundle auto (task_time 0:01:00): no durations recorded yet: a first wave of 5 jobs runs one per task, then the other 25 are packed by its measured durations",
    );
    let json: Value = serde_json::from_str(&t.run(&["plan", "--json"]).stdout).unwrap();
    let b = &json["stages"][0]["bundling"];
    assert_eq!(b["mode"], "auto", "{json}");
    assert_eq!(b["first_wave"], 5, "{json}");
    assert_eq!(b["jobs"], 30, "{json}");
    assert_eq!(b["task_time"], 60.0, "{json}");
}

/// With durations recorded (here by a local run), `plan` shows the packing: every job
/// recorded, the minimum of 10 tasks for 3 s of work, the longest task at least the mean
/// (LPT's upper bound is unit-tested in `backend::packing`).
#[test]
fn auto_bundling_plan_shows_the_packing_of_recorded_durations() {
    let t = Test::new().manifest(&stage("local", "sleep"));
    t.run(&["-q", "run"]).code(0);
    // A changed command on the cluster: every job would run again, packed.
    let t = t.manifest(&stage("slurm", "sleep "));
    t.run(&["plan"])
        .code(0)
        .stdout_has("bundle auto (task_time 0:01:00): 30 jobs in 10 tasks of at most ");
    t.run(&["plan"])
        .stdout_has("(durations recorded for 30 of them)");
    let json: Value = serde_json::from_str(&t.run(&["plan", "--json"]).stdout).unwrap();
    let p = &json["stages"][0]["bundling"]["packing"];
    assert_eq!(p["jobs"], 30, "{json}");
    assert_eq!(p["tasks"], 10, "{json}");
    assert_eq!(p["recorded"], 30, "{json}");
    let most = p["max_jobs_per_task"].as_u64().unwrap();
    assert!((3..=30).contains(&most), "{json}");
    let total = p["total"].as_f64().unwrap();
    let longest = p["longest_task"].as_f64().unwrap();
    // 20 jobs sleep 0.1 or 0.2 s.
    assert!(total >= 3.0, "{json}");
    assert!(longest >= total / 10.0 - 1e-9, "{json}");

    // Local stages do not bundle: no bundling line.
    let t = t.manifest(&stage("local", "sleep  "));
    let plan = t.run(&["plan"]);
    plan.code(0);
    assert!(!plan.stdout.contains("bundle auto"), "{}", plan.stdout);
}
