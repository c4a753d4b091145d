#!/usr/bin/env bash
# Every GPU of one node: MirroredStrategy, NCCL all-reduce.
#   launch/multi_gpu.sh --gin_file=pixel.gin --model_dir=runs/pixel [--data_dir=...]
# Data.batch_size stays the *global* batch: keep it a multiple of the GPU
# count (or scale it, with the learning rate, by --gin_param="BATCH_SIZE=512").
set -euo pipefail
exec "${PYTHON:-python}" -m seqmnist.main \
  --gin_param="Distribute.strategy='mirrored'" \
  --gin_param="Distribute.all_reduce='${ALL_REDUCE:-nccl}'" "$@"
