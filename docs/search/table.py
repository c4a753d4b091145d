"""The recipe-search table of docs/results.md, from the search's run dirs.

  python docs/search/table.py RUNS_DIR CONFIGS_FILE...

One row per configuration (in the order of the configs files): its bindings,
the validation accuracy at each evaluation (from the run's TensorBoard
events), the best one, test accuracy, steps, and training examples/s (from
results.json). Unfinished runs are marked as such and show what they reached.
"""

import json
import os
import sys

from seqmnist.tools.report import validation_curve


def rows(runs_dir, config_files):
  for config_file in config_files:
    with open(config_file) as f:
      for line in f:
        words = line.split()
        if not words or words[0].startswith('#'):
          continue
        name, gin_file, bindings = words[0], words[1], words[2:]
        run_dir = os.path.join(runs_dir, name)
        results = None
        if os.path.exists(os.path.join(run_dir, 'results.json')):
          with open(os.path.join(run_dir, 'results.json')) as f2:
            results = json.load(f2)
        yield name, gin_file, bindings, validation_curve(run_dir), results


def markdown(runs_dir, config_files):
  lines = ['| run | gin file | bindings | validation accuracy by step | '
           'best validation | test | examples/s |',
           '|---|---|---|---|---|---|---|']
  for name, gin_file, bindings, curve, results in rows(runs_dir, config_files):
    curve_text = ', '.join(f'{100 * a:.1f} ({s})' for s, a in curve) or '—'
    if results:
      best = f'{100 * results["best_val_accuracy"]:.2f}%'
      test = f'{100 * results["test_accuracy"]:.2f}%'
      speed = f'{results["train_examples_per_second"]:,.0f}'
    else:
      best = (f'{100 * max(a for _, a in curve):.2f}% (unfinished)'
              if curve else 'not run')
      test, speed = '—', '—'
    lines.append(f'| {name} | {gin_file} | `{" ".join(bindings)}` | '
                 f'{curve_text} | {best} | {test} | {speed} |')
  return '\n'.join(lines)


if __name__ == '__main__':
  print(markdown(sys.argv[1], sys.argv[2:]))
