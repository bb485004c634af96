#!/usr/bin/env bash
# Automatic bundling on the test Slurm cluster (issue #14): 300 no-op jobs.
#   floor       one `sbatch --array=0-299` of a no-op script and a tight `squeue` loop
#   poolparty   `poolparty run` of 300 `true` jobs, one per array task (bundle = 1)
#   auto        the same with `bundle = "auto"` and nothing recorded: a first wave of 5 jobs
#               is measured, then the other 295 are packed into 10 tasks
#   auto, known `run --force` of the same workflow: packed at once by the recorded durations
# Each poolparty column is followed by its scheduler calls, counted by logging wrappers first
# on PATH. Needs MaxArraySize >= N for the floor: it (re)starts the cluster with 1001 and puts
# the previous MaxArraySize back at the end (the tests use 11).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
n=${N:-300}
rounds=${ROUNDS:-3}
poll=${POLL:-1s}
before=$(scontrol show config 2>/dev/null | awk '$1 == "MaxArraySize" {print $3}' || true)
SLURM_MAX_ARRAY_SIZE=1001 bash "$root/tests/clusters/slurm-up.sh" >/dev/null
cargo build --release --manifest-path "$root/Cargo.toml" -q
pp="$root/target/release/poolparty"
work=$(mktemp -d)
restore() {
  rm -rf "$work"
  if [ -n "$before" ] && [ "$before" != 1001 ]; then
    SLURM_MAX_ARRAY_SIZE=$before bash "$root/tests/clusters/slurm-up.sh" >/dev/null
  fi
}
trap restore EXIT

mkdir -p "$work/bin"
for c in sbatch squeue scancel scontrol; do
  printf '#!/bin/sh\necho %s >> "$PP_CALLS"\nexec /usr/bin/%s "$@"\n' "$c" "$c" > "$work/bin/$c"
  chmod +x "$work/bin/$c"
done

now() { date +%s.%N; }

# The cluster is shared: test runs (re)start it with MaxArraySize 11. Each measurement starts
# with MaxArraySize MAX back in place, and a row measured while it changed is marked.
size_now() { scontrol show config 2>/dev/null | awk '$1 == "MaxArraySize" {print $3}'; }
ensure() {
  [ "$(size_now)" = "1001" ] || SLURM_MAX_ARRAY_SIZE=1001 bash "$root/tests/clusters/slurm-up.sh" >/dev/null
}
floor() {
  printf '#!/bin/sh\ntrue\n' > "$work/noop.sh"
  local t0 id
  t0=$(now)
  id=$(sbatch --parsable --array=0-$((n - 1)) -o /dev/null -e /dev/null "$work/noop.sh")
  while [ -n "$(squeue -h -j "$id" 2>/dev/null)" ]; do :; done
  echo "$(now) - $t0" | bc
}
calls() { sort "$work/calls" | uniq -c | awk '{printf "%s %s, ", $1, $2}' | sed 's/, $//'; }
# pprun DIR BUNDLE [ARGS...]: times one run.
pprun() {
  local d="$work/$1" b=$2
  shift 2
  if [ ! -f "$d/poolparty.toml" ]; then
    mkdir -p "$d"
    printf '[workflow]\nname = "bench"\n[defaults]\nbackend = "slurm"\npoll_interval = "%s"\nbundle = %s\n[stages.a]\nmatrix = { i = [%s] }\nrun = ["true"]\nresult = "none"\n' \
      "$poll" "$b" "$(seq -s, 0 $((n - 1)))" > "$d/poolparty.toml"
  fi
  : > "$work/calls"
  local t0
  t0=$(now)
  PATH="$work/bin:$PATH" PP_CALLS="$work/calls" "$pp" run -q "$d" "$@" >/dev/null
  echo "$(now) - $t0" | bc
}
echo "N=$n no-op jobs, poll_interval $poll, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| round | floor (s) | poolparty (s) | calls | auto (s) | calls | auto, known (s) | calls |"
echo "|---|---|---|---|---|---|---|---|"
for r in $(seq 1 "$rounds"); do
  rm -rf "$work/one" "$work/auto"
  ensure; f=$(floor); [ "$(size_now)" = 1001 ] || f="$f (reconfigured)"
  ensure; p=$(pprun one 1); pc=$(calls); [ "$(size_now)" = 1001 ] || p="$p (reconfigured)"
  ensure; a=$(pprun auto '"auto"'); ac=$(calls)
  ensure; k=$(pprun auto '"auto"' --force); kc=$(calls)
  echo "| $r | $f | $p | $pc | $a | $ac | $k | $kc |"
done
