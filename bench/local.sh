#!/usr/bin/env bash
# Local backend throughput: the same 2,000 no-op jobs with 2 workers through poolparty (shell
# and argv `run`), xargs -P2, GNU parallel -j2 and Python multiprocessing.Pool(2).
# Prints a markdown table of wall seconds (min and median of ROUNDS rounds, after one warm-up).
#
# Usage: bench/local.sh            (JOBS=2000 ROUNDS=3 WORKERS=2 by default)
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
cat >"$WORK/pool.py" <<PY
import multiprocessing, subprocess, sys

def job(_):
    return subprocess.run(["true"]).returncode

if __name__ == "__main__":
    with multiprocessing.Pool($WORKERS) as pool:
        codes = pool.map(job, range($JOBS))
    sys.exit(max(codes))
PY

# name | command | command run before each round (not timed)
BENCHES=(
    "poolparty, run = \"true\" (sh -c)|$BIN -q run $WORK/shell/poolparty.toml|rm -rf $WORK/shell/.poolparty"
    "poolparty, run = [\"true\"] (argv)|$BIN -q run $WORK/argv/poolparty.toml|rm -rf $WORK/argv/.poolparty"
    "xargs -P$WORKERS -n1 sh -c true|seq $JOBS | xargs -P$WORKERS -n1 sh -c true|true"
    "xargs -P$WORKERS -n1 true (no shell)|seq $JOBS | xargs -P$WORKERS -n1 true|true"
    "GNU parallel -j$WORKERS|seq $JOBS | parallel --will-cite -j$WORKERS true|true"
    "Python multiprocessing.Pool($WORKERS) + subprocess.run|python3 $WORK/pool.py|true"
)

# time_rounds PREPARE COMMAND: prints "min median" wall seconds of ROUNDS rounds after a warm-up.
time_rounds() {
    local prepare=$1 cmd=$2
    if command -v hyperfine >/dev/null 2>&1; then
        hyperfine --style none --warmup 1 --runs "$ROUNDS" --prepare "$prepare" \
            --export-json "$WORK/h.json" "$cmd" >/dev/null 2>&1
        python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; print("%.3f %.3f" % (r["min"], r["median"]))' "$WORK/h.json"
    else
        local times=() i t0 t1
        for i in $(seq 0 "$ROUNDS"); do
            bash -c "$prepare"
            t0=$(date +%s.%N)
            bash -c "$cmd" >/dev/null 2>&1
            t1=$(date +%s.%N)
            [ "$i" -gt 0 ] && times+=("$(echo "$t1 - $t0" | bc)")
        done
        printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f %.3f\n", a[1], m}'
    fi
}

echo "### $JOBS no-op jobs, $WORKERS workers, $ROUNDS rounds ($(command -v hyperfine >/dev/null && echo hyperfine || echo date))"
echo
echo "| tool | min s | median s | jobs/s (median) |"
echo "| --- | ---: | ---: | ---: |"
for b in "${BENCHES[@]}"; do
    IFS='|' read -r name cmd prepare <<<"$b"
    # the pipes inside a command are part of it: re-split on the first and last field only
    cmd=${b#*|}; cmd=${cmd%|*}
    read -r min med <<<"$(time_rounds "$prepare" "$cmd")"
    rate=$(python3 -c "print(round($JOBS / $med))")
    echo "| $name | $min | $med | $rate |"
done
echo
echo "Commands:"
echo
for b in "${BENCHES[@]}"; do cmd=${b#*|}; cmd=${cmd%|*}; echo "- \`${cmd//$WORK/\$WORK}\`"; done
