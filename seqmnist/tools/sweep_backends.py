"""Where a sweep's points run: the registry of sweep backends (`--backend`).

Each entry holds everything about its platform: the least `--parallel` it
takes, the check made before anything is written (say, that `sbatch` is
there), and how it runs the checked points. `seqmnist.tools.sweep` only
looks the backend up; a new platform is one `register(Backend(...))`, here
or in your own module imported by a gin file (with `--allow_gin_imports`,
as a new cell is): BUILD.md, "Extending", and
tests/test_extending.py::test_a_new_sweep_backend_is_one_file_and_runs_a_sweep.

  local       one `seqmnist.main` process per point, --parallel at a time,
              each on its share of the CPUs (sweep_grid.LocalBackend)
  slurm       one job array submitted with sbatch (sweep_cluster.py,
              launch/slurm/train.sbatch)
  kubernetes  a ConfigMap and an Indexed Job printed for `kubectl apply -f -`
              (sweep_cluster.py, launch/k8s/job.yaml); nothing local
"""

import dataclasses
import sys
from typing import Callable, Dict, Optional, Sequence

from seqmnist import registry
from seqmnist.errors import UserError
from seqmnist.tools import sweep_cluster
from seqmnist.tools import sweep_grid


@dataclasses.dataclass(frozen=True)
class Options:
  """The sweep command's flags a backend may use."""
  runs_dir: Optional[str]
  data_dir: Optional[str]
  parallel: int
  sbatch_args: Sequence[str] = ()
  sbatch_script: str = sweep_cluster.SBATCH_SCRIPT
  k8s_name: str = 'seqmnist-sweep'


@dataclasses.dataclass(frozen=True)
class Backend:
  """A platform a sweep's points run on.

  Attributes:
    name: its `--backend` value.
    run: (sweep, options, steps of each point) -> the sweep's exit code;
      called after every point was checked and, when `local_runs_dir`, after
      the runs dir was prepared.
    least_parallel: the smallest `--parallel` it takes (0: no limit).
    check: (options) -> None, raising UserError when the platform cannot be
      used; before anything is written.
    local_runs_dir: whether `--runs_dir` is a folder of this machine that
      the sweep prepares (False: a path on the platform, only rendered).
    start_workers: (arguments, options) -> exit code: starts
      `options.parallel` workers of a search (`seqmnist.tools.search` with
      these arguments) on the platform; None if it cannot.
  """
  name: str
  run: Callable[[sweep_grid.Sweep, Options, Dict[str, int]], int]
  least_parallel: int = 1
  check: Callable[[Options], None] = lambda options: None
  local_runs_dir: bool = True
  start_workers: Optional[Callable[[Sequence[str], Options], int]] = None


BACKENDS = registry.Registry(
    '--backend', 'a backend is registered by sweep_backends.register, see '
    'BUILD.md "Extending"')
register = BACKENDS.register


def get(name: str) -> Backend:
  """The backend `name`; a UserError naming the registered ones if none."""
  return BACKENDS.get(name)


def _local(sweep, options, steps):
  return sweep_grid.LocalBackend(sweep, options.runs_dir, options.data_dir,
                                 options.parallel, steps).run()


def _slurm(sweep, options, steps):
  return sweep_cluster.SlurmBackend(
      sweep, options.runs_dir, options.data_dir, options.parallel, steps,
      sbatch_args=options.sbatch_args, script=options.sbatch_script).run()


def _kubernetes(sweep, options, steps):
  del steps
  sys.stdout.write(sweep_cluster.render_indexed_job(
      sweep, options.runs_dir, options.data_dir, options.parallel,
      name=options.k8s_name))
  return 0


def _pods_runs_dir(options):
  if not options.runs_dir:
    raise UserError('--runs_dir is required: the sweep\'s folder as the '
                    'pods see it, e.g. /runs/sweep')


def _search_on_slurm(arguments, options):
  return sweep_cluster.submit_search_workers(
      arguments, options.runs_dir, options.parallel, options.sbatch_args)


def _search_on_kubernetes(arguments, options):
  sys.stdout.write(sweep_cluster.render_search_job(
      arguments, options.parallel, name=options.k8s_name))
  return 0


LOCAL = register(Backend('local', _local))
SLURM = register(Backend(
    'slurm', _slurm, least_parallel=0,
    check=lambda options: sweep_cluster.check_slurm(options.sbatch_script),
    start_workers=_search_on_slurm))
KUBERNETES = register(Backend('kubernetes', _kubernetes, least_parallel=0,
                              check=_pods_runs_dir, local_runs_dir=False,
                              start_workers=_search_on_kubernetes))
