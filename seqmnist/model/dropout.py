"""Dropout whose masks are a pure function of (seed, global step, example).

`Model.input_dropout` and `Model.output_dropout` are `StatelessDropout`
layers. Their masks must not depend on anything the framework promises not
to matter: not on the number of replicas (1 replica and N replicas make the
same update), not on whether the run was interrupted (a resumed run is
bit for bit the uninterrupted one). So no random state is kept anywhere:

  * the train step (steps.py) opens `masks(seed, step, first_row,
    global_batch)` around each replica's forward pass;
  * each dropout layer draws the mask of the *whole global batch* with
    `tf.random.stateless_uniform`, seeded by (Trainer.seed, global step)
    folded with the layer's salt, and takes this replica's rows
    [first_row, first_row + local batch).

An example's mask is therefore a function of (seed, step, its row in the
global batch, layer) alone. Drawing the global batch's mask on every replica
costs batch x features uniforms per layer and step (128 x 784 for the pixel
task's input): nothing beside the recurrence.

The key lives in a thread-local because MirroredStrategy traces each
replica's function in its own thread. Outside a train step (Keras' `fit` in
the benchmark, say) the layer falls back to Keras' own dropout, seeded
statefully: such runs are not covered by the promises above.
"""

import contextlib
import threading
from typing import NamedTuple

import keras
import tensorflow as tf

_local = threading.local()


class MaskKey(NamedTuple):
  seed: tf.Tensor         # int64 scalar: Trainer.seed
  step: tf.Tensor         # int64 scalar: the global step being taken
  first_row: tf.Tensor    # int32 scalar: this replica's first row
  global_batch: int       # rows of the global batch


@contextlib.contextmanager
def masks(seed, step, first_row, global_batch: int):
  """Within this block (this thread), StatelessDropout layers called with
  training=True draw their masks from (seed, step) for the given rows."""
  previous = getattr(_local, 'key', None)
  _local.key = MaskKey(tf.cast(seed, tf.int64), tf.cast(step, tf.int64),
                       tf.cast(first_row, tf.int32), int(global_batch))
  try:
    yield
  finally:
    _local.key = previous


def keep_mask(key: MaskKey, salt: int, rate: float, shape) -> tf.Tensor:
  """Bool mask for rows [first_row, first_row + shape[0]) of the global
  batch: True where the value is kept (probability 1 - rate)."""
  seed = tf.random.experimental.stateless_fold_in(
      tf.stack([key.seed, key.step]), salt)
  global_shape = tf.concat([[key.global_batch], shape[1:]], axis=0)
  uniform = tf.random.stateless_uniform(global_shape, seed=seed)
  rows = tf.range(key.first_row, key.first_row + shape[0])
  return tf.gather(uniform, rows) >= rate


@keras.saving.register_keras_serializable(package='seqmnist')
class StatelessDropout(keras.layers.Layer):
  """Inverted dropout (kept values scaled by 1 / (1 - rate)), identity at
  inference. `salt` tells layers of one model apart."""

  def __init__(self, rate: float, salt: int, **kwargs):
    super().__init__(**kwargs)
    self.rate = float(rate)
    self.salt = int(salt)

  def call(self, inputs, training=False):
    if not training or not self.rate:
      return inputs
    key = getattr(_local, 'key', None)
    if key is None:  # outside seqmnist's train step: Keras' own dropout
      return keras.random.dropout(inputs, self.rate)
    keep = keep_mask(key, self.salt, self.rate, tf.shape(inputs))
    scale = tf.cast(1.0 / (1.0 - self.rate), inputs.dtype)
    return tf.where(keep, inputs * scale, tf.zeros_like(inputs))

  def compute_output_shape(self, shape):
    return shape

  def get_config(self):
    return dict(super().get_config(), rate=self.rate, salt=self.salt)
