#!/usr/bin/env bash
# Many chunks and few status calls on the test Slurm cluster (issue #14, items 4 and 5):
# N no-op jobs (default 10,000) with MaxArraySize 1001 become ceil(N / 1001) arrays.
#   floor      the same arrays submitted at once (one `sbatch --array` each) and a tight
#              `squeue` loop until all of them left the queue
#   poolparty  `poolparty run` of N `true` jobs (default settings: poll_interval 2s,
#              status_interval 30s)
# Scheduler calls are counted by logging wrappers first on PATH: the target is one `sbatch`
# per array, one `scontrol` per run, and at most one `squeue` per 20 s of run plus a few.
# It (re)starts the cluster with MaxArraySize 1001 and puts the previous value back at the
# end (the tests use 11).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
n=${N:-10000}
rounds=${ROUNDS:-1}
max=1001
before=$(scontrol show config 2>/dev/null | awk '$1 == "MaxArraySize" {print $3}' || true)
SLURM_MAX_ARRAY_SIZE=$max bash "$root/tests/clusters/slurm-up.sh" >/dev/null
cargo build --release --manifest-path "$root/Cargo.toml" -q
pp="$root/target/release/poolparty"
work=$(mktemp -d)
restore() {
  rm -rf "$work"
  if [ -n "$before" ] && [ "$before" != "$max" ]; then
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
  [ "$(size_now)" = "$max" ] || SLURM_MAX_ARRAY_SIZE=$max bash "$root/tests/clusters/slurm-up.sh" >/dev/null
}
floor() {
  printf '#!/bin/sh\ntrue\n' > "$work/noop.sh"
  local t0 ids="" left=$n k
  t0=$(now)
  while [ "$left" -gt 0 ]; do
    k=$((left < max ? left : max))
    ids="$ids${ids:+,}$(sbatch --parsable --array=0-$((k - 1)) -o /dev/null -e /dev/null "$work/noop.sh")"
    left=$((left - k))
  done
  while [ -n "$(squeue -h -j "$ids" 2>/dev/null)" ]; do :; done
  echo "$(now) - $t0" | bc
}
pprun() {
  local d="$work/pp"
  rm -rf "$d"; mkdir -p "$d"
  seq 0 $((n - 1)) > "$d/jobs.jsonl"
  printf '[workflow]\nname = "chunks"\n[defaults]\nbackend = "slurm"\n[stages.a]\njobs_file = "jobs.jsonl"\nrun = ["true"]\nresult = "none"\n' > "$d/poolparty.toml"
  : > "$work/calls"
  local t0
  t0=$(now)
  PATH="$work/bin:$PATH" PP_CALLS="$work/calls" "$pp" run -q "$d" >/dev/null
  echo "$(now) - $t0" | bc
}
echo "N=$n no-op jobs, MaxArraySize $max: $(( (n + max - 1) / max )) arrays; $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| round | floor (s) | poolparty (s) | sbatch | squeue | scontrol | squeue per 20 s |"
echo "|---|---|---|---|---|---|---|"
for r in $(seq 1 "$rounds"); do
  ensure; f=$(floor); [ "$(size_now)" = "$max" ] || f="$f (reconfigured)"
  ensure; p=$(pprun); secs=$p; [ "$(size_now)" = "$max" ] || p="$p (reconfigured)"
  c() { grep -c "^$1\$" "$work/calls" || true; }
  sq=$(c squeue)
  echo "| $r | $f | $p | $(c sbatch) | $sq | $(c scontrol) | $(echo "scale=2; $sq * 20 / $secs" | bc) |"
done
