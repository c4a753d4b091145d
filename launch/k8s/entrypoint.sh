#!/usr/bin/env bash
# Container entrypoint: log the cluster this pod belongs to, then train.
# seqmnist/cluster/discover.py derives TF_CONFIG from the Indexed Job's
# JOB_COMPLETION_INDEX (+ SEQMNIST_WORKERS, SEQMNIST_JOB, SEQMNIST_SERVICE),
# or uses TF_CONFIG as a TFJob injects it.
# In a sweep's Indexed Job (python -m seqmnist.tools.sweep --backend=kubernetes),
# SEQMNIST_POINTS_DIR holds one file per grid point, point-<index>, with that
# point's arguments one per line; this pod appends those of its index.
set -euo pipefail
PYTHON=${PYTHON:-python}
if [ -n "${SEQMNIST_POINTS_DIR:-}" ]; then
  mapfile -t point_args < "$SEQMNIST_POINTS_DIR/point-${JOB_COMPLETION_INDEX:?is set by an Indexed Job}"
  set -- "$@" "${point_args[@]}"
fi
echo "seqmnist entrypoint: $("$PYTHON" -m seqmnist.cluster.discover)"
exec "$PYTHON" -m seqmnist.main "$@"
