r"""`python -m seqmnist.tools.sweep`: run a grid of gin bindings (see sweep_grid.py).

  python -m seqmnist.tools.sweep --gin_file=row.gin [--gin_param=...] \
      --sweep="Trainer.seed=0,1,2" --sweep="UNITS=64,128" \
      --runs_dir=DIR [--data_dir=DIR] [--parallel=N] \
      [--backend=local|slurm|kubernetes] [--allow_gin_imports]

The backends are the registry of sweep_backends.py: local processes, a Slurm
job array (submitted), a Kubernetes ConfigMap and Indexed Job (printed for
`kubectl apply -f -`), and any registered by a module a gin file imports.
"""

import sys

from absl import flags

from seqmnist import cli
from seqmnist.errors import UserError, exit_on_error
from seqmnist.tools import sweep_backends
from seqmnist.tools import sweep_cluster
from seqmnist.tools.sweep_grid import parse_axis, prepare_runs_dir
from seqmnist.tools.sweep_grid import Sweep, check_points

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
_ALLOW_GIN_IMPORTS = flags.DEFINE_boolean(
    'allow_gin_imports', False, 'As for seqmnist.main: permit `import` '
    'statements in the gin files and bindings (a cell or dataset registered '
    'in your own module); every point runs with it.')
_BACKEND = flags.DEFINE_string(
    'backend', 'local', 'Where the points run (sweep_backends.py): local '
    'processes, slurm (a job array, submitted), kubernetes (an Indexed Job, '
    'printed on stdout), or a backend a gin file\'s module registers.')
_PARALLEL = flags.DEFINE_integer(
    'parallel', 1, 'Points run at once (slurm: the array\'s %M throttle, '
    'kubernetes: the Job\'s parallelism; 0 there means no limit).')
_SBATCH_ARG = flags.DEFINE_multi_string(
    'sbatch_arg', [], 'slurm: an sbatch option for the array, e.g. '
    '--sbatch_arg=--partition=gpu. Repeatable.')
_SBATCH_SCRIPT = flags.DEFINE_string(
    'sbatch_script', sweep_cluster.SBATCH_SCRIPT, 'slurm: the batch script '
    '(launch/slurm/train.sbatch).')
_K8S_NAME = flags.DEFINE_string(
    'k8s_name', 'seqmnist-sweep', 'kubernetes: the Job\'s name (the '
    'ConfigMap is NAME-points).')


def _sweep() -> int:
  if not _GIN_FILE.value:
    raise UserError('--gin_file is required, e.g. --gin_file=row.gin')
  sweep = Sweep(tuple(_GIN_FILE.value), tuple(_GIN_PARAM.value),
                tuple(parse_axis(text) for text in _SWEEP.value),
                allow_imports=_ALLOW_GIN_IMPORTS.value)
  cli.import_tensorflow_quietly()  # the points' configs build Keras objects
  points = sweep.points()  # an empty grid or a repeated axis fails here
  # Every point, before anything is written (its gin files' imports, which
  # may register a backend, run here).
  steps = check_points(sweep)
  backend = sweep_backends.get(_BACKEND.value)
  least = backend.least_parallel
  if _PARALLEL.value < least:
    raise UserError(f'--parallel={_PARALLEL.value} must be >= {least}' +
                    ('' if least else ' (0: no limit)'))
  options = sweep_backends.Options(
      runs_dir=_RUNS_DIR.value, data_dir=_DATA_DIR.value,
      parallel=_PARALLEL.value, sbatch_args=tuple(_SBATCH_ARG.value),
      sbatch_script=_SBATCH_SCRIPT.value, k8s_name=_K8S_NAME.value)
  backend.check(options)
  if backend.local_runs_dir:
    prepare_runs_dir(_RUNS_DIR.value, sweep)
    print(f'sweep: {len(points)} point(s) in {_RUNS_DIR.value}',
          file=sys.stderr)
  return backend.run(sweep, options, steps)


def main(argv):
  cli.no_positional_arguments('seqmnist.tools.sweep', argv)
  sys.exit(exit_on_error('seqmnist.tools.sweep', _sweep))


if __name__ == '__main__':
  cli.run('seqmnist.tools.sweep', main)
