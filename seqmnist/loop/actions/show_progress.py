"""ShowProgress: the progress line, at every boundary."""

from seqmnist.loop.outer_loop import Action


class ShowProgress(Action):
  """The progress line: loss, accuracy, examples/s, the newest validation
  (after validation: this boundary's, if it had one)."""
  after = ('Validate',)

  def __init__(self, *, progress):
    self._progress = progress

  @classmethod
  def build(cls, parts):
    return cls(progress=parts.progress)

  def __call__(self, boundary):
    means = boundary.output.means
    values = {'loss': means['loss'], 'acc': means['accuracy'],
              'ex/s': means['examples_per_second']}
    if boundary.validation is not None:
      values['val_acc'] = boundary.validation['accuracy']
    self._progress.update(boundary.step, values)
