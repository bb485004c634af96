//! The everyday commands (issue #15): `logs`, `init`, `templates`, `completions`, `man`, and
//! failure lines that name a job by its value. The Slurm and Grid Engine `logs` tests live
//! with the other cluster tests in tests/slurm.rs and tests/sge.rs.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::harness::Test;

/// Waits (up to `secs`) until `ready` holds; panics with `what` when time is up.
#[track_caller]
fn wait_for(what: &str, secs: u64, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts `poolparty ARGS` in the background with its output in `<tag>.stdout|.stderr`.
fn spawn(t: &Test, args: &[&str], tag: &str) -> Child {
    t.command(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(t.path().join(format!("{tag}.stdout"))).unwrap())
        .stderr(std::fs::File::create(t.path().join(format!("{tag}.stderr"))).unwrap())
        .spawn()
        .expect("poolparty starts")
}

/// Waits (up to `secs`) for a background process to exit and returns its exit code.
fn wait_exit(child: &mut Child, secs: u64, what: &str) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not exit within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

const TWO_STAGES: &str = r#"
[workflow]
name = "w"
[stages.a]
jobs = [{id = "loud"}, {id = "quiet"}, {id = "3"}, {id = "both"}]
run = "case {{job.id}} in loud) echo hello; echo oops >&2;; 3) echo three;; both) echo a-both;; esac"
[stages.b]
jobs = [{id = "both"}, {id = "other"}]
run = "echo b-{{job.id}}"
"#;

#[test]
fn logs_prints_a_jobs_output_by_id_index_or_prefix() {
    let t = Test::new().manifest(TWO_STAGES);
    t.run(&["run"]).code(0);
    assert_eq!(t.run(&["logs", "loud"]).code(0).stdout, "hello\n");
    assert_eq!(
        t.run(&["logs", "loud", "--stderr"]).code(0).stdout,
        "oops\n"
    );
    // By index, with the manifest named first; index 0 exists in both stages.
    t.run(&["logs", ".", "#0"])
        .code(2)
        .stderr_has("several stages");
    assert_eq!(
        t.run(&["logs", ".", "#0", "--stage", "a"]).code(0).stdout,
        "hello\n"
    );
    // A unique prefix of an id.
    assert_eq!(t.run(&["logs", "lo"]).code(0).stdout, "hello\n");
    assert_eq!(t.run(&["logs", "oth"]).code(0).stdout, "b-other\n");
    // `3` is the id of job 2 and the index of job `both` in stage a.
    t.run(&["logs", "3"])
        .code(2)
        .stderr_has("`3` is ambiguous in stage `a`: the id of job 2 and the index of job `both`")
        .stderr_has("#N");
    assert_eq!(
        t.run(&["logs", "#2", "--stage", "a"]).code(0).stdout,
        "three\n"
    );
    assert_eq!(
        t.run(&["logs", "#3", "--stage", "a"]).code(0).stdout,
        "a-both\n"
    );
}

#[test]
fn logs_of_a_silent_job_says_no_output() {
    let t = Test::new().manifest(TWO_STAGES);
    t.run(&["run"]).code(0);
    let r = t.run(&["logs", "quiet"]);
    r.code(0)
        .stderr_has("no output: job 1 `quiet` of stage `a` printed nothing on stdout")
        .stderr_has("succeeded");
    assert_eq!(r.stdout, "");
    t.run(&["logs", "loud", "--stage", "b"]).code(2);
}

#[test]
fn logs_of_an_unknown_or_ambiguous_job_suggests() {
    let t = Test::new().manifest(TWO_STAGES);
    // Nothing expanded yet.
    t.run(&["logs", "loud"])
        .code(2)
        .stderr_has("no stage has expanded its jobs yet")
        .stderr_has("poolparty run");
    t.run(&["run"]).code(0);
    t.run(&["logs", "lodu"])
        .code(2)
        .stderr_has("no job `lodu`")
        .stderr_has("did you mean `loud`?");
    t.run(&["logs", "zzzzzz"])
        .code(2)
        .stderr_has("stage `a` has 4 jobs")
        .stderr_has("`loud`");
    t.run(&["logs", "both"])
        .code(2)
        .stderr_has("several stages: `a`, `b`")
        .stderr_has("--stage a");
    assert_eq!(
        t.run(&["logs", "both", "--stage", "b"]).code(0).stdout,
        "b-both\n"
    );
    t.run(&["logs", "both", "--stage", "c"])
        .code(2)
        .stderr_has("no stage `c`");
    t.run(&["logs"]).code(2).stderr_has("which job?");
    t.run(&["logs", "."])
        .code(2)
        .stderr_has("which job of `.`?");
    t.run(&["logs", "poolparty.toml"])
        .code(2)
        .stderr_has("which job of `poolparty.toml`?");
}

#[test]
fn logs_stage_defaults_to_the_only_stage() {
    let t = Test::new().manifest(
        "[workflow]\nname = \"w\"\n[stages.only]\njobs = [{i = 1}, {i = 2}]\nrun = \"echo i={{job.i}}\"\n",
    );
    t.run(&["run"]).code(0);
    assert_eq!(t.run(&["logs", "1"]).code(0).stdout, "i=2\n");
    t.run(&["logs", "5"])
        .code(2)
        .stderr_has("stage `only` has 2 jobs (indexes 0 to 1");
}

#[test]
fn logs_follow_tails_a_running_job_until_its_outcome() {
    logs_during_and_after_a_run("[workflow]\nname = \"w\"\n", "w");
}

/// `logs` and `logs --follow` of a job while it runs and after, on the backend `header` (a
/// manifest's `[workflow]` and `[defaults]`) names; `wf` is the workflow's name. Job `slow`
/// prints a line, waits for the file `go` (at most 120 s), then prints another; job `quiet`
/// prints nothing.
pub fn logs_during_and_after_a_run(header: &str, wf: &str) {
    let t = Test::new();
    let go = t.path().join("go");
    let t = t.manifest(&format!(
        "{header}[stages.a]\njobs = [{{id = \"slow\"}}, {{id = \"quiet\"}}]\n\
         run = \"if [ {{{{job.id}}}} = slow ]; then echo first; for i in $(seq 1200); do [ -e {go} ] && break; sleep 0.1; done; echo second; echo err-line >&2; fi\"\n",
        go = go.display()
    ));
    let mut run = spawn(&t, &["run"], "run");
    let log = t.state(wf).join("a/logs/slow.out");
    wait_for("the job's first line", 300, || read(&log).contains("first"));
    // Output so far, while the job runs.
    let r = t.run(&["logs", "slow"]);
    r.code(0).stderr_has("no recorded outcome yet");
    assert_eq!(r.stdout, "first\n");
    let mut follow = spawn(&t, &["logs", "slow", "--follow"], "follow");
    let out = t.path().join("follow.stdout");
    wait_for("follow to print the first line", 60, || {
        read(&out).contains("first")
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(follow.try_wait().unwrap().is_none(), "follow ended early");
    std::fs::write(&go, "").unwrap();
    let code = wait_exit(&mut follow, 300, "logs --follow");
    let stderr = read(&t.path().join("follow.stderr"));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(read(&out), "first\nsecond\n");
    assert!(
        stderr.contains("job 0 `slow` of stage `a` ended: attempt 1: succeeded"),
        "{stderr}"
    );
    let code = wait_exit(&mut run, 300, "the run");
    assert_eq!(code, Some(0), "{}", read(&t.path().join("run.stderr")));
    // After the run: both streams, the silent job, and --follow ending at once.
    assert_eq!(t.run(&["logs", "slow"]).code(0).stdout, "first\nsecond\n");
    let r = t.run(&["logs", "slow", "--stderr", "--follow"]);
    r.code(0).stderr_has("ended: attempt 1: succeeded");
    assert_eq!(r.stdout, "err-line\n");
    let r = t.run(&["logs", "quiet"]);
    r.code(0)
        .stderr_has("no output: job 1 `quiet` of stage `a` printed nothing on stdout");
    assert_eq!(r.stdout, "");
}

#[test]
fn logs_follow_of_a_job_that_has_not_printed_yet_waits_and_stops_on_ctrl_c() {
    let t = Test::new().manifest(
        r#"
[workflow]
name = "w"
[stages.a]
jobs = [{id = "mute"}]
run = "for i in $(seq 600); do [ -e go ] && break; sleep 0.1; done"
"#,
    );
    let mut run = spawn(&t, &["run"], "run");
    wait_for("the jobs file", 60, || {
        t.state("w").join("a/jobs.jsonl").exists()
    });
    let r = t.run(&["logs", "mute"]);
    r.code(0).stderr_has("no output yet");
    let mut follow = spawn(&t, &["logs", "mute", "-f"], "follow");
    // It keeps following while the job runs.
    std::thread::sleep(Duration::from_secs(3));
    assert!(follow.try_wait().unwrap().is_none(), "follow ended early");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(follow.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    assert_eq!(
        wait_exit(&mut follow, 30, "logs --follow after SIGINT"),
        Some(130)
    );
    assert!(read(&t.path().join("follow.stderr")).contains("stopped following"));
    std::fs::write(t.path().join("go"), "").unwrap();
    assert_eq!(wait_exit(&mut run, 60, "the run"), Some(0));
}

#[test]
fn failure_lines_name_hash_id_jobs_by_their_value() {
    let t = Test::new().manifest(
        r#"
[workflow]
name = "w"
[stages.a]
matrix = { i = [6, 7], tag = ["x"] }
run = "test {{job.i}} -ne 7"
[stages.b]
jobs = [{id = "named", i = 7}]
run = "exit 4"
"#,
    );
    let r = t.run(&["run"]);
    r.code(1)
        .stderr_has(r#"{i = 7, tag = "x"}"#)
        .stderr_has("b job 0 `named`: exit code 4");
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with("  a job 1 `"))
        .unwrap_or_else(|| panic!("no failure line for a/1:\n{}", r.stderr));
    assert!(
        line.ends_with(r#"` {i = 7, tag = "x"}: exit code 1"#),
        "{line}"
    );
    t.run(&["status"])
        .code(1)
        .stdout_has(r#"` {i = 7, tag = "x"}: exit code 1"#);
    let summary: serde_json::Value =
        serde_json::from_str(&t.read(".poolparty/w/summary.json")).unwrap();
    let failed = &summary["stages"][0]["failed"][0];
    assert_eq!(failed["label"], r#"{i = 7, tag = "x"}"#);
    assert!(summary["stages"][1]["failed"][0].get("label").is_none());
    t.run(&["results", "--stage", "a"])
        .code(1)
        .stderr_has(r#"` {i = 7, tag = "x"}: exit code 1"#);
}

#[test]
fn init_writes_a_workflow_that_validates_and_runs() {
    let t = Test::new();
    let r = t.run(&["init", "starter"]);
    r.code(0).stdout_has("poolparty.toml");
    let manifest = t.read("starter/poolparty.toml");
    assert!(
        manifest.starts_with("#:schema ./poolparty.schema.json\n"),
        "{manifest}"
    );
    assert!(manifest.contains("name = \"starter\""), "{manifest}");
    assert_eq!(
        t.read("starter/poolparty.schema.json"),
        t.run(&["schema"]).stdout
    );
    t.run(&["validate", "starter"])
        .code(0)
        .stdout_has("valid (2 stages");
    t.run(&["run", "starter"])
        .code(0)
        .stderr_has("every job succeeded");
    assert_eq!(
        t.run(&["results", "starter", "--stage", "square"])
            .code(0)
            .stdout,
        "[1, 4, 9, 16, 25]\n"
    );
    assert_eq!(
        t.run(&["results", "starter", "--stage", "total"])
            .code(0)
            .stdout,
        "[55]\n"
    );
    assert_eq!(
        t.run(&["logs", "starter", "n3"]).code(0).stdout,
        "squaring 3\n"
    );
}

/// The `next:` line of `init` can be pasted into a shell for a folder with a space in its name.
#[test]
fn init_next_line_is_shell_quoted() {
    let t = Test::new();
    let r = t.run(&["init", "my proj"]);
    r.code(0)
        .stdout_has("next: poolparty validate 'my proj' && poolparty run 'my proj'");
    let next = r
        .stdout
        .lines()
        .last()
        .unwrap()
        .strip_prefix("next: ")
        .unwrap();
    let ran = std::process::Command::new("sh")
        .arg("-c")
        .arg(next)
        .current_dir(t.path())
        .env(
            "PATH",
            format!(
                "{}:{}",
                Path::new(env!("CARGO_BIN_EXE_poolparty"))
                    .parent()
                    .unwrap()
                    .display(),
                std::env::var("PATH").unwrap()
            ),
        )
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
}

#[test]
fn init_into_the_current_folder_refuses_to_overwrite_without_force() {
    let t = Test::new().file("job.sh", "# mine\n");
    t.run(&["init"])
        .code(2)
        .stderr_has("not overwriting `./job.sh`")
        .stderr_has("--force");
    // Nothing was written.
    assert!(!t.path().join("poolparty.toml").exists());
    assert_eq!(t.read("job.sh"), "# mine\n");
    t.run(&["init", "--force"]).code(0);
    assert!(t.read("job.sh").contains("POOLPARTY_RESULT"));
    t.run(&["validate"]).code(0);
}

#[test]
fn templates_list_show_and_eject_for_the_template_key() {
    let t = Test::new();
    let r = t.run(&["templates", "list"]);
    r.code(0)
        .stdout_has("slurm.sbatch.hbs")
        .stdout_has("sge.qsub.hbs")
        .stdout_has("local.sh.hbs");
    let shown = t.run(&["templates", "show", "slurm"]);
    shown.code(0).stdout_has("#SBATCH --array={{array}}");
    assert_eq!(
        shown.stdout,
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/slurm.sbatch.hbs")
        )
        .unwrap()
    );
    t.run(&["templates", "show", "slurrm"])
        .code(2)
        .stderr_has("did you mean `slurm`?");
    t.run(&["templates", "eject", "slurm", "tpl"])
        .code(0)
        .stdout_has("tpl/slurm.sbatch.hbs");
    assert_eq!(t.read("tpl/slurm.sbatch.hbs"), shown.stdout);
    t.run(&["templates", "eject", "slurm", "tpl"])
        .code(2)
        .stderr_has("already exists")
        .stderr_has("--force");
    // Edit the ejected template; `plan --out` renders with it.
    let edited = shown.stdout.replace(
        "#SBATCH --job-name",
        "#SBATCH --comment=ejected-and-edited\n#SBATCH --job-name",
    );
    std::fs::write(t.path().join("tpl/slurm.sbatch.hbs"), edited).unwrap();
    let t = t.manifest(
        r#"
[workflow]
name = "w"
[stages.a]
backend = "slurm"
template = "tpl/slurm.sbatch.hbs"
jobs = [1, 2]
run = "echo {{job}}"
"#,
    );
    t.run(&["plan", "--out", "bundle"]).code(0);
    let script = t.read("bundle/a/array-1.sh");
    assert!(
        script.contains("#SBATCH --comment=ejected-and-edited"),
        "{script}"
    );
    assert!(script.contains("#SBATCH --array="), "{script}");
    t.run(&["templates", "eject", "local", "tpl", "--force"])
        .code(0);
    assert!(t.read("tpl/local.sh.hbs").contains("xargs -P"));
}

/// An ejected Slurm template used where the stage runs on Grid Engine (or in a local bundle)
/// is refused before anything is written or submitted; a local test run that does not use the
/// template is not refused.
#[test]
fn a_template_for_another_scheduler_is_refused() {
    let t = Test::new().manifest(
        r#"
[workflow]
name = "w"
[defaults]
backend = "slurm"
template = "tpl/slurm.sbatch.hbs"
[stages.a]
jobs = [1, 2]
run = "echo {{job}}"
"#,
    );
    t.run(&["templates", "eject", "slurm", "tpl"]).code(0);
    t.run(&["validate"]).code(0);
    t.run(&["plan", "--out", "bundle"]).code(0);
    for args in [
        &["validate", "--backend", "sge"][..],
        &["plan", "--out", "b2", "--backend", "sge"],
        &["run", "--backend", "sge"],
        &["plan", "--out", "b3", "--backend", "local"],
        &["run", "--detach", "--backend", "local"],
    ] {
        t.run(args)
            .code(2)
            .stderr_has("is written for `slurm`")
            .stderr_has("SLURM_ARRAY_TASK_ID")
            .stderr_has("poolparty templates eject");
    }
    assert!(!t.path().join("b2").exists() && !t.path().join("b3").exists());
    // An attached local run does not use the template.
    t.run(&["run", "--backend", "local"]).code(0);
}

#[test]
fn bash_completion_is_valid_and_completes_subcommands() {
    let t = Test::new();
    let r = t.run(&["completions", "bash"]);
    r.code(0);
    std::fs::write(t.path().join("pp.bash"), &r.stdout).unwrap();
    let ok = std::process::Command::new("bash")
        .args(["-n", "pp.bash"])
        .current_dir(t.path())
        .status()
        .unwrap();
    assert!(ok.success(), "bash -n rejects the completion script");
    // Source it and ask the completion function, as bash would for `poolparty l<TAB>` and
    // `poolparty logs --s<TAB>`.
    let script = r#"
source ./pp.bash
COMP_WORDS=(poolparty l); COMP_CWORD=1; COMP_LINE="poolparty l"; COMP_POINT=${#COMP_LINE}
_poolparty poolparty l poolparty
echo "words: ${COMPREPLY[*]}"
COMP_WORDS=(poolparty logs --s); COMP_CWORD=2; COMP_LINE="poolparty logs --s"; COMP_POINT=${#COMP_LINE}
_poolparty poolparty --s logs
echo "flags: ${COMPREPLY[*]}"
"#;
    let out = std::process::Command::new("bash")
        .args(["-c", script])
        .current_dir(t.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let words = text.lines().find(|l| l.starts_with("words:")).unwrap();
    assert!(words.contains("logs"), "{text}");
    let flags = text.lines().find(|l| l.starts_with("flags:")).unwrap();
    assert!(
        flags.contains("--stage") && flags.contains("--stderr"),
        "{text}"
    );
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let r = t.run(&["completions", shell]);
        r.code(0).stdout_has("logs");
    }
    t.run(&["completions", "tcsh"]).code(2);
}

#[test]
fn man_page_renders() {
    let t = Test::new();
    let r = t.run(&["man"]);
    r.code(0)
        .stdout_has(".TH poolparty 1")
        .stdout_has(".SH NAME")
        .stdout_has(".SH SYNOPSIS")
        .stdout_has("logs");
    std::fs::write(t.path().join("poolparty.1"), &r.stdout).unwrap();
    // `man -l` formats it as a reader would see it (man-db is installed by .ci/run).
    let out = std::process::Command::new("man")
        .args(["-l", "poolparty.1"])
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .env("MANWIDTH", "80")
        .current_dir(t.path())
        .output()
        .expect("man runs (install man-db)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("SYNOPSIS") && text.contains("poolparty"),
        "{text}"
    );
    assert!(!text.contains(".SH"), "unrendered roff:\n{text}");
    // One page per command into a folder.
    t.run(&["man", "--out", "man"])
        .code(0)
        .stdout_has("poolparty-logs.1");
    assert!(
        t.read("man/poolparty-init.1")
            .contains(".TH poolparty-init 1")
    );
}
