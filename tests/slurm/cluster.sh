#!/usr/bin/env bash
# Throwaway single-host Slurm cluster (slurmctld + slurmd on this machine) for tests.
#   cluster.sh up      install slurm-wlm if needed, start daemons, wait for the node to be idle,
#                      print `export SLURM_CONF=...`  (idempotent)
#   cluster.sh down    stop the daemons started from this state dir
#   cluster.sh status  sinfo
# Everything (config, state, spool, logs, pid files, job-completion log) lives in
# $SLURM_TEST_DIR (default /tmp/repo-slurm); /etc/slurm is never touched, clients find the
# config through SLURM_CONF.
set -euo pipefail

STATE=${SLURM_TEST_DIR:-/tmp/repo-slurm}
CONF=$STATE/slurm.conf
export SLURM_CONF=$CONF
WAIT_S=${SLURM_TEST_WAIT_S:-60}

log() { echo "cluster.sh: $*" >&2; }

fail() {
  log "$*"
  sinfo -N -l >&2 || true
  local f
  for f in slurmctld slurmd; do log "--- tail of $STATE/$f.log"; tail -n 20 "$STATE/$f.log" >&2 || true; done
  exit 1
}

alive() { # alive NAME: daemon NAME from this state dir is running
  local pid
  pid=$(cat "$STATE/$1.pid" 2>/dev/null) && [[ -n $pid ]] || return 1
  # Not kill -0: where PID 1 does not reap, a dead daemon lingers as a zombie.
  [[ $(ps -o stat=,comm= -p "$pid" 2>/dev/null) =~ ^[^Z]+\ +$1$ ]]
}

node_idle() {
  # Check the controller answering on the port is ours, not another state dir's cluster.
  scontrol show config 2>/dev/null |
    awk -v d="$STATE/ctld" '$1 == "StateSaveLocation" && $3 == d {f = 1} END {exit !f}' &&
    [[ $(sinfo -h -N -o '%T' 2>/dev/null) =~ ^(idle|mixed|allocated) ]]
}

install() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && return
  log "installing slurm-wlm"
  export DEBIAN_FRONTEND=noninteractive
  # Only refresh the index when the package is unknown (fresh image with empty lists).
  apt-cache show slurm-wlm >/dev/null 2>&1 || apt-get update -q >&2
  apt-get install -y -q --no-install-recommends slurm-wlm >&2
}

write_conf() {
  # slurmd -C reports what slurmd will detect; copying it avoids the node being drained
  # for "Low RealMemory"/CPU mismatch.
  local hw node
  hw=$(slurmd -C | head -1)
  node=$(hostname -s)
  hw=${hw#NodeName=* }
  mkdir -p "$STATE"/{ctld,spool}
  # One completion log per cluster run, so a job id never matches a line from an earlier run.
  : >"$STATE/jobcomp.log"
  cat >"$CONF" <<EOF
ClusterName=repo
# Explicit 127.0.0.1 so neither daemon depends on the hostname resolving.
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
# auth/none (still shipped in Debian's 22.05) avoids munged and its key entirely.
AuthType=auth/none
CredType=cred/none
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldPort=${SLURM_TEST_CTLD_PORT:-6817}
SlurmdPort=${SLURM_TEST_SLURMD_PORT:-6818}
# No cgroups: containers rarely allow them.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# No slurmdbd: sacct cannot work. Finished jobs stay visible to "scontrol show job" for
# MinJobAge seconds, and every finished job gets a line (JobState=..., ExitCode=...) in the
# jobcomp file forever.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/jobcomp.log
MinJobAge=3600
MaxJobCount=10000
# afterok on a failed job: cancel the dependent job (state CANCELLED) instead of leaving it
# PENDING/DependencyNeverSatisfied forever, so a test's wait loop terminates. (22.05 ignores the
# old SchedulerParameters=kill_invalid_depend spelling.)
DependencyParameters=kill_invalid_depend
# Node comes back idle after a restart instead of staying DOWN.
ReturnToService=2
SlurmdTimeout=30
KillWait=5
NodeName=$node NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
}

up() {
  if alive slurmctld && alive slurmd && node_idle; then
    echo "export SLURM_CONF=$CONF"; return
  fi
  install
  alive slurmctld || alive slurmd || write_conf
  # -c: start from a clean slate (no jobs recovered from a previous run); both daemonize themselves.
  alive slurmctld || slurmctld -c
  alive slurmd || slurmd -N "$(hostname -s)"
  local t=0
  until node_idle; do
    # A daemon that died on startup (bad config, port taken) will not come back: fail fast.
    (( t < 3 )) || { alive slurmctld && alive slurmd; } || fail "a daemon exited during startup"
    (( t++ < WAIT_S )) || fail "node not idle after ${WAIT_S}s"
    sleep 1
  done
  echo "export SLURM_CONF=$CONF"
}

down() {
  local d pid
  for d in slurmd slurmctld; do
    pid=$(cat "$STATE/$d.pid" 2>/dev/null) || continue
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    ! kill -0 "$pid" 2>/dev/null || kill -9 "$pid"
  done
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) sinfo ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
