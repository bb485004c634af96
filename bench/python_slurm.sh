#!/usr/bin/env bash
# Python `Pool.map` on the Slurm test cluster: `poolparty.Pool(backend="slurm").map(abs,
# range(300))` against `pypoolparty.slurm.array.Pool().map(abs, range(300))` (pypoolparty
# 0.3.1 from PyPI), both with their defaults (poolparty: one job per item, packed into array
# tasks by `bundle = "auto"`; pypoolparty: one array task per item), ROUNDS interleaved rounds,
# each a new map (nothing recorded). Scheduler calls are counted through logging wrappers
# placed first on PATH.
# Needs MaxArraySize >= 300 (pypoolparty submits one array of 300): it (re)starts the cluster
# with the default 1001, so do not run it while the Slurm tests (MaxArraySize 11) run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rounds=${ROUNDS:-2}
n=${N:-300}
bash "$root/tests/clusters/slurm-up.sh" >/dev/null
venv="$root/target/bench-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
export PATH="$venv/bin:$PATH"
python -m pip install -q --disable-pip-version-check "maturin>=1.5,<2" "cloudpickle>=2.2" "pypoolparty==0.3.1"
(cd "$root" && python -m pip install -q --disable-pip-version-check --no-build-isolation --force-reinstall --no-deps .)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin"
for c in sbatch squeue scancel scontrol sacct; do
  printf '#!/bin/sh\necho %s >> "$PP_CALLS"\nexec /usr/bin/%s "$@"\n' "$c" "$c" > "$work/bin/$c"
  chmod +x "$work/bin/$c"
done
export PATH="$work/bin:$PATH" PP_CALLS="$work/calls"
cd "$work"
python - "$rounds" "$n" <<'PY'
import collections, os, shutil, sys, time
import poolparty
import pypoolparty

rounds, n = int(sys.argv[1]), int(sys.argv[2])
calls_file = os.environ["PP_CALLS"]


def counted(run):
    open(calls_file, "w").close()
    t0 = time.perf_counter()
    out = run()
    seconds = time.perf_counter() - t0
    with open(calls_file) as f:
        calls = collections.Counter(line.strip() for line in f)
    return out, seconds, ", ".join(f"{v} {k}" for k, v in sorted(calls.items()))


print(f"map(abs, range({n})) on the Slurm test cluster")
print("| round | poolparty s | calls | pypoolparty 0.3.1 s | calls |")
print("|---|---:|---|---:|---|")
for r in range(1, rounds + 1):
    shutil.rmtree("pp", ignore_errors=True)
    shutil.rmtree("pyp", ignore_errors=True)
    a, ta, ca = counted(lambda: poolparty.Pool(backend="slurm", work_dir="pp").map(abs, range(-r, n - r)))
    b, tb, cb = counted(lambda: pypoolparty.slurm.array.Pool(work_dir=os.path.abspath("pyp")).map(abs, range(-r, n - r)))
    assert a == [abs(x) for x in range(-r, n - r)], "poolparty"
    assert b == a, "pypoolparty"
    print(f"| {r} | {ta:.1f} | {ca} | {tb:.1f} | {cb} |")
PY
