set -u
# Where this stage's logs, results and outcome files go (absolute paths).
pp_logs={{logs_dir}}
pp_results={{results_dir}}
pp_staging={{staging_dir}}
pp_failed=0
{{#each env}}
export {{name}}={{value}}
{{/each}}

# pp_run INDEX ID ATTEMPT JOB_JSON PROGRAM [ARGS...]
# Runs one job with its output in its own logs (removed again when empty), then writes its
# outcome atomically (temporary file + rename) for poolparty to collect.
pp_run() {
  local index=$1 id=$2 attempt=$3 job=$4 out err start end rc tmp
  shift 4
  out="$pp_logs/$id.out"
  err="$pp_logs/$id.err"
  rm -f "$pp_results/$id"
  start=$(date +%s.%N)
  (
    export POOLPARTY_JOB="$job" POOLPARTY_JOB_ID="$id" POOLPARTY_JOB_INDEX="$index" \
      POOLPARTY_ATTEMPT="$attempt" POOLPARTY_RESULT="$pp_results/$id"
    exec "$@"
  ) >"$out" 2>"$err" </dev/null
  rc=$?
  [ "$rc" -eq 0 ] || pp_failed=1
  end=$(date +%s.%N)
  [ -s "$out" ] || rm -f "$out"
  [ -s "$err" ] || rm -f "$err"
  tmp="$pp_staging/.$id.$attempt.$$.tmp"
  printf '{"index":%s,"id":"%s","attempt":%s,"rc":%s,"start":%s,"end":%s,"host":"%s"}\n' \
    "$index" "$id" "$attempt" "$rc" "$start" "$end" "$(hostname)" >"$tmp" && mv -f "$tmp" "$pp_staging/$id.$attempt.json" || rm -f "$tmp"
}
