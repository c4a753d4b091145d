#!/usr/bin/env bash
# Container entrypoint: log the cluster this pod belongs to, then train.
# seqmnist/cluster.py derives TF_CONFIG from the Indexed Job's
# JOB_COMPLETION_INDEX (+ SEQMNIST_WORKERS, SEQMNIST_JOB, SEQMNIST_SERVICE),
# or uses TF_CONFIG as a TFJob injects it.
set -euo pipefail
PYTHON=${PYTHON:-python}
echo "seqmnist entrypoint: $("$PYTHON" -m seqmnist.cluster)"
exec "$PYTHON" -m seqmnist.main "$@"
