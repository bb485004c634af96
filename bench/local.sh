#!/usr/bin/env bash
# Local backend throughput: the same 2,000 no-op jobs with 2 workers through a Rust spawn floor
# (Command("true") on 2 threads, nothing recorded), the same floor running `/bin/sh -c true`
# (what a shell `run` costs before poolparty does anything), poolparty (shell and argv `run`),
# xargs -P2, GNU parallel -j2 and Python multiprocessing.Pool(2). The minimum, the median and
# the CPU time are each also shown as × the floor's.
#
# Rounds are interleaved (round 1 of every tool, then round 2, ...) so that load from other
# processes on a shared machine drifts over all tools alike; one warm-up round is not counted.
# Each measurement is one hyperfine run (or `date +%s.%N` around the command when hyperfine
# is missing). Prints a markdown table: min and median wall seconds, and median CPU seconds
# (user + system, children included; hyperfine only). On a shared machine the minimum is the
# run least disturbed by other load, and CPU time depends little on it: compare all three.
#
# Usage: bench/local.sh            (JOBS=2000 ROUNDS=3 WORKERS=2 by default)
#        BASELINE=/path/to/older/poolparty bench/local.sh
#                                  (also times that binary's shell and argv runs, in the same rounds)
set -euo pipefail

JOBS=${JOBS:-2000}
ROUNDS=${ROUNDS:-3}
WORKERS=${WORKERS:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

need() { # need COMMAND PACKAGE: install a Debian package when its command is missing
    command -v "$1" >/dev/null 2>&1 && return 0
    echo "installing $2 ..." >&2
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 "$2" >/dev/null 2>&1 ||
        { apt-get update -qq -o DPkg::Lock::Timeout=600 >/dev/null 2>&1 &&
            apt-get install -y -qq -o DPkg::Lock::Timeout=600 "$2" >/dev/null 2>&1; } ||
        echo "could not install $2" >&2
}
need parallel parallel
need hyperfine hyperfine

(cd "$ROOT" && cargo build --release --quiet)
BIN=$ROOT/target/release/poolparty

WORK=$(mktemp -d "${TMPDIR:-/tmp}/poolparty-bench-local.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

seq 0 $((JOBS - 1)) | sed 's/.*/{"i":&}/' >"$WORK/jobs.jsonl"
for form in shell argv; do
    mkdir -p "$WORK/$form"
    cp "$WORK/jobs.jsonl" "$WORK/$form/"
    if [ "$form" = shell ]; then run='run = "true"'; else run='run = ["true"]'; fi
    cat >"$WORK/$form/poolparty.toml" <<TOML
[workflow]
name = "bench"
[stages.noop]
jobs_file = "jobs.jsonl"
$run
max_parallel = $WORKERS
TOML
done
# The spawn floor (/work/shared/clusters.md): Rust `Command::new("true")` on WORKERS threads,
# output to /dev/null, nothing recorded.
# floor NAME COMMAND: the spawn floor (/work/shared/clusters.md), Rust `COMMAND` on WORKERS
# threads, output to /dev/null, nothing recorded.
floor() {
    cat >"$WORK/$1.rs" <<RS
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
fn main() {
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..$WORKERS {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < $JOBS {
                    let st = $2
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .expect("spawns");
                    assert!(st.success());
                }
            });
        }
    });
}
RS
    rustc -O -o "$WORK/$1" "$WORK/$1.rs"
}
floor floor 'Command::new("true")'
floor floor-sh 'Command::new("/bin/sh").arg("-c").arg("true")'
cat >"$WORK/pool.py" <<PY
import multiprocessing, subprocess, sys

def job(_):
    return subprocess.run(["true"]).returncode

if __name__ == "__main__":
    with multiprocessing.Pool($WORKERS) as pool:
        codes = pool.map(job, range($JOBS))
    sys.exit(max(codes))
PY

NAMES=(
    "Rust spawn floor: Command(\"true\") on $WORKERS threads, nothing recorded"
    "Rust spawn floor, shell: Command(\"/bin/sh\").args([\"-c\", \"true\"])"
    "poolparty, run = \"true\" (/bin/sh -c true)"
    "poolparty, run = [\"true\"] (argv)"
    "xargs -P$WORKERS -n1 sh -c true"
    "xargs -P$WORKERS -n1 true (no shell)"
    "GNU parallel -j$WORKERS"
    "Python multiprocessing.Pool($WORKERS) + subprocess.run"
)
CMDS=(
    "$WORK/floor"
    "$WORK/floor-sh"
    "$BIN -q run $WORK/shell/poolparty.toml"
    "$BIN -q run $WORK/argv/poolparty.toml"
    "seq $JOBS | xargs -P$WORKERS -n1 sh -c true"
    "seq $JOBS | xargs -P$WORKERS -n1 true"
    "seq $JOBS | parallel --will-cite -j$WORKERS true"
    "python3 $WORK/pool.py"
)
# run before each round, not timed: poolparty starts from fresh state
PREPS=(
    true
    true
    "rm -rf $WORK/shell/.poolparty"
    "rm -rf $WORK/argv/.poolparty"
    true true true true
)
if [ -n "${BASELINE:-}" ]; then
    for form in shell argv; do
        mkdir -p "$WORK/base-$form"
        cp "$WORK/$form/poolparty.toml" "$WORK/$form/jobs.jsonl" "$WORK/base-$form/"
    done
    NAMES+=("baseline poolparty, run = \"true\"" "baseline poolparty, run = [\"true\"]")
    CMDS+=("$BASELINE -q run $WORK/base-shell/poolparty.toml" "$BASELINE -q run $WORK/base-argv/poolparty.toml")
    PREPS+=("rm -rf $WORK/base-shell/.poolparty" "rm -rf $WORK/base-argv/.poolparty")
fi

# measure I: one timed run of command I; appends "wall cpu" to $WORK/t.I
measure() {
    local i=$1
    if command -v hyperfine >/dev/null 2>&1; then
        hyperfine --style none --runs 1 --prepare "${PREPS[$i]}" \
            --export-json "$WORK/h.json" "${CMDS[$i]}" >/dev/null 2>&1
        python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print("%.4f %.4f" % (r["times"][0], r["user"] + r["system"]))' \
            "$WORK/h.json" >>"$WORK/t.$i"
    else
        bash -c "${PREPS[$i]}"
        local t0 t1
        t0=$(date +%s.%N)
        bash -c "${CMDS[$i]}" >/dev/null 2>&1
        t1=$(date +%s.%N)
        echo "$(echo "$t1 - $t0" | bc) nan" >>"$WORK/t.$i"
    fi
}

load0=$(cut -d' ' -f1-3 /proc/loadavg)
for i in "${!CMDS[@]}"; do # warm-up, not counted
    measure "$i"
    rm -f "$WORK/t.$i"
done
for _ in $(seq "$ROUNDS"); do
    for i in "${!CMDS[@]}"; do measure "$i"; done
done
load1=$(cut -d' ' -f1-3 /proc/loadavg)

echo "### $JOBS no-op jobs, $WORKERS workers, $ROUNDS interleaved rounds ($(command -v hyperfine >/dev/null && echo hyperfine || echo date))"
echo
echo "Load average before: $load0; after: $load1."
echo
echo "| tool | min s | median s | × floor (min) | × floor (median) | jobs/s (median) | CPU s (median) | × floor (CPU) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for i in "${!CMDS[@]}"; do
    python3 - "$WORK/t.$i" "${NAMES[$i]}" "$JOBS" "$WORK/t.0" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
floor_rows = [l.split() for l in open(sys.argv[4])]
floor_wall = [float(r[0]) for r in floor_rows]
floor_cpu = statistics.median(float(r[1]) for r in floor_rows)
wall = [float(r[0]) for r in rows]
cpu = [float(r[1]) for r in rows]
med = statistics.median(wall)
c = statistics.median(cpu)
cpu_s = "n/a" if c != c else "%.2f" % c
cpu_x = "n/a" if c != c or floor_cpu != floor_cpu else "%.2f" % (c / floor_cpu)
print("| %s | %.3f | %.3f | %.2f | %.2f | %d | %s | %s |" % (sys.argv[2], min(wall), med, min(wall) / min(floor_wall), med / statistics.median(floor_wall), round(int(sys.argv[3]) / med), cpu_s, cpu_x))
PY
done
echo
echo "Commands (\$WORK is a temporary folder with the manifests and pool.py):"
echo
for i in "${!CMDS[@]}"; do echo "- \`${CMDS[$i]//$WORK/\$WORK}\`"; done
