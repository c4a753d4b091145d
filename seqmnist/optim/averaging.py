"""Weight averaging: an exponential moving average of the trainable weights.

With `Trainer.ema_decay` > 0, every train step ends with

    average <- d * average + (1 - d) * weights,   d = min(ema_decay, (1 + n) / (10 + n))

n the optimizer's update count (TensorFlow's ExponentialMovingAverage
warm-up, so early averages are not dominated by the initial weights). The
averages are what validation measures, so they are what the best
checkpoint holds, and so what the test pass and export use: `Validate`
evaluates inside `swapped_in()`, which also covers the best checkpoint's
save. Rolling checkpoints save the live weights and the averages (both are
needed to resume exactly).

This module is the average's one owner: `make` decides whether a run has
one, `checkpoint_items` is its place in every checkpoint (the loop's
checkpoints and export read it from there), and `WeightAverage` updates,
swaps in and hands over the averages.

The averages are variables created under the strategy's scope as
sync-on-read, first-replica copies: every replica updates its own copy from
weights that are identical on every replica after the all-reduced update,
with no communication; reading (validation, checkpoints) takes the first
replica's.
"""

import contextlib
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf


# The averages' name in a checkpoint (run dirs of every version use it).
_CHECKPOINT_KEY = 'average'


def make(variables: Sequence[tf.Variable],
         decay: float) -> Optional['WeightAverage']:
  """The average of `variables` for `Trainer.ema_decay=decay`; None when 0
  (no averaging). Call under the strategy's scope when training."""
  return WeightAverage(variables, decay) if decay else None


def checkpoint_items(average: Optional['WeightAverage']) -> dict:
  """What a tf.train.Checkpoint holds of the average: nothing without one,
  so checkpoints of runs without it keep their layout."""
  return {_CHECKPOINT_KEY: average.trackable()} if average else {}


class WeightAverage:
  """Averages of `variables`; build under the strategy's scope."""

  def __init__(self, variables: Sequence[tf.Variable], decay: float):
    self.decay = float(decay)
    self._variables = list(variables)
    self.averages = [
        tf.Variable(v.numpy(), trainable=False,
                    name=f'average/{v.path}', dtype=v.dtype,
                    synchronization=tf.VariableSynchronization.ON_READ,
                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        for v in self._variables]

  def update(self, updates_done: tf.Tensor) -> None:
    """One step's update, in replica context, after the optimizer's."""
    n = tf.cast(updates_done, tf.float32)
    decay = tf.minimum(self.decay, (1.0 + n) / (10.0 + n))
    for average, variable in zip(self.averages, self._variables):
      value = tf.cast(tf.convert_to_tensor(variable), average.dtype)
      average.assign(decay * average + (1.0 - decay) * value)

  def trackable(self) -> dict:
    """What a tf.train.Checkpoint holds of it."""
    return {f'{i}': a for i, a in enumerate(self.averages)}

  def copy_into_model(self) -> None:
    """The averages into the model's variables, for good (export)."""
    for variable, average in zip(self._variables, self.averages):
      variable.assign(tf.cast(average.read_value(), variable.dtype))

  @contextlib.contextmanager
  def swapped_in(self):
    """The averages in the model's variables for the block, then the live
    weights back (exactly: the values are copied, not recomputed)."""
    live = [np.array(v.numpy()) for v in self._variables]
    self.copy_into_model()
    try:
      yield
    finally:
      for variable, value in zip(self._variables, live):
        variable.assign(value)
