r"""Draws a run's learning curves to a PNG, with published anchor lines.

  python -m seqmnist.tools.curves --model_dir=RUN [--model_dir=RUN2] \
      --out=FILE.png \
      [--anchor="tuned LSTM=98.9" ...] [--accuracy_from=95] [--title=TEXT]

Left: validation accuracy (%) against epoch, with a dashed line per anchor
(a published test accuracy, for scale; named in the legend), from
--accuracy_from up (default: the lowest value drawn) so that anchors a few
tenths apart can be told apart; right: the training loss (the
window means the run logged) against epoch, log scale. Epochs come from each
run's operative config (Data.batch_size, and the training split: 60,000
minus Data.validation_size). Reads the run's event files only, so it works
on a released zoo/ entry. A run outside the classic protocol (another
readout, shifted training images: its operative config says) gets a line of
the title saying so. Needs matplotlib: pip install -e ".[plot]".
"""

import os
from typing import List, Sequence, Tuple

from absl import flags
from absl import logging

from seqmnist import cli

# pylint: disable=g-import-not-at-top,wrong-import-position
from seqmnist import rundir as rundir_lib
from seqmnist.config import drift
from seqmnist.errors import UserError, exit_on_error
from seqmnist.tools import report

_MODEL_DIR = flags.DEFINE_multi_string('model_dir', [], 'A run (repeatable).')
_OUT = flags.DEFINE_string('out', None, 'The PNG to write.')
_ANCHOR = flags.DEFINE_multi_string(
    'anchor', [], 'LABEL=PERCENT: a published accuracy drawn as a dashed '
    'line, e.g. "tuned LSTM=98.9". Repeatable.')
_TITLE = flags.DEFINE_string('title', None, 'The figure title.')
_ACCURACY_FROM = flags.DEFINE_float(
    'accuracy_from', None, 'The lower edge of the accuracy axis, in percent '
    '(default: the lowest accuracy or anchor drawn, less 1).')

MNIST_TRAIN_IMAGES = 60_000


def parse_anchor(text: str) -> Tuple[str, float]:
  label, sep, value = text.rpartition('=')
  try:
    percent = float(value)
  except ValueError:
    percent = None
  if not sep or not label.strip() or percent is None or not 0 < percent <= 100:
    raise UserError(f'--anchor={text!r} must be LABEL=PERCENT with a percent '
                    'in (0, 100], e.g. --anchor="tuned LSTM=98.9"')
  return label.strip(), percent


def _bindings(run: str) -> dict:
  """The run's saved operative config, as resolved bindings."""
  values = drift.saved_bindings(rundir_lib.RunDir(run))
  if values is None:
    raise UserError(f'--model_dir={run} has no operative_config.gin: not a '
                    'seqmnist run directory')
  return values


def examples_per_step(values: dict) -> Tuple[int, int]:
  """(global batch, training-split size) from a run's bindings."""
  batch = values.get('Data.batch_size', 128)
  train = MNIST_TRAIN_IMAGES - values.get('Data.validation_size', 5000)
  return batch, train


def curves(runs: Sequence[str]) -> List[dict]:
  """Per run: label, [(epoch, val accuracy %)], [(epoch, train loss)], and
  how it left the classic protocol ([] if it did not)."""
  out = []
  for run in runs:
    values = _bindings(run)
    batch, train = examples_per_step(values)
    epoch = lambda step, b=batch, n=train: step * b / n
    val = [(epoch(s), 100 * v) for s, v in report.validation_curve(run)]
    loss = [(epoch(s), v) for s, v in
            report.scalar_curve(run, rundir_lib.TRAIN, 'loss')]
    if not val:
      raise UserError(f'--model_dir={run} has no validation accuracy events '
                      'yet (nothing to draw: rerun once the run has '
                      'validated)')
    out.append({'label': os.path.basename(os.path.normpath(run)),
                'validation': val, 'loss': loss,
                'departures': report.departures(
                    values.get('Model.readout', 'last'),
                    values.get('Data.max_shift', 0))})
  return out


def figure_title(title, data: Sequence[dict]):
  """The title, then a line for each run outside the classic protocol, so
  a figure beside published anchors says so; None if there is neither."""
  lines = [title] if title else []
  lines += [f'{r["label"]}: {", ".join(r["departures"])} (not the classic '
            'protocol)' for r in data if r['departures']]
  return '\n'.join(lines) or None


def draw(runs: Sequence[str], path: str, anchors=(), title=None,
         accuracy_from=None) -> None:
  try:
    import matplotlib
  except ImportError as e:
    raise UserError('seqmnist.tools.curves needs matplotlib: pip install -e '
                    '".[plot]"') from e
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  data = curves(runs)
  fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
  for run in data:
    if run['validation']:
      left.plot(*zip(*run['validation']), marker='.', label=run['label'])
    if run['loss']:
      right.plot(*zip(*run['loss']), linewidth=0.8, label=run['label'])
  if accuracy_from is None:
    accuracy_from = max(min([v for r in data for _, v in r['validation']] +
                            [p for _, p in anchors] or [90.0]) - 1, 0)
  for (label, percent), style in zip(anchors, ['--', ':', '-.'] * 10):
    left.axhline(percent, color='gray', linestyle=style, linewidth=1,
                 label=f'{label} {percent:g}%')
  left.set_ylim(accuracy_from, 100)
  left.set_xlabel('epoch')
  left.set_ylabel('validation accuracy (%)')
  right.set_xlabel('epoch')
  right.set_ylabel('training loss')
  right.set_yscale('log')
  for ax in (left, right):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='lower right' if ax is left else 'upper right')
  title = figure_title(title, data)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise UserError(f'--out={path}: its folder {folder} does not exist')
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _draw():
  if not _MODEL_DIR.value or not _OUT.value:
    raise UserError('--model_dir and --out are required')
  if not _OUT.value.endswith('.png'):
    raise UserError(f'--out={_OUT.value} must end in .png')
  anchors = [parse_anchor(a) for a in _ANCHOR.value]
  low = _ACCURACY_FROM.value
  if low is not None and not 0 <= low < 100:
    raise UserError(f'--accuracy_from={low:g} must be a percent in [0, 100)')
  draw(_MODEL_DIR.value, _OUT.value, anchors, _TITLE.value, low)


def main(argv):
  cli.no_positional_arguments('seqmnist.tools.curves', argv)
  logging.set_verbosity(logging.WARNING)  # TensorBoard's reader logs each file
  exit_on_error('seqmnist.tools.curves', _draw)
  print(f'wrote {_OUT.value}')


if __name__ == '__main__':
  cli.import_tensorflow_quietly()
  cli.run('seqmnist.tools.curves', main)
