#!/usr/bin/env bash
# A real single-node Slurm on this machine, for the `sweep --slurm` tests (see docs/design.md,
# "Scale-out"). Idempotent: installs munge + slurmctld + slurmd + slurm-client from Debian when
# missing, writes /etc/slurm/slurm.conf (one node on 127.0.0.1, no cgroups, no accounting),
# starts munged, slurmctld and slurmd as daemons and waits until the node is usable. A second
# run while it is up only confirms it (restarting the daemons if slurm.conf had to change).
#
#   scripts/slurm-local.sh          start (or confirm) the cluster; prints one "ready" line
#   scripts/slurm-local.sh stop     stop the three daemons (by their pid files)
#   scripts/slurm-local.sh status   exit 0 when up, 1 otherwise
#
# Needs root. Environment: SLURM_LOCAL_TIMEOUT (seconds to wait for the node, default 60).
set -euo pipefail

CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
STATE_DIR=/var/spool/slurmctld
SPOOL_DIR=/var/spool/slurmd
LOG_DIR=/var/log/slurm
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_KEY=/etc/munge/munge.key
MUNGE_RUN=/run/munge
MUNGE_PID="$MUNGE_RUN/munged.pid"
MUNGE_SOCKET="$MUNGE_RUN/munge.socket.2"
PARTITION=debug
TIMEOUT="${SLURM_LOCAL_TIMEOUT:-60}"
NODE="$(hostname -s)"

say() { echo "slurm-local: $*"; }
die() { echo "slurm-local: error: $*" >&2; exit 1; }

# a daemon is up when its pid file names a live process with the expected command name
alive() {  # alive PIDFILE NAME
    local pid
    [[ -s "$1" ]] || return 1
    pid="$(tr -dc 0-9 <"$1")"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null \
        && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$2" ]]
}

stop_one() {  # stop_one PIDFILE NAME
    local pid
    if alive "$1" "$2"; then
        pid="$(tr -dc 0-9 <"$1")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -9 "$pid" 2>/dev/null || true
        fi
        say "stopped $2 (pid $pid)"
    fi
    rm -f "$1"
}

stop_all() {
    stop_one "$SLURMD_PID" slurmd
    stop_one "$CTLD_PID" slurmctld
    stop_one "$MUNGE_PID" munged
}

node_state() {  # the node's state as sinfo prints it ("idle", "down*", ...), or nothing
    sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n 1 || true
}

is_ready() {
    case "$(node_state)" in
        idle|mixed|allocated|completing) return 0 ;;
        *) return 1 ;;
    esac
}

case "${1:-start}" in
    stop) stop_all; exit 0 ;;
    status)
        if alive "$MUNGE_PID" munged && alive "$CTLD_PID" slurmctld && alive "$SLURMD_PID" slurmd \
            && is_ready; then
            say "up: node $NODE is $(node_state)"; exit 0
        fi
        say "not up"; exit 1 ;;
    start) ;;
    *) die "usage: $0 [start|stop|status]" ;;
esac

[[ "$(id -u)" == 0 ]] || die "must run as root (it installs packages and starts daemons)"

# --- packages ------------------------------------------------------------------------------
if ! command -v sbatch >/dev/null || ! command -v slurmctld >/dev/null \
    || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    say "installing munge, slurmctld, slurmd, slurm-client (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq </dev/null || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends munge slurmctld slurmd slurm-client \
        </dev/null >/dev/null || die "apt-get install failed"
fi
for tool in sbatch sinfo squeue scontrol slurmctld slurmd munged munge unmunge; do
    command -v "$tool" >/dev/null || die "$tool not found after installing the packages"
done

# --- slurm.conf ----------------------------------------------------------------------------
CPUS="$(nproc)"
MEM_TOTAL="$(free -m | awk '/^Mem:/ {print $2}')"
REAL_MEM=$(( MEM_TOTAL * 8 / 10 ))  # below what slurmd measures, or it drains the node
(( REAL_MEM >= 256 )) || REAL_MEM=256

mkdir -p "$CONF_DIR" "$STATE_DIR" "$SPOOL_DIR" "$LOG_DIR"
NEW_CONF="$(cat <<EOF
# Written by breastus scripts/slurm-local.sh: one node on loopback, for tests.
# $(slurmd -V 2>/dev/null || echo slurm)
ClusterName=breastus-local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE_DIR
SlurmdSpoolDir=$SPOOL_DIR
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups: plain /proc process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# no accounting
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
SlurmdParameters=config_overrides
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
MinJobAge=60
KillWait=10
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$CPUS RealMemory=$REAL_MEM State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
)"
CHANGED=0
if [[ ! -f "$CONF" ]] || [[ "$(cat "$CONF")" != "$NEW_CONF" ]]; then
    printf '%s\n' "$NEW_CONF" >"$CONF.tmp"
    mv -f "$CONF.tmp" "$CONF"
    CHANGED=1
fi

# --- already up? ---------------------------------------------------------------------------
if (( CHANGED == 0 )) && alive "$MUNGE_PID" munged && alive "$CTLD_PID" slurmctld \
    && alive "$SLURMD_PID" slurmd && is_ready; then
    say "ready (already running): node $NODE ($CPUS CPUs) is $(node_state), partition $PARTITION"
    exit 0
fi
if (( CHANGED == 1 )) && { alive "$CTLD_PID" slurmctld || alive "$SLURMD_PID" slurmd; }; then
    say "slurm.conf changed: restarting the Slurm daemons"
    stop_one "$SLURMD_PID" slurmd
    stop_one "$CTLD_PID" slurmctld
fi

# --- munge ---------------------------------------------------------------------------------
if ! id munge >/dev/null 2>&1; then
    die "user 'munge' missing (the munge package creates it)"
fi
mkdir -p /etc/munge /var/lib/munge /var/log/munge "$MUNGE_RUN"
if [[ ! -s "$MUNGE_KEY" ]]; then
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile="$MUNGE_KEY" --force
    else
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
    fi
    say "created $MUNGE_KEY"
fi
# munged runs as the 'munge' user (as Debian's service does); 'munged --force' as root is the
# fallback. Everything it reads or writes belongs to that user.
chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge "$MUNGE_RUN"
chmod 0700 /etc/munge /var/lib/munge /var/log/munge
chmod 0400 "$MUNGE_KEY"
chmod 0755 "$MUNGE_RUN"
if ! alive "$MUNGE_PID" munged; then
    rm -f "$MUNGE_PID"
    if ! runuser -u munge -- munged --pid-file="$MUNGE_PID" --socket="$MUNGE_SOCKET" </dev/null; then
        say "munged would not start as user munge; trying 'munged --force' as root"
        munged --force --pid-file="$MUNGE_PID" --socket="$MUNGE_SOCKET" </dev/null \
            || die "munged did not start (see /var/log/munge/munged.log)"
    fi
fi
for _ in $(seq 1 50); do
    munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1 && break
    sleep 0.2
done
munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET" >/dev/null \
    || die "munge does not answer (see /var/log/munge/munged.log)"

# --- slurmctld, slurmd ---------------------------------------------------------------------
if ! alive "$CTLD_PID" slurmctld; then
    rm -f "$CTLD_PID"
    slurmctld -f "$CONF" </dev/null || die "slurmctld did not start (see $LOG_DIR/slurmctld.log)"
fi
for _ in $(seq 1 50); do
    scontrol ping >/dev/null 2>&1 && break
    sleep 0.2
done
if ! alive "$SLURMD_PID" slurmd; then
    rm -f "$SLURMD_PID"
    slurmd -f "$CONF" -N "$NODE" </dev/null || die "slurmd did not start (see $LOG_DIR/slurmd.log)"
fi

# --- wait for the node ---------------------------------------------------------------------
deadline=$(( SECONDS + TIMEOUT ))
next_resume=0
state=""
while (( SECONDS < deadline )); do
    state="$(node_state)"
    case "$state" in
        idle|mixed|allocated|completing)
            say "ready: node $NODE ($CPUS CPUs, ${REAL_MEM} MB) is $state, partition $PARTITION," \
                "slurmctld on 127.0.0.1:6817 ($(slurmd -V))"
            exit 0 ;;
        down*|drain*|fail*)
            # ReturnToService=2 revives a node that registers; a drained one needs a resume
            if (( SECONDS >= next_resume )); then
                scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
                next_resume=$(( SECONDS + 10 ))
            fi ;;
    esac
    alive "$CTLD_PID" slurmctld || die "slurmctld exited (see $LOG_DIR/slurmctld.log)"
    alive "$SLURMD_PID" slurmd || die "slurmd exited (see $LOG_DIR/slurmd.log)"
    sleep 1
done
reason="$(sinfo -h -N -n "$NODE" -o '%E' 2>/dev/null || true)"
die "node $NODE not usable after ${TIMEOUT}s (state '${state:-unknown}'${reason:+, reason: $reason});" \
    "see $LOG_DIR/slurmctld.log and $LOG_DIR/slurmd.log"
