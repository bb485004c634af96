//! `poolparty report` and `run --report`: the HTML page (checked in a real headless Chromium)
//! and the text form, from real local runs with a failure and a retry.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::harness::{Test, summary};

/// A workflow with a job that always fails (hostile log text), one that fails once and then
/// succeeds (`retries = 1`), and jobs that succeed.
const FLAKY: &str = r#"
[workflow]
name = "w"
[defaults]
max_parallel = 3
[stages.prep]
jobs = [{ id = "prep" }]
run = "true"
result = "none"
[stages.work]
needs = ["prep"]
jobs = [{ id = "a" }, { id = "bad" }, { id = "flaky" }, { id = "d" }, { id = "e" }]
retries = 1
run = "bash job.sh {{job.id}}"
"#;

const JOB: &str = r#"
case "$1" in
  bad) printf 'first line\nboom </script><script>window.pwned=1</script> <!-- \xe2\x80\xa8 & done\n' >&2; exit 3 ;;
  flaky) if [ ! -e flaky.once ]; then touch flaky.once; echo flaky >&2; exit 1; fi ;;
esac
echo "$1"
"#;

fn flaky_test() -> Test {
    Test::new().manifest(FLAKY).file("job.sh", JOB)
}

/// The JSON embedded in a report page.
pub fn embedded(html: &str) -> Value {
    let open = "<script type=\"application/json\" id=\"poolparty-data\">";
    let start = html.find(open).expect("data element") + open.len();
    let end = start
        + html[start..]
            .find("</script>")
            .expect("end of the data element");
    serde_json::from_str(&html[start..end]).expect("the embedded data is JSON")
}

#[test]
fn run_report_records_failure_retry_and_log_tail() {
    let t = flaky_test();
    t.run(&["run", "--report", "out/report.html"]).code(1);
    let html = t.read("out/report.html");
    // Self-contained: no URL is fetched.
    for needle in ["src=", "@import", "url(http", "url(/"] {
        assert!(!html.contains(needle), "the page references {needle}");
    }
    // The only URL in the page is the SVG namespace, which is never fetched.
    assert_eq!(
        html.matches("http").count(),
        html.matches("http://www.w3.org/2000/svg").count()
    );
    let d = embedded(&html);
    assert_eq!(d["workflow"], "w");
    assert_eq!(d["verdict"], "jobs_failed");
    assert_eq!(d["exit_code"], 1);
    let work = &d["stages"][1];
    assert_eq!(work["name"], "work");
    assert_eq!(work["needs"], serde_json::json!([0]));
    assert_eq!(work["layer"], 1);
    let c = &work["counts"];
    assert_eq!(c["total"], 5);
    assert_eq!(c["succeeded"], 4);
    assert_eq!(c["failed"], 1);
    // bad: 2 attempts, flaky: 2 attempts, 3 others: 1 each.
    assert_eq!(c["attempts"], 7);
    assert_eq!(c["retried"], 2);
    assert_eq!(work["timeline"]["kind"], "bars");
    assert_eq!(work["timeline"]["start"].as_array().unwrap().len(), 7);
    let failed = &work["failed"][0];
    assert_eq!(failed["id"], "bad");
    assert_eq!(failed["exit_code"], 3);
    assert_eq!(failed["attempts"], 2);
    let tail = failed["stderr_tail"].as_str().unwrap();
    assert!(tail.contains("boom </script><script>window.pwned=1</script> <!-- \u{2028} & done"));
    let retried: Vec<&str> = work["retried"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(retried, ["bad", "flaky"]);

    // `report` writes the same facts for the same run.
    t.run(&["report", "-o", "again.html"])
        .code(0)
        .stderr_has("again.html");
    let again = embedded(&t.read("again.html"));
    assert_eq!(again["run"], d["run"]);
    assert_eq!(again["stages"][1]["counts"], d["stages"][1]["counts"]);
}

#[test]
fn hostile_values_and_logs_cannot_break_out_of_the_page() {
    let t = Test::new()
        .manifest(
            r#"
[workflow]
name = "w"
[stages.a]
matrix = { s = ["</script><script>window.pwned=1</script>", "<!--", "a\u2028b\u2029c", "</SCRIPT >&amp;"] }
run = "printf '%s\n' {{job.s}} '</script><b>x</b>' >&2; exit 1"
"#,
        );
    t.run(&["run"]).code(1);
    t.run(&["report", "-o", "r.html"]).code(0);
    let html = t.read("r.html");
    // Exactly two script elements (data and code); nothing recorded opens or closes another.
    assert_eq!(html.to_ascii_lowercase().matches("<script").count(), 2);
    assert_eq!(html.to_ascii_lowercase().matches("</script").count(), 2);
    assert!(!html.contains("<!--"));
    assert!(!html.contains('\u{2028}') && !html.contains('\u{2029}'));
    // The escaped data still says exactly what was recorded.
    let d = embedded(&html);
    let failed = d["stages"][0]["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 4);
    let values: Vec<&str> = failed
        .iter()
        .map(|f| f["value"].as_str().unwrap())
        .collect();
    assert!(
        values.contains(&r#"{"s":"</script><script>window.pwned=1</script>"}"#),
        "{values:?}"
    );
    let tails: String = failed
        .iter()
        .map(|f| f["stderr_tail"].as_str().unwrap())
        .collect();
    assert!(tails.contains("</script><b>x</b>"), "{tails}");
    assert!(tails.contains("a\u{2028}b\u{2029}c"), "{tails}");

    let dom = Chromium::get().dump_dom(&t.path().join("r.html"));
    assert_eq!(dom.status, "ok", "{:?}", dom.error);
    assert_eq!(dom.attr("data-failures"), "4");
    assert!(!dom.html.contains("<b>x</b>"), "log text became HTML");
    assert!(dom.html.contains("&lt;b&gt;x&lt;/b&gt;"));
}

#[test]
fn text_report_has_the_same_facts() {
    let t = flaky_test();
    t.run(&["run"]).code(1);
    let r = t.run(&["report", "--format", "text"]);
    r.code(0)
        .stdout_has("workflow `w`, run ")
        .stdout_has(": jobs failed (exit code 1)")
        .stdout_has("stage `work` (local backend, needs prep): 5 jobs, 7 attempts in this run")
        .stdout_has("retried: 2 jobs")
        .stdout_has("job 2 `flaky`: #1: exit code 1 -> #2: succeeded")
        .stdout_has("job 1 `bad`: exit code 3 after 2 attempts")
        .stdout_has("| boom </script>")
        .stdout_has("running over time")
        .stdout_has("run time: min ");
    // The table row: 5 jobs, 4 ok, 0 reused, 1 failed.
    let row = r
        .stdout
        .lines()
        .find(|l| l.starts_with("work "))
        .expect("a table row for work");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..6], ["work", "local", "5", "4", "0", "1"], "{row}");

    // `--json`: the same data as the page embeds.
    let j: Value = serde_json::from_str(&t.run(&["report", "--json"]).stdout).unwrap();
    assert_eq!(j["stages"][1]["counts"]["retried"], 2);

    // A rerun reuses the successes: the new run's report says so.
    t.run(&["run"]).code(1);
    let r = t.run(&["report", "--format", "text"]);
    let row = r.stdout.lines().find(|l| l.starts_with("work ")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..6], ["work", "local", "5", "4", "4", "1"], "{row}");
}

/// Escape sequences in a job's log tail or value reach no terminal-bound text poolparty writes
/// itself: the run's summary, `status`, `report --format text` and `plan` show them as `^[`.
#[test]
fn escape_sequences_in_log_tails_and_values_stay_off_the_terminal() {
    let t = Test::new().manifest(
        r#"
[workflow]
name = "esc"
[stages.a]
jobs = ["\u001b[2Jx\u001b]0;T\u0007", "ok"]
run = '''printf 'err \033[2J\033]0;TITLE\007\n' >&2; test {{job}} = ok'''
"#,
    );
    let runs = [
        t.run(&["plan"]),
        t.run(&["run"]),
        t.run(&["status"]),
        t.run(&["report", "--format", "text"]),
    ];
    for r in &runs {
        for text in [&r.stdout, &r.stderr] {
            assert!(
                !text.contains('\x1b') && !text.contains('\x07'),
                "raw escape in:\n{text}"
            );
        }
    }
    runs[1].code(1).stderr_has("│ err ^[[2J^[]0;TITLE^G");
    runs[2].stdout_has("│ err ^[[2J");
    runs[0].stdout_has("test '^[[2Jx^[]0;T^G' = ok");
}

/// `status` names the run whose outcomes it shows: while a second run is in progress, and after
/// it was killed before writing its summary, that is the second run, not the one whose
/// `summary.json` is still there.
#[test]
fn status_names_the_latest_run_when_it_was_killed() {
    let t = Test::new().manifest(
        r#"
[workflow]
name = "w"
[stages.a]
jobs = [{ id = "quick" }, { id = "slow" }]
run = "if [ {{job.id}} = slow ]; then for i in $(seq 600); do [ -e go ] && break; sleep 0.1; done; fi"
result = "none"
"#,
    );
    std::fs::write(t.path().join("go"), "").unwrap();
    t.run(&["run"]).code(0);
    let first = summary(&t, "w")["run"].as_str().unwrap().to_owned();
    std::fs::remove_file(t.path().join("go")).unwrap();
    let mut child = t
        .command(&["run", "--force"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ledger = t.state("w").join("a/ledger.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_to_string(&ledger).map_or(0, |l| l.lines().count()) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the quick job of the second run never ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let during = t.run(&["status", "--json"]);
    let during: Value = serde_json::from_str(&during.stdout).unwrap();
    let second = during["run"].as_str().unwrap().to_owned();
    assert_ne!(
        second, first,
        "status names the earlier run during a new one"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::write(t.path().join("go"), "").unwrap();
    let after: Value = serde_json::from_str(&t.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(after["run"], second.as_str());
    assert!(after["ended"].is_null(), "{after}");
    t.run(&["status"]).stdout_has(&format!("run {second}"));
}

/// Jobs a stopped run never started are `not run`, not attempts: the report counts only the
/// attempts that started.
#[test]
fn jobs_never_started_are_not_counted_as_attempts() {
    let t = Test::new().manifest(
        r#"
[workflow]
name = "w"
[defaults]
max_parallel = 1
[stages.a]
jobs = [{ id = "j0" }, { id = "stop" }, { id = "j2" }, { id = "j3" }]
run = "if [ {{job.id}} = stop ]; then kill -INT $PPID; sleep 5; fi"
result = "none"
"#,
    );
    t.run(&["run"]).code(130);
    let j: Value = serde_json::from_str(&t.run(&["report", "--json"]).stdout).unwrap();
    let c = &j["stages"][0]["counts"];
    assert_eq!(
        (
            &c["succeeded"],
            &c["interrupted"],
            &c["not_run"],
            &c["attempts"]
        ),
        (&1.into(), &1.into(), &2.into(), &2.into()),
        "{c}"
    );
    t.run(&["report", "--format", "text"])
        .code(0)
        .stdout_has("stage `a` (local backend): 4 jobs, 2 attempts in this run");
}

/// A run stopped by a state fault (exit 3) still writes the `--report` it was asked for, with
/// the outcomes recorded before it stopped.
#[test]
fn run_report_is_written_when_a_state_fault_stops_the_run() {
    let t = Test::new().manifest(
        r#"
[workflow]
name = "w"
[stages.a]
jobs = [{ id = "x" }]
run = '''rm -rf "$POOLPARTY_STAGE_DIR/logs"; touch "$POOLPARTY_STAGE_DIR/logs"; echo hi'''
"#,
    );
    t.run(&["run", "--report", "r.html"])
        .code(3)
        .stderr_has("its output could not be stored");
    let d = embedded(&t.read("r.html"));
    assert_eq!(d["stages"][0]["counts"]["failed"], 1, "{d}");
    let describe = d["stages"][0]["failed"][0]["describe"].as_str().unwrap();
    assert!(describe.contains("could not be stored"), "{d}");
    let note = d["note"].as_str().unwrap();
    assert!(note.contains("was stopped by an error"), "{note}");
}

#[test]
fn report_of_an_earlier_run_and_unknown_runs() {
    let t = flaky_test();
    t.run(&["report"])
        .code(2)
        .stderr_has("there is nothing to report");
    t.run(&["run"]).code(1);
    let first = crate::harness::summary(&t, "w")["run"]
        .as_str()
        .unwrap()
        .to_owned();
    // Make sure the second run gets a later id (ids have one-second resolution).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    t.run(&["run", "--force"]).code(1);
    let r = t.run(&["report", "--run", &first, "--format", "text"]);
    r.code(0).stdout_has(&format!("run {first}:"));
    t.run(&["report", "--run", "nope"])
        .code(2)
        .stderr_has("no run `nope` is recorded")
        .stderr_has(&first);
}

#[test]
fn above_the_bar_limit_the_timeline_is_binned_and_says_so() {
    let t = Test::new().manifest(
        "[workflow]\nname='w'\n[stages.a]\ngenerate='seq 0 2'\nrun='true'\nresult='none'\n",
    );
    t.run(&["run"]).code(0);
    let run = crate::harness::summary(&t, "w")["run"]
        .as_str()
        .unwrap()
        .to_owned();
    synthesize(&t.state("w").join("a"), &run, 12_000, 1_795_000_000.0);
    t.run(&["report", "-o", "r.html"]).code(0);
    let html = t.read("r.html");
    let d = embedded(&html);
    let a = &d["stages"][0];
    assert_eq!(a["counts"]["total"], 12_000);
    assert_eq!(a["counts"]["attempts"], 12_060);
    assert_eq!(a["counts"]["failed"], 60);
    assert_eq!(a["timeline"]["kind"], "binned");
    assert_eq!(a["timeline"]["attempts"], 12_060);
    assert_eq!(a["failed"].as_array().unwrap().len(), 60);
    // Aggregated: far smaller than one bar per attempt would be.
    assert!(html.len() < 400_000, "{} bytes", html.len());
    let dom = Chromium::get().dump_dom(&t.path().join("r.html"));
    assert_eq!(dom.status, "ok", "{:?}", dom.error);
    assert_eq!(dom.attr("data-binned"), "12060");
    assert!(dom.html.contains("Aggregated: 12060 attempts"));
}

/// Writes a stage's `jobs.jsonl` and ledger for `n` jobs of run `run`: every 200th job fails
/// once and is retried successfully... except that the retry fails too for every 200th job.
fn synthesize(stage: &Path, run: &str, n: usize, t0: f64) {
    use std::fmt::Write as _;
    let (mut jobs, mut ledger) = (String::new(), String::new());
    for i in 0..n {
        let _ = writeln!(jobs, r#"{{"index":{i},"id":"j{i}","job":{i}}}"#);
        #[expect(clippy::cast_precision_loss)]
        let s = t0 + (i / 8) as f64 * 0.5;
        let bad = i % 200 == 7;
        let rec = |attempt: u32, s: f64, ok: bool| {
            let outcome = if ok {
                r#"{"kind":"succeeded"}"#
            } else {
                r#"{"kind":"failed","code":2}"#
            };
            format!(
                r#"{{"index":{i},"id":"j{i}","attempt":{attempt},"outcome":{outcome},"start":{s},"end":{},"run":"{run}","fp":"f"}}"#,
                s + 0.4
            )
        };
        if bad {
            ledger.push_str(&rec(1, s, false));
            ledger.push('\n');
            ledger.push_str(&rec(2, s + 0.45, false));
        } else {
            ledger.push_str(&rec(1, s, true));
        }
        ledger.push('\n');
    }
    std::fs::write(stage.join("jobs.jsonl"), jobs).unwrap();
    std::fs::write(stage.join("ledger.jsonl"), ledger).unwrap();
}

/// Headless Chromium (Debian's `chromium`, installed here when missing and we are root).
pub struct Chromium {
    exe: PathBuf,
}

/// What Chromium made of a page.
pub struct Dom {
    /// The serialized DOM after the scripts ran.
    pub html: String,
    /// `<body data-status>`: `ok` once the page drew itself, `error` after an uncaught error.
    pub status: String,
    /// `<body data-error>`, if any.
    pub error: Option<String>,
}

impl Dom {
    /// An attribute of `<body>`.
    pub fn attr(&self, name: &str) -> String {
        body_attr(&self.html, name).unwrap_or_default()
    }
}

fn body_attr(html: &str, name: &str) -> Option<String> {
    let start = html.find("<body")?;
    let tag = &html[start..start + html[start..].find('>')?];
    let key = format!(" {name}=\"");
    let at = tag.find(&key)? + key.len();
    Some(tag[at..at + tag[at..].find('"')?].to_owned())
}

impl Chromium {
    /// Finds Chromium, installing it with apt-get when missing.
    pub fn get() -> Self {
        let find = || {
            ["chromium", "chromium-browser"].iter().find_map(|n| {
                let out = Command::new("sh")
                    .args(["-c", &format!("command -v {n}")])
                    .output()
                    .ok()?;
                out.status
                    .success()
                    .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
            })
        };
        if let Some(exe) = find() {
            return Self { exe };
        }
        let _ = Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=600", "update", "-qq"])
            .status();
        let status = Command::new("apt-get")
            .args([
                "-o",
                "DPkg::Lock::Timeout=600",
                "install",
                "-y",
                "-qq",
                "chromium",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        match (status, find()) {
            (_, Some(exe)) => Self { exe },
            (s, None) => panic!(
                "Chromium is needed for the report's browser tests and could not be installed \
                 ({s:?}); install Debian's `chromium` package"
            ),
        }
    }

    fn command(&self, profile: &Path) -> Command {
        let mut c = Command::new("timeout");
        c.arg("180")
            .arg(&self.exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()));
        c
    }

    /// Loads the page and returns the DOM its scripts built, failing on console errors.
    pub fn dump_dom(&self, page: &Path) -> Dom {
        let profile = tempfile::tempdir().unwrap();
        let out = self
            .command(profile.path())
            .arg("--dump-dom")
            .arg(format!("file://{}", page.display()))
            .output()
            .expect("chromium runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "chromium failed: {stderr}");
        for line in stderr.lines() {
            assert!(
                !line.contains("Uncaught") && !line.contains(":CONSOLE"),
                "console output while loading the report: {line}"
            );
        }
        let html = String::from_utf8_lossy(&out.stdout).into_owned();
        Dom {
            status: body_attr(&html, "data-status").unwrap_or_default(),
            error: body_attr(&html, "data-error"),
            html,
        }
    }

    /// Takes a `width`×`height` screenshot of the page.
    pub fn screenshot(&self, page: &Path, png: &Path, width: u32, height: u32) {
        let profile = tempfile::tempdir().unwrap();
        let out = self
            .command(profile.path())
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--screenshot={}", png.display()))
            .arg(format!("file://{}", page.display()))
            .output()
            .expect("chromium runs");
        assert!(
            out.status.success() && png.exists(),
            "no screenshot: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Counts pixels close to an RGB colour.
fn pixels_near(png: &Path, rgb: [u8; 3]) -> (usize, usize) {
    let decoder = png::Decoder::new(std::fs::File::open(png).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let step = info.color_type.samples();
    let px = &buf[..info.buffer_size()];
    let near = px
        .chunks(step)
        .filter(|p| (0..3).all(|k| p[k].abs_diff(rgb[k]) <= 12))
        .count();
    (near, px.len() / step)
}

#[test]
fn report_renders_in_headless_chromium_with_timeline_and_failures() {
    let t = flaky_test();
    t.run(&["run", "--report", "report.html"]).code(1);
    let page = t.path().join("report.html");
    let chromium = Chromium::get();
    let dom = chromium.dump_dom(&page);
    assert_eq!(dom.status, "ok", "{:?}", dom.error);
    assert_eq!(dom.attr("data-stages"), "2");
    // One bar per attempt: prep 1 + work 7.
    assert_eq!(dom.attr("data-bars"), "8");
    assert_eq!(dom.attr("data-failures"), "1");
    assert_eq!(dom.attr("data-tails"), "1");
    assert!(dom.html.contains("id=\"timeline-1\""));
    assert!(dom.html.contains("id=\"failed-1\""));
    assert!(
        dom.html
            .contains("boom &lt;/script&gt;&lt;script&gt;window.pwned=1")
    );
    assert!(dom.html.contains("Retries (2 jobs)"));
    assert!(!dom.html.contains("window.pwned=1</script>"));

    let png = t.path().join("shot.png");
    chromium.screenshot(&page, &png, 1200, 2400);
    // Succeeded bars are green (#2f8f5b); failed bars and the failure border red (#d1495b).
    let (green, total) = pixels_near(&png, [0x2f, 0x8f, 0x5b]);
    let (red, _) = pixels_near(&png, [0xd1, 0x49, 0x5b]);
    let (white, _) = pixels_near(&png, [0xff, 0xff, 0xff]);
    assert!(green > 500, "{green} green pixels of {total}");
    assert!(red > 200, "{red} red pixels of {total}");
    assert!(white < total, "a blank page");
}

#[test]
fn report_during_a_run_and_after_the_runner_was_killed() {
    let t = Test::new().manifest(
        r#"
[workflow]
name = "w"
[defaults]
max_parallel = 2
[stages.a]
jobs = [{ id = "quick" }, { id = "slow" }]
run = "if [ {{job.id}} = slow ]; then for i in $(seq 600); do [ -e go ] && break; sleep 0.1; done; fi"
result = "none"
"#,
    );
    let mut child = t
        .command(&["run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ledger = t.state("w").join("a/ledger.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_to_string(&ledger).map_or(0, |l| l.lines().count()) < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the quick job never ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let r = t.run(&["report", "--format", "text"]);
    r.code(0)
        .stdout_has("is in progress (pid ")
        .stdout_has("no end recorded");
    let row = r.stdout.lines().find(|l| l.starts_with("a ")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    // 2 jobs, 1 succeeded so far, the other not run yet.
    assert_eq!(&cells[..4], ["a", "local", "2", "1"], "{row}");

    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::write(t.path().join("go"), "").unwrap();
    t.run(&["report", "--format", "text"])
        .code(0)
        .stdout_has("ended without writing its summary (killed?)");
    t.run(&["report", "-o", "r.html"]).code(0);
    let d = embedded(&t.read("r.html"));
    assert!(d["note"].as_str().unwrap().contains("killed?"));
    assert_eq!(d["stages"][0]["counts"]["succeeded"], 1);
}
