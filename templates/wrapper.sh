set -u
# Where this stage's logs, results and outcome files go (absolute paths).
pp_logs={{logs_dir}}
pp_results={{results_dir}}
pp_staging={{staging_dir}}
pp_failed=0
# Per job, only the job itself and the outcome's rename start processes: the clock is bash's
# own (EPOCHREALTIME, bash 5; `date` before that) and the host name is looked up once.
pp_host=${HOSTNAME:-$(hostname)}
pp_now() {
  if [ -n "${EPOCHREALTIME:-}" ]; then pp_t=${EPOCHREALTIME/,/.}; else pp_t=$(date +%s.%N); fi
}
{{#each env}}
export {{name}}={{value}}
{{/each}}

# pp_run INDEX ID ATTEMPT JOB_JSON PROGRAM [ARGS...]
# Runs one job with its output in its own logs (removed again when empty), then writes its
# outcome atomically (temporary file + rename) for poolparty to collect.
pp_run() {
  local index=$1 id=$2 attempt=$3 job=$4 out err start end rc tmp pp_t
  shift 4
  out="$pp_logs/$id.out"
  err="$pp_logs/$id.err"
  [ ! -e "$pp_results/$id" ] || rm -f "$pp_results/$id"
  pp_now
  start=$pp_t
  (
    export POOLPARTY_JOB="$job" POOLPARTY_JOB_ID="$id" POOLPARTY_JOB_INDEX="$index" \
      POOLPARTY_ATTEMPT="$attempt" POOLPARTY_RESULT="$pp_results/$id"
    exec "$@"
  ) >"$out" 2>"$err" </dev/null
  rc=$?
  [ "$rc" -eq 0 ] || pp_failed=1
  pp_now
  end=$pp_t
  # Empty logs go, in one `rm`.
  set -- "$out" "$err"
  [ -s "$out" ] && shift
  [ -s "$err" ] && set -- "${@:1:$#-1}"
  [ $# -eq 0 ] || rm -f "$@"
  tmp="$pp_staging/.$id.$attempt.$$.tmp"
  printf '{"index":%s,"id":"%s","attempt":%s,"rc":%s,"start":%s,"end":%s,"host":"%s"}\n' \
    "$index" "$id" "$attempt" "$rc" "$start" "$end" "$pp_host" >"$tmp" && mv -f "$tmp" "$pp_staging/$id.$attempt.json" || rm -f "$tmp"
}

# pp_task TASK TASKS: runs the jobs of array task TASK (counted from 0, of TASKS), read from
# the task file "$pp_data": a header of one 40-byte line per task ("OFFSET LENGTH", each
# 19 zero-padded digits), then per job the NUL-terminated fields
# ARGC INDEX ID ATTEMPT JOB_JSON ARGV... (`tr '\0' '\n' < FILE` shows them). The fields are
# read with `read -d ''` and passed to pp_run as words: the shell never parses them.
pp_task() {
  local head off len x i=0 argc
  local -a f=()
  if [ "$1" -lt 0 ] || [ "$1" -ge "$2" ]; then
    echo "poolparty: no array task $1 in this array of $2" >&2
    exit 2
  fi
  head=
  if [ "$1" -lt 1600 ]; then
    # Bash reads the header line itself (no process) when it is near the start of the file.
    { { [ "$1" -eq 0 ] || IFS= read -r -N "$(($1 * 40))" x; } && IFS= read -r -N 39 head; } <"$pp_data"
  else
    head=$(tail -c "+$(($1 * 40 + 1))" "$pp_data" | head -c 39)
  fi
  off=${head%% *}
  len=${head##* }
  case "$off$len" in
    '' | *[!0-9]*) echo "poolparty: cannot read task $1 from $pp_data" >&2; exit 2 ;;
  esac
  while IFS= read -r -d '' x; do f+=("$x"); done < <(tail -c "+$((10#$off + 1))" "$pp_data" | head -c "$((10#$len))")
  while [ "$i" -lt "${#f[@]}" ]; do
    argc=${f[i]}
    pp_run "${f[@]:i+1:argc+4}"
    i=$((i + argc + 5))
  done
}
