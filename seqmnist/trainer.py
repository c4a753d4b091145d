"""The outer training loop: step counting, evaluation, checkpoints, summaries.

`train_and_evaluate` is the whole job behind `python -m seqmnist.main`:
build everything from gin, resume from the latest checkpoint, train to
`Trainer.steps` in `tf.function` loops of up to `steps_per_loop` steps,
validate every `eval_every` steps (keeping the best checkpoint apart),
evaluate the best checkpoint on the test set and write `results.json`.
What a step computes lives in `steps.py`; data in `data.py`.
"""

import dataclasses
import hashlib
import numbers
import os
import shutil
import tempfile
import time
from typing import Any, Optional, Sequence

from absl import logging
import gin
import keras
import numpy as np
import tensorflow as tf

from seqmnist import checkpoints
from seqmnist import dashboard as dashboard_lib
from seqmnist import data
from seqmnist import distribute
from seqmnist import drift
from seqmnist import models
from seqmnist import optimizers
from seqmnist import preemption
from seqmnist import rundir
from seqmnist import steps as steps_lib
from seqmnist import summaries as summaries_lib
from seqmnist.errors import ConfigError, Diverged, Preempted, check_int


@gin.configurable('Trainer')
@dataclasses.dataclass(frozen=True)
class TrainerConfig:
  """How long and how the model is trained; all counts are global steps.

  Attributes:
    steps: train until the global step reaches this.
    steps_per_loop: steps run inside one tf.function call (fewer round trips
      to Python); a loop also stops early at the next eval/checkpoint/summary.
    eval_every: a full validation pass every this many steps (and at the end).
    checkpoint_every: a rolling checkpoint every this many steps (and at the
      end).
    summary_every: train scalars to TensorBoard every this many steps.
    histogram_every: raw and clipped gradient histograms every this many
      steps; 0 = off.
    optimizer: 'rmsprop', 'adam' or 'sgd'.
    learning_rate: a positive number or a schedule (see optimizers.py).
    clip_norm: max L2 norm of each variable's gradient, applied to the
      gradient aggregated over replicas; 0 = off.
    clip_exclude: regexes of variable paths never clipped; by default the
      dense head, which is not recurrent (as in the source article).
    max_loss: the run stops as diverged (exit code 3) at a step whose mean
      training loss exceeds this, as it does at a NaN or Inf loss or
      gradient. Cross-entropy over 10 classes starts at ln 10 = 2.3; 0 = no
      bound (NaN and Inf still stop the run).
    seed: seeds weights and the data order; with `deterministic` the same
      seed gives the same run on the CPU.
    checkpoints_to_keep: rolling checkpoints kept.
    deterministic: enable TensorFlow op determinism.
    jit_compile: compile each replica's forward and backward pass with XLA.
      For CPUs: on a GPU it would replace the cuDNN kernel, so leave it off
      there; not with Model.batch_norm over several replicas (its
      all-reduce cannot be compiled).
  """
  steps: int = 1000
  steps_per_loop: int = 100
  eval_every: int = 1000
  checkpoint_every: int = 1000
  summary_every: int = 100
  histogram_every: int = 0
  optimizer: str = 'rmsprop'
  learning_rate: Any = 1e-3
  clip_norm: float = 0.0
  clip_exclude: Sequence[str] = (r'(^|/)head/',)
  max_loss: float = 1000.0
  seed: int = 0
  checkpoints_to_keep: int = 3
  deterministic: bool = True
  jit_compile: bool = False

  def __post_init__(self):
    for name in ('steps', 'steps_per_loop', 'eval_every', 'checkpoint_every',
                 'summary_every', 'checkpoints_to_keep'):
      check_int(f'Trainer.{name}', getattr(self, name), minimum=1)
    check_int('Trainer.histogram_every', self.histogram_every, minimum=0)
    check_int('Trainer.seed', self.seed, minimum=0)
    optimizers.check(self.optimizer, self.learning_rate)
    if (isinstance(self.clip_norm, bool) or
        not isinstance(self.clip_norm, numbers.Real) or self.clip_norm < 0):
      raise ConfigError(f'Trainer.clip_norm={self.clip_norm!r} must be a '
                        'number >= 0 (0 turns clipping off)')
    if (isinstance(self.max_loss, bool) or
        not isinstance(self.max_loss, numbers.Real) or
        not 0 <= self.max_loss < float('inf')):
      raise ConfigError(f'Trainer.max_loss={self.max_loss!r} must be a '
                        'finite number >= 0 (0 = no bound)')
    if isinstance(self.clip_exclude, str) or not all(
        isinstance(p, str) for p in self.clip_exclude):
      raise ConfigError(f'Trainer.clip_exclude={self.clip_exclude!r} must be '
                        "a list of regexes such as ['head/']")
    for name in ('deterministic', 'jit_compile'):
      if not isinstance(getattr(self, name), bool):
        raise ConfigError(f'Trainer.{name}={getattr(self, name)!r} must be '
                          'True or False')


class _Progbar(keras.utils.Progbar):
  """Keras' progress bar, with an ETA that ignores steps done before resume."""

  def __init__(self, target, initial, **kwargs):
    super().__init__(target, **kwargs)
    self._initial = initial

  def _estimate_step_duration(self, current, now):
    return super()._estimate_step_duration(current - self._initial, now)


def train_and_evaluate(model_dir: str, data_dir: Optional[str]) -> dict:
  """Runs (or resumes, or reports) the configured experiment.

  Args:
    model_dir: the run directory (see rundir.py).
    data_dir: where data lives (see data.load), or None for TFDS's default.

  Returns:
    The contents of results.json.
  """
  # Every configurable is built (and validated) before anything is written.
  strategy = distribute.make_strategy(distribute.DistributeConfig())
  data_config = data.DataConfig()
  model_config = models.ModelConfig()
  config = TrainerConfig()
  dashboard_config = dashboard_lib.DashboardConfig()
  if (config.jit_compile and model_config.batch_norm and
      strategy.num_replicas_in_sync > 1):
    raise ConfigError(
        'Trainer.jit_compile=True cannot compile Model.batch_norm=True\'s '
        f'all-reduce over {strategy.num_replicas_in_sync} replicas; turn one '
        'of them off')
  rundir.check_writable(model_dir)
  _check_resumable(model_dir)
  data.check_batches(data_config, strategy.num_replicas_in_sync)
  splits = data.load(data_config, data_dir)
  for name, split in (('validation', splits.validation),
                      ('test', splits.test)):
    logging.info('%s split: %d images', name, len(split))

  keras.utils.set_random_seed(config.seed)
  if config.deterministic:
    tf.config.experimental.enable_op_determinism()
  is_chief = distribute.is_chief(strategy)
  if is_chief:
    rundir.create(model_dir)
    write_dir = None
  else:  # every worker saves, but only the chief's checkpoints persist
    write_dir = tempfile.mkdtemp(
        prefix=f'seqmnist-{distribute.worker_id(strategy)}-')
  try:
    return _train_and_evaluate(strategy, data_config, model_config, config,
                               dashboard_config, splits, model_dir, is_chief,
                               write_dir)
  finally:
    if write_dir:
      shutil.rmtree(write_dir, ignore_errors=True)


def _check_resumable(model_dir):
  """Refuses to resume a run under a config its checkpoints do not belong to."""
  saved = os.path.join(model_dir, rundir.OPERATIVE_CONFIG)
  if checkpoints.exist(model_dir) and os.path.exists(saved):
    with open(saved) as f:
      drift.check(f.read(), gin.operative_config_str(), saved)


def _train_and_evaluate(strategy, data_config, model_config, config,
                        dashboard_config, splits, model_dir, is_chief,
                        write_dir):
  with strategy.scope():
    model = models.build(model_config, data_config.sequence_shape,
                         data.NUM_CLASSES, seed=config.seed)
    optimizer = optimizers.build(
        config.optimizer, config.learning_rate,
        loss_scale=models.needs_loss_scaling(model_config))
    optimizer.build(model.trainable_variables)
    ckpts = checkpoints.RunCheckpoints(
        model_dir, model=model, optimizer=optimizer,
        keep=config.checkpoints_to_keep, write_dir=write_dir)
  restored = ckpts.restore_latest()
  step = int(optimizer.iterations.numpy())
  if restored:
    logging.info('Resumed from %s at step %d.', restored, step)
  operative_config = gin.operative_config_str()
  if is_chief:
    rundir.write_atomic(os.path.join(model_dir, rundir.OPERATIVE_CONFIG),
                        operative_config)

  results_path = os.path.join(model_dir, rundir.RESULTS)
  if step >= config.steps and os.path.exists(results_path):
    results = rundir.read_json(results_path)
    logging.info('Run already finished at step %d: %s', step, results)
    return results

  loop = _Loop(strategy=strategy, model=model, optimizer=optimizer,
               ckpts=ckpts, splits=splits, data_config=data_config,
               config=config, model_dir=model_dir, is_chief=is_chief,
               loss_scale=models.needs_loss_scaling(model_config))
  if is_chief:
    loop.dashboard = dashboard_lib.Dashboard(
        dashboard_config, model, splits.validation, data_config,
        loop.summaries)
    loop.dashboard.start(step, operative_config, dashboard_lib.hparams(
        model_config, data_config, config, strategy.num_replicas_in_sync))
  try:
    results = loop.run(step)
  finally:
    loop.summaries.close()
  if is_chief:
    rundir.write_json(results_path, results)
  return results


def weights_fingerprint(model) -> str:
  """SHA-256 of every weight's bytes: equal only for bit-identical models."""
  digest = hashlib.sha256()
  for weight in model.get_weights():
    digest.update(np.ascontiguousarray(weight).tobytes())
  return digest.hexdigest()[:16]


class _Window:
  """Train metrics summed since the last summary, and the run's throughput."""

  def __init__(self):
    self.train_seconds, self.train_examples = 0.0, 0.0
    self.first_loop = None  # (seconds, examples) of the call that traced
    self.reset()

  def reset(self):
    self.sums = dict.fromkeys(steps_lib.TRAIN_METRICS, 0.0)
    self.steps, self.seconds = 0, 0.0

  def add(self, sums, steps, seconds):
    if self.first_loop is None:
      self.first_loop = (seconds, sums['examples'])
    else:
      self.train_seconds += seconds
      self.train_examples += sums['examples']
    for k in self.sums:
      self.sums[k] += sums[k]
    self.steps += steps
    self.seconds += seconds

  def add_overhead(self, seconds):
    """Time spent between train loops (summaries, checkpoints, progress)."""
    if self.train_examples:  # not after the first loop, as for its examples
      self.train_seconds += seconds

  def means(self) -> dict:
    s = self.sums
    return {
        'loss': s['loss'] / self.steps,
        'accuracy': s['correct'] / s['examples'],
        'examples_per_second': s['examples'] / self.seconds,
        'grad_norm': s['grad_norm'] / self.steps,
        'clipped_grad_norm': s['clipped_grad_norm'] / self.steps,
        'clipped_fraction': s['clipped_fraction'] / self.steps,
    }

  def examples_per_second(self) -> Optional[float]:
    """Over every loop but the first (which includes tracing), if any.

    Counts the time between loops too (summaries, checkpoints) but not
    validation: the training throughput a user actually gets.
    """
    seconds, examples = self.train_seconds, self.train_examples
    if seconds == 0 and self.first_loop:
      seconds, examples = self.first_loop
    return examples / seconds if seconds else None


class _Loop:
  """The state of one invocation of the training loop."""

  def __init__(self, *, strategy, model, optimizer, ckpts, splits,
               data_config, config, model_dir, is_chief, loss_scale):
    self.strategy = strategy
    self.model = model
    self.optimizer = optimizer
    self.ckpts = ckpts
    self.splits = splits
    self.data_config = data_config
    self.config = config
    self.summaries = summaries_lib.Summaries(model_dir, is_chief=is_chief)
    self.train_loop = steps_lib.make_train_loop(
        strategy, model, optimizer,
        steps_lib.StepOptions(
            global_batch_size=data_config.batch_size,
            clip_norm=float(config.clip_norm),
            clip_exclude=tuple(config.clip_exclude),
            histogram_every=config.histogram_every,
            max_loss=float(config.max_loss),
            jit_compile=config.jit_compile, loss_scale=loss_scale))
    self.eval_loop = steps_lib.make_eval_loop(strategy, model)
    self.dashboard = None  # the chief's (see dashboard.py)

  def _train_iterator(self, start_step):
    dataset = self.strategy.distribute_datasets_from_function(
        lambda ctx: data.train_dataset(
            self.splits.train, self.data_config, seed=self.config.seed,
            start_step=start_step, input_context=ctx))
    return iter(dataset)

  def evaluate(self, split: data.Split) -> dict:
    dataset = self.strategy.distribute_datasets_from_function(
        lambda ctx: data.eval_dataset(split, self.data_config, ctx))
    sums = self.eval_loop(
        iter(dataset),
        tf.constant(data.eval_steps(split, self.data_config)))
    confusion = sums.pop('confusion').numpy()
    sums = {k: float(v.numpy()) for k, v in sums.items()}
    return {'loss': sums['loss_sum'] / sums['examples'],
            'accuracy': sums['correct'] / sums['examples'],
            'confusion': confusion}

  def _next_stop(self, step):
    """The next step at which the loop must return to Python."""
    c = self.config
    candidates = [c.steps, step + c.steps_per_loop]
    for every in (c.eval_every, c.checkpoint_every, c.summary_every):
      candidates.append((step // every + 1) * every)
    return min(candidates)

  def _train(self, iterator, step, window) -> int:
    """Runs steps up to the next stop; returns the new global step.

    Raises:
      Diverged: a step's loss or gradient was NaN or Inf. Nothing is saved
        after it, so the newest checkpoint is the last good one.
    """
    num = self._next_stop(step) - step
    t0 = time.time()
    with self.summaries.train.as_default():  # for gradient histograms
      result = self.train_loop(iterator, tf.constant(num, tf.int32))
    steps_run = int(result.steps_run.numpy())
    if bool(result.diverged.numpy()):
      raise Diverged(self._divergence_message(step + steps_run, result))
    window.add({k: float(v.numpy()) for k, v in result.sums.items()},
               steps_run, time.time() - t0)
    return step + steps_run

  def _divergence_message(self, step, result):
    loss = float(result.last_loss.numpy())
    grad_norm = float(result.last_grad_norm.numpy())
    if not np.isfinite(loss):
      why = f'the loss is {loss}'
    elif not np.isfinite(grad_norm):
      why = f'the gradient norm is {grad_norm}'
    else:
      why = f'the loss {loss:.4g} exceeds Trainer.max_loss={self.config.max_loss:g}'
    last = self.ckpts.latest_step()
    kept = (f'the last good checkpoint (step {last}) is kept'
            if last is not None else 'no checkpoint had been saved')
    return (f'training diverged at step {step}: {why}; {kept}; lower '
            'Trainer.learning_rate or set Trainer.clip_norm')

  def run(self, step: int) -> dict:
    c = self.config
    start_step = step
    iterator = self._train_iterator(step)
    progbar = _Progbar(c.steps, initial=step, unit_name='step',
                       stateful_metrics=['loss', 'acc', 'ex/s', 'val_acc'])
    window = _Window()
    wall_start = time.time()
    val = None
    logging.info('Training from step %d to step %d.', step, c.steps)
    with preemption.PreemptionWatcher(self.strategy) as watcher:
      while step < c.steps:
        step = self._train(iterator, step, window)
        t_overhead, val_seconds = time.time(), 0.0
        means = window.means()
        values = [('loss', means['loss']), ('acc', means['accuracy']),
                  ('ex/s', means['examples_per_second'])]
        if step % c.summary_every == 0 or step == c.steps:
          self.summaries.scalars(self.summaries.train, dict(
              means, learning_rate=float(keras.ops.convert_to_numpy(
                  self.optimizer.learning_rate))), step)
          window.reset()
        if step % c.eval_every == 0 or step == c.steps:
          t_val = time.time()
          val = self._validate(step)
          val_seconds = time.time() - t_val
          values.append(('val_acc', val['accuracy']))
        saved = step % c.checkpoint_every == 0 or step == c.steps
        if saved:
          self.ckpts.save(step)
        progbar.update(step, values=values)
        window.add_overhead(time.time() - t_overhead - val_seconds)
        # Every worker reaches this at the same steps (it is a collective).
        if step < c.steps and watcher.should_stop():
          if not saved:
            self.ckpts.save(step)
          distribute.barrier(self.strategy)  # every worker's save is done
          raise Preempted(f'checkpoint saved at step {step} of {c.steps}; '
                          'rerun the same command to resume')

    if val is None:  # resumed at the end: nothing left to train
      val = self._validate(step)
    distribute.barrier(self.strategy)  # the chief's best/ is written
    best_path = self.ckpts.restore_best_weights()
    test = self.evaluate(self.splits.test)
    logging.info('Test (best checkpoint %s): loss %.4f accuracy %.4f',
                 best_path, test['loss'], test['accuracy'])
    if self.dashboard:
      self.dashboard.on_test(step, test, test['confusion'], best_path)
    fingerprint = weights_fingerprint(self.model)
    logging.info('Weights fingerprint (the same on every worker): %s',
                 fingerprint)
    return {
        'test_accuracy': test['accuracy'],
        'test_loss': test['loss'],
        'best_val_accuracy': float(self.ckpts.best_val_accuracy.numpy()),
        'best_step': int(self.ckpts.best_step.numpy()),
        'final_val_accuracy': val['accuracy'],
        'global_step': step,
        'steps_this_run': step - start_step,
        'train_examples_per_second': window.examples_per_second(),
        'wall_seconds': time.time() - wall_start,
        'replicas': self.strategy.num_replicas_in_sync,
        'data_source': self.splits.source,
        'weights_fingerprint': fingerprint,
    }

  def _validate(self, step):
    val = self.evaluate(self.splits.validation)
    self.summaries.scalars(self.summaries.validation,
                           {k: val[k] for k in ('loss', 'accuracy')}, step)
    if self.dashboard:
      self.dashboard.on_validation(step)
    improved = self.ckpts.record_validation(step, val['accuracy'])
    logging.info('step %d validation: loss %.4f accuracy %.4f%s', step,
                 val['loss'], val['accuracy'], ' (best)' if improved else '')
    return val
