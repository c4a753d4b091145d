#!/usr/bin/env bash
# Reproduce the source articles' models (gin/articles/*.gin; the articles are
# in ../shared/sources/), one run each, then print a table of what they reached.
#
#   launch/reproduce.sh [NAME...] [-- MAIN_FLAGS...]   (default: every config)
#   RUNS_DIR=runs/articles DATA_DIR=../shared/data/mnist launch/reproduce.sh day25_rnn
#   launch/reproduce.sh day25_lstm -- --gin_param=Trainer.steps=500
#
# Each run writes to $RUNS_DIR/NAME; rerunning resumes or just reports. The
# pixel/permuted runs take hours on a CPU: SIGTERM (or Ctrl-C) stops the
# script: the running config saves and exits 143, later ones are not started,
# and the table reports the steps each reached. Figures and commands:
# docs/results.md.
set -uo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
RUNS_DIR=${RUNS_DIR:-runs/articles}
PYTHON=${PYTHON:-python}
ALL=$(cd "$HERE/gin/articles" && ls *.gin | sed 's/\.gin$//')
NAMES=(); EXTRA=()  # names, then flags for seqmnist.main after `--`
while [ $# -gt 0 ]; do
  if [ "$1" = -- ]; then shift; EXTRA=("$@"); break; fi
  NAMES+=("$1"); shift
done
[ ${#NAMES[@]} -eq 0 ] && NAMES=($ALL)
for name in "${NAMES[@]}"; do
  if [ ! -f "$HERE/gin/articles/$name.gin" ]; then
    echo "reproduce: unknown article config '$name'; known: $(echo $ALL)" >&2
    exit 2
  fi
done
DATA_ARGS=()
[ -n "${DATA_DIR:-}" ] && DATA_ARGS=(--data_dir="$DATA_DIR")
status=0
stopped=0
# SIGTERM/SIGINT: the running config saves and exits 143 (forwarded to it),
# the rest are not started, and the table still reports where each got to.
trap 'stopped=1; [ -n "${child:-}" ] && kill -TERM "$child" 2>/dev/null' TERM INT
for name in "${NAMES[@]}"; do
  [ "$stopped" -eq 1 ] && break
  echo "reproduce: $name -> $RUNS_DIR/$name" >&2
  "$PYTHON" -m seqmnist.main --gin_file="articles/$name.gin" \
    --model_dir="$RUNS_DIR/$name" "${DATA_ARGS[@]}" "${EXTRA[@]}" &
  child=$!
  wait "$child"; code=$?
  while kill -0 "$child" 2>/dev/null; do  # the wait was cut by the signal
    wait "$child"; code=$?
  done
  child=
  if [ "$code" -ne 0 ]; then
    echo "reproduce: $name exited with $code" >&2
    [ "$status" -eq 0 ] && status=$code
  fi
done
# The table, from each run's own files (one Python process for all rows).
"$PYTHON" - "$RUNS_DIR" "${NAMES[@]}" <<'PY'
import json, os, sys
import tensorflow as tf
runs_dir, names = sys.argv[1], sys.argv[2:]
print("| config | steps | best validation | test accuracy |")
print("|---|---|---|---|")
for name in names:
    run = os.path.join(runs_dir, name)
    results = os.path.join(run, "results.json")
    ckpt = tf.train.latest_checkpoint(os.path.join(run, "checkpoints"))
    if os.path.exists(results):
        r = json.load(open(results))
        print(f"| {name} | {r['global_step']} | {100 * r['best_val_accuracy']:.2f}% "
              f"(step {r['best_step']}) | {100 * r['test_accuracy']:.2f}% |")
    elif ckpt:  # stopped before the end: the step of its last checkpoint
        print(f"| {name} | {ckpt.rsplit('-', 1)[1]} (unfinished) | see TensorBoard | not yet |")
    else:
        print(f"| {name} | not run | | |")
PY
exit "$status"
