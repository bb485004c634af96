#!/usr/bin/env bash
# Expanding and planning 100,000 jobs: `poolparty validate`, `plan` and `plan --json` on a
# manifest whose jobs_file holds 100k JSON objects with a few fields and a run template that
# uses them. Prints a markdown table of wall seconds (min and median of ROUNDS) and max RSS,
# measured with GNU time (`/usr/bin/time -v`).
#
# Usage: bench/plan.sh            (JOBS=100000 ROUNDS=3 by default)
set -euo pipefail

JOBS=${JOBS:-100000}
ROUNDS=${ROUNDS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)

if [ ! -x /usr/bin/time ]; then
    apt-get install -y -qq -o DPkg::Lock::Timeout=600 time >/dev/null 2>&1 ||
        { apt-get update -qq -o DPkg::Lock::Timeout=600 >/dev/null 2>&1 &&
            apt-get install -y -qq -o DPkg::Lock::Timeout=600 time >/dev/null 2>&1; }
fi

(cd "$ROOT" && cargo build --release --quiet)
BIN=$ROOT/target/release/poolparty

WORK=$(mktemp -d "${TMPDIR:-/tmp}/poolparty-bench-plan.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

python3 - "$WORK/jobs.jsonl" "$JOBS" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write(json.dumps({"sample": "s%06d" % i, "seed": i * 7919 % 100003,
                            "params": {"alpha": i / 1000, "tag": "run it's %d" % (i % 10)}}) + "\n")
PY
cat >"$WORK/poolparty.toml" <<'TOML'
[workflow]
name = "plan"
[stages.fit]
jobs_file = "jobs.jsonl"
run = "fit --sample {{job.sample}} --seed {{job.seed}} --alpha {{job.params.alpha}} --tag {{job.params.tag}} --out {{stage.dir}}/out/{{job.sample}}.json"
TOML

# time_rss CMD: appends "wall_seconds max_rss_kb" of one run to $WORK/t
time_rss() {
    /usr/bin/time -v -o "$WORK/tv" bash -c "$1" >/dev/null 2>"$WORK/err" ||
        { cat "$WORK/err" "$WORK/tv" >&2; exit 1; }
    awk -F': ' '/Elapsed \(wall clock\)/ {n=split($2,p,":"); s=0; for(i=1;i<=n;i++) s=s*60+p[i]; w=s}
                /Maximum resident set size/ {r=$2}
                END {print w, r}' "$WORK/tv" >>"$WORK/t"
}

NAMES=("validate" "plan" "plan --json")
CMDS=(
    "$BIN validate $WORK/poolparty.toml"
    "$BIN plan $WORK/poolparty.toml"
    "$BIN --json plan $WORK/poolparty.toml"
)

size=$(du -k "$WORK/jobs.jsonl" | cut -f1)
echo "### Expanding and planning $JOBS jobs (jobs file $((size / 1024)) MiB), $ROUNDS rounds"
echo
echo "Load average at start: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "| command | min s | median s | max RSS MiB |"
echo "| --- | ---: | ---: | ---: |"
for i in "${!CMDS[@]}"; do
    rm -f "$WORK/t"
    for _ in $(seq "$ROUNDS"); do time_rss "${CMDS[$i]}"; done
    python3 - "$WORK/t" "${NAMES[$i]}" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
wall = [float(r[0]) for r in rows]
rss = max(int(r[1]) for r in rows)
print("| `poolparty %s` | %.2f | %.2f | %.0f |" % (sys.argv[2], min(wall), statistics.median(wall), rss / 1024))
PY
done
echo
echo "Run template: \`$(sed -n 's/^run = //p' "$WORK/poolparty.toml")\`"
echo
echo "A job: \`$(head -1 "$WORK/jobs.jsonl")\`"
echo
"$BIN" validate "$WORK/poolparty.toml" | sed "s|$WORK|\$WORK|; s/^/Output of validate: /"
