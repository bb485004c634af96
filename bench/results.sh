#!/usr/bin/env bash
# Reading back a stage of 100,000 recorded jobs: wall seconds and max RSS of `poolparty
# results` (json, jsonl, csv, jsonl --with-job) and `poolparty status`, with GNU time.
#
# The state is made once by running 100k tiny jobs (2 workers, each writes a small JSON
# result; a few minutes) in $STATE (default /tmp/poolparty-bench-results-100k) and reused on
# later runs: `poolparty run` there resumes, so a complete state costs only a re-check.
#
# Usage: bench/results.sh          (JOBS=100000 ROUNDS=3 STATE=... by default)
set -euo pipefail

JOBS=${JOBS:-100000}
ROUNDS=${ROUNDS:-3}
STATE=${STATE:-${TMPDIR:-/tmp}/poolparty-bench-results-$((JOBS / 1000))k}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

if [ ! -x /usr/bin/time ]; then
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 time >/dev/null 2>&1 ||
        { apt-get update -qq -o DPkg::Lock::Timeout=600 >/dev/null 2>&1 &&
            apt-get install -y -qq -o DPkg::Lock::Timeout=600 time >/dev/null 2>&1; }
fi

(cd "$ROOT" && cargo build --release --quiet)
BIN=$ROOT/target/release/poolparty

WORK=$(mktemp -d "${TMPDIR:-/tmp}/poolparty-bench-results.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

mkdir -p "$STATE"
if [ ! -f "$STATE/jobs.jsonl" ] || [ "$(wc -l <"$STATE/jobs.jsonl")" -ne "$JOBS" ]; then
    rm -rf "$STATE/.poolparty"
    python3 - "$STATE/jobs.jsonl" "$JOBS" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write(json.dumps({"i": i, "name": "item-%06d" % i}) + "\n")
PY
fi
cat >"$STATE/poolparty.toml" <<'TOML'
[workflow]
name = "results"
[stages.square]
jobs_file = "jobs.jsonl"
run = ["sh", "-c", "printf '{\"i\":%d,\"square\":%d,\"name\":\"%s\"}' \"$1\" \"$(($1 * $1))\" \"$2\" > \"$POOLPARTY_RESULT\"", "sh", "{{job.i}}", "{{job.name}}"]
max_parallel = 2
TOML

# time_rss CMD: appends "wall_seconds max_rss_kb" of one run to $WORK/t
time_rss() {
    /usr/bin/time -v -o "$WORK/tv" bash -c "$1" >"$WORK/out" 2>"$WORK/err" ||
        { cat "$WORK/err" "$WORK/tv" >&2; exit 1; }
    awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,p,":"); s=0; for(i=1;i<=n;i++) s=s*60+p[i]; w=s}
                /Maximum resident set size/ {r=$2}
                END {print w, r}' "$WORK/tv" >>"$WORK/t"
}

if [ -f "$STATE/.poolparty/results/square/ledger.jsonl" ]; then how="resumed over the reused state"; else how="ran every job to build the state"; fi
rm -f "$WORK/t"
time_rss "$BIN -q run $STATE/poolparty.toml"
read -r run_wall run_rss <"$WORK/t"

echo "### Reading back $JOBS recorded jobs, $ROUNDS rounds"
echo
echo "Load average at start: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "State: \`$STATE\` (ledger $(du -k "$STATE/.poolparty/results/square/ledger.jsonl" | cut -f1) KiB, results.jsonl $(du -k "$STATE/.poolparty/results/square/results.jsonl" 2>/dev/null | cut -f1 || echo ?) KiB). \`poolparty run\` $how: $run_wall s, max RSS $((run_rss / 1024)) MiB; it said: \"$(grep -v '^$' "$WORK/err" | tail -1)\"."
echo
echo "| command | min s | median s | max RSS MiB | output MiB |"
echo "| --- | ---: | ---: | ---: | ---: |"
NAMES=("results" "results --format jsonl" "results --format csv" "results --format jsonl --with-job" "status")
CMDS=(
    "$BIN results $STATE/poolparty.toml"
    "$BIN results --format jsonl $STATE/poolparty.toml"
    "$BIN results --format csv $STATE/poolparty.toml"
    "$BIN results --format jsonl --with-job $STATE/poolparty.toml"
    "$BIN status $STATE/poolparty.toml"
)
for i in "${!CMDS[@]}"; do
    rm -f "$WORK/t"
    for _ in $(seq "$ROUNDS"); do time_rss "${CMDS[$i]}"; done
    out=$(stat -c %s "$WORK/out")
    python3 - "$WORK/t" "${NAMES[$i]}" "$out" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
wall = [float(r[0]) for r in rows]
rss = max(int(r[1]) for r in rows)
print("| `poolparty %s` | %.2f | %.2f | %.0f | %.1f |" % (sys.argv[2], min(wall), statistics.median(wall), rss / 1024, int(sys.argv[3]) / 2**20))
PY
done
echo
echo "A result: \`$("$BIN" results --format jsonl "$STATE/poolparty.toml" | head -1)\`"
