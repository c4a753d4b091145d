r"""`python -m seqmnist.sweep`: run a grid of gin bindings (see sweeps.py).

  python -m seqmnist.sweep --gin_file=row.gin [--gin_param=...] \
      --sweep="Trainer.seed=0,1,2" --sweep="UNITS=64,128" \
      --runs_dir=DIR [--data_dir=DIR] [--parallel=N]
"""

import sys

from absl import flags

from seqmnist import cli
from seqmnist.errors import UserError, exit_on_error
from seqmnist.sweeps import LocalBackend, Sweep, check_points, parse_axis
from seqmnist.sweeps import prepare_runs_dir

_GIN_FILE = flags.DEFINE_multi_string(
    'gin_file', [], 'Gin config file(s) of every point (see seqmnist.main).')
_GIN_PARAM = flags.DEFINE_multi_string(
    'gin_param', [], 'Gin binding(s) of every point, before its own.')
_SWEEP = flags.DEFINE_multi_string(
    'sweep', [], 'An axis: NAME=VALUE[,VALUE...] (gin values). Repeatable; '
    'the grid is the product of the axes.')
_RUNS_DIR = flags.DEFINE_string(
    'runs_dir', None, 'The folder of the sweep: one run dir per point, '
    'sweep.json, logs/. Rerunning continues.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'As for seqmnist.main.')
_BACKEND = flags.DEFINE_enum('backend', 'local', ['local'],
                             'Where the points run.')
_PARALLEL = flags.DEFINE_integer('parallel', 1, 'Local backend: points run '
                                 'at once.')


def _sweep() -> int:
  if not _GIN_FILE.value:
    raise UserError('--gin_file is required, e.g. --gin_file=row.gin')
  if _PARALLEL.value < 1:
    raise UserError(f'--parallel={_PARALLEL.value} must be >= 1')
  sweep = Sweep(tuple(_GIN_FILE.value), tuple(_GIN_PARAM.value),
                tuple(parse_axis(text) for text in _SWEEP.value))
  cli.import_tensorflow_quietly()  # the points' configs build Keras objects
  points = sweep.points()  # an empty grid or a repeated axis fails here
  steps = check_points(sweep)  # every point, before anything is written
  prepare_runs_dir(_RUNS_DIR.value, sweep)
  print(f'sweep: {len(points)} point(s) in {_RUNS_DIR.value}', file=sys.stderr)
  return LocalBackend(sweep, _RUNS_DIR.value, _DATA_DIR.value,
                      _PARALLEL.value, steps).run()


def main(argv):
  cli.no_positional_arguments('seqmnist.sweep', argv)
  sys.exit(exit_on_error('seqmnist.sweep', _sweep))


if __name__ == '__main__':
  cli.run('seqmnist.sweep', main)
