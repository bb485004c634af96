//! DESIGN.md's import order ("The pipeline") and the house rules stay true: every `crate::`
//! path outside tests in `src/` is read, and an import pointing backwards must be one of the
//! exceptions DESIGN.md names.

use std::collections::BTreeSet;
use std::path::Path;

/// DESIGN.md's order, earliest first; modules in one inner list never import each other.
const ORDER: &[&[&str]] = &[
    &["error"],
    &["quoting"],
    &["outcome"],
    &["signals"],
    &["process"],
    &["template"],
    &["manifest"],
    &["jobs"],
    &["graph"],
    &["store"],
    &["plan"],
    &["backend", "summary"],
    &["resume"],
    &["runner"],
    &["bundle", "query"],
    &["report"],
    &["cli"],
    &["cmd"],
    &["lib"],
    &["main"],
];

/// The imports DESIGN.md names as pointing the other way: (module, path prefix).
const EXCEPTIONS: &[(&str, &str)] = &[
    ("manifest", "jobs::sha256_hex"),
    ("manifest", "plan::template_error"),
    ("jobs", "report::text::clean"),
    ("jobs", "summary::MAX_SOURCE_LINE"),
    ("summary", "report::text::clean"),
];

fn tier(module: &str) -> usize {
    ORDER
        .iter()
        .position(|t| t.contains(&module))
        .unwrap_or_else(|| panic!("module `{module}` is not in DESIGN.md's import order"))
}

/// The code of a source file without comments and without its `mod tests`.
fn code(text: &str) -> String {
    let text = text
        .find("#[cfg(test)]\nmod tests")
        .map_or(text, |at| &text[..at]);
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path after `prefix` (`crate::` or `super::`), a `{..}` group split into its
/// top-level elements.
fn paths(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices(prefix) {
        if code[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut item) = (0, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.push(item);
        } else {
            out.push(
                rest.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect(),
            );
        }
    }
    out.into_iter()
        .map(|p| p.split_whitespace().collect::<String>())
        .filter(|p| !p.is_empty())
        .collect()
}

fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let name = path
                .strip_prefix(concat!(env!("CARGO_MANIFEST_DIR"), "/src/"))
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((name, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

#[test]
fn imports_follow_design_order() {
    let mut files = Vec::new();
    sources(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        &mut files,
    );
    let commands: BTreeSet<String> = files
        .iter()
        .filter_map(|(f, _)| f.strip_prefix("cmd/")?.strip_suffix(".rs"))
        .filter(|c| *c != "mod")
        .map(str::to_owned)
        .collect();
    let mut wrong = Vec::new();
    for (file, text) in &files {
        let module = file
            .split(['/', '.'])
            .next()
            .expect("a file name")
            .to_owned();
        let code = code(text);
        for path in paths(&code, "crate::") {
            let target = path.split("::").next().unwrap_or_default();
            if target == module {
                continue;
            }
            let backwards = tier(target) >= tier(&module);
            if backwards
                && !EXCEPTIONS
                    .iter()
                    .any(|(m, p)| *m == module && path.starts_with(p))
            {
                wrong.push(format!("{file} imports `crate::{path}`"));
            }
            if target == "cli" && module != "cmd" && module != "lib" {
                wrong.push(format!("{file} imports `crate::{path}` (clap types)"));
            }
            if module == "cmd" && target == "cmd" {
                wrong.push(format!("{file} imports `crate::{path}` (another command)"));
            }
        }
        if file.starts_with("cmd/") && file != "cmd/mod.rs" {
            for path in paths(&code, "super::") {
                let target = path.split("::").next().unwrap_or_default();
                if commands.contains(target) {
                    wrong.push(format!("{file} imports `super::{path}` (another command)"));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that break DESIGN.md's order (name a new exception there and here, or move \
         the item):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_sees_groups_and_inline_paths() {
    let code = code(
        "use crate::{store::{self, Layout}, jobs::sha256_hex};\n// crate::cli::X\n\
         let x = crate::report::text::clean(s);\n#[cfg(test)]\nmod tests { use crate::cli; }",
    );
    assert_eq!(
        paths(&code, "crate::"),
        [
            "store::{self,Layout}",
            "jobs::sha256_hex",
            "report::text::clean"
        ]
    );
}
