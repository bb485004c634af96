#!/usr/bin/env bash
# Python `Pool.map` on this machine: 10,000 trivial items (`abs`) on 2 workers, poolparty's
# `Pool(2).map` (default chunksize: 1,250 items per job, so 8 jobs) against
# `multiprocessing.Pool(2).map`, ROUNDS interleaved rounds, wall-clock seconds per round.
# Installs the package (release build) into target/bench-venv (or $VENV).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rounds=${ROUNDS:-3}
n=${N:-10000}
venv=${VENV:-$root/target/bench-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
export PATH="$venv/bin:$PATH"
python -m pip install -q --disable-pip-version-check "maturin>=1.5,<2" "cloudpickle>=2.2"
(cd "$root" && python -m pip install -q --disable-pip-version-check --no-build-isolation --force-reinstall --no-deps .)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
python - "$rounds" "$n" <<'PY'
import multiprocessing, shutil, sys, time
import poolparty

rounds, n = int(sys.argv[1]), int(sys.argv[2])
print(f"{n} items of abs on 2 workers")
print("| round | poolparty Pool(2).map s | multiprocessing.Pool(2).map s | ratio |")
print("|---|---:|---:|---:|")
for r in range(1, rounds + 1):
    shutil.rmtree("w", ignore_errors=True)
    t0 = time.perf_counter()
    with poolparty.Pool(2, work_dir="w") as pool:
        a = pool.map(abs, range(-r, n - r))
    t1 = time.perf_counter()
    with multiprocessing.Pool(2) as pool:
        b = pool.map(abs, range(-r, n - r))
    t2 = time.perf_counter()
    assert a == b
    print(f"| {r} | {t1 - t0:.3f} | {t2 - t1:.3f} | {(t1 - t0) / (t2 - t1):.1f} |")
PY
