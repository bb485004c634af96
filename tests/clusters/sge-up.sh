#!/usr/bin/env bash
# Bring up a real single-node Son of Grid Engine cluster on this machine (as root):
# install the Debian packages, fix /etc/hosts, start sge_qmaster, configure
# (submit host, @allhosts, PE smp, queue all.q with 16 slots, min_uid 0,
# 1 s scheduling), start sge_execd, then wait until a job runs.
# Idempotent: on a cluster that is already up and configured it returns 0 at once.
# Clients: /usr/bin/q* are wrappers that default SGE_ROOT=/var/lib/gridengine and
# SGE_CELL=default themselves, so no environment is needed to call them.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=sge-common.sh
source "$here/sge-common.sh"

[[ $(id -u) == 0 ]] || { echo "sge-up.sh: must run as root" >&2; exit 1; }
sge_lock
t0=$SECONDS
PKGS=(gridengine-master gridengine-exec gridengine-client)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# retry N SLEEP CMD...: run CMD until it succeeds, at most N times.
retry() {
    local n=$1 pause=$2 i
    shift 2
    for ((i = 1; ; i++)); do
        "$@" && return 0
        ((i < n)) || return 1
        sleep "$pause"
    done
}

installed() {
    local p
    for p in "${PKGS[@]}"; do
        [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || return 1
    done
    [[ -f $SGE_ROOT/$SGE_CELL/common/bootstrap ]]
}

install_packages() {
    local p sel=""
    for p in gridengine-common gridengine-client gridengine-master; do
        sel+="$p shared/gridenginemaster string $SGE_HOST
$p shared/gridenginecell string default
$p shared/gridengineconfig boolean true
"
    done
    # debconf's database is locked while another apt run configures packages: retry.
    retry 120 5 debconf-set-selections <<<"$sel" || sge_die "debconf-set-selections failed"
    sge_log "installing ${PKGS[*]}"
    # The lists lock is not covered by DPkg::Lock::Timeout: retry apt-get update.
    retry 60 10 apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null ||
        sge_die "apt-get update failed"
    export DEBIAN_FRONTEND=noninteractive
    retry 3 10 apt-get -o DPkg::Lock::Timeout=600 install -y \
        -qq --no-install-recommends "${PKGS[@]}" >"$tmp/apt.log" 2>&1 ||
        { tail -n 30 "$tmp/apt.log" >&2; sge_die "apt-get install failed"; }
    [[ -f $SGE_ROOT/$SGE_CELL/common/bootstrap ]] ||
        sge_die "packages installed but cell not created ($SGE_ROOT/$SGE_CELL/common/bootstrap missing)"
}

# Clients are refused unless 127.0.0.1 resolves to the host name first
# ("access denied (client IP resolved to host name "localhost" ...)").
# The qmaster reads /etc/hosts at start. Rewrite in place (keep the inode).
hosts_changed=0
ensure_etc_hosts() {
    local want="127.0.0.1 $SGE_HOST localhost"
    [[ $(head -n 1 /etc/hosts | tr -s ' \t' '  ') == "$want" ]] && return 0
    { echo "$want"; grep -vxF "$want" /etc/hosts || true; } >"$tmp/hosts"
    cat "$tmp/hosts" >/etc/hosts
    hosts_changed=1
    sge_log "/etc/hosts: first line is now '$want'"
}

# qc ARGS...: qconf, quiet on success (it reports changes on stderr), loud on failure.
qc() {
    local out
    out=$(qconf "$@" 2>&1) || { echo "$out" >&2; sge_die "qconf $* failed"; }
}

# Compare a qconf -s* listing with a desired file, ignoring spacing and line continuations.
norm() { sed -e ':a' -e '/\\$/N; s/\\\n//; ta' | tr -s ' \t' '  ' | sed 's/ $//' | grep -v '^$' | sort; }
same() { diff -q <(norm <"$1") <(norm <"$2") >/dev/null; }

# ensure KIND NAME FILE: add or modify a configuration object unless it already matches.
# KIND is the qconf letter suffix: hgrp, p (PE), q (queue).
ensure() {
    local kind=$1 name=$2 file=$3
    if qconf "-s$kind" "$name" >"$tmp/cur" 2>/dev/null; then
        same "$tmp/cur" "$file" && return 0
        sge_log "modifying $name"
        qc "-M$kind" "$file"
    else
        sge_log "adding $name"
        qc "-A$kind" "$file"
    fi
}

configure() {
    # Submit host (the host is already an admin host after the package install).
    qconf -ss 2>/dev/null | grep -qxF "$SGE_HOST" || qc -as "$SGE_HOST"

    # Global configuration: allow root jobs (min_uid/min_gid 0); no login shells, so a job does
    # not run root's ~/.bashrc (pyenv init there can leave a stale lock that stalls every task
    # for 60 s); the default max_aj_tasks, in case a killed chunking test left a small one.
    # -Mconf needs a file named "global".
    qconf -sconf global >"$tmp/cur" || sge_die "qconf -sconf global failed"
    sed -e 's/^min_uid .*/min_uid                      0/' \
        -e 's/^min_gid .*/min_gid                      0/' \
        -e 's/^login_shells .*/login_shells                 none/' \
        -e 's/^max_aj_tasks .*/max_aj_tasks                 75000/' "$tmp/cur" >"$tmp/global"
    if ! same "$tmp/cur" "$tmp/global"; then
        sge_log "global configuration: min_uid 0, min_gid 0, login_shells none, max_aj_tasks 75000"
        qc -Mconf "$tmp/global"
    fi

    # Scheduler: run every second (default 15 s).
    qconf -ssconf >"$tmp/cur" || sge_die "qconf -ssconf failed"
    sed -e 's/^schedule_interval .*/schedule_interval                 0:0:1/' "$tmp/cur" >"$tmp/sconf"
    if ! same "$tmp/cur" "$tmp/sconf"; then
        sge_log "scheduler: schedule_interval 0:0:1"
        qc -Msconf "$tmp/sconf"
    fi

    cat >"$tmp/hgrp" <<EOF
group_name @allhosts
hostlist $SGE_HOST
EOF
    ensure hgrp @allhosts "$tmp/hgrp"

    # Parallel environment for `qsub -pe smp N` (N slots on one host).
    cat >"$tmp/pe" <<'EOF'
pe_name            smp
slots              999
user_lists         NONE
xuser_lists        NONE
start_proc_args    NONE
stop_proc_args     NONE
allocation_rule    $pe_slots
control_slaves     FALSE
job_is_first_task  TRUE
urgency_slots      min
accounting_summary FALSE
qsort_args         NONE
EOF
    ensure p smp "$tmp/pe"

    # Complete queue file. load_thresholds NONE: the load on 2 cores reaches 11-16
    # under test and would put the queue in alarm state.
    cat >"$tmp/queue" <<'EOF'
qname                 all.q
hostlist              @allhosts
seq_no                0
load_thresholds       NONE
suspend_thresholds    NONE
nsuspend              1
suspend_interval      00:05:00
priority              0
min_cpu_interval      00:05:00
processors            UNDEFINED
qtype                 BATCH INTERACTIVE
ckpt_list             NONE
pe_list               smp
rerun                 FALSE
slots                 16
tmpdir                /tmp
shell                 /bin/sh
prolog                NONE
epilog                NONE
shell_start_mode      posix_compliant
starter_method        NONE
suspend_method        NONE
resume_method         NONE
terminate_method      NONE
notify                00:00:60
owner_list            NONE
user_lists            NONE
xuser_lists           NONE
subordinate_list      NONE
complex_values        NONE
projects              NONE
xprojects             NONE
calendar              NONE
initial_state         default
s_rt                  INFINITY
h_rt                  INFINITY
s_cpu                 INFINITY
h_cpu                 INFINITY
s_fsize               INFINITY
h_fsize               INFINITY
s_data                INFINITY
h_data                INFINITY
s_stack               INFINITY
h_stack               INFINITY
s_core                INFINITY
h_core                INFINITY
s_rss                 INFINITY
h_rss                 INFINITY
s_vmem                INFINITY
h_vmem                INFINITY
EOF
    ensure q all.q "$tmp/queue"
}

# States of the queue instance all.q@HOST: "ok" = usable, else the qstat -f state
# letters ("au" = execd not heard from yet, "E" = error, "d" = disabled).
queue_state() {
    qstat -f -q "all.q@$SGE_HOST" 2>/dev/null |
        awk -v q="all.q@$SGE_HOST" '$1 == q { print (NF >= 6 ? $6 : "ok") }'
}

# Wait (bounded) until the queue instance is usable; clear error/disabled states.
wait_queue_ready() {
    local i st=""
    for ((i = 0; i < 300; i++)); do
        st=$(queue_state)
        case $st in
            ok) return 0 ;;
            *E*) qmod -c "all.q@$SGE_HOST" >/dev/null 2>&1 || true ;;
            *d*) qmod -e "all.q@$SGE_HOST" >/dev/null 2>&1 || true ;;
        esac
        sleep 0.2
    done
    qstat -f >&2 || true
    qhost >&2 || true
    sge_die "queue all.q@$SGE_HOST not usable after 60 s (state '${st:-missing}')"
}

# ---- fast path: already up and configured --------------------------------------
if installed && [[ $(head -n 1 /etc/hosts | tr -s ' \t' '  ') == "127.0.0.1 $SGE_HOST localhost" ]] &&
    qm=$(sge_daemon_pid sge_qmaster) && ex=$(sge_daemon_pid sge_execd) &&
    qconf -sq all.q 2>/dev/null | grep -q '^pe_list *smp$' &&
    qconf -sconf global 2>/dev/null | grep -q '^min_uid *0$' &&
    qconf -sconf global 2>/dev/null | grep -q '^login_shells *none$' &&
    qconf -sconf global 2>/dev/null | grep -q '^max_aj_tasks *75000$' &&
    [[ $(queue_state) == ok ]]; then
    echo "sge: already up on $SGE_HOST (qmaster pid $qm, execd pid $ex); clients /usr/bin/q* (SGE_ROOT=$SGE_ROOT SGE_CELL=$SGE_CELL)"
    exit 0
fi

# ---- full bring-up ---------------------------------------------------------------
installed || install_packages
ensure_etc_hosts
[[ $(cat "$SGE_ROOT/$SGE_CELL/common/act_qmaster") == "$SGE_HOST" ]] ||
    sge_die "act_qmaster is '$(cat "$SGE_ROOT/$SGE_CELL/common/act_qmaster")', host is '$SGE_HOST': reinstall (purge gridengine-*, rm -rf $SGE_SPOOL $SGE_ROOT/$SGE_CELL)"
# A qmaster started before /etc/hosts was fixed refuses clients: restart it.
if ((hosts_changed)) && sge_daemon_pid sge_qmaster >/dev/null; then sge_stop_qmaster; fi
qmaster_was_up=0
sge_daemon_pid sge_qmaster >/dev/null && qmaster_was_up=1
sge_start_qmaster
configure
# An execd that outlived its qmaster reconnects to a new one only after ~20-30 s:
# restart it instead (its running jobs go on under their shepherds).
((qmaster_was_up)) || sge_stop_execd keep-jobs
sge_start_execd
wait_queue_ready

# Smoke test: a 2-task array in the smp PE must run (each task touches a marker
# file) and leave qstat. No `qsub -sync y`: after a qmaster restart the execd holds
# back the end reports of -sync/DRMAA jobs for 600 s.
sge_log "smoke test: qsub -t 1-2 -pe smp 2"
chmod 755 "$tmp"
# shellcheck disable=SC2016 # $SGE_TASK_ID is for the job script
printf '#!/bin/sh\ntouch "%s/ok.$SGE_TASK_ID"\n' "$tmp" >"$tmp/smoke.sh"
smoke=$(qsub -terse -N sge-up-smoke -t 1-2 -pe smp 2 -S /bin/sh -o /dev/null -e /dev/null \
    "$tmp/smoke.sh" 2>&1) || sge_die "smoke-test qsub failed: $smoke"
smoke=${smoke%%.*}
for ((i = 0; i < 300; i++)); do
    if [[ -e $tmp/ok.1 && -e $tmp/ok.2 ]] && listing=$(qstat 2>/dev/null) &&
        ! awk 'NR > 2 { print $1 }' <<<"$listing" | grep -qx "$smoke"; then
        break
    fi
    sleep 0.2
done
if ((i == 300)); then
    qstat -f >&2 || true
    qstat -j "$smoke" >&2 || true
    sge_die "smoke-test job $smoke did not complete within 60 s"
fi

echo "sge: up on $SGE_HOST in $((SECONDS - t0)) s (qmaster pid $(sge_daemon_pid sge_qmaster), execd pid $(sge_daemon_pid sge_execd), all.q 16 slots, pe smp); clients /usr/bin/q* (SGE_ROOT=$SGE_ROOT SGE_CELL=$SGE_CELL)"
