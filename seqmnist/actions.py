"""What happens at the training loop's boundaries, each on its cadence.

The controller (controller.py) calls these in the order given to it; the
trainer's job (train_eval.py) gives them in this order: validate,
checkpoint, show progress, summarise (which starts a new metric window, so
after the progress line), write histograms, stop on a signal. Stopping comes
last, so a stop at a boundary follows that boundary's validation and
checkpoint.
"""

from typing import Optional

from absl import logging
import keras
import tensorflow as tf

from seqmnist import distribute
from seqmnist.controller import Action


class WriteTrainSummaries(Action):
  """Train scalars (the window's means, the learning rate) to TensorBoard,
  then a new window."""

  def __init__(self, every: int, *, window, summaries, optimizer):
    self.every = every
    self._window = window
    self._summaries = summaries
    self._optimizer = optimizer

  def __call__(self, step, final):
    if not self._window.steps:
      return
    learning_rate = float(keras.ops.convert_to_numpy(
        self._optimizer.learning_rate))
    self._summaries.scalars(self._summaries.train, dict(
        self._window.means(), learning_rate=learning_rate), step)
    self._window.reset()


class WriteGradientHistograms(Action):
  """Raw and clipped gradient histograms of the boundary's last step, at
  multiples of `every` only (the final step included only if one)."""

  def __init__(self, every: int, *, trainer, summaries, variables):
    self.every = every
    self._trainer = trainer
    self._summaries = summaries
    self._paths = [v.path for v in variables]

  def due(self, step, final):
    return step % self.every == 0

  def __call__(self, step, final):
    last = self._trainer.last
    if last is None or not last.last_grads:
      return
    with self._summaries.train.as_default(step=step):
      for path, g, c in zip(self._paths, last.last_grads, last.last_clipped):
        tf.summary.histogram(f'gradients/{path}', g)
        tf.summary.histogram(f'clipped_gradients/{path}', c)
    self._summaries.train.flush()


class Validate(Action):
  """A validation pass: scalars, the dashboard, and the best checkpoint.

  With a weight average (averaging.py), all three see the averaged weights,
  so the best checkpoint holds them; the live weights are back afterwards.
  """
  training_time = False

  def __init__(self, every: int, *, evaluator, split, summaries, checkpoints,
               dashboard=None, average=None):
    self.every = every
    self._average = average
    self._evaluator = evaluator
    self._split = split
    self._summaries = summaries
    self._checkpoints = checkpoints
    self._dashboard = dashboard
    self.last: Optional[dict] = None

  def __call__(self, step, final):
    if self._average is None:
      self._validate(step)
    else:
      with self._average.swapped_in():
        self._validate(step)

  def _validate(self, step):
    val = self._evaluator.evaluate(self._split)
    self._summaries.scalars(self._summaries.validation,
                            {k: val[k] for k in ('loss', 'accuracy')}, step)
    if self._dashboard:
      self._dashboard.on_validation(step)
    improved = self._checkpoints.record_validation(step, val['accuracy'])
    logging.info('step %d validation: loss %.4f accuracy %.4f%s', step,
                 val['loss'], val['accuracy'], ' (best)' if improved else '')
    self.last = val


class SaveCheckpoint(Action):
  """A rolling checkpoint."""

  def __init__(self, every: int, *, checkpoints):
    self.every = every
    self._checkpoints = checkpoints
    self.saved_step: Optional[int] = None

  def __call__(self, step, final):
    self._checkpoints.save(step)
    self.saved_step = step


class ShowProgress(Action):
  """The progress line: loss, accuracy, examples/s, last validation."""

  def __init__(self, *, progress, window, validate: Validate):
    self._progress = progress
    self._window = window
    self._validate = validate

  def __call__(self, step, final):
    means = self._window.means()
    values = {'loss': means['loss'], 'acc': means['accuracy'],
              'ex/s': means['examples_per_second']}
    if self._validate.last is not None:
      values['val_acc'] = self._validate.last['accuracy']
    self._progress.update(step, values)


class StopOnSignal(Action):
  """After SIGTERM or Ctrl-C on any worker: every worker saves this step,
  waits for the others, and stops (Preempted / Interrupted)."""
  at_end = False  # the run is over anyway

  def __init__(self, *, signals, strategy, checkpoint: SaveCheckpoint,
               target: int, progress):
    self._signals = signals
    self._strategy = strategy
    self._checkpoint = checkpoint
    self._target = target
    self._progress = progress

  def __call__(self, step, final):
    # Every worker reaches this at the same steps (it is a collective).
    if not self._signals.should_stop():
      return
    if self._checkpoint.saved_step != step:
      self._checkpoint(step, final)
    distribute.barrier(self._strategy)  # every worker's save is done
    self._progress.end()
    raise self._signals.stop_error(
        f'checkpoint saved at step {step} of {self._target}; rerun the same '
        'command to resume')
