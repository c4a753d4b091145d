"""SIGTERM -> every worker saves the same step and exits 143.

Slurm (`--signal`, preemption, `scancel`) and Kubernetes (pod deletion, node
drain) ask a job to stop with SIGTERM, then kill it after a grace period. The
handler only raises a flag; the trainer polls `should_stop()` at each step
boundary, after that boundary's validation and checkpoint, and then saves and
raises `errors.Preempted`.

Under MultiWorkerMirroredStrategy a signal may reach one worker only, or the
workers at different steps. `should_stop` is therefore an agreement: a
one-number all-reduce of every worker's flag, made by every worker at the
same boundary, so all of them stop after the same step (what TF's
`PreemptionCheckpointHandler` provides, without taking over the loop).
"""

import signal
import threading

from absl import logging
import tensorflow as tf

from seqmnist import distribute


class PreemptionWatcher:
  """A context manager: catches SIGTERM while training runs.

    with PreemptionWatcher(strategy) as watcher:
      ...
      if watcher.should_stop():
        save; raise Preempted
  """

  def __init__(self, strategy: tf.distribute.Strategy):
    self._strategy = strategy
    self._requested = False
    self._previous = None
    self._agree = None
    if distribute.num_workers(strategy) > 1:
      self._agree = distribute.make_any_worker(strategy)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_signal)
    else:  # signals only reach the main thread; nothing to catch here
      logging.warning('Not in the main thread: SIGTERM will not be caught.')
    return self

  def __exit__(self, *exc_info):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def _on_signal(self, signum, frame):
    del frame
    if not self._requested:
      logging.warning('Received signal %d: saving at the next step boundary.',
                      signum)
    self._requested = True

  def should_stop(self) -> bool:
    """True if this or any other worker received SIGTERM.

    In a multi-worker cluster every worker must call it at the same
    boundaries: it is a collective.
    """
    if self._agree is None:
      return self._requested
    return self._agree(self._requested)
