#!/usr/bin/env bash
# A million jobs: `poolparty validate`, `plan`, a resumed `run` that finds every job done,
# `status` and `results` on a 1,000,000-line JSON Lines jobs file (~107 MB), each beside a
# plain baseline measured in the same run: Python reading the same file line by line and
# `json.loads`-ing every line. poolparty also renders and fingerprints every job, so the
# ratio to that baseline is the figure to watch on a noisy machine.
#
# The ledger for the resumed run is written once, before timing, by a Python script that
# records every job as succeeded with the fingerprint `poolparty plan --json` printed for it
# (running a million real processes would take minutes and is bench/local.sh's business).
#
# Prints a markdown table of wall seconds (min and median of ROUNDS) and max RSS (GNU time).
#
# Usage: bench/million.sh            (JOBS=1000000 ROUNDS=3 by default)
set -euo pipefail

JOBS=${JOBS:-1000000}
ROUNDS=${ROUNDS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

if [ ! -x /usr/bin/time ]; then
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 time >/dev/null 2>&1 ||
        { apt-get update -qq -o DPkg::Lock::Timeout=600 >/dev/null 2>&1 &&
            apt-get install -y -qq -o DPkg::Lock::Timeout=600 time >/dev/null 2>&1; }
fi

(cd "$ROOT" && cargo build --release --quiet)
BIN=$ROOT/target/release/poolparty

WORK=$(mktemp -d "${TMPDIR:-/tmp}/poolparty-bench-million.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

python3 - "$WORK/jobs.jsonl" "$JOBS" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write(json.dumps({"i": i, "name": "item-%07d-" % i + "x" * 68}) + "\n")
PY
cat >"$WORK/loads.py" <<'PY'
import json, sys
n = 0
with open(sys.argv[1]) as f:
    for line in f:
        json.loads(line)
        n += 1
print(n)
PY
cat >"$WORK/poolparty.toml" <<'TOML'
[workflow]
name = "million"
[stages.m]
jobs_file = "jobs.jsonl"
run = ["true", "{{job.i}}", "{{job.name}}"]
TOML

# A ledger in which every job succeeded with its current fingerprint, as a finished run
# leaves it (format: DESIGN.md "Formats").
"$BIN" --json plan "$WORK/poolparty.toml" >"$WORK/plan.json"
python3 - "$WORK" <<'PY'
import json, os, sys
work = sys.argv[1]
plan = json.load(open(os.path.join(work, "plan.json")))
stage = os.path.join(work, ".poolparty", "million", "m")
os.makedirs(stage, exist_ok=True)
with open(os.path.join(stage, "ledger.jsonl"), "w") as f:
    for j in plan["stages"][0]["jobs"]:
        f.write(json.dumps({"index": j["index"], "id": j["id"], "attempt": 1,
                            "outcome": {"kind": "succeeded"}, "start": 0.0, "end": 0.0,
                            "run": "bench", "fp": j["fingerprint"],
                            "result": {"json": {"i": j["index"]}}}, separators=(",", ":")) + "\n")
PY
rm -f "$WORK/plan.json"
# One resumed run writes what a real run leaves besides the ledger (jobs.jsonl, results).
"$BIN" -q run "$WORK/poolparty.toml" >/dev/null
# The same workflow with nothing recorded (its own folder, so its own state): `plan` there
# expands, renders and fingerprints every job without reading a ledger.
mkdir "$WORK/fresh"
cp "$WORK/poolparty.toml" "$WORK/fresh/"
ln -s "$WORK/jobs.jsonl" "$WORK/fresh/jobs.jsonl"

# time_rss NAME CMD: appends "wall_seconds max_rss_kb" of one run to $WORK/t.NAME
time_rss() {
    /usr/bin/time -v -o "$WORK/tv" bash -c "$2" >/dev/null 2>"$WORK/err" ||
        { cat "$WORK/err" "$WORK/tv" >&2; exit 1; }
    awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,p,":"); s=0; for(i=1;i<=n;i++) s=s*60+p[i]; w=s}
                /Maximum resident set size/ {r=$2}
                END {print w, r}' "$WORK/tv" >>"$WORK/t.$1"
}

NAMES=("python3 json.loads per line (baseline)" "validate" "plan (nothing recorded)" "plan"
    "run (resumed, all done)" "status" "results")
CMDS=(
    "python3 $WORK/loads.py $WORK/jobs.jsonl"
    "$BIN validate $WORK/poolparty.toml"
    "$BIN plan $WORK/fresh/poolparty.toml"
    "$BIN plan $WORK/poolparty.toml"
    "$BIN -q run $WORK/poolparty.toml"
    "$BIN status $WORK/poolparty.toml"
    "$BIN results $WORK/poolparty.toml"
)

size=$(du -k "$WORK/jobs.jsonl" | cut -f1)
load0=$(cut -d' ' -f1-3 /proc/loadavg)
for _ in $(seq "$ROUNDS"); do
    for i in "${!CMDS[@]}"; do time_rss "$i" "${CMDS[$i]}"; done
done
echo "### $JOBS jobs (jobs file $((size / 1024)) MiB), $ROUNDS interleaved rounds"
echo
echo "Load average before: $load0; after: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "| command | min s | median s | × baseline (median) | max RSS MiB | RSS bytes/job |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
for i in "${!CMDS[@]}"; do
    python3 - "$WORK/t.$i" "$WORK/t.0" "${NAMES[$i]}" "$JOBS" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
base = statistics.median(float(l.split()[0]) for l in open(sys.argv[2]))
wall = [float(r[0]) for r in rows]
rss = max(int(r[1]) for r in rows)
med = statistics.median(wall)
print("| %s | %.2f | %.2f | %.2f | %d | %d |" % (sys.argv[3], min(wall), med, med / base,
      rss // 1024, rss * 1024 // int(sys.argv[4])))
PY
done
echo
echo "Commands (\$WORK is a temporary folder):"
echo
for i in "${!CMDS[@]}"; do echo "- \`${CMDS[$i]//$WORK/\$WORK}\`"; done
