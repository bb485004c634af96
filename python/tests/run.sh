#!/usr/bin/env bash
# Runs the Python package's tests (python/tests) the way a user installs it: a venv under
# target/, its test tools from PyPI, then a real `pip install` of the repository (maturin
# builds the `poolparty` binary; the dev profile here, so it reuses `cargo test`'s build),
# then pytest. Called by tests/python.rs (so `cargo test` runs it); extra arguments go to
# pytest, e.g. `bash python/tests/run.sh -k tutorial`.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${POOLPARTY_TEST_VENV:-$PWD/target/python-venv}
PYTHON=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
export PATH="$VENV/bin:$PATH"
python -m pip install -q --disable-pip-version-check "maturin>=1.5,<2" pytest numpy "cloudpickle>=2.2"
MATURIN_PEP517_ARGS="--profile dev" \
    python -m pip install -q --disable-pip-version-check --no-build-isolation --force-reinstall --no-deps .
exec python -m pytest -q -p no:cacheprovider python/tests "$@"
