#!/bin/bash
# How long after the last job of stage `a` ends does the first job of stage `b` (which needs
# `a`) start? Prints the gap of each round in milliseconds (local backend).
#
#   bench/transition.sh [ROUNDS]     (uses target/release/poolparty, else target/debug)
set -euo pipefail
rounds=${1:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
exe=$root/target/release/poolparty
[ -x "$exe" ] || exe=$root/target/debug/poolparty
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/poolparty.toml" <<'TOML'
[workflow]
name = "transition"

[stages.a]
jobs = [1, 2]
run = "sleep 0.2; date +%s%N >> {{workflow.dir}}/a.end"

[stages.b]
needs = ["a"]
jobs = [1]
run = "date +%s%N >> {{workflow.dir}}/b.start"
TOML
echo "poolparty: $exe; load: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$rounds"); do
  rm -rf "$work/.poolparty" "$work"/*.end "$work"/*.start
  (cd "$work" && "$exe" -q run >/dev/null)
  a_end=$(sort -n "$work/a.end" | tail -1)
  b_start=$(head -1 "$work/b.start")
  echo "round $r: $(( (b_start - a_end) / 1000000 )) ms from a's last job end to b's first job start"
done
