"""SaveCheckpoint: a rolling checkpoint, on `Trainer.checkpoint_every`."""

from seqmnist.loop.outer_loop import Action


class SaveCheckpoint(Action):
  """A rolling checkpoint. After validation: it holds the best-validation
  record that validation may just have updated, so a resume from it is the
  uninterrupted run."""
  after = ('Validate',)

  def __init__(self, every: int, *, checkpoints):
    self.every = every
    self._checkpoints = checkpoints

  @classmethod
  def build(cls, parts):
    return cls(parts.trainer_config.checkpoint_every,
               checkpoints=parts.checkpoints)

  def __call__(self, boundary):
    self._checkpoints.save(boundary.step)
    return {'saved_step': boundary.step}
