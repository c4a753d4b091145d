"""ReportToTrial: a search's trial reports each validation to its study,
and stops, saved, when the study prunes it."""

from seqmnist.cluster import distribute
from seqmnist.errors import Pruned
from seqmnist.loop.outer_loop import Action


class ReportToTrial(Action):
  """Only in a trial of `seqmnist-search` (`Parts.trial`): after each
  validation, the chief reports its accuracy at this step to the trial
  (`trial.report(step, accuracy) -> prune?`); if the study prunes the trial
  (not at the final step), every worker saves this step and the run ends
  with `Pruned` (exit 4). Rerunning the run dir by hand resumes it as any
  run does."""
  training_time = False
  after = ('Validate',)

  def __init__(self, every: int, *, trial, strategy, checkpoints, progress):
    self.every = every
    self._trial = trial
    self._strategy = strategy
    self._checkpoints = checkpoints
    self._progress = progress
    self._is_chief = distribute.is_chief(strategy)
    self._agree = None
    if distribute.num_workers(strategy) > 1:
      self._agree = distribute.make_any_worker(strategy)

  @classmethod
  def build(cls, parts):
    if parts.trial is None:
      return None
    return cls(parts.trainer_config.eval_every, trial=parts.trial,
               strategy=parts.strategy, checkpoints=parts.checkpoints,
               progress=parts.progress)

  def __call__(self, boundary):
    validation = boundary.validation
    if validation is None:
      return
    prune = False
    if self._is_chief:
      prune = self._trial.report(boundary.step, validation['accuracy'])
    if self._agree is not None:  # a collective: every worker calls it
      prune = self._agree(prune)
    if not prune or boundary.final:
      return
    step = boundary.step
    if boundary.saved_step != step:
      self._checkpoints.save(step)
    distribute.barrier(self._strategy)
    self._progress.end()
    raise Pruned(f'the search pruned this trial at step {step} (validation '
                 f'accuracy {validation["accuracy"]:.4f}); checkpoint saved')
