//! The examples under `examples/` keep working: every `examples/*/poolparty.toml` runs with the
//! local backend (in a copy, so the repository stays clean) and produces its results, and each
//! example's own promise holds. A new example folder is covered without touching this file.
//!
//! The example jobs are Python 3 scripts (stdlib only), so `python3` must be on `PATH`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::harness::{Ran, Test};

/// The repository's `examples/` folder.
fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// The names of the folders under `examples/` that hold a `poolparty.toml`, sorted.
fn example_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(examples_dir())
        .expect("examples/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.join("poolparty.toml").is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Folders an example creates when it runs; never copied.
const GENERATED: &[&str] = &[".poolparty", "tut", "__pycache__"];

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let target = to.join(&name);
        if entry.file_type().unwrap().is_dir() {
            if !GENERATED.contains(&name.to_string_lossy().as_ref()) {
                copy_tree(&entry.path(), &target);
            }
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A copy of `examples/<name>/` at `<tmp>/examples/<name>/`, so commands are run from `<tmp>`
/// exactly as the README runs them from the repository root.
struct Example {
    t: Test,
    name: String,
}

impl Example {
    fn new(name: &str) -> Self {
        let t = Test::new();
        copy_tree(
            &examples_dir().join(name),
            &t.path().join("examples").join(name),
        );
        Self {
            t,
            name: name.to_owned(),
        }
    }

    /// `examples/<name>`, relative to the temporary root.
    fn rel(&self) -> String {
        format!("examples/{}", self.name)
    }

    /// The example's folder in the copy.
    fn dir(&self) -> PathBuf {
        self.t.path().join("examples").join(&self.name)
    }

    /// The manifest, parsed.
    fn manifest(&self) -> toml::Table {
        let text = std::fs::read_to_string(self.dir().join("poolparty.toml")).unwrap();
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    /// `poolparty run examples/<name>`, which must exit 0.
    fn run(&self) -> Ran {
        let r = self.t.run(&["run", &self.rel()]);
        r.code(0);
        r
    }

    /// `poolparty results examples/<name> --stage STAGE`, which must exit 0.
    fn results(&self, stage: &str) -> String {
        let r = self.t.run(&["results", &self.rel(), "--stage", stage]);
        r.code(0);
        r.stdout
    }

    /// The state folder `examples/<name>/.poolparty/<workflow>/`.
    fn state(&self) -> PathBuf {
        let m = self.manifest();
        let wf = m["workflow"].as_table().unwrap();
        let work_dir = wf
            .get("work_dir")
            .and_then(toml::Value::as_str)
            .unwrap_or(".poolparty");
        self.dir().join(work_dir).join(wf["name"].as_str().unwrap())
    }
}

/// A TOML value as JSON.
fn json(v: &toml::Value) -> Value {
    serde_json::to_value(v).expect("TOML converts to JSON")
}

/// Runs `python3 -c CODE ARGS...` and returns its stdout.
fn python(code: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("python3 is on PATH (the examples need it)");
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The elements of a one-line JSON array printed by `results`, as text.
fn elements(line: &str) -> Vec<String> {
    let inner = line
        .trim_end()
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or_else(|| panic!("not a one-line array: {line:?}"));
    if inner.is_empty() {
        return Vec::new();
    }
    inner.split(", ").map(str::to_owned).collect()
}

#[test]
fn every_example_runs_and_every_stage_has_results() {
    let names = example_names();
    for expected in ["map-reduce", "std-dev", "telescope"] {
        assert!(
            names.iter().any(|n| n == expected),
            "examples/{expected} is missing: {names:?}"
        );
    }
    for name in &names {
        let ex = Example::new(name);
        ex.t.run(&["validate", &ex.rel()]).code(0);
        ex.run().stderr_has("every job succeeded");
        let m = ex.manifest();
        let default_mode = m
            .get("defaults")
            .and_then(|d| d.get("result"))
            .and_then(toml::Value::as_str)
            .unwrap_or("file");
        let stages = m["stages"].as_table().expect("[stages] is a table");
        assert!(!stages.is_empty(), "{name}: no stages");
        for (stage, table) in stages {
            let mode = table
                .get("result")
                .and_then(toml::Value::as_str)
                .unwrap_or(default_mode);
            if mode == "none" {
                continue;
            }
            let out = ex.results(stage);
            let results: Vec<Value> = serde_json::from_str(&out)
                .unwrap_or_else(|e| panic!("{name}/{stage}: results are not JSON ({e}): {out}"));
            assert!(!results.is_empty(), "{name}/{stage}: no results");
            assert!(
                results.iter().all(|r| !r.is_null()),
                "{name}/{stage}: a job has no result: {out}"
            );
        }
        // The run's state went into the copy.
        assert!(
            ex.state().join("summary.json").is_file(),
            "{name}: no summary"
        );
    }
}

#[test]
fn std_dev_matches_python_statistics_pstdev_as_text() {
    let ex = Example::new("std-dev");
    ex.run();
    let got = ex.results("std");
    assert_eq!(
        got,
        "[22.276669409945463, 6.770524351924303, 202.16302552368197, 16.422164899914993]\n"
    );

    // The same arrays, taken from the manifest, through a plain Python loop.
    let m = ex.manifest();
    let arrays = json(&m["stages"]["std"]["jobs"]);
    assert_eq!(arrays.as_array().unwrap().len(), 4);
    let expected = python(
        "import json, statistics, sys\n\
         arrays = json.loads(sys.argv[1])\n\
         print('[' + ', '.join(repr(statistics.pstdev(a)) for a in arrays) + ']')\n",
        &[&arrays.to_string()],
    );
    let (got_el, expected_el) = (elements(&got), elements(&expected));
    assert_eq!(got_el.len(), expected_el.len(), "{got} vs {expected}");
    for (i, (g, e)) in got_el.iter().zip(&expected_el).enumerate() {
        assert_eq!(
            g, e,
            "element {i}: poolparty printed {g}, Python prints {e}"
        );
    }
    assert_eq!(got, expected);
}

#[test]
fn telescope_generates_one_job_per_run_after_init_and_skips_broken_events() {
    let ex = Example::new("telescope");
    ex.run();
    let tut = ex.dir().join("tut");
    let logbook: Value =
        serde_json::from_str(&std::fs::read_to_string(tut.join("logbook.json")).unwrap()).unwrap();
    let runs: BTreeSet<String> = std::fs::read_dir(&tut)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".txt").map(str::to_owned)
        })
        .collect();
    assert_eq!(runs.len(), 8, "init wrote {runs:?}");

    let results: Vec<Value> = serde_json::from_str(&ex.results("analyse")).unwrap();
    let ids: Vec<&str> = results.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, runs.iter().map(String::as_str).collect::<Vec<_>>());
    for r in &results {
        let id = r["id"].as_str().unwrap();
        let lines = std::fs::read_to_string(tut.join(format!("{id}.txt")))
            .unwrap()
            .lines()
            .count() as u64;
        let broken = logbook[id].as_array().unwrap().len() as u64;
        assert!(broken >= 1, "run {id} has no broken event to skip");
        assert_eq!(r["num_skipped"].as_u64(), Some(broken), "{r}");
        assert_eq!(r["num_events"].as_u64(), Some(lines - broken), "{r}");
        assert!(r["num_above_threshold"].as_u64().unwrap() <= lines - broken);
    }

    // Running the README command again is harmless and reuses every job.
    let again = ex.run();
    again.stderr_has("every job succeeded");
    let again: Vec<Value> = serde_json::from_str(&ex.results("analyse")).unwrap();
    assert_eq!(again, results);
}

#[test]
fn map_reduce_sums_every_map_result_after_every_map_job_ended() {
    let ex = Example::new("map-reduce");
    ex.run();
    let m = ex.manifest();
    let numbers: Vec<i64> = json(&m["stages"]["map"]["jobs"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(numbers.len(), 20);
    let squares: Vec<i64> = numbers.iter().map(|n| n * n).collect();
    let sum: i64 = squares.iter().sum();

    let map: Vec<i64> = serde_json::from_str(&ex.results("map")).unwrap();
    assert_eq!(map, squares);
    assert_eq!(ex.results("reduce"), format!("[{sum}]\n"));

    // trace.log: `<monotonic ns> <stage> <job id> <start|end>`, in the order written.
    let trace = std::fs::read_to_string(ex.state().join("trace.log")).unwrap();
    let events: Vec<(u128, &str, &str, &str)> = trace
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 4, "bad trace line {l:?}");
            (f[0].parse().unwrap(), f[1], f[2], f[3])
        })
        .collect();
    let find = |stage: &str, what: &str| -> Vec<usize> {
        (0..events.len())
            .filter(|&i| events[i].1 == stage && events[i].3 == what)
            .collect()
    };
    let (map_starts, map_ends) = (find("map", "start"), find("map", "end"));
    let (reduce_starts, reduce_ends) = (find("reduce", "start"), find("reduce", "end"));
    assert_eq!(map_starts.len(), 20, "{trace}");
    assert_eq!(map_ends.len(), 20, "{trace}");
    assert_eq!(reduce_starts.len(), 1, "{trace}");
    assert_eq!(reduce_ends.len(), 1, "{trace}");
    let ended: BTreeSet<&str> = map_ends.iter().map(|&i| events[i].2).collect();
    assert_eq!(ended.len(), 20, "every map job ends once: {trace}");

    let reduce_start = reduce_starts[0];
    for &i in &map_ends {
        assert!(
            i < reduce_start,
            "map job {} ended after reduce started:\n{trace}",
            events[i].2
        );
        assert!(
            events[i].0 <= events[reduce_start].0,
            "map job {} ended (t={}) after reduce started (t={})",
            events[i].2,
            events[i].0,
            events[reduce_start].0
        );
    }
    assert!(reduce_start < reduce_ends[0]);
}
