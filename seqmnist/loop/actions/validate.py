"""Validate: a validation pass, on `Trainer.eval_every`."""

from absl import logging

from seqmnist.loop.outer_loop import Action


class Validate(Action):
  """A validation pass: scalars, the dashboard, and the best checkpoint.

  With a weight average (optim/averaging.py) all three see the averaged
  weights, so the best checkpoint holds them; the live weights are back
  afterwards.
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

  @classmethod
  def build(cls, parts):
    return cls(parts.trainer_config.eval_every, evaluator=parts.evaluator,
               split=parts.validation_split, summaries=parts.summaries,
               checkpoints=parts.checkpoints, dashboard=parts.dashboard,
               average=parts.average)

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
