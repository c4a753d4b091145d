#!/usr/bin/env bash
# One GPU (or the CPU if there is none): OneDeviceStrategy.
#   launch/single_gpu.sh --gin_file=pixel.gin --model_dir=runs/pixel [--data_dir=...]
# GPU selection: CUDA_VISIBLE_DEVICES (default: the first GPU).
set -euo pipefail
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
exec "${PYTHON:-python}" -m seqmnist.main --gin_param="Distribute.strategy='one_device'" "$@"
