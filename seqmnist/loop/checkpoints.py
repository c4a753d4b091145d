"""The run's checkpoints: rolling ones to resume from, and the best one.

  checkpoints/   every `checkpoint_every` steps, a few kept;
  best/          the best-validation weights, kept apart so the rolling
                 manager never deletes them.

Both hold the same `tf.train.Checkpoint`: the model, the optimizer (whose
`iterations` is the global step) and the best-validation record, so a resumed
run knows what it has to beat.

Saves are atomic: TensorFlow writes a checkpoint's files under temporary
names, then points the folder's `checkpoint` state file at it with an atomic
rename, and deletes older checkpoints only after that. A process killed
mid-save leaves the previous checkpoint current and loadable
(tests/test_reliability.py kills one mid-save to check).

Resuming never starts from scratch over checkpoints on disk: an unreadable
state file is rebuilt from the checkpoint files present, and a damaged
newest checkpoint (a missing data file, a truncated index) falls back to the
previous intact one, with a warning; only when none is intact does the run
stop, saying so.
"""

import glob
import hashlib
import os
import re
import shutil
from typing import List, Optional

from absl import logging
import numpy as np
import tensorflow as tf

from seqmnist import rundir as rundir_lib
from seqmnist.errors import ConfigError, UserError, first_line
from seqmnist.optim import averaging

_PREFIX = 'ckpt'
_FILE = re.compile(rf'^{_PREFIX}-(\d+)\.(index|data-\d+-of-\d+)$')


def on_disk(folder: str) -> List[str]:
  """Checkpoint prefixes present in folder (any of their files), newest
  step first."""
  steps = set()
  for path in glob.glob(os.path.join(glob.escape(folder), f'{_PREFIX}-*')):
    match = _FILE.match(os.path.basename(path))
    if match:
      steps.add(int(match.group(1)))
  return [os.path.join(folder, f'{_PREFIX}-{s}') for s in sorted(steps,
                                                                  reverse=True)]


def state_latest(folder: str) -> Optional[str]:
  """The newest checkpoint the folder's state file names; None if there is
  no state file, or it is unreadable (TensorFlow logs why)."""
  try:
    return tf.train.latest_checkpoint(folder)
  except (ValueError, tf.errors.OpError):
    return None


def exist(run_dir: rundir_lib.RunDir) -> bool:
  """True if the run dir holds rolling checkpoint files to resume from."""
  return bool(on_disk(run_dir.checkpoints))


def any_exist(run_dir: rundir_lib.RunDir) -> bool:
  """True if the run dir holds rolling or best checkpoint files: a run that
  has trained, which only its own config may resume."""
  return bool(on_disk(run_dir.checkpoints) or on_disk(run_dir.best))


def weights_fingerprint(model) -> str:
  """SHA-256 of every weight's bytes: equal only for bit-identical models."""
  digest = hashlib.sha256()
  for weight in model.get_weights():
    digest.update(np.ascontiguousarray(weight).tobytes())
  return digest.hexdigest()[:16]


def _remove_debris(folder: str) -> None:
  """Removes the `ckpt-N_temp` folders of saves cut short (a kill during a
  save). Never a checkpoint: TensorFlow renames a save out of its temporary
  folder only once it is whole. Only the process holding the run dir's lock
  calls this, so no save is in progress."""
  for path in glob.glob(os.path.join(glob.escape(folder), f'{_PREFIX}-*_temp')):
    if re.fullmatch(rf'{_PREFIX}-\d+_temp', os.path.basename(path)):
      logging.warning('Removing %s, left by a save that was cut short.', path)
      shutil.rmtree(path, ignore_errors=True)


def _repair_state(folder: str) -> None:
  """Rewrites an unreadable `checkpoint` state file from the files on disk
  (TensorFlow's manager would otherwise see no checkpoints and never rotate
  the old ones)."""
  state = os.path.join(folder, 'checkpoint')
  if not os.path.exists(state) or state_latest(folder):
    return
  present = on_disk(folder)
  if not present:
    return
  logging.warning('%s is unreadable; rebuilding it from the %d checkpoint(s) '
                  'on disk (newest: %s).', state, len(present),
                  os.path.basename(present[0]))
  tf.compat.v1.train.update_checkpoint_state(
      folder, present[0], all_model_checkpoint_paths=present[::-1])


def _saving(manager: tf.train.CheckpointManager, step: int, kind: str) -> str:
  """manager.save, a failure to write as one UserError line: where, and
  the cause (no space, permission, read-only), what is kept."""
  try:
    return manager.save(checkpoint_number=step)
  except (tf.errors.OpError, OSError) as e:
    raise UserError(
        f'could not save the {kind} checkpoint of step {step} in '
        f'{manager.directory}: {write_failure(e)}; the newest intact '
        'checkpoint is kept: make room (or fix the permission) and rerun '
        'the same command to resume') from e


def write_failure(error: BaseException) -> str:
  """What a failed write ran into, in a few words."""
  text = str(error)
  for marker, cause in (('No space left', 'no space left on the device'),
                        ('Disk quota', 'disk quota exceeded'),
                        ('Permission denied', 'permission denied'),
                        ('Read-only file system', 'read-only file system')):
    if marker in text:
      return cause
  return first_line(error)


class RunCheckpoints:
  """Saves and restores one run's checkpoints.

  Create under `strategy.scope()` after the model and optimizer are built.
  `run_dir` is where checkpoints are read from. On a non-chief worker pass
  `write_dir`: a private temporary RunDir, since every worker must take part
  in a save but only the chief's may persist.
  """

  def __init__(self, run_dir: rundir_lib.RunDir, *, model, optimizer,
               keep: int, write_dir: Optional[rundir_lib.RunDir] = None,
               average=None):
    # With a weight average the best checkpoint's model holds the averages,
    # so it cannot stand in for a rolling checkpoint.
    self._best_is_resumable = average is None
    self.best_val_accuracy = tf.Variable(-1.0, dtype=tf.float64,
                                         trainable=False,
                                         name='best_val_accuracy')
    self.best_step = tf.Variable(-1, dtype=tf.int64, trainable=False,
                                 name='best_step')
    self._model = model
    self._checkpoint = tf.train.Checkpoint(
        model=model, optimizer=optimizer,
        best_val_accuracy=self.best_val_accuracy, best_step=self.best_step,
        **averaging.checkpoint_items(average))
    self._read = run_dir
    write = write_dir or run_dir
    if write_dir is None:  # the chief, holding the run dir's lock
      for folder in (run_dir.checkpoints, run_dir.best):
        _remove_debris(folder)
      _repair_state(run_dir.checkpoints)
    self._rolling = tf.train.CheckpointManager(
        self._checkpoint, write.checkpoints, max_to_keep=keep,
        checkpoint_name=_PREFIX)
    self._best = tf.train.CheckpointManager(
        self._checkpoint, write.best, max_to_keep=1, checkpoint_name=_PREFIX)

  def restore_latest(self) -> Optional[str]:
    """Restores the newest intact rolling checkpoint; returns its path, or
    None when there is none on disk and no best checkpoint either (a new
    run).

    When no rolling checkpoint is intact (or none is left) but the best
    one is, the run resumes from the best one, saying so: it holds the same
    state (model, optimizer, records) as a rolling checkpoint of its step,
    unless the best holds averaged weights (`best_is_resumable=False`).

    Raises:
      ConfigError: the checkpoint belongs to another model or optimizer.
      UserError: checkpoints (rolling or best) exist but none can be resumed
        from: never a silent start from step 0 over them.
    """
    candidates = on_disk(self._read.checkpoints)
    named = state_latest(self._read.checkpoints)
    if named and named in candidates:  # the state file's choice comes first
      candidates.remove(named)
      candidates.insert(0, named)
    damaged = []
    for path in candidates:
      try:
        self._checkpoint.restore(path).assert_existing_objects_matched()
      except tf.errors.OpError as e:  # unreadable files: try an older one
        damaged.append(f'{os.path.basename(path)} ({first_line(e)})')
        logging.warning('Checkpoint %s is damaged (%s); trying the previous '
                        'one.', path, first_line(e))
        continue
      except (AssertionError, ValueError) as e:
        raise ConfigError(f'checkpoint {path} does not match the configured '
                          f'model and optimizer: {first_line(e)}') from e
      if damaged:
        logging.warning('Resuming from %s: the newer %s could not be read.',
                        path, ', '.join(damaged))
      return path
    best = state_latest(self._read.best) or next(
        iter(on_disk(self._read.best)), None)
    why = (f'no intact checkpoint in {self._read.checkpoints}: '
           f'{"; ".join(damaged)}' if damaged else
           f'{self._read.checkpoints} holds no checkpoint')
    if best is None:
      if damaged:
        raise UserError(f'{why}; refusing to start over them from step 0 '
                        '(move the folder away to start a new run)')
      return None
    if not self._best_is_resumable:
      raise UserError(f'{why}, and {best} holds averaged weights, not the '
                      'training state; refusing to start over from step 0 '
                      '(move the run directory away to start a new run)')
    try:
      self._checkpoint.restore(best).assert_existing_objects_matched()
    except tf.errors.OpError as e:
      raise UserError(f'{why}, and {best} is damaged too ({first_line(e)}); '
                      'refusing to start over from step 0 (move the run '
                      'directory away to start a new run)') from e
    except (AssertionError, ValueError) as e:
      raise ConfigError(f'checkpoint {best} does not match the configured '
                        f'model and optimizer: {first_line(e)}') from e
    logging.warning('%s; resuming from the best checkpoint %s (the same '
                    'training state at its step).', why, best)
    return best

  def latest_step(self) -> Optional[int]:
    """The step of the newest rolling checkpoint on disk, or None."""
    present = on_disk(self._read.checkpoints)
    return rundir_lib.checkpoint_step(present[0]) if present else None

  def save(self, step: int) -> str:
    path = _saving(self._rolling, step, 'rolling')
    logging.info('Saved checkpoint %s', path)
    return path

  def record_validation(self, step: int, accuracy: float) -> bool:
    """Saves a best checkpoint if `accuracy` beats the record; returns that."""
    if accuracy <= float(self.best_val_accuracy.numpy()):
      return False
    self.best_val_accuracy.assign(accuracy)
    self.best_step.assign(step)
    _saving(self._best, step, 'best')
    return True

  def restore_best_weights(self) -> Optional[str]:
    """Loads the best checkpoint's model weights only; returns its path."""
    path = state_latest(self._read.best)
    if path:
      tf.train.Checkpoint(model=self._model).read(path).expect_partial()
    return path
