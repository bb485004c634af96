#!/usr/bin/env bash
# Slurm end-to-end benchmark on the test cluster: 300 no-op jobs.
#   floor      one `sbatch --array=0-299` of a no-op script and a tight `squeue` loop
#   poolparty  `poolparty run` of 300 `true` jobs (default polling: 2 s, x1.5 backoff)
#   bundled    the same with `bundle = 30` (10 array tasks of 30 jobs each)
# Counts scheduler calls through logging wrappers placed first on PATH.
# Needs MaxArraySize >= 300: it (re)starts the cluster with the default 1001.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
n=${N:-300}
rounds=${ROUNDS:-3}
bash "$root/tests/clusters/slurm-up.sh" >/dev/null
cargo build --release --manifest-path "$root/Cargo.toml" -q
pp="$root/target/release/poolparty"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Wrappers that log each scheduler call.
mkdir -p "$work/bin"
for c in sbatch squeue scancel scontrol; do
  printf '#!/bin/sh\necho %s >> "$PP_CALLS"\nexec /usr/bin/%s "$@"\n' "$c" "$c" > "$work/bin/$c"
  chmod +x "$work/bin/$c"
done

now() { date +%s.%N; }
floor() {
  printf '#!/bin/sh\ntrue\n' > "$work/noop.sh"
  local t0 id
  t0=$(now)
  id=$(sbatch --parsable --array=0-$((n - 1)) -o /dev/null -e /dev/null "$work/noop.sh")
  while [ -n "$(squeue -h -j "$id" 2>/dev/null)" ]; do :; done
  echo "$(now) - $t0" | bc
}
pprun() { # bundle
  local d="$work/pp$1"
  rm -rf "$d"; mkdir -p "$d"
  printf '[workflow]\nname = "bench"\n[defaults]\nbackend = "slurm"\nbundle = %s\n[stages.a]\nmatrix = { i = [%s] }\nrun = ["true"]\nresult = "none"\n' \
    "$1" "$(seq -s, 0 $((n - 1)))" > "$d/poolparty.toml"
  : > "$work/calls"
  local t0
  t0=$(now)
  PATH="$work/bin:$PATH" PP_CALLS="$work/calls" "$pp" run -q "$d" >/dev/null
  echo "$(now) - $t0" | bc
}
echo "| round | floor (s) | poolparty (s) | calls | poolparty bundle=30 (s) | calls |"
echo "|---|---|---|---|---|---|"
for r in $(seq 1 "$rounds"); do
  f=$(floor)
  p=$(pprun 1); pc=$(sort "$work/calls" | uniq -c | awk '{printf "%s %s, ", $1, $2}')
  b=$(pprun 30); bc_=$(sort "$work/calls" | uniq -c | awk '{printf "%s %s, ", $1, $2}')
  echo "| $r | $f | $p | ${pc%, } | $b | ${bc_%, } |"
done
