#!/usr/bin/env bash
# A real Slurm cluster on this machine (Debian's slurm-wlm + munge, as root,
# no systemd), for tests/test_slurm.py and tests/test_slurm_multinode.py.
#
#   .ci/slurm_up.sh              one node: this host (shared/guide/SLURM_LOCAL.md)
#   .ci/slurm_up.sh --nodes=N    N nodes n1..nN (N >= 2), each a slurmd in its own
#                                network namespace sqI with its own address
#                                10.251.0.(10+I) on the bridge br-sq, so the
#                                nodes are separate network hosts
#                                (shared/guide/SLURM_MULTINODE.md)
#   .ci/slurm_up.sh stop         stops everything this script started: the
#                                daemons by pid file, the job processes left in
#                                the namespaces, the namespaces, the bridge and
#                                its /etc/hosts lines
#   .ci/slurm_up.sh kill-node nI   a node dies: SIGKILL to every process in its
#                                namespace (its slurmd, slurmstepd and job
#                                tasks), without warning; Slurm marks it DOWN
#                                after SlurmdTimeout
#   .ci/slurm_up.sh revive-node nI starts its slurmd again; ReturnToService=2
#                                returns it to service when it registers
#
# Idempotent: does nothing if the cluster of that shape is up; another shape is
# stopped first. Every node has CPUs=2 (a 2-task-per-node job fits on one)
# though all share this machine's cores: the cluster tests topology and faults,
# not speed. SlurmdTimeout=10 s, so a dead node is marked DOWN within seconds.
# Exits 1 with one line saying why when it cannot (no root, no network
# namespaces); the tests then skip with that reason.
set -euo pipefail
S=${SEQMNIST_SLURM_STATE:-/tmp/seqmnist-slurm}
BRIDGE=br-sq
HOSTS_MARK='# seqmnist-slurm'

fail() { echo "slurm_up: $*" >&2; exit 1; }

stop() {
  local pid_file pid ns
  for pid_file in "$S"/slurmd*.pid "$S/slurmctld.pid"; do
    [ -f "$pid_file" ] || continue
    pid=$(cat "$pid_file")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$pid_file"
  done
  for ns in $(ip netns list 2>/dev/null | awk '/^sq[0-9]+/ {print $1}'); do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  if grep -q "$HOSTS_MARK" /etc/hosts 2>/dev/null; then
    # /etc/hosts may be a bind mount: rewrite it in place, never replace it.
    grep -v "$HOSTS_MARK" /etc/hosts > "$S/hosts.tmp" || true
    cat "$S/hosts.tmp" > /etc/hosts; rm -f "$S/hosts.tmp"
  fi
  rm -f "$S/shape"
}

node_namespace() {
  [[ "${1:-}" =~ ^n([1-9][0-9]?)$ ]] && [ -e "/run/netns/sq${BASH_REMATCH[1]}" ] ||
    fail "'${1:-}' is not a node of a multi-node cluster made by this script (n1, n2, ...)"
  echo "sq${BASH_REMATCH[1]}"
}

NODES=1
case "${1:-}" in
  stop) mkdir -p "$S"; stop; exit 0 ;;
  kill-node)
    ns=$(node_namespace "${2:-}")
    pids=$(ip netns pids "$ns")
    [ -z "$pids" ] || kill -9 $pids
    rm -f "$S/slurmd.$2.pid"
    echo "slurm_up: killed node $2 ($(echo $pids | wc -w) process(es))"; exit 0 ;;
  revive-node)
    ns=$(node_namespace "${2:-}")
    nsenter --net="/run/netns/$ns" /usr/sbin/slurmd -N "$2"
    echo "slurm_up: started slurmd of node $2"; exit 0 ;;
  --nodes=*) NODES=${1#--nodes=} ;;
  '') ;;
  *) fail "unknown argument '$1'; use --nodes=N, stop, kill-node nI or revive-node nI" ;;
esac
[[ "$NODES" =~ ^[1-9][0-9]?$ ]] && [ "$NODES" -le 50 ] ||
  fail "--nodes=$NODES must be a whole number from 1 to 50"
[ "$(id -u)" -eq 0 ] || fail "needs root (daemons, /etc/slurm, network namespaces)"

if ! command -v slurmctld >/dev/null || { [ "$NODES" -gt 1 ] && ! command -v ip >/dev/null; }; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge iproute2
fi

up_nodes() { sinfo -h -N -o '%N %T' 2>/dev/null | grep -cE ' (idle|mixed|allocated)' || true; }
mkdir -p "$S"
if [ "$(cat "$S/shape" 2>/dev/null)" = "$NODES" ] && [ "$(up_nodes)" -ge "$NODES" ]; then
  echo "slurm_up: the $NODES-node cluster is already up"; exit 0
fi
stop
H=$(hostname -s)
rm -rf "$S/state" "$S/spool"
mkdir -p "$S/state" "$S/spool" /etc/slurm /run/munge

if [ "$NODES" -eq 1 ]; then
  CONTROLLER=$H
  NODE_LINES="NodeName=$H CPUs=$(nproc) RealMemory=20000 State=UNKNOWN"
  PARTITION_NODES=$H
else
  # The network: a bridge in this namespace, one namespace per node.
  ip netns add sq-probe 2>/dev/null && ip netns del sq-probe ||
    fail "cannot create network namespaces here (ip netns add failed)"
  ip link add "$BRIDGE" type bridge
  ip addr add 10.251.0.1/24 dev "$BRIDGE"
  ip link set "$BRIDGE" up
  NODE_LINES=''
  for i in $(seq "$NODES"); do
    address=10.251.0.$((10 + i))
    ip netns add "sq$i"
    ip link add "vsq$i" type veth peer name eth0 netns "sq$i"
    ip link set "vsq$i" master "$BRIDGE" up
    ip netns exec "sq$i" ip addr add "$address/24" dev eth0
    ip netns exec "sq$i" ip link set eth0 up
    ip netns exec "sq$i" ip link set lo up
    echo "$address n$i $HOSTS_MARK" >> /etc/hosts
    NODE_LINES+="NodeName=n$i NodeAddr=$address CPUs=2 RealMemory=8000 State=UNKNOWN"$'\n'
  done
  CONTROLLER="$H(10.251.0.1)"
  PARTITION_NODES="n[1-$NODES]"
fi

cat > /etc/slurm/slurm.conf <<CONF
ClusterName=local
SlurmctldHost=$CONTROLLER
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool/%n
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.%n.pid
SlurmctldLogFile=$S/slurmctld.log
SlurmdLogFile=$S/slurmd.%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdTimeout=10
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
$NODE_LINES
PartitionName=debug Nodes=$PARTITION_NODES Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF

if [ ! -f /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
fi
chown munge:munge /run/munge
pgrep -x munged >/dev/null || su -s /bin/sh munge -c /usr/sbin/munged
/usr/sbin/slurmctld -c   # fresh state: no jobs of an earlier cluster
if [ "$NODES" -eq 1 ]; then
  /usr/sbin/slurmd
else
  # nsenter, not `ip netns exec`: that remounts /sys and slurmd then finds no
  # cgroup filesystem.
  for i in $(seq "$NODES"); do nsenter --net="/run/netns/sq$i" /usr/sbin/slurmd -N "n$i"; done
fi
for _ in $(seq 30); do
  if [ "$(up_nodes)" -ge "$NODES" ]; then
    echo "$NODES" > "$S/shape"
    sinfo -N; exit 0
  fi
  sleep 1
done
fail "the $NODES node(s) did not come up; see $S/*.log"
