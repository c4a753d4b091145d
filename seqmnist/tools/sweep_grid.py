r"""Sweeps: a grid of gin bindings, each point its own run (the library of
`python -m seqmnist.tools.sweep`, whose command line is in sweep.py).

  python -m seqmnist.tools.sweep --gin_file=row.gin [--gin_param=...] \
      --sweep="Trainer.seed=0,1,2" --sweep="UNITS=64,128" \
      --runs_dir=DIR [--data_dir=DIR] [--parallel=N]

The grid is the product of the axes, in the order given; each point is a run
directory in DIR named after its bindings (`Trainer.seed=0,UNITS=64`).
DIR/sweep.json records the sweep; rerunning the same sweep skips finished
points and resumes the others, and a different sweep in the same DIR is
refused. The local backend runs each point as a `seqmnist.main` process,
--parallel at a time (logs in DIR/logs/), with one progress line; Ctrl-C or
SIGTERM stops the children the graceful way (they checkpoint) and a rerun
continues. Exit 0 if every point finished, 1 if any failed (listed), 130 or
143 if stopped.

Every point is validated before anything runs or is written: an unknown gin
name or a bad value names the point (exit 2).
"""

import ctypes
import dataclasses
import hashlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import tokenize
from typing import Dict, List, Optional, Sequence, Tuple

from seqmnist import rundir
from seqmnist.config import gin_text
from seqmnist.errors import UserError, first_line

SWEEP_FILE = 'sweep.json'
LOGS = 'logs'
# Held (flock) by the sweep running the points locally: a second sweep on
# the same folder is refused, rather than failing points the first runs.
LOCK = rundir.LOCK


@dataclasses.dataclass(frozen=True)
class Axis:
  name: str            # a binding key, e.g. 'Trainer.seed' or 'UNITS'
  values: Tuple        # parsed gin values


def parse_axis(text: str) -> Axis:
  """'Trainer.seed=0,1,2' -> Axis('Trainer.seed', (0, 1, 2)).

  Values are gin values (numbers, 'strings', [lists], @references,
  %MACROS), comma-separated; a comma inside brackets or quotes belongs to
  its value.

  Raises:
    UserError: no '=', no name, no value, or a value gin cannot parse.
  """
  name, sep, values = text.partition('=')
  name = name.strip()
  if not sep or not re.fullmatch(r'[A-Za-z_][\w./]*', name):
    raise UserError(f'--sweep={text!r} must be NAME=VALUE[,VALUE...], e.g. '
                    '--sweep="Trainer.seed=0,1,2"')
  try:
    statements = list(gin_text.statements(f'_axis = [{values}]'))
  except (SyntaxError, tokenize.TokenError) as e:
    why = e.args[0] if isinstance(e, tokenize.TokenError) else first_line(e)
    raise UserError(f'--sweep={text!r}: the values do not parse as gin '
                    f'values: {why}') from e
  parsed = tuple(statements[0].value)
  if not parsed:
    raise UserError(f'--sweep={text!r} has no values')
  if len({gin_text.text(v) for v in parsed}) != len(parsed):
    raise UserError(f'--sweep={text!r} repeats a value')
  return Axis(name, parsed)


@dataclasses.dataclass(frozen=True)
class Point:
  index: int
  name: str                    # the run dir's name inside the runs dir
  bindings: Tuple[str, ...]    # gin bindings, e.g. ('Trainer.seed=0',)


def _safe(text: str) -> str:
  return re.sub(r'[^A-Za-z0-9._=,+-]', '_', text)


def grid(axes: Sequence[Axis]) -> List[Point]:
  """The product of the axes, first axis outermost, each point named after
  its bindings (filesystem-safe; a short hash only where two would clash)."""
  names = [a.name for a in axes]
  repeated = sorted({n for n in names if names.count(n) > 1})
  if repeated:
    raise UserError(f'--sweep axis {repeated[0]} is given more than once; '
                    'give each binding one --sweep with all its values')
  if not axes:
    raise UserError('give at least one --sweep="NAME=VALUE,..." axis')
  points = []
  for i, values in enumerate(itertools.product(*(a.values for a in axes))):
    bindings = tuple(f'{a.name}={gin_text.text(v)}'
                     for a, v in zip(axes, values))
    readable = ','.join(
        f'{a.name}={gin_text.text(v).strip(chr(39) + chr(34))}'
        for a, v in zip(axes, values))
    points.append(Point(i, _safe(readable)[:200], bindings))
  counts = {}
  for p in points:
    counts[p.name] = counts.get(p.name, 0) + 1
  return [dataclasses.replace(
      p, name=p.name + '-' + hashlib.sha256(
          '\n'.join(p.bindings).encode()).hexdigest()[:8])
          if counts[p.name] > 1 else p for p in points]


@dataclasses.dataclass(frozen=True)
class Sweep:
  """What identifies a sweep: its base config and its axes."""
  gin_files: Tuple[str, ...]
  gin_params: Tuple[str, ...]
  axes: Tuple[Axis, ...]
  # Permits gin `import` statements (seqmnist.main's --allow_gin_imports),
  # passed to every point. A permission, not what the points train: not in
  # sweep.json, so a rerun with or without it continues the same sweep.
  allow_imports: bool = False

  def to_json(self) -> dict:
    return {'gin_files': list(self.gin_files),
            'gin_params': list(self.gin_params),
            'axes': [[a.name, [gin_text.text(v) for v in a.values]]
                     for a in self.axes]}

  def points(self) -> List[Point]:
    return grid(self.axes)


def check_points(sweep: Sweep) -> Dict[str, int]:
  """Parses and builds every point's config; returns {name: Trainer.steps}.

  Raises:
    UserError: naming the first point whose config is bad.
  """
  # pylint: disable=g-import-not-at-top
  from seqmnist import gin_files
  from seqmnist.loop import experiment
  steps = {}
  for point in sweep.points():
    try:
      gin_files.parse(sweep.gin_files, [*sweep.gin_params, *point.bindings],
                      allow_imports=sweep.allow_imports)
      steps[point.name] = experiment.Configs.from_gin().trainer.steps
    except UserError as e:
      raise UserError(f'grid point {point.index} ({", ".join(point.bindings)})'
                      f': {first_line(e)}') from e
  return steps


def check_record(runs_dir: str, record: str, expected: dict, kind: str,
                 what: str) -> bool:
  """Whether DIR holds this sweep or search already (its `record` file,
  sweep.json or search.json, equals `expected`); False if DIR is new or
  empty. Nothing is written.

  Raises:
    UserError: DIR holds another `kind` (its record differs in `what`), or
      files that are not a `kind`'s.
  """
  if not runs_dir:
    raise UserError(f'--runs_dir is required: the folder of the {kind}\'s '
                    'runs')
  path = os.path.join(runs_dir, record)
  if os.path.isfile(path):
    try:
      with open(path) as f:
        saved = json.load(f)
    except ValueError:
      saved = None
    if saved != expected:
      raise UserError(
          f'--runs_dir={runs_dir} holds another {kind} ({record} differs: '
          f'{what}); give another folder, or the same command as before to '
          'continue that one')
    return True
  if os.path.exists(runs_dir) and (not os.path.isdir(runs_dir) or
                                   os.listdir(runs_dir)):
    raise UserError(f'--runs_dir={runs_dir} exists and is not a {kind}\'s '
                    f'folder (no {record}); give a new or empty folder')
  rundir.RunDir(runs_dir, flag='--runs_dir').check_usable()
  return False


def prepare_runs_dir(runs_dir: str, sweep: Sweep) -> None:
  """Creates DIR with sweep.json, or checks an existing one holds this sweep.

  Raises:
    UserError: DIR holds another sweep, or files that are not a sweep's.
  """
  if check_record(runs_dir, SWEEP_FILE, sweep.to_json(), 'sweep',
                  'other gin files, bindings or axes'):
    return
  os.makedirs(runs_dir, exist_ok=True)
  rundir.write_json(os.path.join(runs_dir, SWEEP_FILE), sweep.to_json())


def is_finished(runs_dir: str, point: Point, steps: int) -> bool:
  return rundir.RunDir(os.path.join(runs_dir, point.name)).is_finished(steps)


def main_arguments(sweep: Sweep, point: Point, runs_dir: str,
                   data_dir: Optional[str]) -> List[str]:
  """The `seqmnist.main` arguments of one point."""
  arguments = [*[f'--gin_file={f}' for f in sweep.gin_files],
               *[f'--gin_param={b}' for b in (*sweep.gin_params,
                                               *point.bindings)],
               f'--model_dir={os.path.join(runs_dir, point.name)}']
  if data_dir:
    arguments.append(f'--data_dir={data_dir}')
  if sweep.allow_imports:
    arguments.append('--allow_gin_imports')
  return arguments


def terminate_with_parent(parent: int):
  """A preexec_fn: the child gets SIGTERM when its parent dies (Linux's
  PR_SET_PDEATHSIG), including when the parent died before it was set."""
  def arrange():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:
      os.kill(os.getpid(), signal.SIGTERM)
  return arrange


def main_command(sweep: Sweep, point: Point, runs_dir: str,
                 data_dir: Optional[str]) -> List[str]:
  """The `seqmnist.main` command line of one point."""
  return [sys.executable, '-m', 'seqmnist.main',
          *main_arguments(sweep, point, runs_dir, data_dir)]


def point_environment(parallel: int, environ=None,
                      cpus: Optional[int] = None) -> Dict[str, str]:
  """The environment of a point's process when `parallel` run at once: the
  CPUs shared out, TF_NUM_INTRAOP_THREADS and TF_NUM_INTEROP_THREADS each
  CPUs // parallel (at least 1) unless set already. Two pixel runs of one
  thread each train 1.44x the examples/s of one run of two threads on a
  2-core CPU (docs/search/run.sh), and 'auto' picks the fused op at one
  thread."""
  env = dict(os.environ if environ is None else environ,
             TF_CPP_MIN_LOG_LEVEL='2')
  if parallel > 1:
    cpus = cpus or len(os.sched_getaffinity(0))
    share = str(max(1, cpus // parallel))
    env.setdefault('TF_NUM_INTRAOP_THREADS', share)
    env.setdefault('TF_NUM_INTEROP_THREADS', share)
  return env


class LocalBackend:
  """Runs the points as `seqmnist.main` processes, `parallel` at a time."""

  def __init__(self, sweep: Sweep, runs_dir: str, data_dir: Optional[str],
               parallel: int, steps: Dict[str, int], stream=None):
    self._sweep = sweep
    self._runs_dir = runs_dir
    self._data_dir = data_dir
    self._parallel = parallel
    self._steps = steps
    self._stream = stream or sys.stderr
    self._stop_signal = None
    self._running = {}  # Popen -> (point, start time)
    self.done, self.failed, self.skipped = [], [], []
    self._durations = []

  def _on_signal(self, signum, frame):
    del frame
    if self._stop_signal is not None and signum == signal.SIGINT:
      for proc in self._running:  # a second Ctrl-C: stop now
        proc.kill()
      return
    if self._stop_signal is None:
      self._stop_signal = signum
      self._say(f'sweep: {signal.Signals(signum).name}: stopping the '
                f'{len(self._running)} running point(s) gracefully (they '
                'save a checkpoint); rerun the same command to continue')
      for proc in self._running:
        proc.send_signal(signal.SIGTERM)

  def _say(self, text):
    self._stream.write(text + '\n')
    self._stream.flush()

  def _progress(self, left):
    eta = ''
    if self._durations and (left or self._running):
      mean = sum(self._durations) / len(self._durations)
      waves = -(-(left + len(self._running)) // self._parallel)
      eta = f'; ETA {_clock(mean * waves)}'
    self._say(f'sweep: {len(self.done) + len(self.skipped)} done, '
              f'{len(self._running)} running, {len(self.failed)} failed, '
              f'{left} left{eta}')

  def _start(self, point):
    logs = os.path.join(self._runs_dir, LOGS)
    os.makedirs(logs, exist_ok=True)
    log = open(os.path.join(logs, point.name + '.log'), 'a')
    env = point_environment(self._parallel)
    # Its own session: a Ctrl-C at the terminal reaches the sweep, which
    # forwards a SIGTERM, not every child at once. And if the sweep dies
    # without forwarding anything (SIGKILL), the child gets a SIGTERM: it
    # saves and stops, rather than train on unwatched.
    proc = subprocess.Popen(
        main_command(self._sweep, point, self._runs_dir, self._data_dir),
        stdout=log, stderr=log, env=env, start_new_session=True,
        preexec_fn=terminate_with_parent(os.getpid()))
    log.close()
    self._running[proc] = (point, time.time())

  def run(self) -> int:
    """Returns the sweep's exit code: 0 all finished, 1 some failed, 130 or
    143 stopped by Ctrl-C or SIGTERM."""
    lock = rundir.take_lock(os.path.join(self._runs_dir, LOCK),
                            f'--runs_dir={self._runs_dir}')
    try:
      return self._run()
    finally:
      os.close(lock)

  def _run(self) -> int:
    pending = []
    for point in self._sweep.points():
      if is_finished(self._runs_dir, point, self._steps[point.name]):
        self.skipped.append(point)
      else:
        pending.append(point)
    previous = {s: signal.signal(s, self._on_signal)
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
      self._progress(len(pending))
      while pending or self._running:
        while (pending and len(self._running) < self._parallel and
               self._stop_signal is None):
          self._start(pending.pop(0))
          self._progress(len(pending))
        time.sleep(0.2)
        for proc in [p for p in self._running if p.poll() is not None]:
          point, started = self._running.pop(proc)
          code = proc.returncode
          if code == 0:
            self.done.append(point)
            self._durations.append(time.time() - started)
          elif self._stop_signal is None:
            self.failed.append((point, code))
            self._say(f'sweep: point {point.name} failed (exit {code}); see '
                      f'{os.path.join(self._runs_dir, LOGS, point.name)}.log')
          self._progress(len(pending))
        if self._stop_signal is not None and not self._running:
          break
    finally:
      for s, handler in previous.items():
        signal.signal(s, handler)
    if self._stop_signal is not None:
      return 128 + self._stop_signal
    if self.failed:
      self._say('sweep: failed: ' + ', '.join(
          f'{p.name} (exit {c})' for p, c in self.failed))
      return 1
    return 0


def _clock(seconds: float) -> str:
  seconds = int(round(seconds))
  h, rest = divmod(seconds, 3600)
  m, s = divmod(rest, 60)
  return f'{h}:{m:02d}:{s:02d}'
