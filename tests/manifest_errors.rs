//! Malformed input: manifests, generator outputs and jobs files that must be rejected.
//!
//! Every case runs `poolparty validate` and `poolparty run` in a fresh folder and checks that
//! both exit 2 with the same diagnostic, that the diagnostic says the right thing (explicit
//! `contains` checks) and points at the right text (an insta snapshot of stderr, temp path
//! redacted), and that nothing ran: every job's command is `touch ran`, so the file `ran`
//! must not exist, and no ledger may have been written anywhere under `.poolparty/`.
//!
//! Generators do run (they are how jobs are found); they never create `ran`.

use std::path::Path;

use crate::harness::{Ran, Test};

/// Escapes a literal for use in a regex (insta filters are regexes).
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Joins the wrapped lines of miette's `× message` header into one line when the message
/// holds the temp path, so the snapshot does not depend on that path's length.
fn unwrap_header(stderr: &str, path: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let mut end = i + 1;
        if lines[i].starts_with("  × ") {
            while end < lines.len() && lines[end].starts_with("  │ ") {
                end += 1;
            }
        }
        let header = &lines[i..end];
        if header.len() > 1 && header.iter().any(|l| l.contains(path)) {
            let rest: Vec<&str> = header[1..].iter().map(|l| &l["  │ ".len()..]).collect();
            out.push(format!("{} {}", header[0], rest.join(" ")));
        } else {
            out.extend(header.iter().map(|l| (*l).to_owned()));
        }
        i = end;
    }
    let mut text = out.join("\n");
    if stderr.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// Every `ledger.jsonl` below `dir`.
fn ledgers(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(ledgers(&p));
        } else if p.file_name().is_some_and(|n| n == "ledger.jsonl") {
            found.push(p.display().to_string());
        }
    }
    found
}

/// Runs `poolparty <args>` (validate, then run) and checks the rejection; returns the `run`.
#[track_caller]
fn reject_with(name: &str, t: &Test, args: &[&str], needles: &[&str], extra: &[(&str, &str)]) {
    let mut validate_args = vec!["validate"];
    validate_args.extend_from_slice(args);
    let mut run_args = vec!["run"];
    run_args.extend_from_slice(args);

    let validated: Ran = t.run(&validate_args);
    validated.code(2);
    let ran: Ran = t.run(&run_args);
    ran.code(2);
    assert_eq!(
        validated.stderr, ran.stderr,
        "`validate` and `run` report the same diagnostic"
    );
    assert!(ran.stdout.is_empty(), "stdout: {}", ran.stdout);
    for n in needles {
        ran.stderr_has(n);
    }
    assert!(!t.path().join("ran").exists(), "a job ran:\n{}", ran.stderr);
    let written = ledgers(&t.path().join(".poolparty"));
    assert!(written.is_empty(), "ledgers were written: {written:?}");

    let mut filters: Vec<(String, String)> = Vec::new();
    if let Ok(canonical) = t.path().canonicalize() {
        filters.push((
            regex_escape(&canonical.display().to_string()),
            "[TMP]".into(),
        ));
    }
    filters.push((
        regex_escape(&t.path().display().to_string()),
        "[TMP]".into(),
    ));
    for (re, to) in extra {
        filters.push(((*re).to_owned(), (*to).to_owned()));
    }
    let filters: Vec<(&str, &str)> = filters
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let stderr = unwrap_header(&ran.stderr, &t.path().display().to_string());
    insta::with_settings!({filters => filters}, {
        insta::assert_snapshot!(name, stderr);
    });
}

/// A manifest (and other files) rejected by `validate` and `run` with these words in stderr.
#[track_caller]
pub(crate) fn reject(name: &str, manifest: &str, files: &[(&str, &str)], needles: &[&str]) {
    let mut t = Test::new().manifest(manifest);
    for (path, text) in files {
        t = t.file(path, text);
    }
    reject_with(name, &t, &[], needles, &[]);
}

// ---------------------------------------------------------------------------------------------
// TOML syntax

#[test]
fn toml_unclosed_array() {
    reject(
        "toml_unclosed_array",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1, 2\nrun = \"touch ran\"\n",
        &[],
        &["invalid array", "expected `]`", "poolparty.toml:5:1"],
    );
}

#[test]
fn toml_duplicate_stage_table() {
    reject(
        "toml_duplicate_stage_table",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\nrun = \"touch ran\"\n[stages.a]\njobs = [2]\nrun = \"touch ran\"\n",
        &[],
        &["duplicate key `a`", "poolparty.toml:6:1"],
    );
}

#[test]
fn toml_missing_manifest() {
    let t = Test::new();
    reject_with(
        "toml_missing_manifest",
        &t,
        &["nowhere.toml"],
        &["failed to read manifest `nowhere.toml`", "No such file"],
        &[],
    );
}

// ---------------------------------------------------------------------------------------------
// Unknown keys, at every level, with did-you-mean

#[test]
fn unknown_top_level_table() {
    reject(
        "unknown_top_level_table",
        "[workflow]\nname = \"w\"\n[stage.a]\njobs = [1]\nrun = \"touch ran\"\n",
        &[],
        &["unknown field `stage`", "did you mean `stages`?"],
    );
}

#[test]
fn unknown_workflow_key() {
    reject(
        "unknown_workflow_key",
        "[workflow]\nname = \"w\"\nwork_dri = \"state\"\n[stages.a]\njobs = [1]\nrun = \"touch ran\"\n",
        &[],
        &["unknown field `work_dri`", "did you mean `work_dir`?"],
    );
}

#[test]
fn unknown_defaults_key() {
    reject(
        "unknown_defaults_key",
        "[workflow]\nname = \"w\"\n[defaults]\nmax_paralel = 2\n[stages.a]\njobs = [1]\nrun = \"touch ran\"\n",
        &[],
        &[
            "unknown field `max_paralel`",
            "did you mean `max_parallel`?",
        ],
    );
}

#[test]
fn unknown_stage_key() {
    reject(
        "unknown_stage_key",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\nrun = \"touch ran\"\nretires = 3\n",
        &[],
        &["unknown field `retires`", "did you mean `retries`?"],
    );
}

#[test]
fn unknown_backend_suggests() {
    reject(
        "unknown_backend_suggests",
        "[workflow]\nname = \"w\"\n[defaults]\nbackend = \"slurmm\"\n[stages.a]\njobs = [1]\nrun = \"touch ran\"\n",
        &[],
        &["unknown variant `slurmm`", "did you mean `slurm`?"],
    );
}

#[test]
fn unknown_result_mode_suggests() {
    reject(
        "unknown_result_mode_suggests",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\nresult = \"files\"\nrun = \"touch ran\"\n",
        &[],
        &["unknown variant `files`", "did you mean `file`?"],
    );
}

// ---------------------------------------------------------------------------------------------
// Wrong types and missing keys

#[test]
fn wrong_type_retries() {
    reject(
        "wrong_type_retries",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\nretries = \"three\"\nrun = \"touch ran\"\n",
        &[],
        &["invalid type: string \"three\", expected u32"],
    );
}

#[test]
fn wrong_type_run() {
    reject(
        "wrong_type_run",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\nrun = 5\n",
        &[],
        &[
            "invalid type: integer `5`",
            "a command string or an array of argument strings",
        ],
    );
}

#[test]
fn wrong_type_argv_element() {
    reject(
        "wrong_type_argv_element",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\nrun = [\"touch\", 1]\n",
        &[],
        &[
            "invalid type: integer `1`, expected a string",
            "poolparty.toml:5:17",
        ],
    );
}

#[test]
fn wrong_type_needs() {
    reject(
        "wrong_type_needs",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\nrun = \"touch ran\"\n[stages.b]\njobs = [1]\nneeds = \"a\"\nrun = \"touch ran\"\n",
        &[],
        &["invalid type: string \"a\", expected a sequence"],
    );
}

#[test]
fn wrong_type_matrix_value() {
    reject(
        "wrong_type_matrix_value",
        "[workflow]\nname = \"w\"\n[stages.a]\nmatrix = { x = 1 }\nrun = \"touch ran\"\n",
        &[],
        &["invalid type: integer `1`, expected a sequence"],
    );
}

#[test]
fn negative_max_parallel() {
    reject(
        "negative_max_parallel",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\nmax_parallel = -1\nrun = \"touch ran\"\n",
        &[],
        &["invalid value: integer `-1`, expected u32"],
    );
}

#[test]
fn missing_run() {
    reject(
        "missing_run",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\n",
        &[],
        &["missing field `run`", "every stage needs `run`"],
    );
}

#[test]
fn missing_stages() {
    reject(
        "missing_stages",
        "[workflow]\nname = \"w\"\n",
        &[],
        &["missing field `stages`", "add a [stages.NAME] table"],
    );
}

#[test]
fn empty_run() {
    reject(
        "empty_run",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\nrun = \"   \"\n",
        &[],
        &["`run` is empty", "empty command"],
    );
}

#[test]
fn empty_argv_run() {
    reject(
        "empty_argv_run",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\nrun = []\n",
        &[],
        &["invalid length 0, expected at least the program"],
    );
}

// ---------------------------------------------------------------------------------------------
// Job sources

#[test]
fn no_job_source() {
    reject(
        "no_job_source",
        "[workflow]\nname = \"w\"\n[stages.a]\nrun = \"touch ran\"\n",
        &[],
        &[
            "stage `a` has no job source",
            "add one of `generate`, `jobs`",
        ],
    );
}

#[test]
fn two_job_sources_point_at_the_later_one() {
    // `jobs` stands first in the file, so the label belongs on `generate`.
    reject(
        "two_job_sources_point_at_the_later_one",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\ngenerate = \"echo 1\"\nrun = \"touch ran\"\n",
        &[],
        &[
            "stage `a` has more than one job source: `jobs` and `generate`",
            "second job source",
            "poolparty.toml:5:12",
        ],
    );
}

#[test]
fn empty_generate() {
    reject(
        "empty_generate",
        "[workflow]\nname = \"w\"\n[stages.a]\ngenerate = \"  \"\nrun = \"touch ran\"\n",
        &[],
        &["`generate` is empty", "empty command"],
    );
}

#[test]
fn empty_matrix_list_points_at_the_list() {
    reject(
        "empty_matrix_list_points_at_the_list",
        "[workflow]\nname = \"w\"\n[stages.a]\nmatrix = { x = [1, 2], y = [] }\nrun = \"touch ran\"\n",
        &[],
        &[
            "matrix key `y` of stage `a` has no values",
            "empty list",
            "poolparty.toml:4:28",
        ],
    );
}

#[test]
fn for_each_with_extra_needs_points_at_the_need() {
    reject(
        "for_each_with_extra_needs_points_at_the_need",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\nrun = \"touch ran\"\n[stages.b]\njobs = [1]\nrun = \"touch ran\"\n[stages.c]\nfor_each = \"a\"\nneeds = [\"b\"]\nrun = \"touch ran\"\n",
        &[],
        &[
            "stage `c` is element-wise over `a` and cannot need other stages, such as `b`",
            "not allowed with `for_each`",
            "poolparty.toml:11:10",
        ],
    );
}

#[test]
fn for_each_unknown_stage_suggests() {
    reject(
        "for_each_unknown_stage_suggests",
        "[workflow]\nname = \"w\"\n[stages.prepare]\njobs = [1]\nrun = \"touch ran\"\n[stages.b]\nfor_each = \"prepar\"\nrun = \"touch ran\"\n",
        &[],
        &[
            "stage `b` needs unknown stage `prepar`",
            "no stage has this name",
            "did you mean `prepare`?",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Names, values, durations

#[test]
fn invalid_workflow_name() {
    reject(
        "invalid_workflow_name",
        "[workflow]\nname = \"my workflow\"\n[stages.a]\njobs = [1]\nrun = \"touch ran\"\n",
        &[],
        &["invalid workflow name `my workflow`", "not a valid name"],
    );
}

#[test]
fn invalid_stage_name() {
    reject(
        "invalid_stage_name",
        "[workflow]\nname = \"w\"\n[stages.\"a/b\"]\njobs = [1]\nrun = \"touch ran\"\n",
        &[],
        &["`a/b` is not a valid name", "invalid stage name"],
    );
}

#[test]
fn invalid_name_in_needs() {
    reject(
        "invalid_name_in_needs",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\nneeds = [\"../b\"]\nrun = \"touch ran\"\n",
        &[],
        &["`../b` is not a valid name", "invalid stage name"],
    );
}

#[test]
fn bad_duration_time() {
    reject(
        "bad_duration_time",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\ntime = \"10 minutes\"\nrun = \"touch ran\"\n",
        &[],
        &["`10 minutes` is not a duration", "invalid duration"],
    );
}

#[test]
fn bad_duration_in_defaults() {
    reject(
        "bad_duration_in_defaults",
        "[workflow]\nname = \"w\"\n[defaults]\npoll_interval = \"0s\"\n[stages.a]\njobs = [1]\nrun = \"touch ran\"\n",
        &[],
        &["`0s` is not a duration", "poolparty.toml:4:17"],
    );
}

#[test]
fn duration_overflow_is_an_error_not_a_crash() {
    reject(
        "duration_overflow_is_an_error_not_a_crash",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\ntime = \"999999999999999999d\"\nrun = \"touch ran\"\n",
        &[],
        &["`999999999999999999d` is too long", "poolparty.toml:5:8"],
    );
}

#[test]
fn max_parallel_zero() {
    reject(
        "max_parallel_zero",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\nmax_parallel = 0\nrun = \"touch ran\"\n",
        &[],
        &["`max_parallel` of stage `a` must be at least 1", "zero"],
    );
}

#[test]
fn invalid_env_name_points_at_the_key() {
    reject(
        "invalid_env_name_points_at_the_key",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\nenv = { OK = \"1\", \"A=B\" = \"x\" }\nrun = \"touch ran\"\n",
        &[],
        &[
            "invalid environment variable `A=B`",
            "not a valid variable",
            "poolparty.toml:5:19",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// The stage graph

#[test]
fn unknown_need_suggests() {
    reject(
        "unknown_need_suggests",
        "[workflow]\nname = \"w\"\n[stages.analyse]\njobs = [1]\nrun = \"touch ran\"\n[stages.b]\njobs = [1]\nneeds = [\"analyze\"]\nrun = \"touch ran\"\n",
        &[],
        &[
            "stage `b` needs unknown stage `analyze`",
            "no stage has this name",
            "did you mean `analyse`?",
        ],
    );
}

#[test]
fn self_dependency() {
    reject(
        "self_dependency",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\nneeds = [\"a\"]\nrun = \"touch ran\"\n",
        &[],
        &[
            "stage `a` needs itself",
            "self-dependency",
            "poolparty.toml:5:10",
        ],
    );
}

#[test]
fn duplicate_need() {
    reject(
        "duplicate_need",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\nrun = \"touch ran\"\n[stages.b]\njobs = [1]\nneeds = [\"a\", \"a\"]\nrun = \"touch ran\"\n",
        &[],
        &[
            "stage `b` lists `a` twice in `needs`",
            "duplicate",
            "poolparty.toml:8:15",
        ],
    );
}

#[test]
fn cycle_of_two() {
    reject(
        "cycle_of_two",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\nneeds = [\"b\"]\nrun = \"touch ran\"\n[stages.b]\njobs = [1]\nneeds = [\"a\"]\nrun = \"touch ran\"\n",
        &[],
        &["stages form a cycle", "`a` needs `b`", "`b` needs `a`"],
    );
}

#[test]
fn cycle_of_three() {
    reject(
        "cycle_of_three",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\nneeds = [\"c\"]\nrun = \"touch ran\"\n[stages.b]\njobs = [1]\nneeds = [\"a\"]\nrun = \"touch ran\"\n[stages.c]\njobs = [1]\nneeds = [\"b\"]\nrun = \"touch ran\"\n[stages.d]\njobs = [1]\nrun = \"touch ran\"\n",
        &[],
        &[
            "stages form a cycle",
            "`a` needs `c`",
            "`b` needs `a`",
            "`c` needs `b`",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Templates

#[test]
fn undefined_job_field_suggests() {
    reject(
        "undefined_job_field_suggests",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [{ name = \"x\" }]\nrun = \"touch ran {{job.nme}}\"\n",
        &[],
        &[
            "cannot render `run` of stage `a` for job 0",
            "`job.nme` is not defined",
            "did you mean `name`?",
            "poolparty.toml:5:18",
        ],
    );
}

#[test]
fn undefined_job_field_after_non_ascii_text() {
    // The template parser counts columns in characters; the label must still land on the tag.
    reject(
        "undefined_job_field_after_non_ascii_text",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [{ name = \"x\" }]\nrun = \"echo ééé {{job.nme}}\"\n",
        &[],
        &[
            "`job.nme` is not defined",
            "did you mean `name`?",
            "poolparty.toml:5:20",
        ],
    );
}

#[test]
fn undefined_job_field_in_argv() {
    reject(
        "undefined_job_field_in_argv",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [{ name = \"x\" }]\nrun = [\"touch\", \"ran\", \"{{{job.nme}}}\"]\n",
        &[],
        &[
            "`job.nme` is not defined",
            "did you mean `name`?",
            "poolparty.toml:5:25",
        ],
    );
}

#[test]
fn field_defined_for_some_jobs_only() {
    reject(
        "field_defined_for_some_jobs_only",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [{ name = \"x\", size = 1 }, { name = \"y\" }]\nrun = \"\"\"\ntouch ran\necho {{job.name}} {{job.size}}\n\"\"\"\n",
        &[],
        &[
            "for job 1 (id `",
            "`job.size` is not defined",
            "`job` has `name`",
            "poolparty.toml:7:19",
        ],
    );
}

#[test]
fn unclosed_if_block() {
    reject(
        "unclosed_if_block",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [{ name = \"x\" }]\nrun = \"touch ran {{#if job.name}}--verbose\"\n",
        &[],
        &[
            "invalid `run` of stage `a`",
            "`{{#if}}` is never closed",
            "close it with `{{/if}}`",
            "poolparty.toml:5:18",
        ],
    );
}

#[test]
fn mismatched_block_close() {
    reject(
        "mismatched_block_close",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [{ f = [\"x\"] }]\nrun = \"touch ran {{#each job.f}}{{this}}{{/if}}\"\n",
        &[],
        &[
            "helper \"each\" was opened, but \"if\" is closing",
            "poolparty.toml:5:41",
        ],
    );
}

#[test]
fn unclosed_expression() {
    reject(
        "unclosed_expression",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [{ name = \"x\" }]\nrun = \"touch ran {{job.name}\"\n",
        &[],
        &[
            "invalid `run` of stage `a`: invalid template: `{{` is not closed by `}}`",
            "write values as `{{job.field}}`",
            "poolparty.toml:5:18",
        ],
    );
}

#[test]
fn template_error_in_a_later_stage_stops_everything() {
    // Stage `b`'s jobs are generated at run time, after `a`; its `run` template is still
    // compiled up front, so `a` must not start.
    reject(
        "template_error_in_a_later_stage_stops_everything",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\nrun = \"touch ran\"\n[stages.b]\ngenerate = \"cat $POOLPARTY_NEEDS_A_RESULTS\"\nneeds = [\"a\"]\nrun = \"touch ran {{#if job}}x\"\n",
        &[],
        &[
            "invalid `run` of stage `b`",
            "`{{#if}}` is never closed",
            "poolparty.toml:9:18",
        ],
    );
}

#[test]
fn generate_template_error_in_a_later_stage() {
    reject(
        "generate_template_error_in_a_later_stage",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\nrun = \"touch ran\"\n[stages.b]\ngenerate = \"cat {{#each needs}}x\"\nneeds = [\"a\"]\nrun = \"touch ran\"\n",
        &[],
        &[
            "invalid `generate` of stage `b`",
            "`{{#each}}` is never closed",
            "poolparty.toml:7:17",
        ],
    );
}

#[test]
fn undefined_variable_in_generate() {
    reject(
        "undefined_variable_in_generate",
        "[workflow]\nname = \"w\"\n[stages.a]\ngenerate = \"echo {{workflow.nme}}\"\nrun = \"touch ran\"\n",
        &[],
        &[
            "cannot render `generate` of stage `a`",
            "`workflow.nme` is not defined",
            "did you mean `name`?",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Inline jobs

#[test]
fn inline_duplicate_ids_point_at_both_jobs() {
    reject(
        "inline_duplicate_ids_point_at_both_jobs",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [{ id = \"x\" }, { id = \"y\" }, { id = \"x\" }]\nrun = \"touch ran\"\n",
        &[],
        &[
            "jobs 0 and 2 of stage `a` have the same id `x`",
            "job 0",
            "job 2",
        ],
    );
}

#[test]
fn inline_negative_id_points_at_the_job() {
    reject(
        "inline_negative_id_points_at_the_job",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [{ id = \"x\" }, { id = -1 }]\nrun = \"touch ran\"\n",
        &[],
        &[
            "invalid job 1 of stage `a`",
            "`id` must be a string or a non-negative integer, not `-1`",
            "poolparty.toml:4:23",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Generator output

#[test]
fn generator_non_json_line() {
    reject(
        "generator_non_json_line",
        "[workflow]\nname = \"w\"\n[stages.a]\ngenerate = \"sh gen.sh\"\nrun = \"touch ran\"\n",
        &[(
            "gen.sh",
            "echo '{\"x\": 1}'\necho '{\"x\": 2}'\necho 'x=3'\necho '{\"x\": 4}'\n",
        )],
        &[
            "the generator's output of stage `a` is not valid JSON or JSON Lines",
            "at line 3 column 1",
            "output of `sh gen.sh`:3:1",
        ],
    );
}

#[test]
fn generator_array_syntax_error() {
    reject(
        "generator_array_syntax_error",
        "[workflow]\nname = \"w\"\n[stages.a]\ngenerate = \"sh gen.sh\"\nrun = \"touch ran\"\n",
        &[(
            "gen.sh",
            "echo '[{\"x\": 1},'\necho ' {\"x\": 2},,'\necho ' {\"x\": 3}]'\n",
        )],
        &[
            "expected value at line 2 column 11",
            "output of `sh gen.sh`:2:11",
        ],
    );
}

#[test]
fn generator_array_not_closed() {
    reject(
        "generator_array_not_closed",
        "[workflow]\nname = \"w\"\n[stages.a]\ngenerate = \"sh gen.sh\"\nrun = \"touch ran\"\n",
        &[("gen.sh", "echo '[{\"x\": 1},'\necho ' {\"x\": 2}'\n")],
        &[
            "EOF while parsing a list at the end of the text",
            "output of `sh gen.sh`:2:9",
        ],
    );
}

#[test]
fn generator_exits_non_zero_shows_stderr() {
    reject(
        "generator_exits_non_zero_shows_stderr",
        "[workflow]\nname = \"w\"\n[stages.a]\ngenerate = \"sh gen.sh\"\nrun = \"touch ran\"\n",
        &[(
            "gen.sh",
            "echo '{\"x\": 1}'\necho 'listing data/' >&2\necho 'data/: permission denied' >&2\nexit 3\n",
        )],
        &[
            "job generator of stage `a` failed: exit code 3",
            "this command failed",
            "its stderr ended with:",
            "data/: permission denied",
        ],
    );
}

/// A failing generator's stderr is quoted in the diagnostic with escape sequences shown as
/// `^[`, not sent raw to the terminal.
#[test]
fn generator_stderr_escape_sequences_stay_off_the_terminal() {
    let t = Test::new().manifest(
        "[workflow]\nname = \"w\"\n[stages.a]\ngenerate = \"printf 'bad \\\\033[2J\\\\033]0;T\\\\007\\\\n' >&2; exit 1\"\nrun = \"true\"\n",
    );
    for args in [&["validate"][..], &["run"]] {
        let r = t.run(args);
        r.code(2).stderr_has("bad ^[[2J^[]0;T^G");
        assert!(!r.stderr.contains('\x1b'), "{}", r.stderr);
    }
}

#[test]
fn generator_not_found() {
    let t = Test::new().manifest(
        "[workflow]\nname = \"w\"\n[stages.a]\ngenerate = \"no-such-generator-xyz --list\"\nrun = \"touch ran\"\n",
    );
    // dash and bash word "not found" differently.
    reject_with(
        "generator_not_found",
        &t,
        &[],
        &[
            "job generator of stage `a` failed: exit code 127",
            "no-such-generator-xyz",
            "not found",
        ],
        &[(
            r"/bin/sh: .*no-such-generator-xyz: .*not found",
            "[SH]: no-such-generator-xyz: not found",
        )],
    );
}

#[test]
fn generator_non_utf8_output() {
    reject(
        "generator_non_utf8_output",
        "[workflow]\nname = \"w\"\n[stages.a]\ngenerate = \"sh gen.sh\"\nrun = \"touch ran\"\n",
        &[("gen.sh", "printf '\"ok\"\\n\"caf\\351\"\\n'\n")],
        &[
            "job generator of stage `a` failed: its output is not UTF-8 (byte 9)",
            "this command failed",
        ],
    );
}

#[test]
fn generator_duplicate_ids() {
    reject(
        "generator_duplicate_ids",
        "[workflow]\nname = \"w\"\n[stages.a]\ngenerate = \"sh gen.sh\"\nrun = \"touch ran\"\n",
        &[(
            "gen.sh",
            "echo '{\"id\": \"a\"}'\necho '{\"id\": \"b\"}'\necho '{\"id\": \"a\"}'\n",
        )],
        &[
            "jobs 0 and 2 of stage `a` have the same id `a`",
            "job 0",
            "job 2",
        ],
    );
}

#[test]
fn generator_path_traversal_id() {
    reject(
        "generator_path_traversal_id",
        "[workflow]\nname = \"w\"\n[stages.a]\ngenerate = \"sh gen.sh\"\nrun = \"touch ran\"\n",
        &[("gen.sh", "echo '[{\"id\": \"ok\"}, {\"id\": \"../x\"}]'\n")],
        &["invalid job 1 of stage `a`", "`id` \"../x\" is not valid"],
    );
}

#[test]
fn generator_id_of_wrong_type() {
    reject(
        "generator_id_of_wrong_type",
        "[workflow]\nname = \"w\"\n[stages.a]\ngenerate = \"sh gen.sh\"\nrun = \"touch ran\"\n",
        &[("gen.sh", "echo '{\"id\": \"a\"}'\necho '{\"id\": [1]}'\n")],
        &[
            "invalid job 1 of stage `a`",
            "`id` must be a string or a non-negative integer, not `[1]`",
            "output of `sh gen.sh`:2:1",
        ],
    );
}

#[test]
fn generator_fractional_id() {
    reject(
        "generator_fractional_id",
        "[workflow]\nname = \"w\"\n[stages.a]\ngenerate = \"sh gen.sh\"\nrun = \"touch ran\"\n",
        &[("gen.sh", "echo '{\"id\": 1.5}'\n")],
        &["invalid job 0 of stage `a`", "not `1.5`"],
    );
}

// ---------------------------------------------------------------------------------------------
// Jobs files

#[test]
fn jobs_file_missing() {
    reject(
        "jobs_file_missing",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs_file = \"missing.jsonl\"\nrun = \"touch ran\"\n",
        &[],
        &[
            "failed to read jobs file `",
            "missing.jsonl` of stage `a`",
            "No such file or directory",
            "this file",
        ],
    );
}

#[test]
fn jobs_file_bad_json_line() {
    reject(
        "jobs_file_bad_json_line",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs_file = \"jobs.jsonl\"\nrun = \"touch ran\"\n",
        &[("jobs.jsonl", "{\"x\": 1}\n\n{\"x\": 2,}\n{\"x\": 3}\n")],
        &[
            "jobs.jsonl` of stage `a` is not valid JSON or JSON Lines",
            "trailing comma at line 3 column 9",
            "jobs.jsonl:3:1",
        ],
    );
}

#[test]
fn jobs_file_bad_json_array() {
    reject(
        "jobs_file_bad_json_array",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs_file = \"jobs.json\"\nrun = \"touch ran\"\n",
        &[("jobs.json", "[\n  {\"x\": 1},\n  {\"x\": 2 \"y\": 3}\n]\n")],
        &["expected `,` or `}` at line 3 column 11", "jobs.json:3:11"],
    );
}

#[test]
fn jobs_file_invalid_id() {
    reject(
        "jobs_file_invalid_id",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs_file = \"jobs.jsonl\"\nrun = \"touch ran\"\n",
        &[("jobs.jsonl", "{\"id\": \"fine\"}\n{\"id\": \".hidden\"}\n")],
        &[
            "invalid job 1 of stage `a`",
            "`id` \".hidden\" is not valid",
            "jobs.jsonl:2:1",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Good manifests are accepted

#[test]
fn validate_accepts_inline_jobs() {
    let t = Test::new().manifest(
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [{ id = \"x\", n = 1 }, { id = \"y\", n = 2 }, 3]\nrun = \"touch ran {{job_id}}\"\n",
    );
    let r = t.run(&["validate"]);
    r.code(0)
        .stdout_has("poolparty.toml: valid (1 stage, 3 jobs expanded and rendered)");
    assert!(!t.path().join("ran").exists());
    assert!(
        !t.path().join(".poolparty").exists(),
        "validate wrote state"
    );
}

#[test]
fn validate_accepts_matrix() {
    let t = Test::new().manifest(
        "[workflow]\nname = \"w\"\n[stages.a]\nmatrix = { x = [1, 2, 3], y = [\"a\", \"b\"] }\nrun = \"touch ran-{{job.x}}-{{job.y}}\"\n[stages.b]\nfor_each = \"a\"\nrun = [\"touch\", \"ran-{{job_id}}\"]\n",
    );
    let r = t.run(&["validate"]);
    // 6 jobs in `a`; `b`'s jobs exist only at run time.
    r.code(0)
        .stdout_has("poolparty.toml: valid (2 stages, 6 jobs expanded and rendered)");
    assert!(
        !t.path().join(".poolparty").exists(),
        "validate wrote state"
    );
}

#[test]
fn validate_accepts_jobs_file() {
    let t = Test::new()
        .manifest(
            "[workflow]\nname = \"w\"\n[stages.a]\njobs_file = \"jobs.jsonl\"\nrun = \"touch ran {{job.f}}\"\n[stages.b]\njobs_file = \"more.json\"\nneeds = [\"a\"]\nrun = \"touch ran {{job}}\"\n",
        )
        .file("jobs.jsonl", "{\"f\": \"a.txt\"}\n\n{\"f\": \"b.txt\"}\r\n")
        .file("more.json", "[1, 2, 3, 4]\n");
    let r = t.run(&["validate"]);
    r.code(0)
        .stdout_has("poolparty.toml: valid (2 stages, 6 jobs expanded and rendered)");
    assert!(
        !t.path().join(".poolparty").exists(),
        "validate wrote state"
    );
}

// ---------------------------------------------------------------------------------------------
// Issue #11 (§4, §6, §7): limits, values that have no JSON form, and messages that point at
// the right thing. <https://github.com/poolparty/poolparty/issues/11>

#[test]
fn matrix_too_large_names_its_size() {
    let keys: String = (0..10)
        .map(|k| format!("k{k} = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n"))
        .collect();
    reject(
        "matrix_too_large_names_its_size",
        &format!(
            "[workflow]\nname = \"w\"\n[stages.a]\nrun = \"touch ran\"\n[stages.a.matrix]\n{keys}"
        ),
        &[],
        &["expands to 10000000000 jobs", "limit of 1000000"],
    );
}

#[test]
fn toml_nan_and_inf_are_refused_for_what_they_are() {
    reject(
        "toml_nan_and_inf_are_refused_for_what_they_are",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [nan, inf, -inf]\nrun = \"touch ran\"\n",
        &[],
        &["`nan` and `inf` have no JSON form"],
    );
    reject(
        "toml_inf_in_a_matrix_is_refused",
        "[workflow]\nname = \"w\"\n[stages.a]\nmatrix = { x = [1.5, { deep = [inf] }] }\nrun = \"touch ran\"\n",
        &[],
        &["`nan` and `inf` have no JSON form"],
    );
}

#[test]
fn generator_huge_line_is_shown_as_a_window() {
    // A 20,000-byte line with the error at its end: the diagnostic shows a window around it.
    reject(
        "generator_huge_line_is_shown_as_a_window",
        "[workflow]\nname = \"w\"\n[stages.a]\ngenerate = \"sh gen.sh\"\nrun = \"touch ran\"\n",
        &[(
            "gen.sh",
            "echo '{\"x\": 1}'\nprintf '{\"a\": \"'\nhead -c 20000 /dev/zero | tr '\\0' x\nprintf '\", bad}\\n'\necho '{\"x\": 3}'\n",
        )],
        &["at line 2 column 20011", "…"],
    );
}

#[test]
fn manifest_invalid_utf8_names_its_position() {
    let t = Test::new();
    std::fs::write(
        t.path().join("poolparty.toml"),
        b"[workflow]\nname = \"w\"\n[stages.a]\njobs = [\"ab\xffc\"]\nrun = \"touch ran\"\n",
    )
    .unwrap();
    reject_with(
        "manifest_invalid_utf8_names_its_position",
        &t,
        &[],
        &["not UTF-8", "line 4, column 12 (byte offset 44)"],
        &[],
    );
}

#[test]
fn jobs_file_invalid_utf8_names_its_position() {
    let t = Test::new().manifest(
        "[workflow]\nname = \"w\"\n[stages.a]\njobs_file = \"jobs.jsonl\"\nrun = \"touch ran\"\n",
    );
    std::fs::write(
        t.path().join("jobs.jsonl"),
        b"\xEF\xBB\xBF1\n2\n\"\xc3\x28\"\n",
    )
    .unwrap();
    reject_with(
        "jobs_file_invalid_utf8_names_its_position",
        &t,
        &[],
        &["not UTF-8", "line 3, column 2 (byte offset 8)"],
        &[],
    );
}

#[test]
fn manifest_that_is_a_folder() {
    let t = Test::new();
    std::fs::create_dir(t.path().join("poolparty.toml")).unwrap();
    reject_with(
        "manifest_that_is_a_folder",
        &t,
        &[],
        &["`poolparty.toml`", "it is a folder, not a file"],
        &[],
    );
}

#[test]
fn jobs_file_that_is_a_fifo_is_refused() {
    let t = Test::new().manifest(
        "[workflow]\nname = \"w\"\n[stages.a]\njobs_file = \"jobs.jsonl\"\nrun = \"touch ran\"\n",
    );
    nix::unistd::mkfifo(
        &t.path().join("jobs.jsonl"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    reject_with(
        "jobs_file_that_is_a_fifo_is_refused",
        &t,
        &[],
        &["not a regular file"],
        &[],
    );
}

#[test]
fn duration_zero_and_malformed_durations_say_why() {
    reject(
        "duration_zero_says_zero_is_not_allowed",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\ntime = \"0:00:00\"\nrun = \"touch ran\"\n",
        &[],
        &["zero is not allowed", "poolparty.toml:5:8"],
    );
    reject(
        "duration_unit_twice_is_refused",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\ntime = \"1h1h\"\nrun = \"touch ran\"\n",
        &[],
        &["`1h1h` is not a duration", "at most once"],
    );
    reject(
        "duration_minutes_over_59_are_refused",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\ntime = \"1:99:00\"\nrun = \"touch ran\"\n",
        &[],
        &["`1:99:00` is not a duration", "below 60"],
    );
}

#[test]
fn missing_template_of_a_local_stage_is_refused() {
    reject(
        "missing_template_of_a_local_stage_is_refused",
        "[workflow]\nname = \"w\"\n[stages.a]\njobs = [1]\ntemplate = \"nowhere.sbatch.hbs\"\nrun = \"touch ran\"\n",
        &[],
        &["cannot read the `template` of stage `a`", "No such file"],
    );
    reject(
        "broken_template_is_refused",
        "[workflow]\nname = \"w\"\n[defaults]\ntemplate = \"my.hbs\"\n[stages.a]\njobs = [1]\nrun = \"touch ran\"\n",
        &[("my.hbs", "#!/bin/sh\n{{#if x}}\n")],
        &["the `template` of stage `a`", "does not compile"],
    );
}
