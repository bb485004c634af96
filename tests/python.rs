//! The Python package (`python/poolparty`): `python/tests/run.sh` makes a venv under `target/`,
//! `pip install`s the repository for real (maturin builds the binary into the wheel), and runs
//! the pytest suite in `python/tests`: the local backend and the release wheel's contents in
//! one test, the Slurm and Grid Engine test clusters in another (under the cluster locks).

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use crate::harness::{SGE, SLURM, hold};

/// Runs `python/tests/run.sh` with these pytest arguments and asserts that it passes. Each
/// call has its own `--basetemp`: two pytest sessions at once must not clean up each other's
/// temporary folders.
fn pytest(args: &[&str]) {
    // Install once for both tests: a second `pip install --force-reinstall` would replace the
    // binary while the other test's jobs run it.
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| run_sh(&["--install-only"], false));
    run_sh(args, true);
}

fn run_sh(args: &[&str], installed: bool) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("python/tests/run.sh"))
        .args(args)
        .current_dir(root)
        .env_remove("POOLPARTY_BIN");
    if installed {
        cmd.env("POOLPARTY_TEST_INSTALLED", "1");
    }
    let out = cmd.output().expect("run bash python/tests/run.sh");
    assert!(
        out.status.success(),
        "python/tests/run.sh {args:?} failed ({})\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn python_package_local_and_wheel() {
    pytest(&[
        "--basetemp=target/pytest/local",
        "python/tests/test_local.py",
        "python/tests/test_wheel.py",
    ]);
}

#[test]
fn python_package_on_slurm_and_grid_engine() {
    // Keep this binary's other Slurm and Grid Engine tests off the clusters meanwhile
    // (pytest takes the Grid Engine tests' file lock itself).
    let _slurm = hold(&SLURM);
    let _sge = hold(&SGE);
    pytest(&[
        "--basetemp=target/pytest/clusters",
        "python/tests/test_clusters.py",
    ]);
}
