"""The whole job behind `python -m seqmnist.main`: train, validate, test.

`train_and_evaluate` builds the experiment from gin (experiment.py), takes
the run directory (rundir.py), resumes from its newest intact checkpoint,
trains to `Trainer.steps` through the controller and its actions, then
evaluates the best-validation checkpoint on the test set and writes
results.json. A finished run only reports its results (recomputing them
from the best checkpoint if results.json was lost or damaged).
"""

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from typing import List, Optional, Sequence

from absl import logging
import gin

from seqmnist import rundir as rundir_lib
from seqmnist.cluster import distribute
from seqmnist.cluster import preemption
from seqmnist.config import drift
from seqmnist.data import pipeline
from seqmnist.errors import ConfigError
from seqmnist.loop import checkpoints as checkpoints_lib
from seqmnist.loop import dashboard as dashboard_lib
from seqmnist.loop import evaluator as evaluator_lib
from seqmnist.loop import experiment as experiment_lib
from seqmnist.loop import outer_loop
from seqmnist.loop import progress
from seqmnist.loop import summaries as summaries_lib
from seqmnist.loop import trainer as trainer_lib
from seqmnist.loop.actions.validate import Validate
from seqmnist.model import fused
from seqmnist.model import network

# The package whose modules define the job's actions (outer_loop.discover).
ACTIONS = 'seqmnist.loop.actions'


@dataclasses.dataclass(frozen=True)
class Parts:
  """What a job offers its actions to be built from (`Action.build`).

  Attributes:
    trainer_config: the run's `Trainer` settings (cadences, target step).
    evaluator: evaluator.Evaluator, exact passes over a split.
    validation_split: the split validation measures.
    summaries: summaries.Summaries, the run's event writers.
    checkpoints: checkpoints.RunCheckpoints, rolling and best.
    dashboard: dashboard.Dashboard on the chief, else None.
    average: optim.averaging.WeightAverage, or None without one.
    progress: progress.ProgressLine, the terminal's progress line.
    window: progress.MetricWindow, the train metrics since the last summary.
    optimizer: the Keras optimizer.
    variables: the model's trainable variables.
    signals: preemption.StopSignals, SIGTERM / Ctrl-C agreed by all workers.
    strategy: the tf.distribute strategy.
    trial: a search's trial (`report(step, accuracy) -> prune?`), or None
      for a run outside a search.
  """
  trainer_config: object
  evaluator: object
  validation_split: object
  summaries: object
  checkpoints: object
  dashboard: object
  average: object
  progress: object
  window: object
  optimizer: object
  variables: Sequence[object]
  signals: object
  strategy: object
  trial: object = None


class Results(dict):
  """results.json's contents, and whether this command trained: `untrained`
  says why it trained no step ('' when it trained, or only tested)."""
  untrained = ''


def _untrained(results: dict, step: int, target: int) -> Results:
  out = Results(results)
  out.untrained = f'the run finished at step {step}' + (
      f', past Trainer.steps={target}, and a run never goes back'
      if step > target else '')
  return out


def train_and_evaluate(model_dir: str, data_dir: Optional[str],
                       trial=None) -> dict:
  """Runs (or resumes, or reports) the configured experiment.

  Args:
    model_dir: the run directory (see rundir.py).
    data_dir: where data lives (see pipeline.load), or None for TFDS's default.
    trial: the run is this trial of a search (tools/search_trial.py), which
      its validations report to and which its study may prune; None: a run.

  Returns:
    The contents of results.json (a `Results`: `untrained` says why nothing
    was trained, when nothing was).
  """
  # Every input is validated before anything is written.
  configs = experiment_lib.Configs.from_gin()
  run_dir = rundir_lib.RunDir(model_dir)
  run_dir.check_usable()
  if (network.uses_fused(configs.model, configs.data.sequence_shape[0]) and
      not configs.trainer.jit_compile):
    fused.hand_threads_to_onednn()
  strategy = distribute.make_strategy(configs.distribute)
  configs.check_with(strategy)
  _check_memory(configs, distribute.num_workers(strategy))
  operative_config = gin.operative_config_str()
  _check_resumable(run_dir, operative_config)
  splits = pipeline.load(configs.data, data_dir)
  for name, split in (('validation', splits.validation),
                      ('test', splits.test)):
    logging.info('%s split: %d images', name, len(split))
  experiment = experiment_lib.build(configs, strategy, splits)

  is_chief = distribute.is_chief(strategy)
  with _write_dir(is_chief, strategy) as write_dir:
    if is_chief:
      run_dir.create()
      run_dir.lock()
    try:
      return _Job(experiment, run_dir, write_dir, is_chief,
                  operative_config, trial).run()
    finally:
      run_dir.unlock()


def resume_bindings(model_dir: Optional[str]) -> List[str]:
  """Bindings that keep a run made by an earlier seqmnist as it ran, for
  `gin_files.parse(run_defaults=...)`: [] for a new run."""
  if not model_dir:
    return []
  run_dir = rundir_lib.RunDir(model_dir)
  run_dir.check_no_links()  # before reading anything through one
  if not (run_dir.is_run_dir() and checkpoints_lib.any_exist(run_dir)):
    return []
  saved = run_dir.read_operative_config()
  if saved is None:
    return []
  return drift.earlier_defaults(saved, experiment_lib.ADDED_LATER,
                                run_dir.operative_config)


def _available_memory() -> Optional[int]:
  """MemAvailable of /proc/meminfo in bytes (Linux), else None."""
  try:
    with open('/proc/meminfo') as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  return None


def _check_memory(configs, workers):
  """Refuses a config whose estimated memory exceeds what is available."""
  need, have = configs.memory_bytes(workers), _available_memory()
  if have is not None and need > have:
    raise ConfigError(
        f'this config needs about {need / 2**30:,.1f} GiB of memory per '
        f'process (Model.units={configs.model.units}, Model.layers='
        f'{configs.model.layers}, Data.batch_size={configs.data.batch_size}, '
        f'{configs.data.sequence_shape[0]} steps) and this machine has '
        f'{have / 2**30:,.1f} GiB available; lower one of them')


def _check_resumable(run_dir, operative_config):
  """Refuses to resume a run under a config its checkpoints do not belong to."""
  saved = run_dir.read_operative_config()
  if saved is not None and checkpoints_lib.any_exist(run_dir):
    drift.check(saved, operative_config, run_dir.operative_config,
                experiment_lib.ADDED_LATER)


@contextlib.contextmanager
def _write_dir(is_chief, strategy):
  """None on the chief; elsewhere a private temporary run dir, since every
  worker must take part in a save but only the chief's files persist."""
  if is_chief:
    yield None
    return
  _remove_abandoned_write_dirs()
  path = tempfile.mkdtemp(
      prefix=f'{WRITE_DIR_PREFIX}{os.getpid()}-'
      f'{distribute.worker_id(strategy)}-')
  try:
    yield rundir_lib.RunDir(path)
  finally:
    shutil.rmtree(path, ignore_errors=True)


# A non-chief worker's private run dir in the system's temporary folder:
# PREFIX<pid>-<worker>-<random>.
WRITE_DIR_PREFIX = 'seqmnist-worker-'


def _remove_abandoned_write_dirs() -> None:
  """Removes the private run dirs of workers that died without removing
  their own (SIGKILL): those whose process is gone."""
  folder = tempfile.gettempdir()
  for name in os.listdir(folder):
    if not name.startswith(WRITE_DIR_PREFIX):
      continue
    try:
      pid = int(name[len(WRITE_DIR_PREFIX):].split('-', 1)[0])
      os.kill(pid, 0)  # raises if no such process
    except ProcessLookupError:
      shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
    except (ValueError, PermissionError):
      pass  # not ours, or another user's live process


class _Job:
  """One invocation: what the run dir holds, and what is left to do."""

  def __init__(self, experiment, run_dir, write_dir, is_chief,
               operative_config, trial=None):
    self.experiment = experiment
    self.trial = trial
    self.configs = experiment.configs
    self.run_dir = run_dir
    self.is_chief = is_chief
    self.operative_config = operative_config
    with experiment.strategy.scope():
      self.checkpoints = checkpoints_lib.RunCheckpoints(
          run_dir, model=experiment.model, optimizer=experiment.optimizer,
          keep=self.configs.trainer.checkpoints_to_keep, write_dir=write_dir,
          average=experiment.average)

  def run(self) -> dict:
    target = self.configs.trainer.steps
    results = self.run_dir.read_results()
    if (results is not None and not checkpoints_lib.exist(self.run_dir) and
        isinstance(results.get('global_step'), int) and
        results['global_step'] >= target):
      # A finished run whose rolling checkpoints are gone: it only reports.
      logging.info('Run already finished at step %d: %s',
                   results['global_step'], results)
      return _untrained(results, results['global_step'], target)
    restored = self.checkpoints.restore_latest()
    step = int(self.experiment.optimizer.iterations.numpy())
    if restored:
      logging.info('Resumed from %s at step %d.', restored, step)
    if step >= target:
      if results is not None:
        logging.info('Run already finished at step %d: %s', step, results)
        return _untrained(results, step, target)
      if self.run_dir.exists() and self.is_chief:
        logging.warning('%s is missing or unreadable: recomputing it from '
                        'the best checkpoint.', self.run_dir.results)
    elif self.is_chief:
      # The record of what trains: written only by a command that trains.
      self.run_dir.write_operative_config(self.operative_config)

    summaries = summaries_lib.Summaries(self.run_dir, is_chief=self.is_chief)
    try:
      results = self._train_and_test(step, summaries)
    except distribute.PEER_ERRORS as e:
      lost = distribute.worker_lost(self.experiment.strategy, e,
                                    self.checkpoints.latest_step())
      if lost is None:
        raise
      raise lost from e
    finally:
      summaries.close()
    if self.is_chief:
      self.run_dir.write_results(results)
    return Results(results)

  def _train_and_test(self, step, summaries) -> dict:
    experiment, trainer_config = self.experiment, self.configs.trainer
    strategy = experiment.strategy
    dashboard = None
    if self.is_chief:
      dashboard = dashboard_lib.Dashboard(
          self.configs.dashboard, experiment.model, experiment.splits.validation,
          self.configs.data, summaries)
      dashboard.start(step, self.operative_config, dashboard_lib.hparams(
          self.operative_config, strategy.num_replicas_in_sync),
                      name=self.run_dir.name)
    evaluator = evaluator_lib.Evaluator(strategy, experiment.model,
                                        self.configs.data)
    window = progress.MetricWindow()
    trainer = trainer_lib.Trainer(experiment, window, step, self.checkpoints)
    line = progress.ProgressLine(trainer_config.steps, initial=step)
    start_step, wall_start = step, time.time()
    logging.info('Training from step %d to step %d.', step,
                 trainer_config.steps)
    with preemption.StopSignals(strategy) as signals:
      loop_actions = outer_loop.build(ACTIONS, Parts(
          trainer_config=trainer_config, evaluator=evaluator,
          validation_split=experiment.splits.validation, summaries=summaries,
          checkpoints=self.checkpoints, dashboard=dashboard,
          average=experiment.average, progress=line, window=window,
          optimizer=experiment.optimizer,
          variables=experiment.model.trainable_variables, signals=signals,
          strategy=strategy, trial=self.trial))
      boundary = outer_loop.Controller(
          train=trainer.train, target=trainer_config.steps,
          steps_per_loop=trainer_config.steps_per_loop, actions=loop_actions,
          on_overhead=window.add_overhead).run(step)
      step = boundary.step

      signals.finishing = True  # from here a signal waits for the results
      if boundary.validation is None:  # resumed at the end: nothing trained
        validate = next(a for a in loop_actions
                        if isinstance(a, Validate))
        boundary = outer_loop.record(boundary, validate,
                                         validate(boundary))
      distribute.barrier(strategy)  # the chief's best/ is written
      return self._test(step, start_step, wall_start, evaluator,
                        boundary.validation, window, dashboard)

  def _test(self, step, start_step, wall_start, evaluator, validation,
            window, dashboard) -> dict:
    experiment = self.experiment
    best_path = self.checkpoints.restore_best_weights()
    logging.info('Testing the best checkpoint (%s) on the %d test images.',
                 best_path, len(experiment.splits.test))
    test = evaluator.evaluate(experiment.splits.test)
    logging.info('Test (best checkpoint %s): loss %.4f accuracy %.4f',
                 best_path, test['loss'], test['accuracy'])
    if dashboard:
      dashboard.on_test(step, test, test['confusion'], best_path)
    fingerprint = checkpoints_lib.weights_fingerprint(experiment.model)
    logging.info('Weights fingerprint (the same on every worker): %s',
                 fingerprint)
    return {
        'test_accuracy': test['accuracy'],
        'test_loss': test['loss'],
        'best_val_accuracy': float(self.checkpoints.best_val_accuracy.numpy()),
        'best_step': int(self.checkpoints.best_step.numpy()),
        'final_val_accuracy': validation['accuracy'],
        'global_step': step,
        'steps_this_run': step - start_step,
        'train_examples_per_second': window.examples_per_second(),
        'wall_seconds': time.time() - wall_start,
        'replicas': experiment.strategy.num_replicas_in_sync,
        'data_source': experiment.splits.source,
        'weights_fingerprint': fingerprint,
        # The classic protocol of these tasks reads the last state of a
        # model trained on the images as they are; results say when a run
        # did otherwise.
        'readout': self.configs.model.readout,
        'max_shift': self.configs.data.max_shift,
    }
