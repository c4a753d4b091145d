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

The averages are variables created under the strategy's scope as
sync-on-read, first-replica copies: every replica updates its own copy from
weights that are identical on every replica after the all-reduced update,
with no communication; reading (validation, checkpoints) takes the first
replica's.
"""

import contextlib
from typing import Sequence

import numpy as np
import tensorflow as tf


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

  @contextlib.contextmanager
  def swapped_in(self):
    """The averages in the model's variables for the block, then the live
    weights back (exactly: the values are copied, not recomputed)."""
    live = [np.array(v.numpy()) for v in self._variables]
    for variable, average in zip(self._variables, self.averages):
      variable.assign(tf.cast(average.read_value(), variable.dtype))
    try:
      yield
    finally:
      for variable, value in zip(self._variables, live):
        variable.assign(value)
