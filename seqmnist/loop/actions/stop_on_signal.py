"""StopOnSignal: after SIGTERM or Ctrl-C, save and stop, at every boundary."""

from seqmnist.cluster import distribute
from seqmnist.loop.outer_loop import Action


class StopOnSignal(Action):
  """After SIGTERM or Ctrl-C on any worker: every worker saves this step,
  waits for the others, and stops (Preempted / Interrupted). Last: a stop
  at a boundary follows everything else that boundary does."""
  at_end = False  # the run is over anyway
  after = ('*',)

  def __init__(self, *, signals, strategy, checkpoints, target: int,
               progress):
    self._signals = signals
    self._strategy = strategy
    self._checkpoints = checkpoints
    self._target = target
    self._progress = progress

  @classmethod
  def build(cls, parts):
    return cls(signals=parts.signals, strategy=parts.strategy,
               checkpoints=parts.checkpoints,
               target=parts.trainer_config.steps, progress=parts.progress)

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
