#!/usr/bin/env bash
# Multi-worker training on one machine: N workers on localhost over loopback.
#
#   launch/local_cluster.sh N [seqmnist.main flags...]
#   launch/local_cluster.sh 2 --gin_file=row.gin --model_dir=runs/mw --data_dir=../shared/data/mnist
#
# Each worker runs `python -m seqmnist.main ARGS...` with its own TF_CONFIG,
# so Distribute.strategy='auto' picks MultiWorkerMirroredStrategy (RING
# all-reduce works on CPUs). Worker logs go to $LOG_DIR (default: a new temp
# folder) as worker-<i>.log. Waits for every worker; exits non-zero (the
# first failing worker's code) if any failed, after stopping the others.
# SIGTERM to this script reaches every worker: they save the same step and
# exit 143, and so does the script; rerunning it resumes. A worker that does
# not end within $GRACE seconds (default 30) of being told to (a stopped
# process, a stuck filesystem) is killed (SIGKILL), so the script always
# ends.
set -u
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 N [seqmnist.main flags...]  (N = number of workers >= 1)" >&2
  exit 2
fi
N=$1; shift
PYTHON=${PYTHON:-python}
GRACE=${GRACE:-30}
LOG_DIR=${LOG_DIR:-$(mktemp -d -t seqmnist-local-cluster-XXXXXX)}
mkdir -p "$LOG_DIR"

# N free loopback ports, chosen by the OS.
PORTS=$("$PYTHON" - "$N" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
for s in socks:
    s.close()
PY
)
WORKERS=$(printf '"127.0.0.1:%s",' $PORTS); WORKERS="[${WORKERS%,}]"

pids=()
for ((i = 0; i < N; i++)); do
  TF_CONFIG="{\"cluster\": {\"worker\": $WORKERS}, \"task\": {\"type\": \"worker\", \"index\": $i}}" \
    "$PYTHON" -m seqmnist.main "$@" > "$LOG_DIR/worker-$i.log" 2>&1 &
  pids+=($!)
done
echo "local_cluster: $N workers on $WORKERS, logs in $LOG_DIR"
stop_all() {  # TERM every worker (and CONT, so a stopped one receives it)
  kill -TERM "${pids[@]}" 2>/dev/null; kill -CONT "${pids[@]}" 2>/dev/null
  stopping_since=${stopping_since:-$SECONDS}
}
trap stop_all INT TERM

status=0
remaining=$N
stopping_since=
declare -A done_
while [ "$remaining" -gt 0 ]; do
  if [ -n "$stopping_since" ] && [ $((SECONDS - stopping_since)) -ge "$GRACE" ]; then
    for ((i = 0; i < N; i++)); do
      if [ -z "${done_[$i]:-}" ] && kill -0 "${pids[$i]}" 2>/dev/null; then
        echo "local_cluster: worker $i did not stop within ${GRACE}s; killing it" >&2
        kill -KILL "${pids[$i]}" 2>/dev/null
      fi
    done
    stopping_since=$SECONDS  # wait for them to be reaped
  fi
  for ((i = 0; i < N; i++)); do
    [ -n "${done_[$i]:-}" ] && continue
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then
      wait "${pids[$i]}"; code=$?
      done_[$i]=1; remaining=$((remaining - 1))
      echo "local_cluster: worker $i exited with $code"
      if [ "$code" -ne 0 ] && [ "$status" -eq 0 ]; then
        status=$code
        echo "local_cluster: worker $i failed; stopping the others. Its log:" >&2
        tail -n 20 "$LOG_DIR/worker-$i.log" >&2
        stop_all
      fi
    fi
  done
  sleep 0.5
done
exit "$status"
