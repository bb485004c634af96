//! Fuzzing on the stable toolchain: the manifest parser, the jobs-file (and generator output)
//! reader and the template compiler fed arbitrary and half-valid input through their library
//! entry points. Errors are fine; a panic fails the test.
//!
//! Inputs mix fragments of the real grammar (TOML keys, JSON lines, shell syntax, handlebars
//! tags) with arbitrary characters, so cases reach past the first syntax check. Case counts
//! are bounded (a few thousand in all, seconds of CPU) and the seed fixed; set
//! `PROPTEST_CASES` and `PROPTEST_RNG_SEED` to fuzz longer or elsewhere.

use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};
use serde_json::{Map, Value, json};

use poolparty::testing::plan_manifest;
use poolparty::testing::{Quoting, Templates};

fn config(cases: u32) -> Config {
    let mut c = Config {
        failure_persistence: None,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        c.rng_seed = RngSeed::Fixed(0x00f0_22ed);
    }
    c
}

/// Text made of `pieces` and arbitrary characters.
fn mixed(pieces: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => proptest::sample::select(pieces).prop_map(str::to_owned),
        1 => "\\PC{0,3}",
        1 => "[\\x00-\\x7f]{0,2}",
    ];
    vec(piece, 0..max).prop_map(|v| v.concat())
}

const SHELL: &[&str] = &[
    "{{job.x}}",
    "{{{job.x}}}",
    "{{job}}",
    "{{index}}",
    "{{job_id}}",
    "{{#each job.list}}",
    "{{/each}}",
    "{{#if job.x}}",
    "{{/if}}",
    "{{else}}",
    "{{this}}",
    "{{@index}}",
    "{{lookup job \"x\"}}",
    "{{!c}}",
    "{{> p}}",
    "{{",
    "}}",
    "\\{{",
    "'",
    "\"",
    "`",
    "\\`",
    "\\",
    "$",
    "$(",
    "$((",
    "((",
    "))",
    ")",
    "(",
    "${",
    "${x:-",
    "${#",
    "}",
    "{",
    "<<",
    "<<-",
    "<<'EOF'",
    "<<EOF",
    "EOF",
    "\n",
    "\t",
    " ",
    "#",
    ";",
    "&",
    "|",
    "<(",
    ">(",
    "$'",
    "$[",
    "]",
    "case ",
    " in ",
    "esac",
    "\\\n",
    "\u{0}",
    "é",
    "\u{1}",
    "=",
    "~",
];

const TOML: &[&str] = &[
    "[workflow]\n",
    "name = \"w\"\n",
    "[defaults]\n",
    "[stages.a]\n",
    "[stages.b]\n",
    "run = \"echo {{job.x}}\"\n",
    "run = [\"echo\", \"{{job.x}}\"]\n",
    "run = \"\"\n",
    "jobs = [1, 2]\n",
    "jobs = [{ x = \"a\" }, { id = \"b\", x = 1 }]\n",
    "jobs = []\n",
    "matrix = { x = [1, 2], y = [\"a\"] }\n",
    "matrix = { x = [] }\n",
    "jobs_file = \"jobs.jsonl\"\n",
    "generate = \"echo '[1]'\"\n",
    "for_each = \"a\"\n",
    "needs = [\"a\"]\n",
    "needs = [\"b\"]\n",
    "needs = [\"zz\"]\n",
    "max_parallel = 2\n",
    "max_parallel = 0\n",
    "retries = 3\n",
    "time = \"1h\"\n",
    "time = \"1:99:00\"\n",
    "time = \"0s\"\n",
    "env = { A = \"1\" }\n",
    "env = { \"\" = \"x\" }\n",
    "backend = \"slurm\"\n",
    "backend = \"nope\"\n",
    "result = \"stdout\"\n",
    "extra = [\"--x\"]\n",
    "template = \"t.hbs\"\n",
    "bundle = 3\n",
    "x = 1e400\n",
    "\u{feff}",
    "#",
    "=",
    "\"",
    "'",
    "[",
    "]",
    "{",
    "}",
    "\n",
    " = ",
    "1979-05-27T07:32:00Z",
    "nan",
    "inf",
    "\\u0000",
];

const JSONL: &[&str] = &[
    "{\"id\": \"a\", \"x\": 1}\n",
    "{\"x\": \"a b\"}\n",
    "{\"id\": 1}\n",
    "{\"id\": -1}\n",
    "{\"id\": 1.5}\n",
    "{\"id\": \"../x\"}\n",
    "{\"id\": \"\"}\n",
    "[1, 2, 3]\n",
    "[\n",
    "]\n",
    "1e400\n",
    "\"s\"\n",
    "null\n",
    "true\n",
    "{}\n",
    "{\"a\":\n",
    "\u{feff}",
    "\n",
    "\r\n",
    " ",
    "{",
    "}",
    "\"",
    ",",
    ":",
    "\\u0000",
    "\\ud800",
    "é",
];

proptest! {
    #![proptest_config(config(3000))]

    /// The template compiler (both quotings) and rendering with arbitrary values.
    #[test]
    fn template_compiler_never_panics(
        text in mixed(SHELL, 16),
        x in "\\PC{0,8}",
        list in vec("\\PC{0,4}", 0..3),
    ) {
        let ctx = json!({"job": {"x": x, "list": list}, "index": 0, "job_id": "a"});
        for quoting in [Quoting::Shell, Quoting::Raw] {
            let mut t = Templates::new();
            if t.add("t", &text, quoting).is_ok() {
                let _ = t.render("t", quoting, &ctx);
            }
        }
    }
}

proptest! {
    #![proptest_config(config(800))]

    /// The manifest parser, then what `validate` does with a manifest that parses: the stage
    /// graph, static job expansion, and compiling each stage's command.
    #[test]
    fn manifest_parser_never_panics(text in mixed(TOML, 14)) {
        exercise_manifest(text);
    }

    /// Valid manifests with arbitrary `run` templates and job values.
    #[test]
    fn manifest_with_arbitrary_templates_never_panics(
        run in mixed(SHELL, 10),
        x in "\\PC{0,10}",
    ) {
        let mut stage = toml::Table::new();
        stage.insert("run".into(), toml::Value::String(run));
        let mut job = toml::Table::new();
        job.insert("x".into(), toml::Value::String(x));
        stage.insert("jobs".into(), toml::Value::Array(vec![toml::Value::Table(job)]));
        let text = format!(
            "[workflow]\nname = \"w\"\n[stages.a]\n{}",
            toml::to_string(&stage).expect("serializes")
        );
        exercise_manifest(text);
    }
}

proptest! {
    #![proptest_config(config(400))]

    /// The jobs-file reader (the same parser reads generator output).
    #[test]
    fn jobs_file_reader_never_panics(text in mixed(JSONL, 12)) {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("jobs.jsonl"), &text).expect("written");
        let manifest = "[workflow]\nname = \"w\"\n[stages.a]\njobs_file = \"jobs.jsonl\"\nrun = \"echo {{job}}\"\n";
        let path = dir.path().join("poolparty.toml");
        let compiled = plan_manifest(&path, manifest.to_owned(), &Map::new(), usize::MAX)
            .expect("the manifest is valid");
        assert!(compiled[0], "compiles");
    }
}

fn exercise_manifest(text: String) {
    let path = Path::new("/nonexistent/poolparty-fuzz/poolparty.toml");
    let _ = plan_manifest(path, text, &base(), 50);
}

fn base() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("workflow".into(), json!({"name": "w", "dir": "/w"}));
    m.insert("stage".into(), json!({"name": "a", "dir": "/w/a"}));
    m.insert("env".into(), json!({}));
    m.insert("needs".into(), json!({}));
    m
}
