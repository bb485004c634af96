#!/usr/bin/env bash
# Stop the single-node Grid Engine cluster started by sge-up.sh: sge_execd, then
# sge_qmaster, and wait until both are gone. Jobs stay in the qmaster's database
# (spool) and reappear on the next sge-up.sh; running jobs keep running under
# their sge_shepherd unless --kill-jobs is given (then execd kills them).
# Returns 0 if nothing was running.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=sge-common.sh
source "$here/sge-common.sh"

kill_jobs=0
case ${1:-} in
    "") ;;
    --kill-jobs) kill_jobs=1 ;;
    *) echo "usage: $0 [--kill-jobs]" >&2; exit 2 ;;
esac
[[ $(id -u) == 0 ]] || { echo "sge-down.sh: must run as root" >&2; exit 1; }
sge_lock
t0=$SECONDS

if ((kill_jobs)); then sge_stop_execd kill-jobs; else sge_stop_execd keep-jobs; fi
sge_stop_qmaster
echo "sge: down on $SGE_HOST in $((SECONDS - t0)) s"
