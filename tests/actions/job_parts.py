"""What the action tests build their actions from: a real tiny experiment
(a GRU of 8 units on 200 real MNIST images), a real run dir, real
checkpoints, summaries, progress line and evaluator; `job.Parts` as the job
fills it."""
import io
import os

import numpy as np
import tensorflow as tf

from seqmnist import rundir
from seqmnist.cluster import distribute
from seqmnist.cluster import preemption
from seqmnist.data import pipeline
from seqmnist.loop import checkpoints
from seqmnist.loop import dashboard
from seqmnist.loop import evaluator
from seqmnist.loop import experiment
from seqmnist.loop import job
from seqmnist.loop import outer_loop
from seqmnist.loop import progress
from seqmnist.loop import steps
from seqmnist.loop import summaries
from seqmnist.loop import trainer
from seqmnist.model import network


def make(tmp_path, mnist_dir, ema_decay=0.0, histogram_every=0):
  """(parts, run dir, experiment, the progress line's stream)."""
  data = pipeline.DataConfig(batch_size=20, eval_batch_size=100)
  loaded = pipeline.load(data, mnist_dir)
  small = lambda s, n: pipeline.Split(s.images[:n], s.labels[:n])
  splits = pipeline.Splits(small(loaded.train, 200),
                           small(loaded.validation, 100),
                           small(loaded.test, 100), loaded.source)
  configs = experiment.Configs(
      data=data,
      model=network.ModelConfig(units=8, batch_norm=False),
      trainer=trainer.TrainerConfig(
          steps=20, steps_per_loop=10, eval_every=10, checkpoint_every=10,
          summary_every=10, histogram_every=histogram_every,
          ema_decay=ema_decay),
      distribute=distribute.DistributeConfig(),
      dashboard=dashboard.DashboardConfig())
  strategy = tf.distribute.get_strategy()
  built = experiment.build(configs, strategy, splits)
  run_dir = rundir.RunDir(str(tmp_path / 'run'))
  os.makedirs(run_dir.path)
  with strategy.scope():
    saved = checkpoints.RunCheckpoints(
        run_dir, model=built.model, optimizer=built.optimizer, keep=3,
        average=built.average)
  stream = io.StringIO()
  parts = job.Parts(
      trainer_config=configs.trainer,
      evaluator=evaluator.Evaluator(strategy, built.model, data),
      validation_split=splits.validation,
      summaries=summaries.Summaries(run_dir, is_chief=True),
      checkpoints=saved, dashboard=None, average=built.average,
      progress=progress.ProgressLine(20, 0, stream=stream),
      window=progress.MetricWindow(), optimizer=built.optimizer,
      variables=built.model.trainable_variables,
      signals=preemption.StopSignals(strategy), strategy=strategy)
  return parts, run_dir, built, stream


def output(variables=(), window_steps=10, loss=0.5):
  """A train call's output (trainer.Output) as the inner loop hands it."""
  grads = tuple(tf.ones_like(v) for v in variables)
  result = steps.LoopResult(
      sums={}, steps_run=tf.constant(10), diverged=tf.constant(False),
      last_loss=tf.constant(loss), last_grad_norm=tf.constant(1.0),
      last_grads=grads, last_clipped=tuple(g / 2 for g in grads))
  means = {'loss': loss, 'accuracy': 0.25, 'examples_per_second': 123.0,
           'grad_norm': 1.0, 'clipped_grad_norm': 0.5}
  return trainer.Output(result=result, means=means,
                        window_steps=window_steps)


def boundary(step, out=None, **produced):
  return outer_loop.Boundary(step, final=step >= 20, output=out, **produced)


def scalars(folder):
  """{tag: [(step, value)]} of the event files in `folder`."""
  found = {}
  for name in sorted(os.listdir(folder)):
    for event in tf.compat.v1.train.summary_iterator(
        os.path.join(folder, name)):
      for value in event.summary.value:
        found.setdefault(value.tag, []).append(
            (event.step, float(tf.make_ndarray(value.tensor))
             if value.metadata.plugin_data.plugin_name == 'scalars'
             else np.asarray(tf.make_ndarray(value.tensor))))
  return found
