#!/usr/bin/env bash
# Runs the Python package's tests (python/tests) the way a user installs it: a venv under
# target/, its test tools from PyPI, then a real `pip install` of the repository (maturin
# builds the `poolparty` binary; the dev profile here, so it reuses `cargo test`'s build),
# then pytest. Called by tests/python.rs (so `cargo test` runs it); extra arguments go to
# pytest (default: all of python/tests), e.g. `bash python/tests/run.sh python/tests -k tutorial`;
# `--install-only` stops after the install.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${POOLPARTY_TEST_VENV:-$PWD/target/python-venv}
PYTHON=${PYTHON:-python3}

mkdir -p "$(dirname "$VENV")"
# Two runs at once (tests/python.rs starts the local and the cluster half in parallel) share
# the venv: one installs while the other waits. The wheel test takes the same lock around its
# maturin build (maturin stages the binary in target/maturin/).
export POOLPARTY_BUILD_LOCK="$VENV.lock"
# POOLPARTY_TEST_INSTALLED=1: the caller installed it already (tests/python.rs installs once,
# before its two pytest sessions start, so that neither reinstalls the binary under the other).
[ "${POOLPARTY_TEST_INSTALLED:-}" = 1 ] || (
    flock 9
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "maturin>=1.5,<2" pytest numpy "cloudpickle>=2.2"
    PATH="$VENV/bin:$PATH" MATURIN_PEP517_ARGS="--profile dev" \
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation --force-reinstall --no-deps .
) 9>"$POOLPARTY_BUILD_LOCK"
[ "${1:-}" != --install-only ] || exit 0
export PATH="$VENV/bin:$PATH"
mkdir -p target/pytest
[ "$#" -gt 0 ] || set -- python/tests
exec python -m pytest -q -rfE -p no:cacheprovider "$@"
