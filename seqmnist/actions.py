"""What happens at the training loop's boundaries, each on its cadence.

Each action gets the boundary (controller.Boundary: the step, the train
call's output, the newest validation and checkpoint) and returns what it
produced; none reads another's attributes. `build` makes the job's actions
in the order they must run (`ORDER`); each action's `after` says which
others it needs before it and why, and the controller refuses an order that
breaks them (tests/test_rundir.py checks `ORDER` and `build` against them).
"""

from typing import List

from absl import logging
import keras
import tensorflow as tf

from seqmnist import distribute
from seqmnist.controller import Action


class WriteTrainSummaries(Action):
  """Train scalars (the window's means at this boundary, the learning rate)
  to TensorBoard, then a new window: each point averages the steps since the
  previous one."""

  def __init__(self, every: int, *, window, summaries, optimizer):
    self.every = every
    self._window = window  # progress.MetricWindow, which this action closes
    self._summaries = summaries
    self._optimizer = optimizer

  def __call__(self, boundary):
    if not boundary.output.window_steps:
      return
    learning_rate = float(keras.ops.convert_to_numpy(
        self._optimizer.learning_rate))
    self._summaries.scalars(self._summaries.train, dict(
        boundary.output.means, learning_rate=learning_rate), boundary.step)
    self._window.reset()


class WriteGradientHistograms(Action):
  """Raw and clipped gradient histograms of the boundary's last step, at
  multiples of `every` only (the final step included only if one)."""

  def __init__(self, every: int, *, summaries, variables):
    self.every = every
    self._summaries = summaries
    self._paths = [v.path for v in variables]

  def due(self, step, final):
    return step % self.every == 0

  def __call__(self, boundary):
    last = boundary.output.result
    if not last.last_grads:
      return
    with self._summaries.train.as_default(step=boundary.step):
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

  def __call__(self, boundary):
    if self._average is None:
      return {'validation': self._validate(boundary.step)}
    with self._average.swapped_in():
      return {'validation': self._validate(boundary.step)}

  def _validate(self, step) -> dict:
    val = self._evaluator.evaluate(self._split)
    self._summaries.scalars(self._summaries.validation,
                            {k: val[k] for k in ('loss', 'accuracy')}, step)
    if self._dashboard:
      self._dashboard.on_validation(step)
    improved = self._checkpoints.record_validation(step, val['accuracy'])
    logging.info('step %d validation: loss %.4f accuracy %.4f%s', step,
                 val['loss'], val['accuracy'], ' (best)' if improved else '')
    return val


class SaveCheckpoint(Action):
  """A rolling checkpoint. After validation: it holds the best-validation
  record that validation may just have updated, so a resume from it is the
  uninterrupted run."""
  after = ('Validate',)

  def __init__(self, every: int, *, checkpoints):
    self.every = every
    self._checkpoints = checkpoints

  def __call__(self, boundary):
    self._checkpoints.save(boundary.step)
    return {'saved_step': boundary.step}


class ShowProgress(Action):
  """The progress line: loss, accuracy, examples/s, the newest validation
  (after validation: this boundary's, if it had one)."""
  after = ('Validate',)

  def __init__(self, *, progress):
    self._progress = progress

  def __call__(self, boundary):
    means = boundary.output.means
    values = {'loss': means['loss'], 'acc': means['accuracy'],
              'ex/s': means['examples_per_second']}
    if boundary.validation is not None:
      values['val_acc'] = boundary.validation['accuracy']
    self._progress.update(boundary.step, values)


class StopOnSignal(Action):
  """After SIGTERM or Ctrl-C on any worker: every worker saves this step,
  waits for the others, and stops (Preempted / Interrupted). Last: a stop
  at a boundary follows everything else that boundary does."""
  at_end = False  # the run is over anyway
  after = ('Validate', 'SaveCheckpoint', 'ShowProgress',
           'WriteTrainSummaries', 'WriteGradientHistograms')

  def __init__(self, *, signals, strategy, checkpoints, target: int,
               progress):
    self._signals = signals
    self._strategy = strategy
    self._checkpoints = checkpoints
    self._target = target
    self._progress = progress

  def __call__(self, boundary):
    # Every worker reaches this at the same steps (it is a collective).
    if not self._signals.should_stop():
      return
    step = boundary.step
    if boundary.saved_step != step:
      self._checkpoints.save(step)
    distribute.barrier(self._strategy)  # every worker's save is done
    self._progress.end()
    raise self._signals.stop_error(
        f'checkpoint saved at step {step} of {self._target}; rerun the same '
        'command to resume')


# The order actions run at a boundary (each one's `after` says why).
ORDER = (Validate, SaveCheckpoint, ShowProgress, WriteTrainSummaries,
         WriteGradientHistograms, StopOnSignal)


def build(trainer_config, *, evaluator, validation_split, summaries,
          checkpoints, dashboard, average, progress, window, optimizer,
          variables, signals, strategy) -> List[Action]:
  """The training job's actions, in `ORDER`; gradient histograms only when
  `Trainer.histogram_every` is set."""
  made = [
      Validate(trainer_config.eval_every, evaluator=evaluator,
               split=validation_split, summaries=summaries,
               checkpoints=checkpoints, dashboard=dashboard, average=average),
      SaveCheckpoint(trainer_config.checkpoint_every, checkpoints=checkpoints),
      ShowProgress(progress=progress),
      WriteTrainSummaries(trainer_config.summary_every, window=window,
                          summaries=summaries, optimizer=optimizer),
      StopOnSignal(signals=signals, strategy=strategy,
                   checkpoints=checkpoints, target=trainer_config.steps,
                   progress=progress),
  ]
  if trainer_config.histogram_every:
    made.append(WriteGradientHistograms(trainer_config.histogram_every,
                                        summaries=summaries,
                                        variables=variables))
  return sorted(made, key=lambda action: ORDER.index(type(action)))
