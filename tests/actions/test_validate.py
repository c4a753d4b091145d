"""Validate: a real validation pass of a real model writes the scalars and
the best checkpoint, and with a weight average measures the averages and
puts the live weights back."""
import numpy as np

from seqmnist.loop.actions.validate import Validate

import job_parts


def test_validate_measures_records_and_saves_the_best(tmp_path, mnist_dir):
  parts, run_dir, built, _ = job_parts.make(tmp_path, mnist_dir)
  action = Validate.build(parts)
  assert action.every == 10 and not action.training_time
  produced = action(job_parts.boundary(10))
  val = produced['validation']
  exact = parts.evaluator.evaluate(parts.validation_split)
  assert val['accuracy'] == exact['accuracy'] and 0 <= val['accuracy'] <= 1
  assert int(parts.checkpoints.best_step.numpy()) == 10
  assert parts.checkpoints.best_val_accuracy.numpy() == val['accuracy']
  parts.summaries.flush()
  written = job_parts.scalars(run_dir.events('validation'))
  assert written['accuracy'] == [(10, np.float32(val['accuracy']))]


def test_validate_sees_the_weight_average_and_restores_the_live_weights(
    tmp_path, mnist_dir):
  parts, _, built, _ = job_parts.make(tmp_path, mnist_dir, ema_decay=0.9)
  live = [v.numpy().copy() for v in built.model.trainable_variables]
  for average in built.average.averages:  # averages unlike the live weights
    average.assign(average.read_value() * 0.0)
  produced = Validate.build(parts)(job_parts.boundary(10))
  # Zero weights give equal logits, whose argmax is class 0 for every
  # image: the 0s' share of the 100.
  labels = parts.validation_split.labels
  assert produced['validation']['accuracy'] == np.mean(labels == 0)
  for variable, before in zip(built.model.trainable_variables, live):
    np.testing.assert_array_equal(variable.numpy(), before)
