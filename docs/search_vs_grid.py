"""Compares two finished studies of seqmnist-search (docs/search_vs_grid.md):
python docs/search_vs_grid.py GRID_RUNS_DIR STUDY_RUNS_DIR

For each: trials complete and pruned, core-hours (the trials' CPU time),
best validation and its trial's test accuracy; then the core-hours the
second had spent (trials in the order they ended) when it first reached the
first's best validation."""
import json
import os
import sys

import optuna

from seqmnist.tools import search_study


def _study(runs_dir):
  with open(os.path.join(runs_dir, search_study.SEARCH_FILE)) as f:
    saved = json.load(f)
  return optuna.load_study(study_name=saved['study_name'],
                           storage=search_study.open_storage(saved['storage']))


def _summary(name, study):
  trials = [t for t in study.trials if t.state.is_finished()]
  # Every trial's CPU time, a stopped one's too.
  core = sum(t.user_attrs.get('core_seconds', 0) for t in study.trials) / 3600
  best = study.best_trial
  states = [t.state.name for t in trials]
  print(f'| {name} | {states.count("COMPLETE")} | {states.count("PRUNED")} | '
        f'{core:.3f} | {best.value:.4f} (trial {best.number}) | '
        f'{best.user_attrs.get("test_accuracy", float("nan")):.4f} |')
  return core, best.value


def main(grid_dir, study_dir):
  grid, study = _study(grid_dir), _study(study_dir)
  print('| study | complete | pruned | core-hours | best validation | its test |')
  print('|---|---|---|---|---|---|')
  grid_core, target = _summary('grid', grid)
  _summary('TPE + median pruner', study)
  spent, reached = 0.0, None
  for t in sorted((t for t in study.trials if t.state.is_finished()),
                  key=lambda t: t.datetime_complete):
    spent += t.user_attrs.get('core_seconds', 0) / 3600
    if t.value is not None and t.value >= target and reached is None:
      reached = (t.number, spent)
  if reached:
    print(f'\nThe study reached the grid\'s best validation {target:.4f} with '
          f'trial {reached[0]}, after {reached[1]:.3f} core-hours: '
          f'{reached[1] / grid_core:.2f} of the grid\'s {grid_core:.3f}.')
  else:
    print(f'\nThe study did not reach the grid\'s best validation {target:.4f} '
          f'in {spent:.3f} core-hours ({spent / grid_core:.2f} of the grid\'s '
          f'{grid_core:.3f}).')


if __name__ == '__main__':
  main(*sys.argv[1:3])
