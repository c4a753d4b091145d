"""SIGTERM or Ctrl-C -> every worker saves the same step and stops.

Slurm (`--signal`, preemption, `scancel`) and Kubernetes (pod deletion, node
drain) ask a job to stop with SIGTERM, then kill it after a grace period; a
user at a terminal presses Ctrl-C (SIGINT). Either only raises a flag; the
loop asks `should_stop()` at each step boundary, after that boundary's
validation and checkpoint, then saves and raises `errors.Preempted` (exit
143) or `errors.Interrupted` (exit 130). A second Ctrl-C ends the process at
once (exit 130, nothing more saved), for a user who will not wait.

Python runs signal handlers only between bytecodes of the main thread, and
the main thread spends whole `tf.function` calls (seconds to minutes on the
pixel task) inside TensorFlow. So the signals are read by a small watcher
thread from Python's wakeup fd, which the interpreter's C-level handler
writes at once: the first signal is acknowledged when it arrives, and a
second Ctrl-C can end the process while a loop is still running.

Under MultiWorkerMirroredStrategy a signal may reach one worker only, or the
workers at different steps. `should_stop` is therefore an agreement: a
one-number all-reduce of every worker's flag, made by every worker at the
same boundary, so all of them stop after the same step (what TF's
`PreemptionCheckpointHandler` provides, without taking over the loop).
"""

import os
import signal
import sys
import threading
from typing import Optional

from absl import logging
import tensorflow as tf

from seqmnist.cluster import distribute
from seqmnist.errors import EXIT_INTERRUPTED, Interrupted, Preempted

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _ignore(signum, frame):
  """The Python-level handler: the watcher thread does the work."""
  del signum, frame


class StopSignals:
  """A context manager: catches SIGTERM and SIGINT while it is open.

    with StopSignals(strategy) as signals:
      ...
      if signals.should_stop():
        save; raise signals.stop_error('checkpoint saved at ...')
  """

  def __init__(self, strategy: tf.distribute.Strategy, program='seqmnist'):
    self._program = program
    self.received: Optional[int] = None  # the first signal caught
    # Set once training is over: a signal then lets the final test pass
    # finish (seconds to a minute) rather than leave the run without results.
    self.finishing = False
    self._previous = {}
    self._previous_wakeup = None
    self._read_fd = self._write_fd = None
    self._agree = None
    if distribute.num_workers(strategy) > 1:
      self._agree = distribute.make_any_worker(strategy)

  def __enter__(self):
    if threading.current_thread() is not threading.main_thread():
      logging.warning('Not in the main thread: SIGTERM and Ctrl-C will not '
                      'be caught.')
      return self
    self._read_fd, self._write_fd = os.pipe()
    os.set_blocking(self._write_fd, False)
    for signum in _SIGNALS:
      self._previous[signum] = signal.signal(signum, _ignore)
    self._previous_wakeup = signal.set_wakeup_fd(self._write_fd,
                                                 warn_on_full_buffer=False)
    threading.Thread(target=self._watch, args=(self._read_fd,), daemon=True,
                     name='seqmnist-stop-signals').start()
    return self

  def __exit__(self, *exc_info):
    if self._write_fd is None:
      return
    signal.set_wakeup_fd(self._previous_wakeup)
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}
    os.close(self._write_fd)  # the watcher reads EOF and ends
    self._write_fd = None

  def _watch(self, read_fd):
    with os.fdopen(read_fd, 'rb', buffering=0) as pipe:
      while True:
        data = pipe.read(64)
        if not data:
          return
        for signum in data:
          if signum in _SIGNALS:
            self._on_signal(signum)

  def _on_signal(self, signum):
    if signum == signal.SIGINT and self.received == signal.SIGINT:
      print(f'{self._program}: interrupted: stopped at once by a second '
            'Ctrl-C; the newest checkpoint on disk is kept', file=sys.stderr,
            flush=True)
      os._exit(EXIT_INTERRUPTED)  # pylint: disable=protected-access
    if self.received is None:
      self.received = signum
      what = 'Ctrl-C' if signum == signal.SIGINT else f'signal {signum}'
      if self.finishing:
        logging.warning('Received %s during the final test pass: finishing '
                        'it, then exiting with the results%s.', what,
                        ' (Ctrl-C again to stop at once)'
                        if signum == signal.SIGINT else '')
      else:
        logging.warning('Received %s: saving at the next step boundary%s.',
                        what, ' (Ctrl-C again to stop at once)'
                        if signum == signal.SIGINT else '')

  def should_stop(self) -> bool:
    """True if this or any other worker received a stop signal.

    In a multi-worker cluster every worker must call it at the same
    boundaries: it is a collective.
    """
    if self._agree is None:
      return self.received is not None
    return self._agree(self.received is not None)

  def stop_error(self, message: str) -> Preempted:
    """Interrupted (exit 130) after Ctrl-C here, else Preempted (143)."""
    if self.received == signal.SIGINT:
      return Interrupted(message)
    return Preempted(message)
