#!/usr/bin/env bash
# Bring up a single-node Slurm cluster on this machine (Debian 12, root, no systemd).
#
# Idempotent: if the daemons already run with the wanted slurm.conf and the node is
# usable, it returns 0 at once. If slurm.conf changes (e.g. another SLURM_MAX_ARRAY_SIZE),
# slurmctld and slurmd are restarted; queued and running jobs survive (StateSaveLocation).
#
# Env:
#   SLURM_MAX_ARRAY_SIZE  MaxArraySize for slurm.conf (default 1001; largest index = value-1)
#   SLURM_UP_TIMEOUT      seconds to wait for the node to become usable (default 60)
set -euo pipefail

MAX_ARRAY_SIZE=${SLURM_MAX_ARRAY_SIZE:-1001}
TIMEOUT=${SLURM_UP_TIMEOUT:-60}
CONF=/etc/slurm/slurm.conf
T0=$SECONDS
# shellcheck source=slurm-lib.sh
. "$(dirname "$0")/slurm-lib.sh"
take_lock

# node_state: the node's state as sinfo reports it (empty if the controller is unreachable).
node_state() { timeout 15 sinfo -h -n "$HOST" -o %T 2>/dev/null | head -n 1 || true; }
usable() { case "$(node_state)" in idle|mixed|allocated|completing) return 0 ;; *) return 1 ;; esac; }

# ---- 1. packages -----------------------------------------------------------------
PKGS="slurmctld slurmd slurm-client munge"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing="$missing $p"
done
if [ -n "$missing" ]; then
    log "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    # Another agent may run apt/dpkg at the same time: always wait on the locks.
    # (the lists lock of `update` may be busy too: retry for up to 10 min)
    tries=0
    until apt-get -o DPkg::Lock::Timeout=600 -qq update >/dev/null; do
        tries=$((tries + 1))
        [ "$tries" -lt 60 ] || die "apt-get update kept failing"
        sleep 10
    done
    aptlog=$(mktemp)
    # shellcheck disable=SC2086
    if ! apt-get -o DPkg::Lock::Timeout=600 -q install -y --no-install-recommends $missing \
        >"$aptlog" 2>&1; then
        tail -n 30 "$aptlog" >&2
        die "apt-get install failed"
    fi
    rm -f "$aptlog"
fi

# ---- 2. slurm.conf ---------------------------------------------------------------
mkdir -p /etc/slurm "$LOGDIR" /var/spool/slurmctld /var/spool/slurmd
want=$(cat <<CONF
# Written by poolparty tests/clusters/slurm-up.sh; overwritten on every run.
ClusterName=poolparty
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGDIR/slurmctld.log
SlurmdLogFile=$LOGDIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# Fast scheduling: 300 array tasks take ~17 s instead of ~400 s with the defaults.
SchedulerType=sched/backfill
SchedulerParameters=sched_min_interval=0,default_queue_depth=10000,batch_sched_delay=0
MaxArraySize=$MAX_ARRAY_SIZE
MaxJobCount=100000
# Finished jobs stay visible in squeue -t all for MinJobAge seconds.
MinJobAge=300
# scancel: SIGTERM, then SIGKILL after KillWait s. InactiveLimit=0: never kill srun jobs
# whose client went away. SlurmdTimeout: node DOWN after that long without slurmd.
KillWait=5
InactiveLimit=0
SlurmctldTimeout=120
SlurmdTimeout=300
SlurmdParameters=config_overrides
NodeName=$HOST CPUs=16 RealMemory=16000 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONF
)
conf_changed=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$want" ]; then
    printf '%s\n' "$want" >"$CONF.tmp" && mv "$CONF.tmp" "$CONF"
    conf_changed=1
fi

# ---- 3. fast path: already up with this config ------------------------------------
if [ "$conf_changed" = 0 ] && alive /run/munge/munged.pid munged \
    && alive /run/slurmctld.pid slurmctld && alive /run/slurmd.pid slurmd && usable; then
    echo "slurm-up: already up: node $HOST $(node_state), MaxArraySize=$MAX_ARRAY_SIZE ($((SECONDS - T0)) s)"
    exit 0
fi

# ---- 4. daemons --------------------------------------------------------------------
if [ "$conf_changed" = 1 ] && { alive /run/slurmctld.pid slurmctld || alive /run/slurmd.pid slurmd; }; then
    log "slurm.conf changed: restarting slurmctld and slurmd"
    stop_daemon /run/slurmd.pid slurmd
    stop_daemon /run/slurmctld.pid slurmctld
fi

# munge: the package creates /etc/munge/munge.key; the daemon runs as user munge.
if ! alive /run/munge/munged.pid munged; then
    [ -s /etc/munge/munge.key ] || die "/etc/munge/munge.key missing"
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    chmod 0755 /run/munge
    rm -f /run/munge/munged.pid /run/munge/munge.socket.2*
    su -s /bin/sh munge -c /usr/sbin/munged 9>&- || die "munged failed to start"
fi
for _ in $(seq 1 50); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
munge -n </dev/null | unmunge >/dev/null 2>&1 || die "munge does not work"

start_slurmctld
if ! alive /run/slurmd.pid slurmd; then
    rm -f /run/slurmd.pid
    slurmd 9>&- || die "slurmd failed to start"
fi

# ---- 5. wait until the node is usable -------------------------------------------------
deadline=$((SECONDS + TIMEOUT))
resumed=0
while :; do
    st=$(node_state)
    case "$st" in
        idle|mixed|allocated|completing) break ;;
        # down/drained (e.g. after an unclean stop): put it back once.
        down*|drain*|fail*)
            if [ "$resumed" = 0 ]; then
                log "node $HOST is $st: resuming"
                scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
                resumed=1
            fi ;;
    esac
    alive /run/slurmctld.pid slurmctld || die "slurmctld died"
    alive /run/slurmd.pid slurmd || die "slurmd died"
    [ "$SECONDS" -ge "$deadline" ] && die "node $HOST not usable after ${TIMEOUT}s (state: '${st:-no answer}')"
    sleep 0.2
done

got=$(scontrol show config 2>/dev/null | awk '$1 == "MaxArraySize" {print $3}')
[ "$got" = "$MAX_ARRAY_SIZE" ] || die "MaxArraySize is '$got', wanted $MAX_ARRAY_SIZE"

echo "slurm-up: up: node $HOST $(node_state), partition debug, MaxArraySize=$got ($((SECONDS - T0)) s)"
