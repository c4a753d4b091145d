"""WriteGradientHistograms: only with Trainer.histogram_every, at its
multiples, raw and clipped histograms of each variable."""
import numpy as np

from seqmnist.loop.actions.write_gradient_histograms import (
    WriteGradientHistograms)

import job_parts


def test_none_without_histogram_every(tmp_path, mnist_dir):
  parts, _, _, _ = job_parts.make(tmp_path, mnist_dir)
  assert WriteGradientHistograms.build(parts) is None


def test_histograms_of_each_variable_at_multiples_only(tmp_path, mnist_dir):
  parts, run_dir, built, _ = job_parts.make(tmp_path, mnist_dir,
                                            histogram_every=20)
  action = WriteGradientHistograms.build(parts)
  assert action.after == ('WriteTrainSummaries',)
  assert not action.due(10, final=False) and action.due(20, final=True)
  action(job_parts.boundary(20, job_parts.output(
      built.model.trainable_variables)))
  written = job_parts.scalars(run_dir.events('train'))
  paths = [v.path for v in built.model.trainable_variables]
  assert sorted(written) == sorted(
      [f'gradients/{p}' for p in paths] +
      [f'clipped_gradients/{p}' for p in paths])
  step, histogram = written[f'clipped_gradients/{paths[0]}'][0]
  assert step == 20
  # One bucket holding every element, all 0.5 (the clipped ones of 1).
  assert np.all(histogram[:, :2][histogram[:, 2] > 0] == 0.5)
