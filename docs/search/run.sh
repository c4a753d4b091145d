#!/usr/bin/env bash
# The flagship recipe search (issue 11): short schedules of pixel.gin and
# permuted.gin variants, two at a time with one TensorFlow thread each (on
# this 2-core CPU, two 1-thread pixel runs train 1.44x the examples/s of one
# 2-thread run: 2 x 178 vs 247, `seqmnist.tools.bench --variants=core_in_memory`).
#
#   docs/search/run.sh CONFIGS_FILE RUNS_DIR DATA_DIR [PARALLEL]
#
# CONFIGS_FILE: one run per line, `name gin_file binding...` (# comments).
# Each run is `seqmnist.main` in RUNS_DIR/name; rerunning skips finished runs
# and resumes the others. docs/search/table.py turns RUNS_DIR into the table
# of docs/results.md.
set -euo pipefail
configs=$1 runs=$2 data=$3 parallel=${4:-2}
mkdir -p "$runs"
grep -v -e '^\s*#' -e '^\s*$' "$configs" | while read -r name gin rest; do
  printf '%s\0' "$name $gin $rest"
done | RUNS="$runs" DATA="$data" xargs -0 -P "$parallel" -n 1 bash -c '
  read -r -a words <<< "$1"  # no quote removal: Model.cell=\x27lstm\x27 stays
  name=${words[0]} gin=${words[1]}
  params=()
  for b in "${words[@]:2}"; do params+=("--gin_param=$b"); done
  [ -f "$RUNS/$name/results.json" ] && exit 0
  echo "$(date +%T) start $name"
  TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 \
    python -m seqmnist.main --gin_file="$gin" "${params[@]}" \
    --model_dir="$RUNS/$name" --data_dir="$DATA" \
    > "$RUNS/$name.log" 2>&1 || status=$?
  echo "$(date +%T) ${status:+FAILED (exit $status) }$name: $(tail -1 "$RUNS/$name.log")"
' _
