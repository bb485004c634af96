#!/usr/bin/env bash
# Stop the single-node Slurm cluster started by slurm-up.sh: slurmd, slurmctld, then munged
# (always: nothing else on these machines uses munge). Each daemon is stopped by the pid in
# its pid file and waited for (SIGTERM, 15 s, then SIGKILL). Returns 0 if nothing runs.
#
#   slurm-down.sh           keep the job state: the next slurm-up.sh sees the same queue
#                           (tasks that were running go on running without slurmd).
#   slurm-down.sh --purge   cancel every job first and delete the saved state and spool,
#                           so that the next slurm-up.sh starts with an empty queue.
set -euo pipefail
# shellcheck source=slurm-lib.sh
. "$(dirname "$0")/slurm-lib.sh"
T0=$SECONDS

purge=0
case "${1:-}" in
    "") ;;
    --purge) purge=1 ;;
    *) echo "usage: $0 [--purge]" >&2; exit 2 ;;
esac
take_lock

if [ "$purge" = 1 ] && alive /run/slurmctld.pid slurmctld; then
    ids=$(timeout 20 squeue -h -o %A 2>/dev/null || true)
    if [ -n "$ids" ]; then
        # shellcheck disable=SC2086
        scancel $ids 2>/dev/null || true
        # Wait (bounded) until no task is running or completing any more.
        for _ in $(seq 1 100); do
            [ -z "$(timeout 20 squeue -h -t running,completing,configuring -o %A 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
fi

stop_daemon /run/slurmd.pid slurmd
stop_daemon /run/slurmctld.pid slurmctld
stop_daemon /run/munge/munged.pid munged

if [ "$purge" = 1 ]; then
    rm -rf /var/spool/slurmctld/* /var/spool/slurmd/*
fi
echo "slurm-down: stopped$([ "$purge" = 1 ] && echo ', state purged') ($((SECONDS - T0)) s)"
