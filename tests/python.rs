//! The Python package (`python/poolparty`): `python/tests/run.sh` makes a venv under `target/`,
//! `pip install`s the repository for real (maturin builds the binary into the wheel), and runs
//! the pytest suite in `python/tests` (local backend, the Slurm and Grid Engine test clusters,
//! and the release wheel's contents).

use std::path::Path;
use std::process::Command;

use crate::harness::{SGE, SLURM, hold};

#[test]
fn python_package_pytest_suite_passes() {
    // The suite uses both test clusters: keep this binary's Slurm and Grid Engine tests away.
    // (pytest takes the Grid Engine file lock itself.)
    let _slurm = hold(&SLURM);
    let _sge = hold(&SGE);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("python/tests/run.sh"))
        .current_dir(root)
        .env_remove("POOLPARTY_BIN")
        .output()
        .expect("run bash python/tests/run.sh");
    assert!(
        out.status.success(),
        "python/tests/run.sh failed ({})\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
