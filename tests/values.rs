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
