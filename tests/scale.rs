//! Scale: planning memory stays a small fixed record per job
//! (<https://github.com/poolparty/poolparty/issues/14>).
//!
//! Not timed: speed lives in `bench/million.sh`. Memory is the peak resident set
//! (`VmHWM` in `/proc/<pid>/status`), sampled while `poolparty validate` or `plan` runs.

use std::io::Write as _;
use std::time::Duration;

use crate::harness::Test;

/// A workflow of `n` jobs `{"i": N, "name": "..."}` in a JSON Lines file, rendered into argv.
fn workflow(n: usize) -> Test {
    let mut jobs = Vec::with_capacity(n * 100);
    for i in 0..n {
        writeln!(
            jobs,
            r#"{{"i": {i}, "name": "item-{i:07}-{}"}}"#,
            "x".repeat(68)
        )
        .unwrap();
    }
    Test::new()
        .manifest(
            "[workflow]\nname = \"scale\"\n[stages.m]\njobs_file = \"jobs.jsonl\"\n\
             run = [\"true\", \"{{job.i}}\", \"{{job.name}}\"]\n",
        )
        .file("jobs.jsonl", std::str::from_utf8(&jobs).unwrap())
}

/// Runs `poolparty validate` and returns the largest `VmHWM` (KiB) seen while it ran.
fn validate_peak_kib(t: &Test) -> u64 {
    peak_kib(t, &["validate"])
}

/// Runs poolparty with `args` and returns the largest `VmHWM` (KiB) seen while it ran.
fn peak_kib(t: &Test, args: &[&str]) -> u64 {
    let mut child = t
        .command(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        // Read before `try_wait`: once reaped, the process's status is gone.
        if let Ok(text) = std::fs::read_to_string(&status_file) {
            if let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kib);
            }
        }
        if let Some(status) = child.try_wait().expect("waits") {
            assert!(status.success(), "{args:?} failed: {status}");
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(peak > 0, "no VmHWM read from {status_file}");
    peak
}

/// issue 14: planning 200,000 jobs costs well under 400 bytes per job more than 20,000 (it
/// was ~1 KiB per job when every job's parsed value and rendered command were kept).
#[test]
fn issue_14_plan_memory_per_job_is_small() {
    let (small, large) = (20_000, 200_000);
    let small_peak = validate_peak_kib(&workflow(small));
    let large_peak = validate_peak_kib(&workflow(large));
    let per_job = large_peak.saturating_sub(small_peak) * 1024 / (large - small) as u64;
    eprintln!(
        "validate: {small_peak} KiB for {small} jobs, {large_peak} KiB for {large}: {per_job} B/job"
    );
    assert!(
        per_job < 400,
        "{per_job} bytes per job (peak {small_peak} KiB for {small} jobs, {large_peak} KiB for {large})"
    );
}

/// issue 14: `plan` (text and `--json`) of 200,000 jobs holds a small fixed record per job:
/// well under 300 bytes per job more than 20,000 jobs (each job's canonical JSON, ~85 bytes
/// here, its id, offsets and fingerprint), never a parsed value or a rendered command per
/// job, and `--json` writes its document as it goes.
#[test]
fn issue_14_plan_memory_stays_flat() {
    let (small, large) = (20_000, 200_000);
    let (small_t, large_t) = (workflow(small), workflow(large));
    for args in [&["plan"][..], &["--json", "plan"], &["-v", "plan"]] {
        let small_peak = peak_kib(&small_t, args);
        let large_peak = peak_kib(&large_t, args);
        let per_job = large_peak.saturating_sub(small_peak) * 1024 / (large - small) as u64;
        eprintln!(
            "{args:?}: {small_peak} KiB for {small} jobs, {large_peak} KiB for {large}: {per_job} B/job"
        );
        assert!(
            per_job < 300,
            "{args:?}: {per_job} bytes per job (peak {small_peak} KiB for {small} jobs, {large_peak} KiB for {large})"
        );
    }
}
