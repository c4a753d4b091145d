#!/usr/bin/env bash
# Serve a run's (or a folder of runs') TensorBoard on localhost.
#
#   launch/tensorboard.sh MODEL_DIR [PORT]     (PORT default 6006)
#
# Then open http://localhost:PORT. From another machine, tunnel:
#   ssh -L 6006:localhost:6006 HOST
# What you will see: README, "Watching it".
set -euo pipefail
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 MODEL_DIR [PORT]" >&2; exit 2
fi
if [ ! -d "$1" ]; then
  echo "$0: MODEL_DIR=$1 is not a directory" >&2; exit 2
fi
PORT=${2:-6006}
if ! [[ "$PORT" =~ ^[0-9]+$ ]] || [ "$PORT" -lt 1 ] || [ "$PORT" -gt 65535 ]; then
  echo "$0: PORT=$PORT must be a number in 1..65535" >&2; exit 2
fi
TENSORBOARD=${TENSORBOARD:-tensorboard}
exec "$TENSORBOARD" --logdir "$1" --host localhost --port "$PORT"
