//! A builder for running the `poolparty` binary in a temporary folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use std::process::Output;
use std::time::{Duration, Instant};

/// A temporary project folder, and the environment the binary runs with in it.
pub struct Test {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

/// What a run produced.
#[derive(Debug)]
pub struct Ran {
    /// Exit code (None when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Ran {
    /// Asserts the exit code, showing both streams when it differs.
    #[track_caller]
    pub fn code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(expected),
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts stderr contains `needle`.
    #[track_caller]
    pub fn stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }

    /// Asserts stdout contains `needle`.
    #[track_caller]
    pub fn stdout_has(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "stdout lacks {needle:?}:\n{}",
            self.stdout
        );
        self
    }
}

impl From<Output> for Ran {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Test {
    /// An empty temporary folder.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            env: Vec::new(),
        }
    }

    /// Writes `poolparty.toml`.
    pub fn manifest(self, text: &str) -> Self {
        self.file("poolparty.toml", text)
    }

    /// Writes a file (creating folders).
    pub fn file(self, path: &str, text: &str) -> Self {
        let p = self.dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }

    /// Sets an environment variable for the run.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The workflow state folder `<dir>/.poolparty/<name>`.
    pub fn state(&self, workflow: &str) -> PathBuf {
        self.dir.path().join(".poolparty").join(workflow)
    }

    /// A `std::process::Command` for the binary in the folder.
    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_poolparty"));
        c.args(args)
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs `poolparty ARGS` in the folder and waits.
    pub fn run(&self, args: &[&str]) -> Ran {
        self.command(args).output().expect("runs").into()
    }

    /// Reads a file below the folder.
    pub fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(path))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }
}

/// Serializes the tests that use the Slurm test cluster (across modules): one test stops the
/// controller, and throttle checks must not share the node with another test's jobs.
pub static SLURM: std::sync::Mutex<()> = std::sync::Mutex::new(());
/// Likewise for the Grid Engine test cluster.
pub static SGE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Takes a cluster lock even if an earlier test panicked while holding it.
pub fn hold(m: &'static std::sync::Mutex<()>) -> std::sync::MutexGuard<'static, ()> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

// Helpers shared by the cluster test modules (slurm, sge).

pub fn clusters_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clusters")
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn read_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", path.display())))
        .collect()
}

/// The ledger of a stage, grouped by job index: the attempts in the order recorded, as
/// `(attempt, outcome kind)`.
pub fn attempts(t: &Test, wf: &str, stage: &str) -> BTreeMap<u64, Vec<(u64, String)>> {
    let mut map: BTreeMap<u64, Vec<(u64, String)>> = BTreeMap::new();
    for r in read_lines(&t.state(wf).join(stage).join("ledger.jsonl")) {
        map.entry(r["index"].as_u64().unwrap()).or_default().push((
            r["attempt"].as_u64().unwrap(),
            r["outcome"]["kind"].as_str().unwrap().to_owned(),
        ));
    }
    map
}

/// Asserts every job `0..n` has exactly one attempt, which succeeded.
#[track_caller]
pub fn assert_each_succeeded_once(t: &Test, wf: &str, stage: &str, n: u64) {
    let got = attempts(t, wf, stage);
    let want: BTreeMap<u64, Vec<(u64, String)>> = (0..n)
        .map(|i| (i, vec![(1, "succeeded".to_owned())]))
        .collect();
    assert_eq!(got, want, "ledger of stage `{stage}`");
}

/// Asserts the lines of `file` are exactly `0..n`, each once (in any order).
#[track_caller]
pub fn assert_each_ran_once(t: &Test, file: &str, n: u64) {
    let text = t.read(file);
    let mut seen: Vec<u64> = text
        .lines()
        .map(|l| {
            l.trim()
                .parse()
                .unwrap_or_else(|_| panic!("bad line {l:?} in {file}"))
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..n).collect::<Vec<_>>(), "{file}:\n{text}");
}

pub fn summary(t: &Test, wf: &str) -> Value {
    read_json(&t.state(wf).join("summary.json"))
}

/// `[0, 1, ..., n-1]` as a TOML array.
pub fn numbers(n: u64) -> String {
    let v: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    format!("[{}]", v.join(", "))
}

pub fn has_submission(t: &Test, wf: &str, stage: &str) -> bool {
    std::fs::read_to_string(t.state(wf).join(stage).join("submissions.jsonl"))
        .is_ok_and(|s| s.lines().any(|l| !l.trim().is_empty()))
}

pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if [".poolparty", "tut", "__pycache__"].contains(&name.to_string_lossy().as_ref()) {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// Locks `path` (flock), waiting at most `limit` for another process to let go.
pub fn flock_bounded(path: &str, limit: Duration) -> nix::fcntl::Flock<std::fs::File> {
    let deadline = Instant::now() + limit;
    loop {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(l) => return l,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(500)),
            Err((_, e)) => panic!("{path} stayed locked for {limit:?}: {e}"),
        }
    }
}

/// The jobs of each task in an array's task file (`<script>.jobs`, see
/// `poolparty::backend::syntax::encode_tasks`): per task, per job, the fields
/// `[index, id, attempt, job json, argv...]`.
pub fn task_file(path: &Path) -> Vec<Vec<Vec<String>>> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let number = |b: &[u8]| -> usize { std::str::from_utf8(b).unwrap().parse().unwrap() };
    // The first task's record starts right after the header: one 40-byte line per task.
    let tasks = number(&data[..19]) / 40;
    (0..tasks)
        .map(|t| {
            let line = &data[t * 40..t * 40 + 39];
            let (off, len) = (number(&line[..19]), number(&line[20..]));
            let mut fields = data[off..off + len]
                .split(|&b| b == 0)
                .map(|f| String::from_utf8(f.to_vec()).unwrap());
            let mut jobs = Vec::new();
            while let Some(argc) = fields.next().filter(|a| !a.is_empty()) {
                let argc: usize = argc.parse().unwrap();
                jobs.push(fields.by_ref().take(argc + 4).collect());
            }
            jobs
        })
        .collect()
}

/// `n` jobs (JSON Lines) whose values `v` are `size` bytes each of text the shell would
/// mangle if it ever parsed it (quotes, `$(..)`, backticks, backslashes, newlines, non-ASCII),
/// and the values themselves.
pub fn large_values(n: usize, size: usize) -> (String, Vec<String>) {
    const PIECE: &str = "'\"$(echo no)`echo no`\\n\\\\ %s\n\t* ~ ; | & é 😀 ";
    let mut lines = String::new();
    let mut values = Vec::new();
    for i in 0..n {
        let mut v = format!("{i}:");
        while v.len() < size {
            v.push_str(PIECE);
        }
        lines.push_str(&serde_json::json!({"id": format!("j{i}"), "v": v}).to_string());
        lines.push('\n');
        values.push(v);
    }
    (lines, values)
}

/// The size of the largest array script of a stage (`<state>/<stage>/scripts/*.sh`).
pub fn largest_script(state: &Path, stage: &str) -> u64 {
    std::fs::read_dir(state.join(stage).join("scripts"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .max()
        .expect("a script")
}
