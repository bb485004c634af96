#!/usr/bin/env bash
# Control the Slurm controller alone, to simulate an outage (the cluster must be up):
#   slurm-ctl.sh stop-controller    stop slurmctld (by /run/slurmctld.pid; waits until gone)
#   slurm-ctl.sh start-controller   start slurmctld again; waits until `scontrol ping` says UP
#   slurm-ctl.sh status             print "UP" or "DOWN" (rc 0 / 1), as `scontrol ping` says
# slurmd, munged and running tasks are left alone; the queue survives (StateSaveLocation).
set -euo pipefail
# shellcheck source=slurm-lib.sh
. "$(dirname "$0")/slurm-lib.sh"
T0=$SECONDS

case "${1:-}" in
    stop-controller)
        take_lock
        stop_daemon /run/slurmctld.pid slurmctld
        echo "slurm-ctl: controller stopped ($((SECONDS - T0)) s)" ;;
    start-controller)
        take_lock
        start_slurmctld
        echo "slurm-ctl: controller UP ($((SECONDS - T0)) s)" ;;
    status)
        if timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'; then echo UP; else echo DOWN; exit 1; fi ;;
    *)
        echo "usage: $0 stop-controller|start-controller|status" >&2; exit 2 ;;
esac
