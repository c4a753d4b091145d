"""WriteTrainSummaries: the window's means and the learning rate to the
train events, then a new window."""
import pytest

from seqmnist.loop import steps

from seqmnist.loop.actions.write_train_summaries import WriteTrainSummaries

import job_parts


def test_train_scalars_are_written_and_the_window_closed(tmp_path,
                                                         mnist_dir):
  parts, run_dir, _, _ = job_parts.make(tmp_path, mnist_dir)
  parts.window.add({name: 1.0 for name in steps.TRAIN_METRICS}, 10, 1.0)
  action = WriteTrainSummaries.build(parts)
  assert action.every == 10
  action(job_parts.boundary(10, job_parts.output(loss=0.5)))
  parts.summaries.flush()
  written = job_parts.scalars(run_dir.events('train'))
  assert written['loss'] == [(10, pytest.approx(0.5))]
  assert written['learning_rate'][0][0] == 10
  assert parts.window.steps == 0  # closed: the next point starts anew
  action(job_parts.boundary(20, job_parts.output(window_steps=0)))
  parts.summaries.flush()
  assert len(job_parts.scalars(run_dir.events('train'))['loss']) == 1
