# shellcheck shell=bash
# Shared helpers for sge-up.sh, sge-down.sh and sge-ctl.sh (sourced, not run).
# Single-node Son of Grid Engine 8.1.9 as packaged by Debian 12.

export SGE_ROOT=/var/lib/gridengine
export SGE_CELL=default
# The /usr/bin/q* commands are wrappers that default SGE_ROOT/SGE_CELL themselves;
# the daemons below are the real binaries and need the variables exported.
SGE_BIN=/usr/lib/gridengine
SGE_HOST=$(hostname)
SGE_SPOOL=/var/spool/gridengine
QMASTER_SPOOL=$SGE_SPOOL/qmaster
EXECD_SPOOL=$SGE_SPOOL/execd/$SGE_HOST
QMASTER_PIDFILE=$QMASTER_SPOOL/qmaster.pid
EXECD_PIDFILE=$EXECD_SPOOL/execd.pid

sge_log() { echo "[sge] $*" >&2; }

# Serialize sge-up/down/ctl runs (parallel test runners): hold a lock until exit.
sge_lock() {
    exec 9>/run/lock/poolparty-sge.lock
    flock -w 300 9 || { sge_log "ERROR: lock /run/lock/poolparty-sge.lock busy for 300 s"; exit 1; }
}

# True if PID is a live (not zombie) process running the daemon binary NAME.
# PID 1 here does not reap orphans, so `kill -0` succeeds on zombies: read
# /proc/PID/stat instead (state field after the last ')').
sge_pid_alive() {
    local pid=$1 name=$2 stat state
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    state=${stat##*) }
    state=${state%% *}
    [[ $state != Z && $state != X ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$name" ]]
}

# Print the pid of the live daemon NAME (sge_qmaster or sge_execd), if any:
# first from its pid file, then by scanning /proc for the exact binary path
# (covers a missing or stale pid file).
sge_daemon_pid() {
    local name=$1 pidfile pid exe
    case $name in
        sge_qmaster) pidfile=$QMASTER_PIDFILE ;;
        sge_execd) pidfile=$EXECD_PIDFILE ;;
        *) return 1 ;;
    esac
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if sge_pid_alive "$pid" "$name"; then echo "$pid"; return 0; fi
    for exe in /proc/[0-9]*/exe; do
        pid=${exe#/proc/}; pid=${pid%/exe}
        [[ $(readlink "$exe" 2>/dev/null) == "$SGE_BIN/$name" ]] || continue
        if sge_pid_alive "$pid" "$name"; then echo "$pid"; return 0; fi
    done
    return 1
}

# Wait up to SECONDS for daemon NAME to be gone; 0 if gone.
sge_wait_gone() {
    local name=$1 secs=$2 i
    for ((i = 0; i < secs * 5; i++)); do
        sge_daemon_pid "$name" >/dev/null || return 0
        sleep 0.2
    done
    return 1
}

# qmaster answers client requests?
sge_qmaster_answers() { timeout 10 qstat >/dev/null 2>&1; }

# Print the last lines of the daemon logs (for failures).
sge_log_tails() {
    local f
    for f in "$QMASTER_SPOOL/messages" "$EXECD_SPOOL/messages" /tmp/qmaster_messages /tmp/execd_messages; do
        [[ -f $f ]] || continue
        echo "----- tail $f" >&2
        tail -n 25 "$f" >&2
    done
}

sge_die() {
    sge_log "ERROR: $*"
    sge_log_tails
    exit 1
}

# Start sge_qmaster (it daemonizes) unless running; wait until clients get answers.
# Daemons are started with fd 9 closed so that they do not hold the sge_lock.
sge_start_qmaster() {
    local i
    if ! sge_daemon_pid sge_qmaster >/dev/null; then
        # Drop a stale pid file (it may name a zombie) so that it always names the live daemon.
        rm -f "$QMASTER_PIDFILE"
        sge_log "starting sge_qmaster"
        "$SGE_BIN/sge_qmaster" 9>&- || sge_die "sge_qmaster failed to start"
    fi
    for ((i = 0; i < 150; i++)); do
        sge_qmaster_answers && return 0
        sleep 0.2
    done
    sge_die "qmaster does not answer after 30 s"
}

# Stop sge_qmaster: `qconf -km`, then SIGTERM, then SIGKILL; wait until gone.
sge_stop_qmaster() {
    local pid
    pid=$(sge_daemon_pid sge_qmaster) || { sge_log "sge_qmaster not running"; return 0; }
    sge_log "stopping sge_qmaster (pid $pid)"
    timeout 10 qconf -km >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    if ! sge_wait_gone sge_qmaster 30; then
        sge_log "sge_qmaster still alive after 30 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sge_wait_gone sge_qmaster 5 || sge_die "cannot stop sge_qmaster (pid $pid)"
    fi
}

# Start sge_execd unless running. It registers this host as an exec host itself.
sge_start_execd() {
    sge_daemon_pid sge_execd >/dev/null && return 0
    rm -f "$EXECD_PIDFILE"
    sge_log "starting sge_execd"
    "$SGE_BIN/sge_execd" 9>&- || sge_die "sge_execd failed to start"
}

# sge_stop_execd keep-jobs|kill-jobs: stop sge_execd through the qmaster if it
# answers (`qconf -ke`, or `-kej` which also kills the running jobs), else by
# SIGTERM; SIGKILL after 30 s. With keep-jobs, running jobs go on under their
# sge_shepherd and are picked up by the next sge_execd.
sge_stop_execd() {
    local pid opt=-ke
    [[ ${1:-} == kill-jobs ]] && opt=-kej
    pid=$(sge_daemon_pid sge_execd) || return 0
    sge_log "stopping sge_execd (pid $pid)"
    if ! { sge_qmaster_answers && timeout 10 qconf "$opt" "$SGE_HOST" >/dev/null 2>&1; }; then
        kill -TERM "$pid" 2>/dev/null || true
    fi
    if ! sge_wait_gone sge_execd 30; then
        sge_log "sge_execd still alive after 30 s: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sge_wait_gone sge_execd 5 || sge_die "cannot stop sge_execd (pid $pid)"
    fi
}
