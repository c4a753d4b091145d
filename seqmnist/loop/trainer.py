"""The `Trainer` gin config, and the inner side of the loop/step boundary.

`Trainer` runs the train `tf.function` (steps.py) for a given number of
steps on the run's input pipeline, times it, adds its metric sums to the
window, and turns a diverged step into `Diverged`. The controller
(outer_loop.py) decides how many steps; the actions (actions/) do
everything at the boundaries.
"""

import dataclasses
import re
import time
from typing import Any, Sequence, Tuple

import gin
import numpy as np
import tensorflow as tf

from seqmnist import validators
from seqmnist.data import pipeline
from seqmnist.errors import ConfigError, Diverged
from seqmnist.loop import progress
from seqmnist.loop import steps as steps_lib
from seqmnist.optim import optimizers

# Largest seed TensorFlow and numpy accept (tf.random / np.random: uint32).
MAX_SEED = 2**32 - 1


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
    seed: seeds weights and the data order (0 to 2**32 - 1); with
      `deterministic` the same seed gives the same run on the CPU.
    checkpoints_to_keep: rolling checkpoints kept.
    deterministic: enable TensorFlow op determinism.
    jit_compile: compile each replica's forward and backward pass with XLA.
      For CPUs: on a GPU it would replace the cuDNN kernel, so leave it off
      there; not with Model.batch_norm over several replicas (its
      all-reduce cannot be compiled).
    weight_decay: decoupled weight decay (AdamW-style, for any optimizer):
      each step, before the update, every decayed variable w becomes
      w - learning_rate * weight_decay * w; 0 = off.
    weight_decay_exclude: regexes of variable paths never decayed; by
      default biases and BatchNorm's scale and offset.
    label_smoothing: the training loss's targets are (1 - s) on the label
      and s / classes everywhere (s included on the label); validation and
      test losses stay plain cross-entropy; 0 = off.
    ema_decay: an exponential moving average of the weights with this decay
      (e.g. 0.999), used for validation, the best checkpoint, the test pass
      and export (optim/averaging.py); 0 = off.
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
  weight_decay: float = validators.added_later(0.0, before=0.0)
  weight_decay_exclude: Sequence[str] = validators.added_later(
      (r'(^|/)bias$', r'(^|/)batch_norm/'),
      before=(r'(^|/)bias$', r'(^|/)batch_norm/'))
  label_smoothing: float = validators.added_later(0.0, before=0.0)
  ema_decay: float = validators.added_later(0.0, before=0.0)

  def __post_init__(self):
    for name in ('steps', 'steps_per_loop', 'eval_every', 'checkpoint_every',
                 'summary_every', 'checkpoints_to_keep'):
      validators.check_int(f'Trainer.{name}', getattr(self, name), minimum=1,
                           maximum=10**9)
    validators.check_int('Trainer.histogram_every', self.histogram_every,
                         minimum=0, maximum=10**9)
    validators.check_int('Trainer.seed', self.seed, minimum=0,
                         maximum=MAX_SEED)
    optimizers.check(self.optimizer, self.learning_rate)
    validators.check_number('Trainer.clip_norm', self.clip_norm, minimum=0,
                            why='0 turns clipping off')
    validators.check_number('Trainer.max_loss', self.max_loss, minimum=0,
                            why='0 = no bound')
    for name in ('clip_exclude', 'weight_decay_exclude'):
      _check_regexes(f'Trainer.{name}', getattr(self, name))
    validators.check_number('Trainer.weight_decay', self.weight_decay,
                            minimum=0, maximum=10, why='0 turns it off')
    validators.check_number('Trainer.label_smoothing', self.label_smoothing,
                            minimum=0, maximum=0.5, why='0 turns it off')
    validators.check_number('Trainer.ema_decay', self.ema_decay, minimum=0,
                            maximum=0.99999, why='0 turns averaging off')
    validators.check_bool('Trainer.deterministic', self.deterministic)
    validators.check_bool('Trainer.jit_compile', self.jit_compile)

  def step_options(self, global_batch_size: int,
                   loss_scale: bool) -> steps_lib.StepOptions:
    """How each train step updates the model, from this config."""
    return steps_lib.StepOptions(
        global_batch_size=global_batch_size,
        clip_norm=float(self.clip_norm),
        clip_exclude=tuple(self.clip_exclude),
        histograms=self.histogram_every > 0,
        max_loss=float(self.max_loss),
        jit_compile=self.jit_compile, loss_scale=loss_scale,
        label_smoothing=float(self.label_smoothing), seed=self.seed)


def _check_regexes(name, value):
  if isinstance(value, str) or not all(isinstance(p, str) for p in value):
    raise ConfigError(f'{name}={value!r} must be a list of regexes such as '
                      "['head/']")
  for pattern in value:
    try:
      re.compile(pattern)
    except re.error as e:
      raise ConfigError(f'{name}: {pattern!r} is not a regex ({e})') from e


@dataclasses.dataclass(frozen=True)
class Output:
  """What one train call hands the loop's actions (outer_loop.Boundary).

  Attributes:
    result: the call's steps.LoopResult (the last step's loss, gradients).
    means: the train window's means after the call (steps.train_means),
      the steps since the window was last closed (a train summary).
    window_steps: how many steps the window holds.
  """
  result: Any
  means: dict
  window_steps: int


class Trainer:
  """Runs train steps from a global step on; owns the input iterator."""

  def __init__(self, experiment, window: progress.MetricWindow,
               start_step: int, checkpoints):
    self._experiment = experiment
    self._window = window
    self._checkpoints = checkpoints
    self._loop = steps_lib.make_train_loop(
        experiment.strategy, experiment.model, experiment.optimizer,
        experiment.step_options, average=experiment.average)
    self._iterator = iter(experiment.strategy.distribute_datasets_from_function(
        lambda ctx: pipeline.train_dataset(
            experiment.splits.train, experiment.configs.data,
            seed=experiment.configs.trainer.seed, start_step=start_step,
            input_context=ctx)))

  def train(self, step: int, num_steps: int) -> Tuple[int, Output]:
    """Runs num_steps steps from `step`; returns the new global step and
    the call's output.

    Raises:
      Diverged: a step's loss or gradient was NaN or Inf, or its loss above
        Trainer.max_loss. Nothing is saved after it, so the newest
        checkpoint is the last good one.
    """
    t0 = time.time()
    result = self._loop(self._iterator, tf.constant(num_steps, tf.int32))
    steps_run = int(result.steps_run.numpy())
    if bool(result.diverged.numpy()):
      raise Diverged(self._divergence_message(step + steps_run, result))
    self._window.add({k: float(v.numpy()) for k, v in result.sums.items()},
                     steps_run, time.time() - t0)
    return step + steps_run, Output(result, self._window.means(),
                                    self._window.steps)

  def _divergence_message(self, step, result):
    loss = float(result.last_loss.numpy())
    grad_norm = float(result.last_grad_norm.numpy())
    max_loss = self._experiment.configs.trainer.max_loss
    if not np.isfinite(loss):
      why = f'the loss is {loss}'
    elif not np.isfinite(grad_norm):
      why = f'the gradient norm is {grad_norm}'
    else:
      why = f'the loss {loss:.4g} exceeds Trainer.max_loss={max_loss:g}'
    last = self._checkpoints.latest_step()
    kept = (f'the last good checkpoint (step {last}) is kept'
            if last is not None else 'no checkpoint had been saved')
    return (f'training diverged at step {step}: {why}; {kept}; lower '
            'Trainer.learning_rate or set Trainer.clip_norm')
