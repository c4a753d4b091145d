"""WriteTrainSummaries: train scalars, on `Trainer.summary_every`."""

import keras

from seqmnist.loop.outer_loop import Action


class WriteTrainSummaries(Action):
  """Train scalars (the window's means at this boundary, the learning rate)
  to TensorBoard, then a new window: each point averages the steps since the
  previous one."""

  def __init__(self, every: int, *, window, summaries, optimizer):
    self.every = every
    self._window = window  # progress.MetricWindow, which this action closes
    self._summaries = summaries
    self._optimizer = optimizer

  @classmethod
  def build(cls, parts):
    return cls(parts.trainer_config.summary_every, window=parts.window,
               summaries=parts.summaries, optimizer=parts.optimizer)

  def __call__(self, boundary):
    if not boundary.output.window_steps:
      return
    learning_rate = float(keras.ops.convert_to_numpy(
        self._optimizer.learning_rate))
    self._summaries.scalars(self._summaries.train, dict(
        boundary.output.means, learning_rate=learning_rate), boundary.step)
    self._window.reset()
