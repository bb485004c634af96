//! A builder for running the `poolparty` binary in a temporary folder.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

/// A temporary project folder and a command line to run in it.
pub struct Test {
    dir: tempfile::TempDir,
    args: Vec<String>,
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
            args: Vec::new(),
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
