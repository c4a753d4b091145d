r"""`python -m seqmnist.tools.search`: an Optuna study that samples gin
bindings and prunes the trials that fall behind (search_study.py).

  python -m seqmnist.tools.search --gin_file=row.gin \
      --space="LEARNING_RATE=loguniform(1e-4, 3e-3)" \
      --space="Model.output_dropout=uniform(0, 0.5)" \
      --trials=20 --runs_dir=runs/search [--data_dir=DIR] \
      [--sampler=tpe|random|grid] [--pruner=median|hyperband|
      successive_halving|none] [--seed=0] [--timeout=SECONDS] \
      [--parallel=N] [--storage=journal:PATH|URL] [--study_name=NAME] \
      [--backend=local|slurm|kubernetes --workers=W]

Each trial is a run dir RUNS_DIR/trial-NNNN that report, curves, export and
release read as any other; the study's value is a trial's best validation
accuracy. Rerunning the same command continues the study: trials left
waiting (stopped, or their worker lost) resume from their checkpoints,
then new trials start until there are --trials. `seqmnist-report RUNS_DIR`
prints the trials, the best and the parameters' importances;
`optuna-dashboard STORAGE` shows the study in a browser.

With --backend=slurm (or kubernetes) the command submits (or prints) W
workers of this same study, each one this command with --backend=local, on
a storage every node reaches: journal:PATH on a shared filesystem, or a
database URL.

Everything is checked before anything is written: the space (each end of
each range, each choice, through the validators a run uses), the sampler,
pruner and backend, and the storage (reached, for a URL). Bad input exits 2
with one line.
"""

import os
import sys
from typing import List

from absl import flags

from seqmnist import cli
from seqmnist.errors import UserError, exit_on_error
from seqmnist.tools import search_space
from seqmnist.tools import search_study
from seqmnist.tools import sweep_backends

_GIN_FILE = flags.DEFINE_multi_string(
    'gin_file', [], 'Gin config file(s) of every trial (see seqmnist.main).')
_GIN_PARAM = flags.DEFINE_multi_string(
    'gin_param', [], 'Gin binding(s) of every trial, before the sampled ones.')
_SPACE = flags.DEFINE_multi_string(
    'space', [], 'A dimension: NAME=uniform(LOW, HIGH), loguniform(LOW, '
    'HIGH), int(LOW, HIGH), logint(LOW, HIGH) or choice(V1, V2, ...) (gin '
    'values). Repeatable.')
_SPACE_FILE = flags.DEFINE_string(
    'space_file', None, 'A file of dimensions, one per line (# comments), '
    'besides any --space.')
_RUNS_DIR = flags.DEFINE_string(
    'runs_dir', None, 'The folder of the study: a run dir per trial, logs/, '
    'search.json, and study.db by default. Rerunning continues.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'As for seqmnist.main.')
_TRIALS = flags.DEFINE_integer(
    'trials', None, 'Trials in the study in all (default: the grid\'s size '
    'for --sampler=grid, else 20).')
_TIMEOUT = flags.DEFINE_float(
    'timeout', None, 'Seconds after which this worker starts no new trial '
    '(running ones finish).')
_SAMPLER = flags.DEFINE_enum(
    'sampler', 'tpe', search_study.SAMPLERS, 'How trials are sampled.')
_PRUNER = flags.DEFINE_enum(
    'pruner', 'median', search_study.PRUNERS, 'How trials are stopped at a '
    'validation: behind the median of earlier trials at that step, by '
    'successive halving, by Hyperband, or never.')
_STARTUP_TRIALS = flags.DEFINE_integer(
    'startup_trials', 5, 'TPE samples the first N trials at random, and the '
    'median pruner lets N trials finish before it prunes any.')
_PRUNE_FROM = flags.DEFINE_integer(
    'prune_from', 2, 'No trial is pruned before its N-th validation (the '
    'early ones are noisy; a short schedule may want a later start).')
_SEED = flags.DEFINE_integer('seed', 0, 'The sampler\'s seed.')
_STORAGE = flags.DEFINE_string(
    'storage', None, 'Where the study lives: journal:PATH (a file on a '
    'filesystem every worker sees) or an SQLAlchemy URL '
    '(postgresql://user@host/db); default sqlite:///RUNS_DIR/study.db.')
_STUDY_NAME = flags.DEFINE_string(
    'study_name', None, 'The study\'s name in the storage (default: the '
    'runs dir\'s name).')
_PARALLEL = flags.DEFINE_integer(
    'parallel', 1, 'Trials this worker runs at once, each on its share of '
    'the CPUs.')
_HEARTBEAT = flags.DEFINE_float(
    'heartbeat', 60.0, 'Seconds between a worker\'s heartbeats on its '
    'trials; a trial silent for 3 is taken over by another worker.')
_ALLOW_GIN_IMPORTS = flags.DEFINE_boolean(
    'allow_gin_imports', False, 'As for seqmnist.main.')
_BACKEND = flags.DEFINE_string(
    'backend', 'local', 'Where the workers run: local (this process), slurm '
    '(a job array of --workers tasks, submitted), kubernetes (an Indexed '
    'Job of --workers pods, printed on stdout).')
_WORKERS = flags.DEFINE_integer(
    'workers', 1, 'slurm, kubernetes: workers of the study started at once.')
_SBATCH_ARG = flags.DEFINE_multi_string(
    'sbatch_arg', [], 'slurm: an sbatch option for the array. Repeatable.')
_K8S_NAME = flags.DEFINE_string(
    'k8s_name', 'seqmnist-search', 'kubernetes: the Job\'s name.')


def _study_name(runs_dir) -> str:
  """--study_name, or the runs dir's own name."""
  return _STUDY_NAME.value or os.path.basename(
      os.path.abspath(runs_dir or '.'))


def _positive(flag, value):
  if value is not None and value <= 0:
    raise UserError(f'--{flag}={value} must be positive')


def _search() -> int:
  if not _GIN_FILE.value:
    raise UserError('--gin_file is required, e.g. --gin_file=row.gin')
  specs = list(_SPACE.value)
  if _SPACE_FILE.value:
    specs += search_space.read_file(_SPACE_FILE.value)
  dims = search_space.parse_all(specs)
  for flag, value in (('trials', _TRIALS.value), ('timeout', _TIMEOUT.value),
                      ('parallel', _PARALLEL.value),
                      ('heartbeat', _HEARTBEAT.value),
                      ('workers', _WORKERS.value)):
    _positive(flag, value)
  if _PRUNE_FROM.value < 1:
    raise UserError(f'--prune_from={_PRUNE_FROM.value} must be >= 1 (the '
                    'first validation)')
  if _STARTUP_TRIALS.value < 0:
    raise UserError(f'--startup_trials={_STARTUP_TRIALS.value} must be >= 0')
  search = search_study.Search(tuple(_GIN_FILE.value), tuple(_GIN_PARAM.value),
                               dims, allow_imports=_ALLOW_GIN_IMPORTS.value)
  cli.import_tensorflow_quietly()  # the trials' configs build Keras objects
  trainer = search_space.check(dims, search.gin_files, search.gin_params,
                               search.allow_imports)
  sampler = search_study.make_sampler(_SAMPLER.value, _SEED.value,
                                      _STARTUP_TRIALS.value, dims)
  pruner = search_study.make_pruner(_PRUNER.value, _STARTUP_TRIALS.value,
                                    trainer['eval_every'], trainer['steps'],
                                    _PRUNE_FROM.value)
  trials = _TRIALS.value
  if trials is None:
    trials = 20
    if _SAMPLER.value == 'grid':
      trials = 1
      for dim in dims:
        trials *= len(dim.values)
  backend = sweep_backends.get(_BACKEND.value)
  runs_dir = _RUNS_DIR.value
  if backend.name != 'local':
    _check_remote(backend, runs_dir)
    if not backend.local_runs_dir:  # paths as the platform sees them
      return backend.start_workers(_worker_arguments(runs_dir, trials),
                                   _options(runs_dir))
  url = search_study.storage_url(_STORAGE.value, runs_dir or '.')
  study_name = _study_name(runs_dir)
  expected = search_study.identity(search, url, study_name)
  exists = search_study.check_runs_dir(runs_dir, expected)
  # A database is reached before the runs dir is written; a journal file
  # (or the default SQLite file) may live in the runs dir, made first.
  if url.startswith('journal:'):
    search_study.check_journal(url, runs_dir)
  remote = not (url.startswith('journal:') or url == search_study.storage_url(
      None, runs_dir))
  storage = search_study.open_storage(url) if remote else None
  search_study.create_runs_dir(runs_dir, expected)
  storage = storage or search_study.open_storage(url)
  study = search_study.open_study(storage, study_name, expected, sampler,
                                  pruner)
  if backend.name != 'local':  # the study is ready: its workers load it
    return backend.start_workers(_worker_arguments(runs_dir, trials),
                                 _options(runs_dir))
  print(f'search: study {study_name!r} ({_SAMPLER.value} sampler, '
        f'{_PRUNER.value} pruner) in {runs_dir}'
        f'{" (continued)" if exists else ""}; storage '
        f'{search_study.redact(url)}', file=sys.stderr)
  trial_flags = [f'--pruner={_PRUNER.value}',
                 f'--startup_trials={_STARTUP_TRIALS.value}',
                 f'--eval_every={trainer["eval_every"]}',
                 f'--steps={trainer["steps"]}',
                 f'--prune_from={_PRUNE_FROM.value}']
  return search_study.Worker(
      study, search, runs_dir=runs_dir, url=url, data_dir=_DATA_DIR.value,
      trials=trials, timeout=_TIMEOUT.value, parallel=_PARALLEL.value,
      heartbeat=_HEARTBEAT.value, trial_flags=trial_flags).run()


def _worker_arguments(runs_dir: str, trials: int) -> List[str]:
  """This command's flags for a worker of the study (--backend=local)."""
  args = [*[f'--gin_file={f}' for f in _GIN_FILE.value],
          *[f'--gin_param={b}' for b in _GIN_PARAM.value],
          *[f'--space={s}' for s in _SPACE.value]]
  if _SPACE_FILE.value:
    args.append(f'--space_file={os.path.abspath(_SPACE_FILE.value)}')
  args += [f'--runs_dir={runs_dir}', f'--trials={trials}',
           f'--sampler={_SAMPLER.value}', f'--pruner={_PRUNER.value}',
           f'--startup_trials={_STARTUP_TRIALS.value}',
           f'--prune_from={_PRUNE_FROM.value}', f'--seed={_SEED.value}',
           f'--storage={_STORAGE.value}',
           f'--study_name={_study_name(runs_dir)}',
           f'--parallel={_PARALLEL.value}', f'--heartbeat={_HEARTBEAT.value}',
           '--backend=local']
  if _TIMEOUT.value:
    args.append(f'--timeout={_TIMEOUT.value}')
  if _DATA_DIR.value:
    args.append(f'--data_dir={_DATA_DIR.value}')
  if _ALLOW_GIN_IMPORTS.value:
    args.append('--allow_gin_imports')
  return args


def _options(runs_dir):
  return sweep_backends.Options(
      runs_dir=runs_dir, data_dir=_DATA_DIR.value, parallel=_WORKERS.value,
      sbatch_args=tuple(_SBATCH_ARG.value), k8s_name=_K8S_NAME.value)


def _check_remote(backend, runs_dir) -> None:
  """Whether --workers of this study can run on `backend`."""
  if backend.start_workers is None:
    raise UserError(f'--backend={backend.name} cannot run a search\'s '
                    'workers; use local, slurm or kubernetes')
  if not _STORAGE.value or _STORAGE.value.startswith('sqlite'):
    raise UserError(f'--backend={backend.name} needs a --storage every '
                    'worker reaches at once: journal:PATH on a shared '
                    'filesystem, or a database server\'s URL')
  backend.check(_options(runs_dir))


def main(argv):
  cli.no_positional_arguments('seqmnist.tools.search', argv)
  sys.exit(exit_on_error('seqmnist.tools.search', _search))


if __name__ == '__main__':
  cli.run('seqmnist.tools.search', main)
