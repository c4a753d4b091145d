"""WriteGradientHistograms: gradient histograms, on
`Trainer.histogram_every` (0, the default, makes none)."""

import tensorflow as tf

from seqmnist.loop.outer_loop import Action


class WriteGradientHistograms(Action):
  """Raw and clipped gradient histograms of the boundary's last step, at
  multiples of `every` only (the final step included only if one)."""
  after = ('WriteTrainSummaries',)  # the train writer's scalars first

  def __init__(self, every: int, *, summaries, variables):
    self.every = every
    self._summaries = summaries
    self._paths = [v.path for v in variables]

  @classmethod
  def build(cls, parts):
    if not parts.trainer_config.histogram_every:
      return None
    return cls(parts.trainer_config.histogram_every,
               summaries=parts.summaries, variables=parts.variables)

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
