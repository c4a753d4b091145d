#!/usr/bin/env bash
# The same budget spent two ways on row (6 epochs a run): the grid that
# `seqmnist-sweep --sweep="LEARNING_RATE=..." --sweep="Model.output_dropout=..."`
# would run (here as a grid-sampler study without pruning: the same 12 points,
# each trial's CPU time recorded), and a TPE study with the median pruner
# (no pruning before the 4th of 6 validations) over the same ranges, on two
# sampler seeds. docs/search_vs_grid.py compares each with the grid.
#   bash docs/search_vs_grid.sh RUNS_DIR [DATA_DIR]
set -euo pipefail
R=${1:?give a folder for the studies}; D=${2:-../shared/data/mnist}
BASE=(--gin_file=row.gin --gin_param=STEPS=2580 --gin_param=Trainer.eval_every=430
      --gin_param=Trainer.checkpoint_every=430 --data_dir="$D" --parallel=2)
python -m seqmnist.tools.search "${BASE[@]}" --sampler=grid --pruner=none \
  --space="LEARNING_RATE=choice(3e-4, 1e-3, 3e-3, 1e-2)" \
  --space="Model.output_dropout=choice(0.0, 0.2, 0.4)" --runs_dir="$R/grid"
for seed in 0 1; do
  python -m seqmnist.tools.search "${BASE[@]}" --sampler=tpe --pruner=median --startup_trials=3 \
    --prune_from=4 --seed=$seed --space="LEARNING_RATE=loguniform(3e-4, 1e-2)" \
    --space="Model.output_dropout=uniform(0, 0.4)" --trials=12 --runs_dir="$R/study_seed$seed"
  python docs/search_vs_grid.py "$R/grid" "$R/study_seed$seed"
done
