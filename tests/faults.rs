//! Faults leave a true record: corrupted state is refused with a way out that works, a state
//! folder deleted under a run stops it, a full disk stops the run with exit 3 and a readable
//! ledger (issue #11, §5).

use std::path::{Path, PathBuf};

use crate::harness::{Test, read_lines};

const TWO_JOBS: &str = r#"
[workflow]
name = "w"
[stages.a]
jobs = [1, 2]
run = "echo {{job}} >> ran.txt; echo {{job}} > $POOLPARTY_RESULT"
"#;

fn ran(t: &Test) -> usize {
    std::fs::read_to_string(t.state("w").join("a/ran.txt"))
        .or_else(|_| std::fs::read_to_string(t.path().join("ran.txt")))
        .map_or(0, |s| s.lines().count())
}

/// Files in the stage folder whose name starts with `prefix`.
fn named(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect()
}

#[test]
fn all_nul_ledger_is_refused_and_run_force_recovers() {
    let t = Test::new().manifest(TWO_JOBS);
    t.run(&["run"]).code(0);
    assert_eq!(ran(&t), 2);
    let ledger = t.state("w").join("a/ledger.jsonl");
    let len = std::fs::metadata(&ledger).unwrap().len();
    // What a crashed file system can leave: the right length, all zeros.
    std::fs::write(&ledger, vec![0u8; usize::try_from(len).unwrap()]).unwrap();

    // Refused (not read as "nothing succeeded"), naming the file and line, saying what to do.
    let r = t.run(&["run"]);
    r.code(3)
        .stderr_has("a/ledger.jsonl")
        .stderr_has("line 1")
        .stderr_has("NUL")
        .stderr_has("poolparty run --force");
    assert_eq!(ran(&t), 2, "a corrupt ledger must not rerun anything");
    t.run(&["status"]).code(3).stderr_has("a/ledger.jsonl");

    // The way out works: the bad file is kept aside and the stage runs afresh.
    let r = t.run(&["run", "--force"]);
    r.code(0).stderr_has("moved it to");
    assert_eq!(ran(&t), 4);
    let aside = named(&t.state("w").join("a"), "ledger.jsonl.corrupt-");
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read(&aside[0]).unwrap(),
        vec![0u8; usize::try_from(len).unwrap()]
    );
    // And the state is whole again: nothing reruns, results are back.
    t.run(&["run"]).code(0);
    assert_eq!(ran(&t), 4);
    let r = t.run(&["results"]);
    r.code(0);
    assert_eq!(r.stdout, "[1, 2]\n");
}

#[test]
fn garbage_line_in_a_ledger_is_refused_with_its_line() {
    let t = Test::new().manifest(TWO_JOBS);
    t.run(&["run"]).code(0);
    let ledger = t.state("w").join("a/ledger.jsonl");
    let text = std::fs::read_to_string(&ledger).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(1, "this is not json");
    std::fs::write(&ledger, lines.join("\n") + "\n").unwrap();
    t.run(&["status"])
        .code(3)
        .stderr_has("line 2 is not a record")
        .stderr_has("--force");
    t.run(&["results"]).code(3).stderr_has("line 2");
    t.run(&["run", "--force"]).code(0).stderr_has("moved it to");
    assert_eq!(ran(&t), 4);
    t.run(&["status"]).code(0);
}

/// `plan` reads the recorded state while it expands the jobs (#14): a corrupt ledger is still
/// reported with its line, and bad input before it, as when the two were read one after the
/// other.
#[test]
fn plan_reads_a_corrupt_ledger_ahead_and_reports_bad_input_first() {
    let t = Test::new().manifest(TWO_JOBS);
    t.run(&["run"]).code(0);
    let ledger = t.state("w").join("a/ledger.jsonl");
    let text = std::fs::read_to_string(&ledger).unwrap();
    std::fs::write(&ledger, format!("{text}this is not json\n")).unwrap();
    t.run(&["plan"])
        .code(3)
        .stderr_has("line 3 is not a record");
    t.run(&["--json", "plan"])
        .code(3)
        .stderr_has("line 3 is not a record");
    let manifest = t.path().join("poolparty.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("{{job}} >>", "{{job.nope}} >>")).unwrap();
    t.run(&["plan"]).code(2).stderr_has("job.nope");
}

#[test]
fn torn_last_line_is_still_accepted() {
    let t = Test::new().manifest(TWO_JOBS);
    t.run(&["run"]).code(0);
    let ledger = t.state("w").join("a/ledger.jsonl");
    let mut text = std::fs::read_to_string(&ledger).unwrap();
    // A crash mid-append: the start of a record, no newline.
    text.push_str("{\"index\":1,\"id");
    std::fs::write(&ledger, text).unwrap();
    t.run(&["status"]).code(0);
    t.run(&["run"]).code(0);
    assert_eq!(ran(&t), 2);
}

#[test]
fn job_deleting_the_state_folder_stops_the_run_with_exit_3() {
    let t = Test::new().manifest(
        r#"
[workflow]
name = "w"
[defaults]
max_parallel = 1
[stages.a]
jobs = [1, 2, 3]
run = "if [ {{job}} = 2 ]; then rm -rf {{stage.dir}}; fi; sleep 0.2"
"#,
    );
    t.run(&["run"])
        .code(3)
        .stderr_has("a/ledger.jsonl")
        .stderr_has("deleted or replaced during the run");
}

/// An upstream result that cannot be read back when an element-wise job is fed (here job 2
/// of `a` cuts `a`'s ledger short once job 1 is recorded, so its own record is not where the
/// runner wrote it) is the run's error, at once and once: it used to be a side diagnostic that
/// left the job of `b` without an outcome, and the run failed only later, on the same read.
#[test]
fn unreadable_upstream_result_stops_the_run_with_exit_3() {
    let t = Test::new().manifest(
        r#"
[workflow]
name = "w"
[stages.a]
jobs = [1, 2]
max_parallel = 2
run = "if [ {{job}} = 2 ]; then while [ ! -s {{stage.dir}}/ledger.jsonl ]; do sleep 0.05; done; : > {{stage.dir}}/ledger.jsonl; fi"
[stages.b]
for_each = "a"
run = "true"
"#,
    );
    let out = t.run(&["run"]);
    out.code(3)
        .stderr_has("a/ledger.jsonl")
        .stderr_has("no record at byte");
    assert_eq!(
        out.stderr.matches("no record at byte").count(),
        1,
        "{}",
        out.stderr
    );
}

/// A 2 MiB tmpfs mounted for one test (root only; unmounted when dropped).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(&dir)
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "mounting a small tmpfs (needs root) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Every file below `dir` whose name looks like a temporary file.
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap().to_string_lossy().contains(".tmp") {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn full_disk_stops_the_run_with_exit_3_and_a_readable_record() {
    for (result, job) in [
        // The job's stdout is its result, larger than the disk.
        ("stdout", "head -c 3000007 /dev/zero | tr '\\\\0' x"),
        // Results of 1 MB each, inlined in the ledger, fill the disk.
        (
            "file",
            "head -c 1000000 /dev/zero | tr '\\\\0' x > $POOLPARTY_RESULT; echo done",
        ),
    ] {
        let t = Test::new().manifest(&format!(
            "[workflow]\nname = \"w\"\nwork_dir = \"state\"\n[defaults]\nmax_parallel = 1\nresult_max_bytes = 2000000\n[stages.a]\njobs = [1, 2, 3, 4]\nresult = \"{result}\"\nrun = \"{job}\"\n"
        ));
        let _disk = Tmpfs::mount(t.path().join("state"));
        let r = t.run(&["run"]);
        r.code(3).stderr_has("No space left on device");
        assert!(!r.stderr.contains("could not start"), "{}", r.stderr);
        // Whatever was recorded is readable (no torn record), and says what happened.
        let s = t.run(&["status", "--json"]);
        assert_ne!(s.code, Some(3), "{}{}", s.stdout, s.stderr);
        for rec in read_lines(&t.path().join("state/w/a/ledger.jsonl")) {
            let kind = rec["outcome"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(
                kind == "succeeded" || kind == "output_lost",
                "{result}: {rec}"
            );
            if let Some(f) = rec["result"].get("file") {
                let len = std::fs::metadata(f["path"].as_str().unwrap())
                    .unwrap()
                    .len();
                assert_eq!(f["bytes"], len, "{result}: recorded size differs: {rec}");
            }
        }
        let tmp = temporaries(&t.path().join("state"));
        assert!(tmp.is_empty(), "{result}: temporary files left: {tmp:?}");
    }
}

/// A job whose log cannot be stored (here it replaces its stage's `logs` folder with a file)
/// is recorded as `output_lost`, the run stops with exit 3, and `status` does not claim the job
/// printed nothing.
#[test]
fn output_lost_is_not_called_silent() {
    let t = Test::new().manifest(
        r#"
[workflow]
name = "w"
[stages.a]
jobs = [{ id = "x" }]
run = '''rm -rf "$POOLPARTY_STAGE_DIR/logs"; touch "$POOLPARTY_STAGE_DIR/logs"; echo hi; echo err >&2'''
"#,
    );
    t.run(&["run"])
        .code(3)
        .stderr_has("its output could not be stored");
    let s = t.run(&["status"]);
    s.code(1)
        .stdout_has("a job 0 `x`: succeeded, but its output could not be stored")
        .stdout_has("log: none (what it printed was not stored)");
    assert!(!s.stdout.contains("printed nothing"), "{}", s.stdout);
    t.run(&["report", "--format", "text"])
        .code(0)
        .stdout_has("(output_lost)");
}
