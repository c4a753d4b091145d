"""What the terminal shows while training, and the train metrics behind it.

`MetricWindow` sums the train loop's metrics between two summaries and the
run's training throughput; `ProgressLine` prints one line per loop boundary
(a single updating line on a terminal, a plain line every `log_every`
seconds when stdout is a file or a pipe).
"""

import sys
import time
from typing import Mapping, Optional

from seqmnist.loop import steps as steps_lib


class MetricWindow:
  """Train metrics summed since the last summary, and the run's throughput.

  `add` takes the sums a train loop call returns (see steps.TRAIN_METRICS);
  `means` turns the window into per-step means and per-example rates.
  """

  def __init__(self):
    self.train_seconds, self.train_examples = 0.0, 0.0
    self.first_loop = None  # (seconds, examples) of the call that traced
    self.reset()

  def reset(self):
    self.sums = dict.fromkeys(steps_lib.TRAIN_METRICS, 0.0)
    self.steps, self.seconds = 0, 0.0

  def add(self, sums: Mapping[str, float], steps: int, seconds: float):
    if self.first_loop is None:
      self.first_loop = (seconds, sums['examples'])
    else:
      self.train_seconds += seconds
      self.train_examples += sums['examples']
    for k in self.sums:
      self.sums[k] += sums[k]
    self.steps += steps
    self.seconds += seconds

  def add_overhead(self, seconds: float):
    """Time spent between train loops (summaries, checkpoints, progress)."""
    if self.train_examples:  # not after the first loop, as for its examples
      self.train_seconds += seconds

  def means(self) -> dict:
    return steps_lib.train_means(self.sums, self.steps, self.seconds)

  def examples_per_second(self) -> Optional[float]:
    """Over every loop but the first (which includes tracing), if any.

    Counts the time between loops too (summaries, checkpoints) but not
    validation: the training throughput a user actually gets.
    """
    seconds, examples = self.train_seconds, self.train_examples
    if seconds == 0 and self.first_loop:
      seconds, examples = self.first_loop
    return examples / seconds if seconds else None


class ProgressLine:
  """`step 430/21500 [==>   ] 2% loss 1.2345 acc 0.5678 ex/s 247 val 0.7740
  ETA 1:22:10`; the ETA counts only the steps run since this process began
  (a resumed run does not claim the speed of the steps before it)."""

  def __init__(self, target: int, initial: int, stream=None,
               log_every: float = 30.0, clock=time.monotonic):
    self._target = target
    self._initial = initial
    self._stream = stream or sys.stdout
    self._tty = hasattr(self._stream, 'isatty') and self._stream.isatty()
    self._log_every = log_every
    self._clock = clock
    self._start = clock()
    self._last_print = None
    self._values = {}

  def text(self, step: int) -> str:
    width = 20
    done = step / self._target if self._target else 1.0
    filled = int(width * done)
    bar = '=' * filled + ('>' if filled < width else '') + ' ' * (
        width - filled - 1)
    parts = [f'step {step}/{self._target}', f'[{bar[:width]}]',
             f'{100 * done:.0f}%']
    for name, value in self._values.items():
      if name == 'ex/s':
        parts.append(f'{name} {value:,.0f}')
      else:
        parts.append(f'{name} {value:.4f}')
    eta = self.eta_seconds(step)
    if eta is not None:
      parts.append(f'ETA {_clock_text(eta)}')
    return ' '.join(parts)

  def eta_seconds(self, step: int) -> Optional[float]:
    done = step - self._initial
    if done <= 0:
      return None
    return (self._clock() - self._start) / done * (self._target - step)

  def update(self, step: int, values: Mapping[str, float]) -> None:
    self._values.update(values)
    now = self._clock()
    final = step >= self._target
    if self._tty:
      self._stream.write('\r' + self.text(step) + ('\n' if final else ''))
    elif (final or self._last_print is None or
          now - self._last_print >= self._log_every):
      self._stream.write(self.text(step) + '\n')
      self._last_print = now
    else:
      return
    self._stream.flush()

  def end(self) -> None:
    """Ends an updating terminal line early (a stop before the target)."""
    if self._tty:
      self._stream.write('\n')
      self._stream.flush()


def _clock_text(seconds: float) -> str:
  seconds = int(round(seconds))
  h, rest = divmod(seconds, 3600)
  m, s = divmod(rest, 60)
  return f'{h}:{m:02d}:{s:02d}' if h else f'{m}:{s:02d}'
