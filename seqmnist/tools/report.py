r"""Tables (and a plot) of finished runs, with seed statistics.

  python -m seqmnist.tools.report DIR [DIR...] [--json] [--plot=FILE.png]

DIR is a run directory or a folder of them (a sweep's runs dir, say). Prints
two Markdown tables: every run (status, test accuracy, best validation
accuracy, steps, examples/s, wall time; for a run stopped and resumed, the
wall time adds up every process that trained it, from its event files, and
says how many), and every group of runs that differ
only in `Trainer.seed`: n, mean +- std (sample std, n - 1), min and max of
test accuracy, mean best validation accuracy, steps, examples/s, wall time.
Unfinished and failed runs are listed as such and never averaged in.
`--json` prints the same as JSON; `--plot` draws validation accuracy against
step per group (the mean, and the min-max band over seeds) from the runs'
event files (needs matplotlib: pip install -e ".[plot]").
"""

import collections
import json
import os
import re
import statistics
from typing import Dict, List, Optional, Tuple

from absl import flags
from absl import logging

from seqmnist import cli
from seqmnist import rundir
from seqmnist.config import drift
from seqmnist.errors import UserError, exit_on_error
from seqmnist.tools import search_study

SEED = 'Trainer.seed'
_LOGS = 'logs'  # a sweep's logs folder beside its run dirs

_JSON = flags.DEFINE_boolean('json', False, 'Print JSON instead of Markdown.')
_PLOT = flags.DEFINE_string('plot', None, 'Also draw validation accuracy per '
                            'group to this PNG file.')


def find_runs(paths) -> List[str]:
  """Every run directory at or under the given paths, sorted."""
  runs = []
  for path in paths:
    if not os.path.isdir(path):
      raise UserError(f'{path} is not a folder')
    if rundir.RunDir(path).is_run_dir():
      runs.append(path)
      continue
    for root, dirs, _ in os.walk(path):
      dirs.sort()
      for name in list(dirs):
        child = os.path.join(root, name)
        if rundir.RunDir(child).is_run_dir():
          runs.append(child)
          dirs.remove(name)  # not inside a run dir
  if not runs:
    raise UserError(f'no seqmnist run directory in {", ".join(paths)}')
  return runs


def _failure(run: str) -> Optional[Tuple[str, str]]:
  """(label, message) of the error line that ends a sweep's (or search's)
  log of this run, if it ended with one; label is error, diverged or
  pruned."""
  log = os.path.join(os.path.dirname(run), _LOGS,
                     os.path.basename(run) + '.log')
  if not os.path.isfile(log):
    return None
  with open(log, errors='replace') as f:
    lines = [l.strip() for l in f if l.strip()]
  last = lines[-1] if lines else ''
  for label in ('error', 'diverged', 'pruned'):
    if last.startswith(f'seqmnist: {label}: '):
      return label, last.split(': ', 2)[2]
  return None


def read_run(run: str) -> dict:
  """The run's bindings, status and figures."""
  run_dir = rundir.RunDir(run)
  for split in rundir.EVENT_SPLITS:  # the table's wall time reads them too
    if os.path.isdir(run_dir.events(split)):
      _warn_if_truncated(run_dir.events(split))
  bindings = drift.saved_bindings(run_dir) or {}
  if bindings:
    # A run made before a setting existed ran with its earlier value: so
    # it is grouped, as it resumes (drift.earlier_defaults).
    from seqmnist.loop import experiment  # pylint: disable=g-import-not-at-top
    for key, value in experiment.ADDED_LATER.items():
      bindings.setdefault(key, value)
  steps = bindings.get('Trainer.steps')
  results = run_dir.read_results()
  from seqmnist.loop import checkpoints  # pylint: disable=g-import-not-at-top
  present = checkpoints.on_disk(run_dir.checkpoints)
  step = (results or {}).get('global_step')
  if step is None and present:
    step = rundir.checkpoint_step(present[0])
  if run_dir.is_finished(steps):
    status = 'finished'
  else:
    label, why = _failure(run) or (None, None)
    if label == 'pruned':
      status = f'pruned by its search (step {step or 0} of {steps})'
    elif why:
      status = f'failed: {why}'
    else:
      status = f'unfinished (step {step or 0} of {steps})'
  wall, processes = training_time(run, results)
  return {'run': run, 'status': status, 'bindings': bindings,
          'steps': steps, 'step': step, 'results': results,
          'wall_seconds': wall, 'processes': processes}


# events.out.tfevents.<creation time>.<host>.<pid>.<counter>.v2
_EVENT_FILE = re.compile(r'events\.out\.tfevents\.(\d+)\.(.+)\.(\d+)\.\d+\.v2$')


def training_time(run: str, results: Optional[dict]
                  ) -> Tuple[Optional[float], int]:
  """(wall seconds over every process that trained the run, processes).

  results.json times only the process that finished the run. A run that was
  stopped and resumed also ran in earlier processes; each wrote its own event
  files (named with its start time, host and pid), so for such a run this
  adds up, per process, from its first file's creation to its last event.
  The gaps between processes (the run stopped) are not counted.
  """
  results = results or {}
  if results and results.get('steps_this_run') == results.get('global_step'):
    return results.get('wall_seconds'), 1  # one process did all of it
  # pylint: disable=g-import-not-at-top
  from tensorboard.backend.event_processing import event_file_loader
  spans = collections.defaultdict(lambda: [float('inf'), 0.0])
  run_dir = rundir.RunDir(run)
  for split in rundir.EVENT_SPLITS:
    folder = run_dir.events(split)
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
      match = _EVENT_FILE.match(name)
      if not match:
        continue
      span = spans[match.group(2, 3)]
      span[0] = min(span[0], float(match.group(1)))
      for event in event_file_loader.EventFileLoader(
          os.path.join(folder, name)).Load():
        span[1] = max(span[1], event.wall_time)
  if not spans:
    return results.get('wall_seconds'), 1
  return sum(max(0.0, end - start) for start, end in spans.values()), len(
      spans)


def _key(value) -> str:
  return drift.text(value)


def group(runs: List[dict]) -> List[dict]:
  """Groups of runs whose bindings differ only in Trainer.seed, labelled by
  the bindings that differ between groups."""
  keys = sorted({k for r in runs for k in r['bindings']} - {SEED})
  varying = [k for k in keys
             if len({_key(r['bindings'].get(k)) for r in runs}) > 1]
  groups: Dict[tuple, dict] = {}
  for r in runs:
    signature = tuple(_key(r['bindings'].get(k)) for k in keys)
    g = groups.setdefault(signature, {
        'label': ', '.join(f'{k}={_key(r["bindings"].get(k))}'
                           for k in varying) or 'all runs',
        'runs': []})
    g['runs'].append(r)
  return [_statistics(g) for g in groups.values()]


def _mean_std(values):
  if not values:
    return None, None
  return (statistics.fmean(values),
          statistics.stdev(values) if len(values) > 1 else None)


def _statistics(g: dict) -> dict:
  done = [r for r in g['runs'] if r['status'] == 'finished']
  figure = lambda key: [r['results'][key] for r in done  # pylint: disable=g-long-lambda
                        if r['results'].get(key) is not None]
  test = figure('test_accuracy')
  mean, std = _mean_std(test)
  return {
      'label': g['label'], 'n': len(done), 'runs': len(g['runs']),
      'seeds': sorted(r['bindings'].get(SEED, 0) for r in done),
      'test_accuracy_mean': mean, 'test_accuracy_std': std,
      'test_accuracy_min': min(test) if test else None,
      'test_accuracy_max': max(test) if test else None,
      'best_val_accuracy_mean': _mean_std(figure('best_val_accuracy'))[0],
      'steps': sorted({r['results']['global_step'] for r in done}),
      'examples_per_second_mean': _mean_std(
          figure('train_examples_per_second'))[0],
      'wall_seconds_mean': _mean_std(
          [r['wall_seconds'] for r in done if r['wall_seconds']])[0],
      'members': [r['run'] for r in g['runs']],
      # Runs of a group differ only in the seed, so share their protocol.
      'protocol': _protocol(done[0]['results']) if done else '',
  }


def _pct(value, digits=2):
  return '—' if value is None else f'{100 * value:.{digits}f}%'


def _wall(run: dict) -> str:
  if run['status'] != 'finished' or not run['wall_seconds']:
    return '—'
  text = f'{run["wall_seconds"]:,.0f} s'
  return (text if run['processes'] == 1 else
          f'{text} ({run["processes"]} processes)')


def departures(readout: str = 'last', max_shift: int = 0) -> List[str]:
  """How a run left the classic protocol of these tasks (the head reads the
  last state; training images as they are), one phrase each; [] if not."""
  out = []
  if readout != 'last':
    out.append(f'{readout} readout')
  if max_shift:
    out.append(f'training images shifted by up to {max_shift} '
               + ('pixel' if max_shift == 1 else 'pixels'))
  return out


def _protocol(results: dict) -> str:
  """' (...: not the classic protocol)' for a finished run outside it (its
  results.json says), else ''."""
  found = departures(results.get('readout', 'last'),
                     results.get('max_shift') or 0)
  return f' ({", ".join(found)}: not the classic protocol)' if found else ''


def markdown(runs: List[dict], groups: List[dict]) -> str:
  lines = ['| run | status | test accuracy | best validation | steps | '
           'examples/s | wall time |', '|---|---|---|---|---|---|---|']
  for r in runs:
    res = r['results'] if r['status'] == 'finished' else {}
    lines.append(
        f'| {r["run"]} | {r["status"]} | {_pct(res.get("test_accuracy"))}'
        f'{_protocol(res)} | '
        f'{_pct(res.get("best_val_accuracy"))} | {r["step"] or 0} | '
        + (f'{res["train_examples_per_second"]:,.0f}'
           if res.get('train_examples_per_second') else '—') + ' | '
        + _wall(r) + ' |')
  lines += ['', '| group (runs differing only in Trainer.seed) | n | test '
            'accuracy mean ± std | min | max | best validation (mean) | '
            'steps | examples/s | wall time |',
            '|---|---|---|---|---|---|---|---|---|']
  for g in groups:
    std = ('' if g['test_accuracy_std'] is None else
           f' ± {100 * g["test_accuracy_std"]:.2f}')
    mean = ('—' if g['test_accuracy_mean'] is None else
            f'{100 * g["test_accuracy_mean"]:.2f}{std}%{g["protocol"]}')
    not_done = g['runs'] - g['n']
    lines.append(
        f'| {g["label"]} | {g["n"]}' + (f' (+{not_done} not finished)'
                                        if not_done else '') +
        f' | {mean} | {_pct(g["test_accuracy_min"])} | '
        f'{_pct(g["test_accuracy_max"])} | '
        f'{_pct(g["best_val_accuracy_mean"])} | '
        f'{", ".join(map(str, g["steps"])) or "—"} | '
        + (f'{g["examples_per_second_mean"]:,.0f}'
           if g['examples_per_second_mean'] else '—') + ' | '
        + (f'{g["wall_seconds_mean"]:,.0f} s' if g['wall_seconds_mean']
           else '—') + ' |')
  return '\n'.join(lines)


def scalar_curve(run: str, split: str, tag: str):
  """[(step, value)] of a scalar the run wrote to its `split` events."""
  # pylint: disable=g-import-not-at-top
  from tensorboard.backend.event_processing import event_accumulator
  import tensorflow as tf
  path = rundir.RunDir(run).events(split)
  if not os.path.isdir(path):
    return []
  _warn_if_truncated(path)
  acc = event_accumulator.EventAccumulator(
      path, size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  if tag not in acc.Tags()['tensors']:
    return []
  points = {e.step: float(tf.make_ndarray(e.tensor_proto))
            for e in acc.Tensors(tag)}  # a resume may repeat a step
  return sorted(points.items())


# Event files already read through, keyed by (path, size, mtime): each is
# read once per process however many curves come from it.
_checked = set()


def _warn_if_truncated(folder: str) -> None:
  """Says (once per file) when an event file ends inside a record: a
  process killed mid-write, or a copy cut short. Its records up to there are
  used, so curves and tables stop early: the warning says so."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name)
    if not name.startswith('events.out.tfevents.'):
      continue
    info = os.stat(path)
    key = (path, info.st_size, info.st_mtime_ns)
    if key in _checked:
      continue
    _checked.add(key)
    records = 0
    try:
      for _ in tf.data.TFRecordDataset(path):
        records += 1
    except tf.errors.DataLossError:
      logging.warning('%s is truncated after %d whole records (a process '
                      'killed while writing it, or a copy cut short): what '
                      'it held past them is missing from these figures.',
                      path, records)


def validation_curve(run: str):
  """[(step, accuracy)] from the run's validation events."""
  return scalar_curve(run, rundir.VALIDATION, 'accuracy')


def plot(groups: List[dict], path: str) -> None:
  try:
    import matplotlib  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise UserError('--plot needs matplotlib: pip install -e ".[plot]"') from e
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(8, 5))
  for g in groups:
    curves = [dict(validation_curve(run)) for run in g['members']]
    curves = [c for c in curves if c]
    if not curves:
      continue
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    values = [[c[s] for c in curves] for s in steps]
    mean = [statistics.fmean(v) for v in values]
    line, = ax.plot(steps, mean, label=f'{g["label"]} (n={len(curves)})')
    ax.fill_between(steps, [min(v) for v in values],
                    [max(v) for v in values], alpha=0.2,
                    color=line.get_color())
  ax.set_xlabel('step')
  ax.set_ylabel('validation accuracy')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)


def report(paths, as_json=False, plot_path=None) -> str:
  if not paths:
    raise UserError('give at least one run directory or folder of runs')
  runs = [read_run(r) for r in find_runs(paths)]
  groups = group(runs)
  studies = ''.join(search_study.report(p) + '\n' for p in paths
                    if search_study.is_study_dir(p))
  if plot_path:
    plot(groups, plot_path)
  if as_json:
    return json.dumps({
        'runs': [{k: v for k, v in r.items() if k != 'bindings'}
                 for r in runs],
        'groups': groups}, indent=2, default=str)
  return studies + markdown(runs, groups)


def main(argv):
  logging.set_verbosity(logging.WARNING)  # TensorBoard's reader is chatty
  print(exit_on_error('seqmnist.tools.report', report, argv[1:], _JSON.value,
                      _PLOT.value))


if __name__ == '__main__':
  cli.import_tensorflow_quietly()
  cli.run('seqmnist.tools.report', main)
