"""StopOnSignal: after a real SIGTERM, save the boundary's step (unless
already saved) and stop with Preempted; nothing without a signal."""
import os
import signal
import time

import pytest

from seqmnist.errors import Preempted
from seqmnist.loop.actions.stop_on_signal import StopOnSignal

import job_parts


def test_nothing_happens_without_a_signal(tmp_path, mnist_dir):
  parts, _, _, _ = job_parts.make(tmp_path, mnist_dir)
  action = StopOnSignal.build(parts)
  assert action.after == ('*',) and not action.at_end
  with parts.signals:
    assert action(job_parts.boundary(10)) is None
  assert parts.checkpoints.latest_step() is None


def test_sigterm_saves_the_step_and_stops(tmp_path, mnist_dir):
  parts, _, _, _ = job_parts.make(tmp_path, mnist_dir)
  action = StopOnSignal.build(parts)
  with parts.signals:
    os.kill(os.getpid(), signal.SIGTERM)
    deadline = time.time() + 10
    while parts.signals.received is None and time.time() < deadline:
      time.sleep(0.01)
    with pytest.raises(Preempted, match='checkpoint saved at step 10 of 20'):
      action(job_parts.boundary(10))
  assert parts.checkpoints.latest_step() == 10
