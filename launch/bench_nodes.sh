#!/usr/bin/env bash
# Examples/s of the real training loop with 1, 2 and 4 workers at the same
# global batch: workers on one host over loopback (launch/local_cluster.sh)
# vs workers on different nodes of a Slurm cluster (launch/slurm/train.sbatch,
# one worker per task). On CI's cluster (.ci/slurm_up.sh --nodes=3) every node
# shares the same 2 cores, so this measures what the collective costs over a
# real network stack, not a speed-up.
#   launch/bench_nodes.sh [DATA_DIR] [STEPS] [REPEATS]   (figures: docs/benchmarks.md)
set -euo pipefail
DATA_DIR=$(realpath "${1:-../shared/data/mnist}"); STEPS=${2:-600}; REPEATS=${3:-2}
command -v sbatch >/dev/null || { echo "bench_nodes: sbatch not found; start a cluster with .ci/slurm_up.sh --nodes=3" >&2; exit 2; }
OUT=$(mktemp -d -t seqmnist-bench-nodes-XXXXXX)
COMMON=(--gin_file=row.gin --data_dir="$DATA_DIR" --gin_param="Trainer.steps=$STEPS"
        --gin_param="Trainer.eval_every=$STEPS" --gin_param="Trainer.checkpoint_every=$STEPS")
RING=(--gin_param="Distribute.all_reduce='ring'")  # what several CPU workers use
export PYTHON=${PYTHON:-$(command -v python)} TF_CPP_MIN_LOG_LEVEL=2
run() { # name, command...
  local name=$1; shift
  "$@" > "$OUT/$name.log" 2>&1 || { echo "bench_nodes: $name failed; see $OUT/$name.log" >&2; exit 1; }
  "$PYTHON" -c "import json,sys; r=json.load(open(sys.argv[1])); print(f'| $name | {r[\"replicas\"]} | {r[\"train_examples_per_second\"]:.0f} |')" "$OUT/$name/results.json"
  rm -rf "${OUT:?}/$name"
}
slurm() { # name, "sbatch shape", seqmnist.main arguments...
  local name=$1 shape=$2; shift 2
  run "$name" env SEQMNIST_LOG_DIR="$OUT/logs" sbatch --wait $shape --chdir="$PWD" \
    --output="$OUT/slurm-%j.out" launch/slurm/train.sbatch "${COMMON[@]}" "$@" --model_dir="$OUT/$name"
}
echo "| variant | replicas | train examples/s |"
echo "|---|---|---|"
for _ in $(seq "$REPEATS"); do
  slurm one_process_one_node "--nodes=1 --ntasks=1"
  run two_workers_loopback env LOG_DIR="$OUT/logs" launch/local_cluster.sh 2 "${COMMON[@]}" "${RING[@]}" --model_dir="$OUT/two_workers_loopback"
  slurm two_nodes_x1 "--nodes=2 --ntasks-per-node=1" "${RING[@]}"
  run four_workers_loopback env LOG_DIR="$OUT/logs" launch/local_cluster.sh 4 "${COMMON[@]}" "${RING[@]}" --model_dir="$OUT/four_workers_loopback"
  slurm two_nodes_x2 "--nodes=2 --ntasks-per-node=2" "${RING[@]}"
done
