//! Regression tests for <https://github.com/poolparty/poolparty/issues/11> (§4 bounded
//! resources, §6 values exactly as written, §7 messages): limits that keep the runner's
//! memory and threads bounded, values that reach commands and results as written, and state
//! messages (`status`) that say what really happened.

use std::time::{Duration, Instant};

use crate::harness::{Test, read_lines};

fn three_jobs(extra: &str) -> String {
    format!(
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1, 2, 3]\nrun = \"echo {{{{job}}}} > out-{{{{job}}}}\"\n{extra}"
    )
}

#[test]
fn huge_max_parallel_runs_with_as_many_workers_as_jobs() {
    for n in ["4294967295", "30000"] {
        let t = Test::new().manifest(&three_jobs(&format!("max_parallel = {n}\n")));
        t.run(&["run"]).code(0);
        assert_eq!(t.read("out-3").trim(), "3");
    }
    let t = Test::new().manifest(&three_jobs(""));
    t.run(&["run", "--max-parallel", "4294967295"]).code(0);
    assert_eq!(t.read("out-2").trim(), "2");
}

#[test]
fn max_parallel_minus_one_is_explained() {
    let t = Test::new().manifest(&three_jobs(""));
    let r = t.run(&["validate", "--max-parallel", "-1"]);
    r.code(2).stderr_has("-1").stderr_has("1 to 4294967295");
    assert!(!r.stderr.contains("-- -1"), "{}", r.stderr);
    let r = t.run(&["validate", "--max-parallel", "0"]);
    r.code(2).stderr_has("1 to 4294967295");
}

/// Peak resident memory (kB) of a process, polled from `/proc` until it exits.
fn peak_rss_kb(mut child: std::process::Child) -> (u64, std::process::ExitStatus) {
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            if let Some(kb) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kb);
            }
        }
        if let Some(st) = child.try_wait().expect("wait") {
            return (peak, st);
        }
        assert!(Instant::now() < deadline, "the run did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn stdout_result_memory_is_bounded() {
    // 200 MB of stdout as the result: it stays in the stdout log, and the runner's memory
    // does not grow with it. The job sleeps after printing so the runner is still alive to be
    // measured once everything went through it.
    let t = Test::new().manifest(
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\nresult = \"stdout\"\nrun = \"head -c 200000000 /dev/zero; sleep 1\"\n",
    );
    let child = t
        .command(&["run", "-q"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starts");
    let (peak, status) = peak_rss_kb(child);
    assert!(status.success(), "{status}");
    assert!(peak > 0, "no memory reading");
    eprintln!("peak RSS of the runner: {peak} kB");
    assert!(
        peak < 64 * 1024,
        "peak RSS {peak} kB for a 200 MB stdout result"
    );
    let ledger = read_lines(&t.state("w").join("a").join("ledger.jsonl"));
    let result = &ledger.last().expect("a record")["result"]["file"];
    assert_eq!(result["bytes"], 200_000_000, "{ledger:?}");
    let path = result["path"].as_str().expect("kept as a file");
    assert_eq!(std::fs::metadata(path).unwrap().len(), 200_000_000);
}

#[test]
fn numbers_reach_commands_env_and_results_as_written() {
    let t = Test::new()
        .manifest(
            "[workflow]\nname = \"w\"\n[stages.a]\njobs_file = \"jobs.jsonl\"\nresult = \"stdout\"\nrun = \"echo {{job.v}} {{job}} $POOLPARTY_JOB > out-{{job_id}}; echo '{\\\"r\\\":' {{job.v}} '}'\"\n",
        )
        .file(
            "jobs.jsonl",
            "{\"id\": \"a\", \"v\": 1e400}\n{\"id\": \"b\", \"v\": 1E2}\n{\"id\": \"c\", \"v\": -2.50e-3}\n",
        );
    t.run(&["run"]).code(0);
    assert_eq!(
        t.read("out-a").trim(),
        r#"1e400 {"id":"a","v":1e400} {"id":"a","v":1e400}"#
    );
    assert_eq!(
        t.read("out-b").trim(),
        r#"1E2 {"id":"b","v":1E2} {"id":"b","v":1E2}"#
    );
    assert_eq!(t.read("out-c").split(' ').next(), Some("-2.50e-3"));
    let csv = t.run(&["results", "--format", "csv", "--with-job"]);
    csv.code(0);
    assert_eq!(
        csv.stdout,
        "index,id,exit_code,result.r,job\n\
         0,a,0,1e400,\"{\"\"id\"\":\"\"a\"\",\"\"v\"\":1e400}\"\n\
         1,b,0,1E2,\"{\"\"id\"\":\"\"b\"\",\"\"v\"\":1E2}\"\n\
         2,c,0,-2.50e-3,\"{\"\"id\"\":\"\"c\"\",\"\"v\"\":-2.50e-3}\"\n"
    );
    let json = t.run(&["results"]);
    assert_eq!(
        json.stdout,
        "[{\"r\": 1e400 }, {\"r\": 1E2 }, {\"r\": -2.50e-3 }]\n"
    );
}

#[test]
fn toml_datetimes_reach_commands_as_their_text() {
    let t = Test::new().manifest(
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [{ id = \"a\", at = 1979-05-27T07:32:00Z }, { id = \"b\", at = 1979-05-27 }, { id = \"c\", at = 07:32:00.5 }, { id = \"d\", at = 1979-05-27T00:32:00-07:00 }]\nrun = \"echo {{job.at}} $POOLPARTY_JOB > out-{{job_id}}\"\n[stages.m]\nmatrix = { at = [1979-05-27T07:32:00] }\nrun = \"echo {{job.at}} > out-m\"\n",
    );
    t.run(&["run"]).code(0);
    assert_eq!(
        t.read("out-a").trim(),
        r#"1979-05-27T07:32:00Z {"at":"1979-05-27T07:32:00Z","id":"a"}"#
    );
    assert_eq!(t.read("out-b").split(' ').next(), Some("1979-05-27"));
    assert_eq!(t.read("out-c").split(' ').next(), Some("07:32:00.5"));
    assert_eq!(
        t.read("out-d").split(' ').next(),
        Some("1979-05-27T00:32:00-07:00")
    );
    assert_eq!(t.read("out-m").trim(), "1979-05-27T07:32:00");
}

#[test]
fn null_and_empty_string_render_differently() {
    // `null` renders as the word `null` (as `jq -r` prints it), `""` as an empty argument.
    let t = Test::new()
        .manifest(
            "[workflow]\nname = \"w\"\n[stages.a]\njobs_file = \"jobs.jsonl\"\nrun = \"printf '[%s]' {{job.v}} > out-{{job.id}}\"\n[stages.b]\njobs_file = \"jobs.jsonl\"\nrun = [\"sh\", \"-c\", \"printf '[%s]' \\\"$1\\\" > argv-$2\", \"-\", \"{{job.v}}\", \"{{job.id}}\"]\n",
        )
        .file("jobs.jsonl", "{\"id\": \"n\", \"v\": null}\n{\"id\": \"e\", \"v\": \"\"}\n");
    t.run(&["run"]).code(0);
    assert_eq!(t.read("out-n"), "[null]");
    assert_eq!(t.read("out-e"), "[]");
    assert_eq!(t.read("argv-n"), "[null]");
    assert_eq!(t.read("argv-e"), "[]");
}

#[test]
fn a_diagnostic_quoting_a_huge_generator_line_stays_small() {
    for tail in [
        "\", bad}",
        "\", \"id\": \"../x\"}",
        "\"}\\n{\\\"a\\\": 1}\\n{\\\"a\\\": 1}",
    ] {
        let t = Test::new()
            .manifest("[workflow]\nname = \"w\"\n[stages.a]\ngenerate = \"sh gen.sh\"\nrun = \"touch ran\"\n")
            .file(
                "gen.sh",
                &format!(
                    "printf '{{\"a\": \"'\nhead -c 5000000 /dev/zero | tr '\\0' x\nprintf '{tail}\\n'\n"
                ),
            );
        let r = t.run(&["validate"]);
        r.code(2);
        assert!(
            r.stderr.len() < 20_000,
            "{} bytes of diagnostic",
            r.stderr.len()
        );
        assert!(r.stderr.contains('…'), "{}", r.stderr);
    }
}

#[test]
fn a_byte_order_mark_is_accepted_in_manifests_and_jobs_files() {
    let t = Test::new();
    std::fs::write(
        t.path().join("poolparty.toml"),
        "\u{feff}[workflow]\nname = \"w\"\n[stages.a]\njobs_file = \"jobs.jsonl\"\nrun = \"echo {{job}} >> out\"\n[stages.b]\njobs_file = \"jobs.json\"\nrun = \"echo {{job}} >> out-b\"\n",
    )
    .unwrap();
    std::fs::write(t.path().join("jobs.jsonl"), "\u{feff}1\n2\n").unwrap();
    std::fs::write(t.path().join("jobs.json"), "\u{feff}[3]").unwrap();
    t.run(&["run"]).code(0);
    let mut lines: Vec<String> = t.read("out").lines().map(str::to_owned).collect();
    lines.sort();
    assert_eq!(lines, ["1", "2"]);
    assert_eq!(t.read("out-b"), "3\n");
}

#[test]
fn mermaid_node_ids_are_never_keywords() {
    let t = Test::new().manifest(
        "[workflow]\nname='w'\n[stages.end]\njobs=[1]\nrun='true'\n[stages.graph]\nneeds=['end']\njobs=[1]\nrun='true'\n[stages.a-b]\nneeds=['graph']\njobs=[1]\nrun='true'\n[stages.stage_end]\nneeds=['a-b']\njobs=[1]\nrun='true'\n[stages.plain]\nneeds=['stage_end']\njobs=[1]\nrun='true'\n",
    );
    let r = t.run(&["graph", "--format", "mermaid"]);
    r.code(0);
    assert_eq!(
        r.stdout,
        "flowchart LR\n  \
         _stage_end[\"end (1 job, local)\"]\n  \
         stage_graph[\"graph (1 job, local)\"]\n  \
         stage_a_b[\"a-b (1 job, local)\"]\n  \
         stage_end[\"stage_end (1 job, local)\"]\n  \
         plain[\"plain (1 job, local)\"]\n  \
         _stage_end --> stage_graph\n  \
         stage_graph --> stage_a_b\n  \
         stage_a_b --> stage_end\n  \
         stage_end --> plain\n"
    );
}

#[test]
fn status_before_any_run_says_so() {
    let t = Test::new().manifest(&three_jobs(""));
    let r = t.run(&["status"]);
    r.code(1).stdout_has("no run yet");
    assert!(!r.stdout.contains("failed or did not run"), "{}", r.stdout);
}

#[test]
fn status_without_jobs_file_still_shows_recorded_outcomes() {
    let t = Test::new().manifest(&three_jobs(""));
    t.run(&["run"]).code(0);
    std::fs::remove_file(t.state("w").join("a").join("jobs.jsonl")).unwrap();
    let r = t.run(&["status", "--json"]);
    r.code(0);
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let a = &report["stages"][0];
    assert_eq!(a["jobs"], 3, "{a}");
    assert_eq!(a["stats"]["succeeded"], 3, "{a}");
    assert!(a["not_started"].is_null(), "{a}");
    assert_eq!(report["verdict"], "succeeded");
}

/// A `for_each` stage sees its upstream job's value and result with numbers as written.
#[test]
fn for_each_jobs_see_upstream_numbers_as_written() {
    let t = Test::new()
        .manifest(
            r#"
[workflow]
name = "w"
[stages.a]
jobs_file = "jobs.jsonl"
run = '''printf '%s' {{job.r}} > "$POOLPARTY_RESULT"'''
[stages.c]
for_each = "a"
run = '''echo "{{job.upstream.v}} {{job.result}}" > out-{{job.id}}'''
"#,
        )
        .file(
            "jobs.jsonl",
            "{\"id\": \"a\", \"v\": 1e400, \"r\": \"1E2\"}\n{\"id\": \"b\", \"v\": -2.50e-3, \"r\": \"[1e400]\"}\n",
        );
    t.run(&["run"]).code(0);
    assert_eq!(t.read("out-a").trim(), "1e400 1E2");
    assert_eq!(t.read("out-b").trim(), "-2.50e-3 [1e400]");
}
