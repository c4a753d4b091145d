"""The run's checkpoints: rolling ones to resume from, and the best one.

  model_dir/checkpoints/   every `checkpoint_every` steps, a few kept;
  model_dir/best/          the best-validation weights, kept apart so the
                           rolling manager never deletes them.

Both hold the same `tf.train.Checkpoint`: the model, the optimizer (whose
`iterations` is the global step) and the best-validation record, so a resumed
run knows what it has to beat.

Saves are atomic: TensorFlow writes a checkpoint's files under temporary
names, then points the folder's `checkpoint` state file at it with an atomic
rename, and deletes older checkpoints only after that. A process killed
mid-save leaves the previous checkpoint current and loadable
(tests/test_reliability.py kills one mid-save to check).
"""

import os
from typing import Optional

from absl import logging
import tensorflow as tf

from seqmnist.errors import ConfigError

CHECKPOINTS = 'checkpoints'
BEST = 'best'


def exist(model_dir: str) -> bool:
  """True if model_dir holds a rolling checkpoint to resume from."""
  return bool(tf.train.latest_checkpoint(os.path.join(model_dir, CHECKPOINTS)))


class RunCheckpoints:
  """Saves and restores one run's checkpoints.

  Create under `strategy.scope()` after the model and optimizer are built.
  On a non-chief worker pass `write_dir`: a private temporary folder, since
  every worker must take part in a save but only the chief's may persist.
  """

  def __init__(self, model_dir: str, *, model, optimizer, keep: int,
               write_dir: Optional[str] = None):
    self.best_val_accuracy = tf.Variable(-1.0, dtype=tf.float64,
                                         trainable=False,
                                         name='best_val_accuracy')
    self.best_step = tf.Variable(-1, dtype=tf.int64, trainable=False,
                                 name='best_step')
    self._model = model
    self._checkpoint = tf.train.Checkpoint(
        model=model, optimizer=optimizer,
        best_val_accuracy=self.best_val_accuracy, best_step=self.best_step)
    root = write_dir or model_dir
    self._rolling = tf.train.CheckpointManager(
        self._checkpoint, os.path.join(root, CHECKPOINTS), max_to_keep=keep)
    self._best = tf.train.CheckpointManager(
        self._checkpoint, os.path.join(root, BEST), max_to_keep=1)
    # A non-chief reads what the chief wrote.
    self._read_rolling_dir = os.path.join(model_dir, CHECKPOINTS)
    self._read_best_dir = os.path.join(model_dir, BEST)

  def restore_latest(self) -> Optional[str]:
    """Restores the newest rolling checkpoint, if any; returns its path."""
    path = tf.train.latest_checkpoint(self._read_rolling_dir)
    if path:
      try:
        self._checkpoint.restore(path).assert_existing_objects_matched()
      except (AssertionError, ValueError, tf.errors.OpError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
        raise ConfigError(f'checkpoint {path} does not match the configured '
                          f'model and optimizer: {first}') from e
    return path

  def latest_step(self) -> Optional[int]:
    """The step of the newest rolling checkpoint in model_dir, or None."""
    path = tf.train.latest_checkpoint(self._read_rolling_dir)
    return int(path.rsplit('-', 1)[1]) if path else None

  def save(self, step: int) -> str:
    path = self._rolling.save(checkpoint_number=step)
    logging.info('Saved checkpoint %s', path)
    return path

  def record_validation(self, step: int, accuracy: float) -> bool:
    """Saves a best checkpoint if `accuracy` beats the record; returns that."""
    if accuracy <= float(self.best_val_accuracy.numpy()):
      return False
    self.best_val_accuracy.assign(accuracy)
    self.best_step.assign(step)
    self._best.save(checkpoint_number=step)
    return True

  def restore_best_weights(self) -> Optional[str]:
    """Loads the best checkpoint's model weights only; returns its path."""
    path = tf.train.latest_checkpoint(self._read_best_dir)
    if path:
      tf.train.Checkpoint(model=self._model).read(path).expect_partial()
    return path
