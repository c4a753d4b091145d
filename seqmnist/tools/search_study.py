"""A search's study: its storage, its identity, and the worker that runs its
trials (the library of `python -m seqmnist.tools.search`).

Each trial is an ordinary run directory, RUNS_DIR/trial-NNNN, trained by a
`seqmnist.tools.search_trial` process (a `seqmnist.main` run that reports
each validation to its trial and stops, saved, when the study prunes it).
The study itself lives in an Optuna storage:

  (default)          sqlite:///RUNS_DIR/study.db, an embedded database file
  journal:PATH       Optuna's journal file, for workers on several nodes
                     sharing a filesystem (no database server)
  DIALECT://...      any SQLAlchemy URL: postgresql://user@host/db, ...

A worker asks the study for trials (a trial left waiting first), runs up to
--parallel of them at once as child processes, and tells the study how each
ended: finished (its best validation accuracy is the trial's value),
pruned, or failed. Nothing is lost:

* SIGTERM or Ctrl-C: the children save at their next step boundary, their
  trials go back to WAITING, and the next worker (rerunning the same
  command) resumes each from its checkpoint -- the same trial, the same run
  dir, the same number.
* A worker killed outright (SIGKILL, a node lost): its children get SIGTERM
  and save (PR_SET_PDEATHSIG); its trials stop receiving the worker's
  heartbeat (a trial attribute written every --heartbeat seconds), and any
  worker of the study puts a trial silent for 3 heartbeats back in WAITING,
  to be resumed. One mechanism for every storage: Optuna's own heartbeat
  exists only for database storages, not for the journal file, and it
  retries a stale trial as a new trial, where this resumes the trial
  itself, counted once.
* Two workers never run one trial: taking a trial (Optuna's ask) is atomic
  in every storage, and a trial's run dir is locked while it trains.
"""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from seqmnist import rundir
from seqmnist.errors import EXIT_PRUNED, UserError, first_line
from seqmnist.tools import search_space
from seqmnist.tools import sweep_grid

SEARCH_FILE = 'search.json'
DATABASE = 'study.db'
LOGS = sweep_grid.LOGS
TRIAL_PREFIX = 'trial-'
HEARTBEAT = 'seqmnist:heartbeat'   # trial system attribute: unix time
WORKER = 'seqmnist:worker'         # host:pid of the worker running it
SAMPLERS = ('tpe', 'random', 'grid')
PRUNERS = ('median', 'hyperband', 'successive_halving', 'none')
RESUMABLE_EXITS = (130, 143)


def run_name(number: int) -> str:
  """The run dir of trial `number` inside the runs dir."""
  return f'{TRIAL_PREFIX}{number:04d}'


@dataclasses.dataclass(frozen=True)
class Search:
  """What identifies a search: its base config and its space."""
  gin_files: Tuple[str, ...]
  gin_params: Tuple[str, ...]
  dims: Tuple[search_space.Dimension, ...]
  # A permission, not what trials train (as for a sweep): not compared.
  allow_imports: bool = False

  def to_json(self) -> dict:
    return {'gin_files': list(self.gin_files),
            'gin_params': list(self.gin_params),
            'space': [d.text for d in self.dims]}

  def distributions(self) -> Dict[str, object]:
    return {d.name: d.distribution() for d in self.dims}

  def bindings(self, params: Dict[str, object]) -> List[str]:
    return [d.binding(params[d.name]) for d in self.dims]


# --- storage ---------------------------------------------------------------


def storage_url(spec: Optional[str], runs_dir: str) -> str:
  """--storage as given, or the default SQLite file in the runs dir."""
  if spec:
    return spec
  return 'sqlite:///' + os.path.abspath(os.path.join(runs_dir, DATABASE))


def redact(url: str) -> str:
  """The URL without its password, for messages and search.json."""
  if '://' not in url or '@' not in url.split('://', 1)[1]:
    return url
  scheme, rest = url.split('://', 1)
  credentials, host = rest.rsplit('@', 1)
  user = credentials.split(':', 1)[0]
  return f'{scheme}://{user}{":***" if ":" in credentials else ""}@{host}'


def check_journal(url: str, runs_dir: str) -> None:
  """Raises UserError unless journal:PATH's folder exists or is the runs
  dir (made next)."""
  folder = os.path.dirname(os.path.abspath(url[len('journal:'):]))
  if url == 'journal:' or not (os.path.isdir(folder) or
                               folder == os.path.abspath(runs_dir)):
    raise UserError(f'--storage={url!r}: the journal file\'s folder '
                    f'{folder} does not exist; give journal:PATH in an '
                    'existing folder every worker sees (or in --runs_dir)')


def open_storage(url: str):
  """The Optuna storage of `url` (journal:PATH or an SQLAlchemy URL).

  Raises:
    UserError: a malformed spec, a journal folder that does not exist, a
      database that cannot be reached or whose driver is not installed.
  """
  import optuna  # pylint: disable=g-import-not-at-top
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  if url.startswith('journal:'):
    path = url[len('journal:'):]
    folder = os.path.dirname(os.path.abspath(path))
    if not path or not os.path.isdir(folder):
      raise UserError(f'--storage={url!r}: the journal file\'s folder '
                      f'{folder} does not exist; give journal:PATH in an '
                      'existing folder every worker sees')
    journal = optuna.storages.journal
    return journal.JournalStorage(journal.JournalFileBackend(
        path, lock_obj=journal.JournalFileOpenLock(path)))
  if '://' not in url:
    raise UserError(f'--storage={url!r} must be journal:PATH or a database '
                    'URL such as sqlite:///study.db or '
                    'postgresql://user@host/dbname')
  engine = {}
  if url.startswith('postgresql'):
    engine = {'connect_args': {'connect_timeout': 10}}
  try:
    return optuna.storages.RDBStorage(url, engine_kwargs=engine)
  except ImportError as e:
    cause = first_line(e.__cause__ or e)
    raise UserError(f'--storage={redact(url)}: its database driver is not '
                    f'installed ({cause}); for PostgreSQL: pip install '
                    '"psycopg[binary]"') from e
  except Exception as e:  # pylint: disable=broad-except
    # SQLAlchemy's errors (no server, bad credentials, no such database)
    # carry the driver's message on their first line.
    raise UserError(f'--storage={redact(url)} cannot be reached: '
                    f'{first_line(e)}') from e


# --- sampler and pruner ----------------------------------------------------


def make_sampler(name: str, seed: Optional[int], startup: int,
                 dims: Sequence[search_space.Dimension]):
  """TPE (its first `startup` trials random), random, or the grid of the
  choices (every dimension a choice)."""
  import optuna  # pylint: disable=g-import-not-at-top
  if name == 'tpe':
    # constant_liar: workers asking at once do not sample the same point.
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup,
                                      constant_liar=True)
  if name == 'random':
    return optuna.samplers.RandomSampler(seed=seed)
  if name == 'grid':
    ranges = [d.text for d in dims if d.kind != 'choice']
    if ranges:
      raise UserError(f'--sampler=grid takes choice(...) dimensions only; '
                      f'--space={ranges[0]!r} is a range')
    return _GridSampler({d.name: list(d.values) for d in dims}, seed=seed)
  raise UserError(f'--sampler={name!r} is not one of {", ".join(SAMPLERS)}')


def _grid_sampler_class():
  import optuna  # pylint: disable=g-import-not-at-top

  class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid, without its stop once every point was tried: that
    stop works only inside `Study.optimize`, and a told trial would stay
    RUNNING; the worker's --trials (the grid's size) ends the study."""

    def after_trial(self, study, trial, state, values):
      del study, trial, state, values

  return GridSampler


def _GridSampler(*args, **kwargs):  # pylint: disable=invalid-name
  return _grid_sampler_class()(*args, **kwargs)


def make_pruner(name: str, startup: int, eval_every: int, steps: int,
                prune_from: int = 2):
  """The pruner, its resources in training steps: a trial reports its
  validation accuracy every `eval_every` steps up to `steps`, and is never
  pruned before its `prune_from`-th validation."""
  first = prune_from * eval_every
  import optuna  # pylint: disable=g-import-not-at-top
  pruners = optuna.pruners
  if name == 'median':
    # The first `startup` trials run to their end; later ones stop at a
    # validation where they are behind the median of the earlier trials at
    # that step, from the `prune_from`-th validation on.
    return pruners.MedianPruner(n_startup_trials=startup,
                                n_warmup_steps=first - 1)
  if name == 'successive_halving':
    return pruners.SuccessiveHalvingPruner(min_resource=first,
                                           reduction_factor=3)
  if name == 'hyperband':
    return pruners.HyperbandPruner(min_resource=first,
                                   max_resource=max(steps, first),
                                   reduction_factor=3)
  if name == 'none':
    return pruners.NopPruner()
  raise UserError(f'--pruner={name!r} is not one of {", ".join(PRUNERS)}')


class TrialLink:
  """A trial as its run sees it (job.Parts.trial, the ReportToTrial
  action): `report(step, accuracy)` records a validation and says whether
  the study prunes the trial."""

  def __init__(self, url: str, study_name: str, number: int, pruner):
    import optuna  # pylint: disable=g-import-not-at-top
    storage = open_storage(url)
    study = optuna.load_study(study_name=study_name, storage=storage,
                              pruner=pruner)
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        study._study_id, number)  # pylint: disable=protected-access
    self._trial = optuna.trial.Trial(study, trial_id)

  def report(self, step: int, accuracy: float) -> bool:
    """Records the validation accuracy at `step`; True: prune the trial."""
    self._trial.report(float(accuracy), int(step))
    return self._trial.should_prune()


# --- the study and its runs dir --------------------------------------------


def identity(search: Search, url: str, study_name: str) -> dict:
  return {**search.to_json(), 'storage': redact(url), 'study_name': study_name}


def check_runs_dir(runs_dir: str, expected: dict) -> bool:
  """True if the runs dir holds this search already, False if it is new or
  empty (nothing written).

  Raises:
    UserError: it holds another search, or files that are not a search's.
  """
  return sweep_grid.check_record(
      runs_dir, SEARCH_FILE, expected, 'search',
      'other gin files, bindings, space, storage or study name')


def create_runs_dir(runs_dir: str, expected: dict) -> None:
  os.makedirs(os.path.join(runs_dir, LOGS), exist_ok=True)
  path = os.path.join(runs_dir, SEARCH_FILE)
  if not os.path.isfile(path):
    rundir.write_json(path, expected)


def open_study(storage, study_name: str, expected: dict, sampler, pruner):
  """Creates the study or loads it; refuses one made by another search."""
  import optuna  # pylint: disable=g-import-not-at-top
  try:
    study = optuna.create_study(storage=storage, study_name=study_name,
                                direction='maximize', sampler=sampler,
                                pruner=pruner, load_if_exists=True)
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f'cannot open the study {study_name!r}: '
                    f'{first_line(e)}') from e
  saved = study.user_attrs.get('seqmnist_search')
  if saved is None:
    study.set_user_attr('seqmnist_search', expected)
  elif saved != expected:
    raise UserError(f'the study {study_name!r} in that storage belongs to '
                    'another search (other gin files, bindings or space); '
                    'give another --study_name')
  return study


# --- the worker ------------------------------------------------------------


@dataclasses.dataclass
class _Running:
  trial: object           # optuna.Trial
  proc: subprocess.Popen
  name: str


class Worker:
  """Runs a study's trials, `parallel` at a time, until it has `trials` in
  all (or `timeout` seconds passed), then waits for the study's other
  running trials (to resume any whose worker dies)."""

  def __init__(self, study, search: Search, *, runs_dir: str, url: str,
               data_dir: Optional[str], trials: int,
               timeout: Optional[float], parallel: int, heartbeat: float,
               trial_flags: Sequence[str], stream=None):
    self._study = study
    self._storage = study._storage  # pylint: disable=protected-access
    self._search = search
    self._runs_dir = runs_dir
    self._url = url
    self._data_dir = data_dir
    self._trials = trials
    self._deadline = time.time() + timeout if timeout else None
    self._parallel = parallel
    self._heartbeat = heartbeat
    self._trial_flags = list(trial_flags)
    self._stream = stream or sys.stderr
    self._me = f'{socket.gethostname()}:{os.getpid()}'
    self._running: List[_Running] = []
    self._stop_signal = None
    self._last_beat = 0.0
    self.failed: List[Tuple[int, str]] = []

  # The loop.

  def run(self) -> int:
    """0: the study's trials are all done; 1: some trial of this worker
    failed; 130 / 143: stopped (the running trials are resumable)."""
    previous = {s: signal.signal(s, self._on_signal)
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
      self._say(self._counts())
      while True:
        self._beat()
        self._reap()
        if self._stop_signal is None:
          self._revive_stale()
          while len(self._running) < self._parallel and self._start_next():
            pass
        if not self._running and (self._stop_signal is not None or
                                  self._done()):
          break
        time.sleep(0.3)
    finally:
      for s, handler in previous.items():
        signal.signal(s, handler)
    if self._stop_signal is not None:
      return 128 + self._stop_signal
    self._say(self._summary())
    if self.failed:
      self._say('search: failed: ' + ', '.join(
          f'trial {n} ({why})' for n, why in self.failed))
      return 1
    return 0

  def _on_signal(self, signum, frame):
    del frame
    if self._stop_signal is not None:
      if signum == signal.SIGINT:  # a second Ctrl-C: stop now
        for r in self._running:
          r.proc.kill()
      return
    self._stop_signal = signum
    self._say(f'search: {signal.Signals(signum).name}: stopping '
              f'{len(self._running)} running trial(s) at their next step '
              'boundary (they save); rerun the same command to resume them')
    for r in self._running:
      r.proc.send_signal(signal.SIGTERM)

  def _say(self, text: str):
    self._stream.write(text + '\n')
    self._stream.flush()

  def _trials_in(self, *states):
    return self._study.get_trials(deepcopy=False, states=states or None)

  def _has_work(self) -> bool:
    """Whether this worker may start a trial: one waiting, or fewer than
    `trials` in the study, before the timeout."""
    from optuna.trial import TrialState  # pylint: disable=g-import-not-at-top
    return self._may_start() and bool(self._trials_in(TrialState.WAITING) or
                                      len(self._trials_in()) < self._trials)

  def _done(self) -> bool:
    """Nothing left to start here, and no other worker's trial to watch."""
    from optuna.trial import TrialState  # pylint: disable=g-import-not-at-top
    if self._has_work():
      return False
    if self._deadline is not None and time.time() >= self._deadline:
      return True
    return not self._trials_in(TrialState.RUNNING)

  def _may_start(self) -> bool:
    return self._deadline is None or time.time() < self._deadline

  def _start_next(self) -> bool:
    if not self._has_work():
      return False
    # A waiting trial first (one stopped earlier): its parameters are in
    # the storage, so it gets the same values again.
    trial = self._study.ask(self._search.distributions())
    name = run_name(trial.number)
    self._storage.set_trial_system_attr(trial._trial_id, WORKER, self._me)  # pylint: disable=protected-access
    self._storage.set_trial_system_attr(trial._trial_id, HEARTBEAT, time.time())  # pylint: disable=protected-access
    trial.set_user_attr('run_dir', name)
    bindings = self._search.bindings(trial.params)
    os.makedirs(os.path.join(self._runs_dir, LOGS), exist_ok=True)
    resumed = os.path.isdir(os.path.join(self._runs_dir, name))
    log = open(os.path.join(self._runs_dir, LOGS, name + '.log'), 'a')
    proc = subprocess.Popen(
        self._command(trial.number, bindings), stdout=log, stderr=log,
        env=sweep_grid.point_environment(self._parallel),
        start_new_session=True,
        preexec_fn=sweep_grid.terminate_with_parent(os.getpid()))
    log.close()
    self._running.append(_Running(trial, proc, name))
    self._say(f'search: trial {trial.number} {"resumed" if resumed else "started"}'
              f' ({", ".join(bindings)}) in {name}')
    return True

  def _command(self, number: int, bindings: Sequence[str]) -> List[str]:
    search = self._search
    command = [sys.executable, '-m', 'seqmnist.tools.search_trial',
               f'--storage={self._url}',
               f'--study_name={self._study.study_name}',
               f'--trial_number={number}', *self._trial_flags,
               *[f'--gin_file={f}' for f in search.gin_files],
               *[f'--gin_param={b}' for b in (*search.gin_params, *bindings)],
               f'--model_dir={os.path.join(self._runs_dir, run_name(number))}']
    if self._data_dir:
      command.append(f'--data_dir={self._data_dir}')
    if search.allow_imports:
      command.append('--allow_gin_imports')
    return command

  def _beat(self):
    now = time.time()
    if now - self._last_beat < self._heartbeat:
      return
    self._last_beat = now
    for r in self._running:
      self._storage.set_trial_system_attr(r.trial._trial_id, HEARTBEAT, now)  # pylint: disable=protected-access

  def _revive_stale(self):
    """Trials whose worker stopped beating go back to WAITING."""
    from optuna.trial import TrialState  # pylint: disable=g-import-not-at-top
    mine = {r.trial.number for r in self._running}
    now = time.time()
    for t in self._trials_in(TrialState.RUNNING):
      if t.number in mine:
        continue
      beat = t.system_attrs.get(HEARTBEAT)
      if beat is None and t.datetime_start is not None:
        beat = t.datetime_start.timestamp()
      if beat is not None and now - beat > 3 * self._heartbeat:
        self._storage.set_trial_state_values(t._trial_id, TrialState.WAITING)  # pylint: disable=protected-access
        self._say(f'search: trial {t.number}: its worker '
                  f'({t.system_attrs.get(WORKER, "?")}) went silent '
                  f'{now - beat:.0f} s ago; back in the queue, to resume '
                  'from its checkpoint')

  def _reap(self):
    for r in list(self._running):
      pid, status, usage = os.wait4(r.proc.pid, os.WNOHANG)
      if pid == 0:
        continue
      r.proc.returncode = code = os.waitstatus_to_exitcode(status)
      if code < 0:
        code = 128 - code
      self._running.remove(r)
      self._finish(r, code, usage.ru_utime + usage.ru_stime)
      self._say(self._counts())

  def _finish(self, r: _Running, code: int, core_seconds: float):
    from optuna.trial import TrialState  # pylint: disable=g-import-not-at-top
    trial, tid = r.trial, r.trial._trial_id  # pylint: disable=protected-access
    frozen = self._storage.get_trial(tid)
    if frozen.state != TrialState.RUNNING:
      # Another worker took it over while this one was silent (the run
      # dir's lock kept the two from training it at once).
      self._say(f'search: trial {trial.number} is {frozen.state.name} '
                'elsewhere now; leaving it')
      return
    trial.set_user_attr('core_seconds', round(
        frozen.user_attrs.get('core_seconds', 0.0) + core_seconds, 1))
    run_dir = rundir.RunDir(os.path.join(self._runs_dir, r.name))
    if code == 0:
      results = run_dir.read_results() or {}
      for key in ('test_accuracy', 'global_step', 'best_step'):
        if key in results:
          trial.set_user_attr(key, results[key])
      self._study.tell(trial, results['best_val_accuracy'])
      self._say(f'search: trial {trial.number} finished: best validation '
                f'{results["best_val_accuracy"]:.4f} (test '
                f'{results.get("test_accuracy", float("nan")):.4f})')
    elif code == EXIT_PRUNED:
      self._study.tell(trial, state=TrialState.PRUNED)
      last = frozen.last_step
      self._say(f'search: trial {trial.number} pruned at step {last}')
    elif code in RESUMABLE_EXITS:
      self._storage.set_trial_state_values(tid, TrialState.WAITING)
      self._say(f'search: trial {trial.number} stopped (exit {code}), '
                'saved; it resumes when the study runs again')
    else:
      why = f'exit {code}: {_last_line(self._log(r.name))}'
      trial.set_user_attr('failure', why)
      self._study.tell(trial, state=TrialState.FAIL)
      self.failed.append((trial.number, why))
      self._say(f'search: trial {trial.number} failed ({why}); see '
                f'{self._log(r.name)}')

  def _log(self, name: str) -> str:
    return os.path.join(self._runs_dir, LOGS, name + '.log')

  def _counts(self) -> str:
    from optuna.trial import TrialState  # pylint: disable=g-import-not-at-top
    states = [t.state for t in self._trials_in()]
    return (f'search: {states.count(TrialState.COMPLETE)} complete, '
            f'{states.count(TrialState.PRUNED)} pruned, '
            f'{states.count(TrialState.FAIL)} failed, '
            f'{states.count(TrialState.RUNNING)} running, '
            f'{states.count(TrialState.WAITING)} waiting, of '
            f'{self._trials} trial(s)')

  def _summary(self) -> str:
    try:
      best = self._study.best_trial
    except ValueError:
      return self._counts() + '; no trial finished'
    return (f'{self._counts()}; best: trial {best.number} '
            f'({", ".join(self._search.bindings(best.params))}), validation '
            f'{best.value:.4f} in {os.path.join(self._runs_dir, run_name(best.number))}'
            f'; report: python -m seqmnist.tools.report {self._runs_dir}')


def _last_line(path: str) -> str:
  try:
    with open(path, errors='replace') as f:
      lines = [l.strip() for l in f if l.strip()]
  except OSError:
    return '?'
  return lines[-1] if lines else '?'


# --- the report ------------------------------------------------------------


def is_study_dir(path: str) -> bool:
  return os.path.isfile(os.path.join(path, SEARCH_FILE))


def report(runs_dir: str) -> str:
  """Markdown: the study's trials (parameters, state, best validation,
  steps reached, core-seconds), its best trial and the parameters'
  importances."""
  import optuna  # pylint: disable=g-import-not-at-top
  with open(os.path.join(runs_dir, SEARCH_FILE)) as f:
    saved = json.load(f)
  url = saved['storage']
  if '***' in url:
    raise UserError(f'{runs_dir}: the study\'s storage needs a password '
                    '(not kept in search.json); open it with '
                    'optuna-dashboard or Optuna directly')
  if url.startswith('sqlite:///') and not os.path.isfile(url[10:]):
    # The runs dir moved: its database goes with it.
    url = 'sqlite:///' + os.path.abspath(os.path.join(runs_dir, DATABASE))
  study = optuna.load_study(study_name=saved['study_name'],
                            storage=open_storage(url))
  dims = search_space.parse_all(saved['space'])
  names = [d.name for d in dims]
  lines = [f'## Study {study.study_name!r} ({runs_dir})', '',
           '| trial | run dir | state | ' + ' | '.join(names) +
           ' | best validation | test | steps reached | core-seconds |',
           '|---' * (len(names) + 7) + '|']
  for t in study.get_trials(deepcopy=False):
    run = rundir.RunDir(os.path.join(runs_dir, run_name(t.number)))
    results = run.read_results() or {}
    step = t.last_step if t.last_step is not None else '-'
    if results.get('global_step') is not None:
      step = results['global_step']
    values = [_cell(t.params.get(n)) for n in names]
    best = max(t.intermediate_values.values(), default=None)
    if t.value is not None:
      best = t.value
    lines.append(
        f'| {t.number} | {run_name(t.number)} | {t.state.name.lower()} | ' +
        ' | '.join(values) + f' | {_cell(best, 4)} | '
        f'{_cell(results.get("test_accuracy"), 4)} | {step} | '
        f'{_cell(t.user_attrs.get("core_seconds"), 0)} |')
  lines.append('')
  try:
    best = study.best_trial
    lines.append(f'Best: trial {best.number} ({run_name(best.number)}), '
                 f'validation {best.value:.4f}: ' + ', '.join(
                     d.binding(best.params[d.name]) for d in dims))
  except ValueError:
    lines.append('Best: no trial has finished yet.')
  lines.append('')
  try:
    importances = optuna.importance.get_param_importances(study)
    lines.append('Importances (fANOVA over the finished trials): ' + ', '.join(
        f'{name} {value:.2f}' for name, value in importances.items()))
  except (ValueError, RuntimeError) as e:
    lines.append(f'Importances: not yet ({first_line(e)})')
  return '\n'.join(lines) + '\n'


def _cell(value, digits=None) -> str:
  if value is None:
    return '-'
  if isinstance(value, float) and digits is not None:
    return f'{value:,.{digits}f}'
  if isinstance(value, float):
    return f'{value:.4g}'
  return str(value)
