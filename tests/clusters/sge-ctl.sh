#!/usr/bin/env bash
# Control the Grid Engine daemons of the cluster started by sge-up.sh, e.g. to
# simulate a qmaster outage in tests:
#   sge-ctl.sh stop-master    stop sge_qmaster only (takes 8-10 s), wait until gone
#   sge-ctl.sh start-master   start sge_qmaster again, wait until qstat answers
#   sge-ctl.sh status         print "qmaster up|down, execd up|down"; rc 0 if both up
# After start-master nothing is dispatched until sge_execd reconnects (about 20 s).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=sge-common.sh
source "$here/sge-common.sh"

t0=$SECONDS
case ${1:-} in stop-master | start-master) sge_lock ;; esac
case ${1:-} in
    stop-master)
        sge_stop_qmaster
        echo "sge: qmaster stopped in $((SECONDS - t0)) s"
        ;;
    start-master)
        sge_start_qmaster
        echo "sge: qmaster answering (pid $(sge_daemon_pid sge_qmaster)) in $((SECONDS - t0)) s"
        ;;
    status)
        rc=0
        if sge_daemon_pid sge_qmaster >/dev/null && sge_qmaster_answers; then qm=up; else qm=down rc=1; fi
        if sge_daemon_pid sge_execd >/dev/null; then ex=up; else ex=down rc=1; fi
        echo "qmaster $qm, execd $ex"
        exit $rc
        ;;
    *)
        echo "usage: $0 stop-master|start-master|status" >&2
        exit 2
        ;;
esac
