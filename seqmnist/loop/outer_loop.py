"""The outer loop: train to a target step, handing each boundary to actions.

In the spirit of Orbit's `Controller` and its `Action`s: the controller only
counts steps and decides where each `tf.function` call must stop (the next
step at which some action is due); what happens at a boundary -- validate,
checkpoint, summarise, show progress, stop on a signal -- is each action's
own business (one module each in `loop/actions/`), with its own cadence.

Actions are fed by the loop, not by each other: at each boundary the
controller hands every action, in order, one `Boundary` -- the step, the
train call's output, and what earlier actions produced (the newest
validation, the newest rolling checkpoint's step) -- and an action returns
what it produced, which the controller records there for the actions after
it and for later boundaries. An action may name the actions it must run
after (`Action.after`); the controller refuses an order that breaks them.
"""

import dataclasses
import importlib
import inspect
import pkgutil
import time
from typing import Any, Callable, List, Mapping, Optional, Sequence, Tuple


@dataclasses.dataclass(frozen=True)
class Boundary:
  """What the loop has produced by a boundary.

  Attributes:
    step: the global step reached.
    final: whether `step` is the run's target step.
    output: what the train call that ended here returned (trainer.Output:
      the train window's means and the last step's gradients), or None at
      a boundary no call ended (a run resumed at its end).
    validation: the newest validation result (this boundary's or an
      earlier one's), or None before the first.
    saved_step: the step of the newest rolling checkpoint this process
      saved, or None.
  """
  step: int
  final: bool
  output: Any = None
  validation: Optional[Mapping[str, Any]] = None
  saved_step: Optional[int] = None

  # What an action may produce (the rest is the loop's).
  PRODUCED = ('validation', 'saved_step')


class Action:
  """Something done at loop boundaries.

  Attributes:
    every: runs at steps that are multiples of this (and at the final
      step if `at_end`); 0 = at every boundary.
    at_end: also runs at the final step.
    training_time: its time counts towards the training throughput (False
      for validation, which is not training).
    after: names of the action classes that, when present, must run before
      this one at a boundary (what it reads of their products); '*' names
      every other action.
  """
  every: int = 0
  at_end: bool = True
  training_time: bool = True
  after: Tuple[str, ...] = ()

  @classmethod
  def build(cls, parts) -> Optional['Action']:
    """The action a job wants, made from the job's parts (`job.Parts`), or
    None if this run does not want it (say, a cadence of 0)."""
    raise NotImplementedError

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

  def __call__(self, boundary: Boundary) -> Optional[Mapping[str, Any]]:
    """Does the action's work; returns what it produced (keys of
    `Boundary.PRODUCED`), or None."""
    raise NotImplementedError


def _needs(action: Action, actions: Sequence[Action]) -> List[str]:
  """The names of the actions among `actions` that `action` must run
  after ('*': all the others, but those that also say '*')."""
  if '*' in action.after:
    return [type(a).__name__ for a in actions
            if a is not action and '*' not in a.after]
  present = {type(a).__name__ for a in actions}
  return [n for n in action.after if n in present]


def check_order(actions: Sequence[Action]) -> None:
  """Raises ValueError if an action comes before one it must run after."""
  seen = set()
  for action in actions:
    missing = [n for n in _needs(action, actions) if n not in seen]
    if missing:
      raise ValueError(f'{type(action).__name__} must run after '
                       f'{", ".join(missing)}')
    seen.add(type(action).__name__)


def arrange(actions: Sequence[Action]) -> List[Action]:
  """`actions` in an order every `after` allows: of those whose needs are
  met, the first by class name (so the order is fixed by the declarations
  alone). Raises ValueError on needs that cannot all be met (a cycle)."""
  left = sorted(actions, key=lambda a: type(a).__name__)
  done, order = set(), []
  while left:
    ready = [a for a in left
             if all(n in done for n in _needs(a, actions))]
    if not ready:
      raise ValueError('actions whose `after` cannot all be met: '
                       f'{", ".join(type(a).__name__ for a in left)}')
    order.append(ready[0])
    done.add(type(ready[0]).__name__)
    left.remove(ready[0])
  return order


def discover(package: str) -> List[type]:
  """Every Action subclass defined in the modules of `package` (a dotted
  name), in module order."""
  found = []
  for info in sorted(pkgutil.iter_modules(
      importlib.import_module(package).__path__), key=lambda i: i.name):
    module = importlib.import_module(f'{package}.{info.name}')
    found += [c for _, c in inspect.getmembers(module, inspect.isclass)
              if issubclass(c, Action) and c is not Action and
              c.__module__ == module.__name__]
  return found


def build(package: str, parts) -> List[Action]:
  """The actions of `package` that this job wants, arranged."""
  made = [cls.build(parts) for cls in discover(package)]
  return arrange([a for a in made if a is not None])


class Controller:
  """Runs `train(step, num_steps) -> (new step, output)` until `target`,
  and the actions at each boundary, in order."""

  def __init__(self, *, train: Callable[[int, int], Tuple[int, Any]],
               target: int, steps_per_loop: int, actions: Sequence[Action],
               on_overhead: Callable[[float], None] = lambda seconds: None):
    check_order(actions)
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

  def run(self, step: int) -> Boundary:
    """Trains from `step` to the target; returns the last boundary (only
    its step, if there was nothing left to train)."""
    boundary = Boundary(step, final=step >= self._target)
    while step < self._target:
      step, output = self._train(step, self.next_stop(step) - step)
      boundary = dataclasses.replace(boundary, step=step, output=output,
                                     final=step >= self._target)
      overhead = 0.0
      for action in self._actions:
        if action.due(step, boundary.final):
          t0 = time.time()
          boundary = record(boundary, action, action(boundary))
          if action.training_time:
            overhead += time.time() - t0
      self._on_overhead(overhead)
    return boundary


def record(boundary: Boundary, action: Action,
           produced: Optional[Mapping[str, Any]]) -> Boundary:
  """The boundary with what `action` produced."""
  if not produced:
    return boundary
  unknown = sorted(set(produced) - set(Boundary.PRODUCED))
  if unknown:
    raise ValueError(f'{type(action).__name__} produced {unknown[0]!r}; an '
                     f'action produces one of {Boundary.PRODUCED}')
  return dataclasses.replace(boundary, **produced)
