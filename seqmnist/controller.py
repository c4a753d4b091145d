"""The outer loop: train to a target step, handing each boundary to actions.

In the spirit of Orbit's `Controller` and its `Action`s: the controller only
counts steps and decides where each `tf.function` call must stop (the next
step at which some action is due); what happens at a boundary -- validate,
checkpoint, summarise, show progress, stop on a signal -- is each action's
own business (actions.py), with its own cadence.
"""

import time
from typing import Callable, Optional, Sequence


class Action:
  """Something done at loop boundaries.

  Attributes:
    every: runs at steps that are multiples of this (and at the final
      step if `at_end`); 0 = at every boundary.
    at_end: also runs at the final step.
    training_time: its time counts towards the training throughput (False
      for validation, which is not training).
  """
  every: int = 0
  at_end: bool = True
  training_time: bool = True

  def due(self, step: int, final: bool) -> bool:
    if final:
      return self.at_end
    return self.every == 0 or step % self.every == 0

  def next_step(self, step: int) -> Optional[int]:
    """The next step after `step` at which this action is due (None: only
    at boundaries the others make)."""
    if self.every <= 0:
      return None
    return (step // self.every + 1) * self.every

  def __call__(self, step: int, final: bool) -> None:
    raise NotImplementedError


class Controller:
  """Runs `train(step, num_steps) -> new step` until `target`, and the
  actions at each boundary, in order."""

  def __init__(self, *, train: Callable[[int, int], int], target: int,
               steps_per_loop: int, actions: Sequence[Action],
               on_overhead: Callable[[float], None] = lambda seconds: None):
    self._train = train
    self._target = target
    self._steps_per_loop = steps_per_loop
    self._actions = list(actions)
    self._on_overhead = on_overhead

  def next_stop(self, step: int) -> int:
    """The next step at which the loop must return to Python."""
    candidates = [self._target, step + self._steps_per_loop]
    candidates += [s for s in (a.next_step(step) for a in self._actions)
                   if s is not None]
    return min(candidates)

  def run(self, step: int) -> int:
    """Trains from `step` to the target; returns the final step."""
    while step < self._target:
      step = self._train(step, self.next_stop(step) - step)
      final = step >= self._target
      overhead = 0.0
      for action in self._actions:
        if action.due(step, final):
          t0 = time.time()
          action(step, final)
          if action.training_time:
            overhead += time.time() - t0
      self._on_overhead(overhead)
    return step
