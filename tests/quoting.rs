//! Job strings reach commands byte-exact: property tests of `{{job.x}}` in shell and argv
//! `run` templates, end to end through the binary, of `template::shell_quote` itself, and of
//! the template compiler's shell contexts (bare word, `"…"`, `'…'`, `$(…)`, backquotes,
//! `${x:-…}`, here-documents, comments, blocks) run by `sh` and bash, with a canary file that
//! no value may create.
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
    "$(touch pwned)",
    "0",
    "-0",
    "42",
    "-7",
    "007",
    "9223372036854775807",
    "9223372036854775808",
    "a[$(touch pwned)]",
    "`touch pwned`",
    "';touch pwned;'",
    "\";touch pwned;\"",
    "\ntouch pwned\n",
    "EOF",
    "\nEOF\ntouch pwned\n",
    "}",
    "))",
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

/// The same value in double quotes, single quotes, `$(…)` and backquotes (the `.` keeps the
/// trailing newlines that command substitution removes).
const CTX_RUN: &str = r#"printf 'S:%s|%s|%s|%s' "{{job.x}}" 'a{{job.x}}b' "$(printf '%s.' "{{job.x}}")" "`printf '%s.' {{job.x}}`" > "$POOLPARTY_RESULT""#;

fn expected_ctx(x: &str) -> String {
    format!("S:{x}|a{x}b|{x}.|{x}.")
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

        [stages.ctx]
        run = "placeholder"
        jobs_file = "jobs.jsonl"

        [stages.argv]
        jobs_file = "jobs.jsonl"
        run = ["sh", "-c", "printf 'S:%s' \"$1\" > \"$POOLPARTY_RESULT\"", "sh", "{{job.x}}"]
    };
    let mut root = value;
    let shell = root["stages"]["shell"].as_table_mut().expect("table");
    shell.insert("run".into(), toml::Value::String(SHELL_RUN.into()));
    shell.insert("jobs".into(), toml::Value::Array(jobs));
    let ctx = root["stages"]["ctx"].as_table_mut().expect("table");
    ctx.insert("run".into(), toml::Value::String(CTX_RUN.into()));
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
    let ctx = results(&t, "ctx")?;
    prop_assert_eq!(ctx.len(), xs.len());
    for (x, got) in xs.iter().zip(&ctx) {
        prop_assert_eq!(got, &expected_ctx(x), "quoted contexts, job string {:?}", x);
    }
    prop_assert!(
        !t.path().join("pwned").exists(),
        "a job value ran a command"
    );
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

/// A shell context: a template with `{{v}}` (and `{{#each vs}}`), the output expected for a
/// value, and when the compiler may refuse the value at render time.
struct Case {
    name: &'static str,
    template: &'static str,
    expected: fn(&str) -> String,
    refused: fn(&str) -> bool,
}

fn never(_: &str) -> bool {
    false
}

/// dash 0.5 drops a non-ASCII byte right after a start of the delimiter at the start of a
/// here-document line; the compiler refuses such values.
fn dash_drops(line: &str, delim: &str) -> bool {
    (1..=delim.len()).any(|k| {
        line.as_bytes().starts_with(&delim.as_bytes()[..k])
            && line.as_bytes().get(k).is_some_and(|&b| b >= 0x80)
    })
}

/// What the compiler accepts in arithmetic: a decimal integer read back as written.
fn is_shell_integer(v: &str) -> bool {
    let d = v.strip_prefix('-').unwrap_or(v);
    !d.is_empty()
        && d.bytes().all(|b| b.is_ascii_digit())
        && (v == "0" || !d.starts_with('0'))
        && v.parse::<i64>().is_ok()
}

fn has_newline(v: &str) -> bool {
    v.contains('\n')
}

const CASES: &[Case] = &[
    Case {
        name: "bare",
        template: "printf '%s' {{v}}",
        expected: |v| v.to_owned(),
        refused: never,
    },
    Case {
        name: "glued",
        template: "printf '%s' pre{{v}}post",
        expected: |v| format!("pre{v}post"),
        refused: never,
    },
    Case {
        name: "assignment",
        template: "x={{v}}; printf '%s' \"$x\"",
        expected: |v| v.to_owned(),
        refused: never,
    },
    Case {
        name: "double quotes",
        template: "printf '%s' \"{{v}}\"",
        expected: |v| v.to_owned(),
        refused: never,
    },
    Case {
        name: "inside double quotes",
        template: "printf '%s' \"<{{v}}>\"",
        expected: |v| format!("<{v}>"),
        refused: never,
    },
    Case {
        name: "single quotes",
        template: "printf '%s' '{{v}}'",
        expected: |v| v.to_owned(),
        refused: never,
    },
    Case {
        name: "inside single quotes",
        template: "printf '%s' 'a {{v}} b'",
        expected: |v| format!("a {v} b"),
        refused: never,
    },
    Case {
        name: "$( ) bare",
        template: "printf '%s' \"$(printf '%s.' {{v}})\"",
        expected: |v| format!("{v}."),
        refused: never,
    },
    Case {
        name: "$( ) double quotes",
        template: "printf '%s' \"$(printf '%s.' \"x{{v}}y\")\"",
        expected: |v| format!("x{v}y."),
        refused: never,
    },
    Case {
        name: "$( ) single quotes",
        template: "printf '%s' \"$(printf '%s.' 'a{{v}}')\"",
        expected: |v| format!("a{v}."),
        refused: never,
    },
    Case {
        name: "$( $( ) )",
        template: "printf '%s' \"$(printf '%s' \"$(printf '%s.' \"{{v}}\")\")\"",
        expected: |v| format!("{v}."),
        refused: never,
    },
    Case {
        name: "backquotes bare",
        template: "x=`printf '%s.' {{v}}`; printf '%s' \"$x\"",
        expected: |v| format!("{v}."),
        refused: never,
    },
    Case {
        name: "backquotes in double quotes",
        template: "printf '%s' \"`printf '%s.' {{v}}`\"",
        expected: |v| format!("{v}."),
        refused: never,
    },
    Case {
        name: "double quotes in backquotes in double quotes",
        template: "printf '%s' \"`printf '%s.' \\\"{{v}}\\\"`\"",
        expected: |v| format!("{v}."),
        refused: never,
    },
    Case {
        name: "backquotes in double quotes in $( )",
        template: "printf '%s' \"$(printf '%s' \"`printf '%s.' '{{v}}'`\")\"",
        expected: |v| format!("{v}."),
        refused: never,
    },
    Case {
        name: "double quotes in backquotes",
        template: "x=`printf '%s.' \"{{v}}\"`; printf '%s' \"$x\"",
        expected: |v| format!("{v}."),
        refused: never,
    },
    Case {
        name: "single quotes in backquotes",
        template: "x=`printf '%s.' '{{v}}'`; printf '%s' \"$x\"",
        expected: |v| format!("{v}."),
        refused: never,
    },
    Case {
        name: "nested backquotes",
        template: "x=`printf '%s' \"\\`printf '%s.' {{v}}\\`\"`; printf '%s' \"$x\"",
        expected: |v| format!("{v}."),
        refused: never,
    },
    Case {
        name: "${x:-word}",
        template: "x=${unset_pp:-{{v}}}; printf '%s' \"$x\"",
        expected: |v| v.to_owned(),
        refused: never,
    },
    Case {
        name: "${x:-\"word\"}",
        template: "x=${unset_pp:-\"{{v}}\"}; printf '%s' \"$x\"",
        expected: |v| v.to_owned(),
        refused: never,
    },
    Case {
        name: "${x#pattern}",
        template: "x=\"{{v}}tail\"; y=${x%{{v}}tail}; printf '%s|' \"$y\"",
        expected: |_| "|".to_owned(),
        refused: never,
    },
    Case {
        name: "case pattern",
        template: "case {{v}} in {{v}}) printf yes;; *) printf no;; esac",
        expected: |_| "yes".to_owned(),
        refused: never,
    },
    Case {
        name: "line continuation",
        template: "printf '%s' \\\n{{v}}",
        expected: |v| v.to_owned(),
        refused: never,
    },
    Case {
        name: "comment",
        template: "printf '%s' ok # {{v}} '",
        expected: |_| "ok".to_owned(),
        refused: has_newline,
    },
    Case {
        name: "here-document",
        template: "cat <<'EOF'\n{{v}}\nEOF",
        expected: |v| format!("{v}\n"),
        refused: |v| has_newline(v) || v == "EOF" || dash_drops(v, "EOF"),
    },
    Case {
        name: "here-document mid-line",
        template: "cat <<\"EOF\"\nE{{v}}F\nEOF",
        expected: |v| format!("E{v}F\n"),
        refused: |v| has_newline(v) || v == "O" || dash_drops(&format!("E{v}F"), "EOF"),
    },
    Case {
        name: "here-document <<-",
        template: "cat <<-\\EOF\n\t{{v}}\n\tEOF",
        expected: |v| format!("{v}\n"),
        refused: |v| has_newline(v) || v == "EOF" || v.starts_with('\t') || dash_drops(v, "EOF"),
    },
    Case {
        name: "here-document two per line",
        template: "cat <<'E'\n{{v}}{{v}}\nE",
        expected: |v| format!("{v}{v}\n"),
        refused: |v| {
            has_newline(v)
                || "E".contains(v)
                || v.starts_with(|c: char| !c.is_ascii())
                || v.starts_with("E") && v[1..].starts_with(|c: char| !c.is_ascii())
        },
    },
    Case {
        name: "here-document in $( )",
        template: "printf '%s' \"$(cat <<'EOF'\n{{v}}\nEOF\n)\"",
        expected: |v| v.to_owned(),
        refused: |v| {
            has_newline(v)
                || v == "EOF"
                || dash_drops(v, "EOF")
                || v.contains('\u{1}')
                || v.strip_prefix("EOF").is_some_and(|r| r.contains(')'))
        },
    },
    Case {
        name: "arithmetic",
        template: "printf '%s' $(( {{v}} ))",
        expected: |v| v.to_owned(),
        refused: |v| !is_shell_integer(v),
    },
    Case {
        name: "each block",
        template: "printf '%s|' {{#each vs}}\"{{this}}\" '{{this}}' {{/each}}",
        expected: |v| format!("{v}|{v}|{v}|{v}|"),
        refused: never,
    },
];

/// Any string without NUL, with canary commands mixed in.
fn hostile_string() -> impl Strategy<Value = String> {
    job_string()
}

/// Renders every case for every value, runs the script with `shell` in a fresh folder, and
/// compares each case's output; no value may create the canary file.
fn check_contexts(shell: &str, xs: &[String]) -> Result<(), TestCaseError> {
    use poolparty::template::{Quoting, Templates};
    let mut templates = Templates::new();
    for c in CASES {
        templates
            .add(c.name, c.template, Quoting::Shell)
            .map_err(|e| TestCaseError::fail(format!("{}: {e:?}", c.name)))?;
    }
    let mut script = String::new();
    let mut expected: Vec<(String, &str, String)> = Vec::new();
    for x in xs {
        let ctx = json!({"v": x, "vs": [x, x]});
        for c in CASES {
            match templates.render(c.name, Quoting::Shell, &ctx) {
                Ok(text) => {
                    prop_assert!(!(c.refused)(x), "{}: {:?} was not refused", c.name, x);
                    script.push_str(&text);
                    script.push_str("\nprintf '\\000'\n");
                    expected.push(((c.expected)(x), c.name, text));
                }
                Err(e) => {
                    prop_assert!((c.refused)(x), "{}: {:?} refused: {}", c.name, x, e.message)
                }
            }
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(shell)
        .arg("-s")
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("shell starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("script written");
    let out = child.wait_with_output().expect("shell runs");
    let got: Vec<&[u8]> = out.stdout.split(|&b| b == 0).collect();
    for (i, (want, name, text)) in expected.iter().enumerate() {
        let g = got.get(i).copied().unwrap_or_default();
        prop_assert_eq!(
            String::from_utf8_lossy(g),
            want.as_str(),
            "{}: context `{}`, rendered as:\n{}\nstderr: {}",
            shell,
            name,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    prop_assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}: {}, stderr: {}",
        shell,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    prop_assert!(
        !dir.path().join("pwned").exists(),
        "{}: a value ran a command",
        shell
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(64))]

    /// Every shell context × arbitrary strings, through the compiler and `sh` (dash here) and
    /// bash: each value comes out exactly, and nothing in it runs.
    #[test]
    fn every_shell_context_keeps_values_inert_and_exact(xs in vec(hostile_string(), 1..24)) {
        check_contexts("/bin/sh", &xs)?;
        check_contexts("bash", &xs)?;
    }
}

/// The fragments alone, in every context, so each one is checked whatever the seed draws.
#[test]
fn every_nasty_fragment_in_every_context() {
    let mut xs: Vec<String> = NASTY.iter().map(|s| (*s).to_owned()).collect();
    xs.push(String::new());
    check_contexts("/bin/sh", &xs).unwrap();
    check_contexts("bash", &xs).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Refused at `validate` (exit 2, span on the placeholder, help saying what to write instead).
// Regression tests for https://github.com/poolparty/poolparty/issues/11 §1 and §6.

use crate::manifest_errors::reject;

/// The issue's example: double quotes around a placeholder ran the value; now it is quoted
/// for its context, so the same manifest runs and nothing is executed.
#[test]
fn issue_11_placeholder_in_double_quotes_stays_inert() {
    let t = Test::new().manifest(
        "[workflow]\nname = \"w\"\n[stages.s]\nrun = \"printf '%s|' \\\"{{job.file}}\\\" '{{job.file}}' > out.txt\"\njobs = [{ id = \"a\", file = \"my file $(touch pwned).txt `touch pwned` ' \\\" \\\\\" }]\n",
    );
    t.run(&["validate"]).code(0);
    t.run(&["-q", "run"]).code(0);
    let v = "my file $(touch pwned).txt `touch pwned` ' \" \\";
    assert_eq!(t.read("out.txt"), format!("{v}|{v}|"));
    assert!(!t.path().join("pwned").exists());
}

#[test]
fn quoting_placeholder_in_double_quoted_parameter_word() {
    reject(
        "quoting_placeholder_in_double_quoted_parameter_word",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [{ x = \"a\" }]\nrun = 'touch ran; echo \"${X:-{{job.x}}}\"'\n",
        &[],
        &[
            "unsafe placeholder in a shell command",
            "single quotes are literal there",
            "poolparty.toml:5:30",
        ],
    );
}

#[test]
fn quoting_placeholder_in_unquoted_here_document() {
    reject(
        "quoting_placeholder_in_unquoted_here_document",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [{ x = \"a\" }]\nrun = \"\"\"\ntouch ran\ncat <<EOF\n{{job.x}}\nEOF\n\"\"\"\n",
        &[],
        &[
            "with an unquoted delimiter would be expanded",
            "quote the delimiter (`<<'EOF'`)",
            "poolparty.toml:8:1",
        ],
    );
}

#[test]
fn quoting_placeholder_in_arithmetic() {
    let ok = Test::new().manifest(
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [{ n = -12 }]\nrun = \"echo $(( {{job.n}} * 2 )) > out.txt\"\n",
    );
    ok.run(&["-q", "run"]).code(0);
    assert_eq!(ok.read("out.txt"), "-24\n");
    reject(
        "quoting_placeholder_in_arithmetic",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [{ id = \"one\", n = \"a[$(touch ran)]\" }]\nrun = \"echo $(( {{job.n}} + 1 ))\"\n",
        &[],
        &[
            "for job 0 (id `one`)",
            "only a decimal integer can stand in arithmetic",
            "poolparty.toml:5:17",
        ],
    );
}

#[test]
fn quoting_placeholder_nested_in_arithmetic() {
    reject(
        "quoting_placeholder_nested_in_arithmetic",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [{ n = 1 }]\nrun = 'touch ran; echo $(( $(echo \"{{job.n}}\") + 1 ))'\n",
        &[],
        &[
            "inside arithmetic are read differently",
            "poolparty.toml:5:36",
        ],
    );
}

#[test]
fn quoting_block_that_leaves_a_quote_open() {
    reject(
        "quoting_block_that_leaves_a_quote_open",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [{ l = [\"a\", \"b\"] }]\nrun = \"touch ran {{#each job.l}}'{{this}}{{/each}}'\"\n",
        &[],
        &["this block's body leaves", "poolparty.toml:5:18"],
    );
}

#[test]
fn quoting_placeholder_inside_dollar_single_quotes() {
    reject(
        "quoting_placeholder_inside_dollar_single_quotes",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [{ x = \"a\" }]\nrun = \"touch ran; echo $'{{job.x}}'\"\n",
        &[],
        &["a placeholder inside `$'…'`", "poolparty.toml:5:26"],
    );
}

#[test]
fn quoting_newline_value_in_a_comment() {
    reject(
        "quoting_newline_value_in_a_comment",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [{ id = \"one\", x = \"a\\ntouch ran\" }]\nrun = \"true # {{job.x}}\"\n",
        &[],
        &[
            "for job 0 (id `one`)",
            "it contains a newline, which would end the comment",
            "poolparty.toml:5:15",
        ],
    );
}

#[test]
fn quoting_nul_byte_in_a_value() {
    reject(
        "quoting_nul_byte_in_a_value",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [{ id = \"one\", x = \"a\\u0000b\" }]\nrun = [\"touch\", \"ran\", \"{{job.x}}\"]\n",
        &[],
        &[
            "job 0 (id `one`) of stage `a` can never start",
            "NUL byte (from `job.x`)",
            "poolparty.toml:5:7",
        ],
    );
}

#[test]
fn quoting_command_over_the_argument_limit() {
    let big = "y".repeat(140_000);
    reject(
        "quoting_command_over_the_argument_limit",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs_file = \"jobs.jsonl\"\nrun = \"touch ran; echo {{job.x}}\"\n",
        &[(
            "jobs.jsonl",
            &format!("{{\"id\": \"big\", \"x\": \"{big}\"}}\n"),
        )],
        &[
            "job 0 (id `big`) of stage `a` can never start",
            "131071 bytes for one argument",
            "poolparty.toml:5:7",
        ],
    );
}
