//! Job strings reach commands byte-exact: property tests of `{{job.x}}` in shell and argv
//! `run` templates, end to end through the binary, and of `template::shell_quote` itself.
//!
//! Runs are batched: one proptest case is one manifest whose jobs are a whole vector of
//! strings, so a case costs one `poolparty run` however many strings it checks. Each job
//! writes `S:` + what it received to `$POOLPARTY_RESULT`; the prefix keeps the result from
//! ever parsing as JSON, so `poolparty results` returns it as a JSON string to compare.
//!
//! The seed is fixed so runs are reproducible; set `PROPTEST_RNG_SEED` (and `PROPTEST_CASES`)
//! to explore other inputs.

use std::io::Write;
use std::process::{Command, Stdio};

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::{Value, json};

use crate::harness::Test;

/// Fragments that break naive quoting: quotes, substitutions, escapes, globs, options,
/// history expansion, whitespace, handlebars braces, and UTF-8 bytes that are dash's internal
/// control characters (0x81..0x88 appear as continuation bytes, e.g. in U+0441 and U+0101).
const NASTY: &[&str] = &[
    "'",
    "\"",
    "`",
    "$(echo pwned)",
    "`echo pwned`",
    "\\",
    "\\\\",
    "\\n",
    "\\0",
    "\n",
    "\r\n",
    "\t",
    " ",
    "  ",
    "-",
    "--",
    "-n",
    "-e",
    "*",
    "?",
    "[a]",
    "~",
    "~root",
    "!",
    "!!",
    "$",
    "$HOME",
    "${x}",
    "$1",
    "$@",
    "%s",
    "%b",
    "%%",
    ";",
    "&",
    "&&",
    "|",
    ">",
    "<",
    "#",
    "=",
    "a=b",
    "'\\''",
    "{{",
    "}}",
    "{{job.x}}",
    "(",
    ")",
    "{",
    "}",
    "\u{7f}",
    "\u{1}",
    "\u{1b}[31m",
    "é",
    "\u{441}",
    "\u{101}",
    "\u{2028}",
    "\u{feff}",
    "\u{1f600}",
    "\u{10ffff}",
];

/// Any string without NUL: empty, arbitrary unicode, or a mix of nasty fragments and
/// arbitrary characters.
fn job_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => proptest::sample::select(NASTY).prop_map(str::to_owned),
        1 => "[^\\x00]{0,4}",
    ];
    prop_oneof![
        1 => Just(String::new()),
        3 => "[^\\x00]{0,24}",
        6 => vec(piece, 1..8).prop_map(|v| v.concat()),
    ]
}

/// `cases` cases from a fixed seed, unless the environment asks otherwise; no regression
/// files written into the tree.
fn config(cases: u32) -> Config {
    let mut c = Config {
        failure_persistence: None,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(0x7001_9a27);
    }
    c
}

/// The shell stage's command: the value alone and inside a word.
const SHELL_RUN: &str = r#"printf 'S:%s|%s' {{job.x}} pre{{job.x}}post > "$POOLPARTY_RESULT""#;

fn expected_shell(x: &str) -> String {
    format!("S:{x}|pre{x}post")
}

fn expected_argv(x: &str) -> String {
    format!("S:{x}")
}

/// The manifest, built with the `toml` serializer so any string is written safely. The shell
/// stage takes its jobs inline from the TOML, the argv stage from a JSON Lines file.
fn manifest(xs: &[String]) -> String {
    let jobs: Vec<toml::Value> = xs
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let mut t = toml::Table::new();
            t.insert("id".into(), toml::Value::Integer(i as i64));
            t.insert("x".into(), toml::Value::String(x.clone()));
            toml::Value::Table(t)
        })
        .collect();
    let value = toml::toml! {
        [workflow]
        name = "q"

        [defaults]
        max_parallel = 2

        [stages.shell]
        run = "placeholder"

        [stages.argv]
        jobs_file = "jobs.jsonl"
        run = ["sh", "-c", "printf 'S:%s' \"$1\" > \"$POOLPARTY_RESULT\"", "sh", "{{job.x}}"]
    };
    let mut root = value;
    let shell = root["stages"]["shell"].as_table_mut().expect("table");
    shell.insert("run".into(), toml::Value::String(SHELL_RUN.into()));
    shell.insert("jobs".into(), toml::Value::Array(jobs));
    toml::to_string(&root).expect("serializes")
}

fn jobs_jsonl(xs: &[String]) -> String {
    xs.iter()
        .enumerate()
        .map(|(i, x)| serde_json::to_string(&json!({"id": i, "x": x})).expect("serializes") + "\n")
        .collect()
}

/// The `result` strings of `poolparty results --stage S --format jsonl`, in job order.
fn results(t: &Test, stage: &str) -> Result<Vec<String>, TestCaseError> {
    let r = t.run(&["results", "--stage", stage, "--format", "jsonl"]);
    prop_assert_eq!(r.code, Some(0), "results --stage {}: {}", stage, r.stderr);
    let mut out = Vec::new();
    for (n, line) in r.stdout.lines().enumerate() {
        let v: Value = serde_json::from_str(line)
            .map_err(|e| TestCaseError::fail(format!("{line:?}: {e}")))?;
        prop_assert_eq!(&v["index"], &json!(n));
        prop_assert_eq!(&v["outcome"], "succeeded");
        let Value::String(s) = &v["result"] else {
            return Err(TestCaseError::fail(format!(
                "stage {stage} job {n}: result is not a JSON string: {line}"
            )));
        };
        out.push(s.clone());
    }
    Ok(out)
}

fn check_batch(xs: &[String]) -> Result<(), TestCaseError> {
    let text = manifest(xs);
    // The manifest says what we mean before poolparty reads it.
    let back: toml::Table = toml::from_str(&text)
        .map_err(|e| TestCaseError::fail(format!("toml round trip: {e}\n{text}")))?;
    let back_jobs = back["stages"]["shell"]["jobs"].as_array().expect("jobs");
    for (x, j) in xs.iter().zip(back_jobs) {
        prop_assert_eq!(j["x"].as_str(), Some(x.as_str()));
    }

    let t = Test::new()
        .manifest(&text)
        .file("jobs.jsonl", &jobs_jsonl(xs));
    let r = t.run(&["-q", "run"]);
    prop_assert_eq!(
        r.code,
        Some(0),
        "run failed\n--- manifest\n{}\n--- stderr\n{}",
        text,
        r.stderr
    );

    let shell = results(&t, "shell")?;
    prop_assert_eq!(shell.len(), xs.len());
    for (x, got) in xs.iter().zip(&shell) {
        prop_assert_eq!(got, &expected_shell(x), "shell run, job string {:?}", x);
    }
    let argv = results(&t, "argv")?;
    prop_assert_eq!(argv.len(), xs.len());
    for (x, got) in xs.iter().zip(&argv) {
        prop_assert_eq!(got, &expected_argv(x), "argv run, job string {:?}", x);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(32))]

    #[test]
    fn job_strings_reach_shell_and_argv_commands_byte_exact(xs in vec(job_string(), 1..20)) {
        check_batch(&xs)?;
    }
}

/// Runs `script` with `sh -s` (the script on standard input, so its size is not limited by
/// the argument list) and returns its output, or why it failed.
fn sh(script: &str) -> Result<Vec<u8>, TestCaseError> {
    let mut child = Command::new("/bin/sh")
        .arg("-s")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("script written");
    let out = child.wait_with_output().expect("sh runs");
    prop_assert!(
        out.status.success() && out.stderr.is_empty(),
        "sh: {}, stderr: {}\n--- script\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        script
    );
    Ok(out.stdout)
}

proptest! {
    #![proptest_config(config(48))]

    /// `sh` reading `printf '%s\0' QUOTED` prints the original string, for many strings per
    /// shell; NUL (which no string contains) separates them. Each value is also checked glued
    /// between two words.
    #[test]
    fn shell_quote_round_trips_through_sh(xs in vec(job_string(), 1..64)) {
        let mut script = String::new();
        for x in &xs {
            let q = poolparty::template::shell_quote(x);
            script.push_str(&format!("printf '%s\\000' {q}\nprintf '%s\\000' a{q}b\n"));
        }
        let out = sh(&script)?;
        let mut expected = Vec::new();
        for x in &xs {
            for s in [x.clone(), format!("a{x}b")] {
                expected.extend_from_slice(s.as_bytes());
                expected.push(0);
            }
        }
        if out != expected {
            let got: Vec<String> = out
                .split(|&b| b == 0)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            let want: Vec<String> = xs.iter().flat_map(|x| [x.clone(), format!("a{x}b")]).collect();
            for (g, w) in got.iter().zip(&want) {
                prop_assert_eq!(g, w, "quoted as {}", poolparty::template::shell_quote(w));
            }
            prop_assert_eq!(out, expected);
        }
    }
}

/// The fragments themselves, each alone, so every one is checked whatever the seed draws.
#[test]
fn every_nasty_fragment_round_trips() {
    let mut xs: Vec<String> = NASTY.iter().map(|s| (*s).to_owned()).collect();
    xs.push(String::new());
    check_batch(&xs).unwrap();
}
