#!/usr/bin/env bash
# Reproduce the source articles' models (gin/articles/*.gin; the articles are
# in ../shared/sources/), one run each, then print a table of what they reached.
#
#   launch/reproduce.sh [NAME...]        (default: every article config)
#   RUNS_DIR=runs/articles DATA_DIR=../shared/data/mnist launch/reproduce.sh day25_rnn
#
# Each run writes to $RUNS_DIR/NAME; rerunning resumes or just reports. The
# pixel/permuted runs take hours on a CPU: stop one with SIGTERM (it saves and
# exits 143) and the table reports the steps it reached. Figures and commands:
# docs/results.md.
set -uo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
RUNS_DIR=${RUNS_DIR:-runs/articles}
PYTHON=${PYTHON:-python}
ALL=$(cd "$HERE/gin/articles" && ls *.gin | sed 's/\.gin$//')
NAMES=("$@"); [ ${#NAMES[@]} -eq 0 ] && NAMES=($ALL)
for name in "${NAMES[@]}"; do
  if [ ! -f "$HERE/gin/articles/$name.gin" ]; then
    echo "reproduce: unknown article config '$name'; known: $(echo $ALL)" >&2
    exit 2
  fi
done
DATA_ARGS=()
[ -n "${DATA_DIR:-}" ] && DATA_ARGS=(--data_dir="$DATA_DIR")
status=0
for name in "${NAMES[@]}"; do
  echo "reproduce: $name -> $RUNS_DIR/$name" >&2
  "$PYTHON" -m seqmnist.main --gin_file="articles/$name.gin" \
    --model_dir="$RUNS_DIR/$name" "${DATA_ARGS[@]}"
  code=$?
  if [ "$code" -ne 0 ]; then
    echo "reproduce: $name exited with $code" >&2
    [ "$status" -eq 0 ] && status=$code
  fi
done
echo "| config | steps | best validation | test accuracy |"
echo "|---|---|---|---|"
for name in "${NAMES[@]}"; do
  "$PYTHON" - "$RUNS_DIR/$name" "$name" <<'PY'
import json, os, sys
import tensorflow as tf
run, name = sys.argv[1], sys.argv[2]
results = os.path.join(run, "results.json")
if os.path.exists(results):
    r = json.load(open(results))
    print(f"| {name} | {r['global_step']} | {100 * r['best_val_accuracy']:.2f}% "
          f"(step {r['best_step']}) | {100 * r['test_accuracy']:.2f}% |")
else:
    ckpt = tf.train.latest_checkpoint(os.path.join(run, "checkpoints"))
    step = ckpt.rsplit("-", 1)[1] if ckpt else 0
    print(f"| {name} | {step} (unfinished) | see TensorBoard | not yet |")
PY
done
exit "$status"
