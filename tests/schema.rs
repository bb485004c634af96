//! The manifest's JSON Schema: the checked-in `schemas/poolparty.schema.json` is what
//! `poolparty schema` prints, every example manifest validates against it, and a manifest
//! with a mistake does not.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::Test;

const SCHEMA_FILE: &str = "schemas/poolparty.schema.json";
const REGENERATE: &str = "cargo run -q -- schema > schemas/poolparty.schema.json";
const SCHEMA_COMMENT: &str = "#:schema ../../schemas/poolparty.schema.json";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn checked_in_schema() -> String {
    std::fs::read_to_string(repo().join(SCHEMA_FILE))
        .unwrap_or_else(|e| panic!("{SCHEMA_FILE}: {e}; create it with `{REGENERATE}`"))
}

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(&checked_in_schema()).expect("the schema is JSON");
    jsonschema::validator_for(&schema).expect("the schema compiles")
}

/// A manifest's text as the JSON the schema describes.
fn toml_to_json(text: &str) -> Value {
    let table: toml::Table = toml::from_str(text).expect("valid TOML");
    serde_json::to_value(table).expect("TOML converts to JSON")
}

/// The schema's complaints about a manifest, one line each; empty when it is valid.
fn schema_errors(v: &jsonschema::Validator, text: &str) -> Vec<String> {
    let instance = toml_to_json(text);
    v.iter_errors(&instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Every `examples/*/poolparty.toml`, sorted.
fn example_manifests() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .expect("examples/ exists")
        .map(|e| e.expect("readable entry").path().join("poolparty.toml"))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths
}

#[test]
fn checked_in_schema_is_what_poolparty_schema_prints() {
    let r = Test::new().run(&["schema"]);
    r.code(0);
    let file = checked_in_schema();
    if r.stdout != file {
        let line = r
            .stdout
            .lines()
            .zip(file.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| r.stdout.lines().count().min(file.lines().count()))
            + 1;
        panic!(
            "{SCHEMA_FILE} is out of date with the manifest types (first difference at line \
             {line}); regenerate it with `{REGENERATE}`"
        );
    }
    let schema: Value = serde_json::from_str(&file).expect("the schema is JSON");
    assert_eq!(schema["title"], "poolparty manifest");
}

#[test]
fn every_example_manifest_validates_against_the_schema() {
    let v = validator();
    let manifests = example_manifests();
    assert!(manifests.len() >= 3, "examples not found: {manifests:?}");
    for path in &manifests {
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(
            text.lines().next(),
            Some(SCHEMA_COMMENT),
            "{}: the first line should point editors at the schema",
            path.display()
        );
        let errors = schema_errors(&v, &text);
        assert!(
            errors.is_empty(),
            "{} does not match {SCHEMA_FILE}:\n{}",
            path.display(),
            errors.join("\n")
        );
    }
}

#[test]
fn schema_rejects_unknown_keys_and_bad_values() {
    let v = validator();
    let good = "[workflow]\nname = \"w\"\n[defaults]\nmax_parallel = 2\n\
                [stages.a]\njobs = [1, {x = 2}]\nrun = \"echo {{job}}\"\nretries = 1\n";
    let errors = schema_errors(&v, good);
    assert!(errors.is_empty(), "{errors:?}");
    Test::new().manifest(good).run(&["validate"]).code(0);

    // Each mistake is rejected by the schema, as poolparty itself rejects it.

    for (what, bad) in [
        ("unknown stage key", good.replace("retries", "retires")),
        (
            "unknown defaults key",
            good.replace("max_parallel", "max_paralel"),
        ),
        (
            "unknown workflow key",
            good.replace("name = \"w\"\n", "name = \"w\"\nwrok_dir = \"x\"\n"),
        ),
        (
            "unknown top-level table",
            format!("{good}[extras]\nx = 1\n"),
        ),
        (
            "zero max_parallel",
            good.replace("max_parallel = 2", "max_parallel = 0"),
        ),
        ("unknown backend", format!("{good}backend = \"condor\"\n")),
        ("missing run", good.replace("run = \"echo {{job}}\"\n", "")),
    ] {
        assert_ne!(bad, good, "{what}: the case did not change the manifest");
        assert!(
            !schema_errors(&v, &bad).is_empty(),
            "the schema accepts a manifest with {what}:\n{bad}"
        );
        Test::new().manifest(&bad).run(&["validate"]).code(2);
    }
}
