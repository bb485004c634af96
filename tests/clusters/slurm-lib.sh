# Helpers shared by slurm-up.sh, slurm-down.sh and slurm-ctl.sh (sourced, not run).
# shellcheck shell=bash

# shellcheck disable=SC2034  # used by the scripts that source this file
HOST=$(hostname -s)
LOGDIR=/var/log/slurm

log() { echo "$(basename "$0" .sh): $*" >&2; }
die() {
    log "ERROR: $*"
    local f
    for f in "$LOGDIR/slurmctld.log" "$LOGDIR/slurmd.log" /var/log/munge/munged.log; do
        if [ -f "$f" ]; then echo "--- tail $f" >&2; tail -n 25 "$f" >&2; fi
    done
    exit 1
}

# Serialise the scripts (parallel tests may all call them). Daemons must be started
# with 9>&- so that they do not inherit, and hold, this lock.
take_lock() {
    exec 9>/run/poolparty-slurm.lock
    flock -w 900 9 || die "could not take /run/poolparty-slurm.lock"
}

# pid_alive PID COMM: PID runs COMM and is not a zombie. PID 1 here does not reap
# orphans, so `kill -0` succeeds on a dead daemon: read /proc/PID/stat instead.
pid_alive() {
    local state comm
    [ -n "$1" ] && [ -r "/proc/$1/stat" ] || return 1
    state=$(sed -E 's/^.*\) ([A-Za-z]).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    comm=$(cat "/proc/$1/comm" 2>/dev/null) || return 1
    [ "$state" != Z ] && [ "$state" != X ] && [ "$comm" = "$2" ]
}

# alive PIDFILE COMM: the pid in PIDFILE is alive and runs COMM.
alive() {
    local pid
    pid=$(tr -dc 0-9 2>/dev/null <"$1") || return 1
    pid_alive "$pid" "$2"
}

# stop_daemon PIDFILE COMM: SIGTERM, wait until gone (15 s), then SIGKILL (5 s).
stop_daemon() {
    local pid
    pid=$(tr -dc 0-9 2>/dev/null <"$1") || return 0
    if pid_alive "$pid" "$2"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 150); do pid_alive "$pid" "$2" || break; sleep 0.1; done
        if pid_alive "$pid" "$2"; then
            log "$2 (pid $pid) ignores SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do pid_alive "$pid" "$2" || break; sleep 0.1; done
            if pid_alive "$pid" "$2"; then die "$2 (pid $pid) does not stop"; fi
        fi
    fi
    rm -f "$1"
}

# start_slurmctld: start it if it is not running, then wait (30 s) for `scontrol ping` UP.
start_slurmctld() {

    if ! alive /run/slurmctld.pid slurmctld; then
        rm -f /run/slurmctld.pid
        slurmctld 9>&- || die "slurmctld failed to start"
    fi
    for _ in $(seq 1 150); do
        timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP' && return 0
        alive /run/slurmctld.pid slurmctld || die "slurmctld died"
        sleep 0.2
    done
    die "slurmctld not UP after 30 s"
}
