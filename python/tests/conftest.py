"""Fixtures for the Python package's tests: a work folder per test, and the real single-node
Slurm and Grid Engine clusters (tests/clusters/*-up.sh), taken under the same locks as the
Rust tests so they never share a cluster with another test."""

import fcntl
import os
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CLUSTERS = os.path.join(REPO, "tests", "clusters")
sys.path.insert(0, HERE)

# Fast polling on the test clusters (the manifest's `poll_interval` / `poll_max`).
FAST = {"poll_interval": "1s", "poll_max": "2s"}
SGE_LOCK = "/tmp/poolparty-sge-tests.lock"
SLURM_LOCK = "/tmp/poolparty-slurm-python-tests.lock"


@pytest.fixture
def work_dir(tmp_path):
    return str(tmp_path / "work")


def _flock(path, limit=900):
    f = open(path, "a")
    deadline = time.monotonic() + limit
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{path} stayed locked for {limit} s")
            time.sleep(0.5)


def _up(script, env=None):
    out = subprocess.run(["bash", os.path.join(CLUSTERS, script)], capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    if out.returncode != 0:
        pytest.fail(f"tests/clusters/{script} failed, the cluster is not usable:\n"
                    f"{out.stdout}{out.stderr}")


@pytest.fixture(scope="session")
def _slurm_up():
    # MaxArraySize 11 as for the Rust tests: arrays of more tasks are chunked by the runner.
    _up("slurm-up.sh", {"SLURM_MAX_ARRAY_SIZE": "11"})


@pytest.fixture(scope="session")
def _sge_up():
    _up("sge-up.sh")


@pytest.fixture
def slurm(_slurm_up):
    """Exclusive use of the Slurm cluster (the Rust test that runs pytest holds the Rust
    tests' Slurm lock; this file lock keeps two pytest runs apart)."""
    lock = _flock(SLURM_LOCK)
    yield
    lock.close()


@pytest.fixture
def sge(_sge_up):
    """Exclusive use of the Grid Engine cluster (the Rust Grid Engine tests' file lock)."""
    lock = _flock(SGE_LOCK)
    yield
    lock.close()
