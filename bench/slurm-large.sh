#!/usr/bin/env bash
# Large values on the test Slurm cluster (issue #14, item 1): N jobs (default 1,000) whose
# values are SIZE bytes each (default 5,000), each job printing its value back as its result.
# Before task files, the array script embedded every job (5 MB here) and sbatch refused it
# (Slurm's default max_script_size is 4 MB). Prints the wall time, the array script's and the
# task file's sizes, and whether every result came back byte for byte.
# It (re)starts the cluster with MaxArraySize 1001 and puts the previous value back at the end.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
n=${N:-1000}
size=${SIZE:-5000}
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
# The cluster is shared: test runs (re)start it with MaxArraySize 11. Each measurement starts
# with MaxArraySize MAX back in place, and a row measured while it changed is marked.
size_now() { scontrol show config 2>/dev/null | awk '$1 == "MaxArraySize" {print $3}'; }
ensure() {
  [ "$(size_now)" = "1001" ] || SLURM_MAX_ARRAY_SIZE=1001 bash "$root/tests/clusters/slurm-up.sh" >/dev/null
}
python3 - "$work/jobs.jsonl" "$work/expected.json" "$n" "$size" <<'PY'
import json, sys
path, expected, n, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
piece = "'\"$(echo no)`echo no`\\ %s\n\t* ; | & é "
vals = []
with open(path, "w") as f:
    for i in range(n):
        v = f"{i}:" + piece * (size // len(piece) + 1)
        v = v[:size]
        vals.append(v)
        f.write(json.dumps({"id": f"j{i}", "v": v}) + "\n")
json.dump(vals, open(expected, "w"))
PY
printf '[workflow]\nname = "large"\n[defaults]\nbackend = "slurm"\npoll_interval = "1s"\n[stages.a]\njobs_file = "jobs.jsonl"\nrun = "printf %%s {{job.v}} > $POOLPARTY_RESULT"\n' > "$work/poolparty.toml"
ensure
t0=$(date +%s.%N)
"$pp" run -q "$work" >/dev/null
t1=$(date +%s.%N)
"$pp" results "$work" > "$work/got.json"
same=$(python3 -c 'import json,sys; print("byte-exact" if json.load(open(sys.argv[1])) == json.load(open(sys.argv[2])) else "DIFFERENT")' "$work/got.json" "$work/expected.json")
script=$(stat -c %s "$work"/.poolparty/large/a/scripts/*.sh | sort -n | tail -1)
tasks=$(stat -c %s "$work"/.poolparty/large/a/tasks/*.jobs | sort -n | tail -1)
echo "N=$n jobs of $size-byte values, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| jobs | value bytes | jobs file | run (s) | largest script (bytes) | largest task file (bytes) | results |"
echo "|---|---|---|---|---|---|---|"
echo "| $n | $size | $(stat -c %s "$work/jobs.jsonl") | $(echo "$t1 - $t0" | bc) | $script | $tasks | $same |"
