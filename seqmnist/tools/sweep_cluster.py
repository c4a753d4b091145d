"""A sweep on a cluster: grid point i as task i of a Slurm job array, or as
completion index i of a Kubernetes Indexed Job.

Both run the existing launchers unchanged in what they do for one run:

* **Slurm** (`SlurmBackend`): DIR/slurm/<i>.args holds point i's
  `seqmnist.main` arguments, one per line; one `sbatch --array=<indices>%M`
  of launch/slurm/train.sbatch runs them, and the script appends the task's
  file to its arguments (SEQMNIST_ARRAY_DIR + SLURM_ARRAY_TASK_ID). Each task
  keeps the script's conventions: SIGTERM saves and requeues that task, task
  logs go to DIR/logs. Only unfinished points are submitted, so resubmitting
  the same sweep continues it. DIR must be on a filesystem the nodes see.
* **Kubernetes** (`render_indexed_job`): a ConfigMap with one key per point
  (`point-<i>`: its arguments, one per line) and an Indexed Job made from
  launch/k8s/job.yaml, completions = points, parallelism = --parallel, every
  pod one single-worker run; the entrypoint appends the key of its
  JOB_COMPLETION_INDEX (SEQMNIST_POINTS_DIR). Paths are as the pods see them
  (DIR on the runs volume). Applying it again continues the sweep: a
  finished run only reports.
"""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from seqmnist import rundir
from seqmnist.errors import UserError, first_line
from seqmnist.tools import sweep_grid

ARRAY_DIR = 'slurm'
K8S_POINTS_MOUNT = '/sweep'
REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SBATCH_SCRIPT = os.path.join(REPO, 'launch', 'slurm', 'train.sbatch')
SEARCH_SCRIPT = os.path.join(REPO, 'launch', 'slurm', 'search.sbatch')
K8S_JOB = os.path.join(REPO, 'launch', 'k8s', 'job.yaml')
# A Kubernetes object name: a DNS-1123 label (the Job's pods add -<index>).
_K8S_NAME = re.compile(r'[a-z0-9]([-a-z0-9]{0,50}[a-z0-9])?')


def point_arguments(sweep: sweep_grid.Sweep, point: sweep_grid.Point,
                    runs_dir: str, data_dir: Optional[str]) -> List[str]:
  """Point's `seqmnist.main` arguments (no interpreter, no module).

  Raises:
    UserError: an argument holds a newline (the files hold one per line).
  """
  args = sweep_grid.main_arguments(sweep, point, runs_dir, data_dir)
  for arg in args:
    if '\n' in arg:
      raise UserError(f'grid point {point.index}: the argument {arg!r} holds a '
                      'newline, which a cluster sweep cannot pass; write the '
                      'value on one line')
  return args


def _absolute(sweep: sweep_grid.Sweep) -> sweep_grid.Sweep:
  """Gin files given as paths made absolute (bare shipped names stay)."""
  return dataclasses.replace(sweep, gin_files=tuple(
      os.path.abspath(f) if os.path.exists(f) else f for f in sweep.gin_files))


def check_slurm(script: str) -> None:
  """Raises UserError unless sbatch and the batch script are there."""
  if not os.path.isfile(script):
    raise UserError(f'the Slurm script {script} is missing; pass '
                    '--sbatch_script=PATH to launch/slurm/train.sbatch')
  if not shutil.which('sbatch'):
    raise UserError('sbatch is not on PATH: the slurm backend runs on a '
                    'Slurm login node (or use --backend=local)')


def sbatch(command: Sequence[str], env) -> Tuple[Optional[str], str]:
  """Runs an `sbatch --parsable` command: (job id, '') or (None, sbatch's
  complaint in one line).

  Raises:
    UserError: sbatch could not be run at all, or hung.
  """
  try:
    result = subprocess.run(command, env=env, capture_output=True, text=True,
                            check=False, timeout=120)
  except (OSError, subprocess.TimeoutExpired) as e:
    raise UserError(f'cannot submit the job array: {first_line(e)}') from e
  if result.returncode != 0:
    return None, (f'sbatch failed (exit {result.returncode}): '
                  f'{first_line(result.stderr.strip() or result.stdout)}')
  return result.stdout.strip().split(';')[0], ''


class SlurmBackend:
  """Submits the unfinished points as one Slurm job array."""

  def __init__(self, sweep: sweep_grid.Sweep, runs_dir: str,
               data_dir: Optional[str], parallel: int, steps: Dict[str, int],
               sbatch_args: Sequence[str] = (), script: str = SBATCH_SCRIPT,
               stream=None):
    self._sweep = sweep
    self._runs_dir = os.path.abspath(runs_dir)
    self._data_dir = os.path.abspath(data_dir) if data_dir else None
    self._parallel = parallel
    self._steps = steps
    self._sbatch_args = tuple(sbatch_args)
    self._script = script
    self._stream = stream or sys.stderr

  def command(self, indices: Sequence[int]) -> List[str]:
    """The sbatch command line of the array of these grid points."""
    array = ','.join(str(i) for i in indices)
    if self._parallel:
      array += f'%{self._parallel}'
    logs = os.path.join(self._runs_dir, sweep_grid.LOGS)
    return ['sbatch', '--parsable', f'--array={array}',
            '--job-name=seqmnist-sweep',
            f'--output={logs}/slurm-%A_%a.out', *self._sbatch_args,
            self._script]

  def run(self) -> int:
    """Writes the points' argument files, submits, returns 0 (or exit 1
    naming sbatch's complaint)."""
    check_slurm(self._script)
    sweep = _absolute(self._sweep)
    points = sweep.points()
    pending = [p for p in points if not sweep_grid.is_finished(
        self._runs_dir, p, self._steps[p.name])]
    if not pending:
      self._say(f'sweep: all {len(points)} point(s) finished; nothing to '
                'submit')
      return 0
    array_dir = os.path.join(self._runs_dir, ARRAY_DIR)
    os.makedirs(array_dir, exist_ok=True)
    os.makedirs(os.path.join(self._runs_dir, sweep_grid.LOGS), exist_ok=True)
    for point in points:
      args = point_arguments(sweep, point, self._runs_dir, self._data_dir)
      rundir.write_atomic(os.path.join(array_dir, f'{point.index}.args'),
                                 '\n'.join(args) + '\n')
    env = dict(os.environ, SEQMNIST_ARRAY_DIR=array_dir,
               SEQMNIST_LOG_DIR=os.path.join(self._runs_dir, sweep_grid.LOGS),
               PYTHON=os.environ.get('PYTHON', sys.executable))
    command = self.command([p.index for p in pending])
    job, failure = sbatch(command, env)
    if failure:
      self._say(f'sweep: {failure}')
      return 1
    self._say(f'sweep: submitted Slurm job array {job} ({len(pending)} of '
              f'{len(points)} point(s), {len(points) - len(pending)} already '
              f'finished); watch: squeue -j {job}; results: python -m '
              f'seqmnist.tools.report {self._runs_dir}')
    print(job)
    return 0

  def _say(self, text):
    self._stream.write(text + '\n')
    self._stream.flush()


def _indexed_job(name: str, completions: int, parallelism: int,
                 template: str) -> dict:
  """launch/k8s/job.yaml made an Indexed Job of independent single-worker
  pods: each index with its own retries, no Service, no cluster env.

  Raises:
    UserError: a bad --k8s_name, or PyYAML missing (to read the template).
  """
  if not _K8S_NAME.fullmatch(name):
    raise UserError(f'--k8s_name={name!r} must be a DNS-1123 label of at '
                    'most 52 characters: lower-case letters, digits and -')
  try:
    import yaml  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise UserError('the kubernetes backend reads launch/k8s/job.yaml with '
                    'PyYAML: pip install "seqmnist[kubernetes]"') from e
  with open(template) as f:
    job = next(d for d in yaml.safe_load_all(f) if d)
  job['metadata'] = {'name': name, 'labels': {'app': name}}
  spec = job['spec']
  spec['completions'] = completions
  spec['parallelism'] = min(parallelism or completions, completions)
  # The points are independent runs: each index has its own retries, and
  # a point that fails for good (bad input, diverged) fails only its index.
  spec['backoffLimitPerIndex'] = spec.pop('backoffLimit')
  for rule in spec['podFailurePolicy']['rules']:
    if rule['action'] == 'FailJob':
      rule['action'] = 'FailIndex'
  spec['template']['metadata']['labels'] = {'app': name}
  pod = spec['template']['spec']
  pod.pop('subdomain', None)  # no Service: pods do not talk to each other
  container = pod['containers'][0]
  container['args'] = []
  container['env'] = [e for e in container['env']
                      if not e['name'].startswith(('SEQMNIST_WORKERS',
                                                   'SEQMNIST_JOB',
                                                   'SEQMNIST_SERVICE',
                                                   'SEQMNIST_PORT'))]
  container.pop('ports', None)
  return job


def render_indexed_job(sweep: sweep_grid.Sweep, runs_dir: str,
                       data_dir: Optional[str], parallel: int,
                       name: str = 'seqmnist-sweep',
                       template: str = K8S_JOB) -> str:
  """A ConfigMap and an Indexed Job (JSON documents in a YAML stream) that
  run the sweep's points, `parallel` at a time.

  Raises:
    UserError: a bad --k8s_name, or PyYAML missing (to read the template).
  """
  points = sweep.points()
  job = _indexed_job(name, len(points), parallel, template)
  config_map = {
      'apiVersion': 'v1', 'kind': 'ConfigMap',
      'metadata': {'name': f'{name}-points', 'labels': {'app': name}},
      'data': {f'point-{p.index}': '\n'.join(
          point_arguments(sweep, p, runs_dir, data_dir)) + '\n'
               for p in points},
  }
  pod = job['spec']['template']['spec']
  container = pod['containers'][0]  # everything is in the point's key
  container['env'].append({'name': 'SEQMNIST_POINTS_DIR',
                           'value': K8S_POINTS_MOUNT})
  container['volumeMounts'].append({'name': 'points',
                                    'mountPath': K8S_POINTS_MOUNT,
                                    'readOnly': True})
  pod['volumes'].append({'name': 'points',
                         'configMap': {'name': f'{name}-points'}})
  header = (f'# seqmnist sweep: {len(points)} point(s) as an Indexed Job; '
            'kubectl apply -f FILE (again to continue; finished runs only '
            'report)\n')
  return header + '\n---\n'.join(
      json.dumps(d, indent=2) for d in (config_map, job)) + '\n'


def render_search_job(arguments: Sequence[str], workers: int,
                      name: str = 'seqmnist-search',
                      template: str = K8S_JOB) -> str:
  """An Indexed Job of `workers` pods, each a worker of one search
  (`python -m seqmnist.tools.search ARGUMENTS`) on a shared storage."""
  job = _indexed_job(name, workers, workers, template)
  container = job['spec']['template']['spec']['containers'][0]
  container['command'] = ['python', '-m', 'seqmnist.tools.search']
  container['args'] = list(arguments)
  return (f'# seqmnist search: {workers} worker(s) of one study as an '
          'Indexed Job; kubectl apply -f FILE\n' +
          json.dumps(job, indent=2) + '\n')


def submit_search_workers(arguments: Sequence[str], runs_dir: str,
                          workers: int, sbatch_args: Sequence[str] = (),
                          script: str = SEARCH_SCRIPT, stream=None) -> int:
  """Submits a job array of `workers` tasks of launch/slurm/search.sbatch,
  each a worker of the search (`seqmnist.tools.search ARGUMENTS`)."""
  stream = stream or sys.stderr
  logs = os.path.join(os.path.abspath(runs_dir), sweep_grid.LOGS)
  os.makedirs(logs, exist_ok=True)
  command = ['sbatch', '--parsable', f'--array=0-{workers - 1}',
             '--job-name=seqmnist-search',
             f'--output={logs}/slurm-search-%A_%a.out', *sbatch_args,
             script, *arguments]
  env = dict(os.environ, PYTHON=os.environ.get('PYTHON', sys.executable),
             SEQMNIST_LOG_DIR=logs)
  job, failure = sbatch(command, env)
  if failure:
    stream.write(f'search: {failure}\n')
    return 1
  stream.write(f'search: submitted Slurm job array {job} ({workers} '
               f'worker(s)); watch: squeue -j {job}; results: python -m '
               f'seqmnist.tools.report {runs_dir}\n')
  print(job)
  return 0
