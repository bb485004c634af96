//! Results (#8): byte-exact capture, ordering, missing results, and the output formats.

use crate::harness::Test;

fn results_of(manifest: &str, args: &[&str]) -> (Test, crate::harness::Ran) {
    let t = Test::new().manifest(manifest);
    t.run(&["run", "-q"]);
    let mut a = vec!["results"];
    a.extend_from_slice(args);
    let r = t.run(&a);
    (t, r)
}

#[test]
fn exact_numbers_text_bytes_and_empty() {
    let (_, r) = results_of(
        r#"
[workflow]
name = "w"
[stages.a]
jobs = ["0.1", "12345678901234567890", "1e400", "hello world", "BYTES", "", " [1, 2.50] "]
run = '''if [ {{job}} = BYTES ]; then printf '\377\000a' > $POOLPARTY_RESULT; else printf %s {{job}} > $POOLPARTY_RESULT; fi'''
"#,
        &[],
    );
    r.code(0);
    assert_eq!(
        r.stdout,
        "[0.1, 12345678901234567890, 1e400, \"hello world\", {\"$base64\":\"/wBh\"}, \"\", [1, 2.50]]\n"
    );
}

#[test]
fn stdout_results_and_failed_job_null() {
    let (t, r) = results_of(
        r#"
[workflow]
name = "w"
[stages.a]
jobs = [1, 2, 3]
result = "stdout"
run = "echo '{\"v\": {{job}}}'; echo 'log line' >&2; test {{job}} != 2"
"#,
        &[],
    );
    r.code(1).stderr_has("exit code 1");
    assert_eq!(r.stdout, "[{\"v\": 1}, null, {\"v\": 3}]\n");
    // The failed job's result is kept and shown in jsonl, marked failed.
    let l = t.run(&["results", "--format", "jsonl"]);
    let lines: Vec<serde_json::Value> = l
        .stdout
        .lines()
        .map(|x| serde_json::from_str(x).unwrap())
        .collect();
    assert_eq!(lines[1]["outcome"], "failed");
    assert_eq!(lines[1]["exit_code"], 1);
    assert_eq!(lines[1]["result"]["v"], 2);
    // stdout is still logged.
    assert_eq!(
        t.read(".poolparty/w/a/logs/6b86b273ff34fce1.out"),
        "{\"v\": 1}\n"
    );
    t.run(&["results", "--allow-missing"]).code(0);
}

#[test]
fn job_without_result_is_null_and_named() {
    let (_, r) = results_of(
        "[workflow]\nname='w'\n[stages.a]\njobs=[{id='a'},{id='b'}]\nrun='[ {{job.id}} = b ] || echo 1 > $POOLPARTY_RESULT'\n",
        &[],
    );
    r.code(1)
        .stderr_has("job 1 `b`: succeeded but wrote no result");
    assert_eq!(r.stdout, "[1, null]\n");
}

#[test]
fn oversize_result_stays_a_file() {
    let (t, r) = results_of(
        "[workflow]\nname='w'\n[stages.a]\njobs=[1]\nresult_max_bytes=10\nrun='seq 100 > $POOLPARTY_RESULT'\n",
        &[],
    );
    r.code(0).stderr_has("kept as a file");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let path = v[0]["$file"].as_str().unwrap();
    assert_eq!(v[0]["bytes"], 292);
    assert!(path.starts_with(t.path().to_str().unwrap()));
    assert_eq!(std::fs::read_to_string(path).unwrap().lines().count(), 100);
}

#[test]
fn csv_and_tsv_flatten_object_results() {
    let (t, r) = results_of(
        "[workflow]\nname='w'\n[stages.a]\njobs=[{id='x',n=1},{id='y',n=2}]\nrun='printf %s {{job}} > $POOLPARTY_RESULT'\n",
        &["--format", "csv"],
    );
    r.code(0);
    assert_eq!(
        r.stdout,
        "index,id,exit_code,result.id,result.n\n0,x,0,x,1\n1,y,0,y,2\n"
    );
    let tsv = t.run(&["results", "--format", "tsv", "--with-job"]);
    assert_eq!(
        tsv.stdout.lines().next().unwrap(),
        "index\tid\texit_code\tresult.id\tresult.n\tjob"
    );
}

#[test]
fn several_stages_need_stage_flag() {
    let t = Test::new().manifest("[workflow]\nname='w'\n[stages.a]\njobs=[1]\nrun='true'\n[stages.b]\njobs=[1]\nrun='true'\n");
    t.run(&["run", "-q"]).code(0);
    t.run(&["results"]).code(2).stderr_has("--stage");
    t.run(&["results", "--stage", "c"])
        .code(2)
        .stderr_has("no stage `c`");
}

#[test]
fn results_survive_a_resumed_run() {
    let m = "[workflow]\nname='w'\n[stages.a]\njobs=[1,2]\nrun='echo {{job}} > $POOLPARTY_RESULT; echo {{job}} >> ran'\n";
    let t = Test::new().manifest(m);
    t.run(&["run", "-q"]).code(0);
    t.run(&["run", "-q"]).code(0);
    assert_eq!(t.read("ran").lines().count(), 2);
    assert_eq!(t.run(&["results"]).stdout, "[1, 2]\n");
}
