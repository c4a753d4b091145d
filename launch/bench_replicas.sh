#!/usr/bin/env bash
# Examples/s of the real training loop with 1 vs 2 replicas at the same global
# batch, on the CPU: one device vs MirroredStrategy over 2 logical CPUs, and one
# process vs 2 local workers (MultiWorkerMirroredStrategy, RING).
#   launch/bench_replicas.sh [DATA_DIR] [STEPS]   (figures: docs/benchmarks.md)
set -euo pipefail
DATA_DIR=${1:-../shared/data/mnist}; STEPS=${2:-600}
OUT=$(mktemp -d -t seqmnist-bench-XXXXXX)
COMMON=(--gin_file=row.gin --data_dir="$DATA_DIR" --gin_param="Trainer.steps=$STEPS"
        --gin_param="Trainer.eval_every=$STEPS" --gin_param="Trainer.checkpoint_every=$STEPS")
run() { # name, extra args...
  local name=$1; shift
  "$@" > "$OUT/$name.log" 2>&1
  python -c "import json,sys; r=json.load(open(sys.argv[1])); print(f'| $name | {r[\"replicas\"]} | {r[\"train_examples_per_second\"]:.0f} |')" "$OUT/$name/results.json"
}
echo "| variant | replicas | train examples/s |"
echo "|---|---|---|"
for rep in 1 2; do
  run one_device python -m seqmnist.main "${COMMON[@]}" --model_dir="$OUT/one_device" \
    --gin_param="Distribute.strategy='one_device'" --gin_param="Distribute.logical_cpus=2"
  rm -rf "$OUT/one_device"
  run mirrored_2cpu python -m seqmnist.main "${COMMON[@]}" --model_dir="$OUT/mirrored_2cpu" \
    --gin_param="Distribute.strategy='mirrored'" --gin_param="Distribute.logical_cpus=2"
  rm -rf "$OUT/mirrored_2cpu"
  run one_worker python -m seqmnist.main "${COMMON[@]}" --model_dir="$OUT/one_worker" \
    --gin_param="Distribute.strategy='multi_worker_mirrored'"
  rm -rf "$OUT/one_worker"
  run two_workers env LOG_DIR="$OUT/logs" launch/local_cluster.sh 2 "${COMMON[@]}" \
    --model_dir="$OUT/two_workers" --gin_param="Distribute.all_reduce='ring'"
  rm -rf "$OUT/two_workers"
done
