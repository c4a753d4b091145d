"""What one training or evaluation step computes, and the loops that run them.

This is the step side of the loop/step boundary: the outer loop
(`outer_loop.py`) decides where each call stops and its actions checkpoint
and summarise at the boundaries; the inner loop (`trainer.py`) calls the
`tf.function`s built here and times them. Each runs many steps per call
(`tf.range` inside) and returns metric *sums* reduced over every replica and
worker.

The train step under a strategy with R replicas at global batch B:
  1. each replica's loss is its share of the global mean: sum of per-example
     cross-entropy / B;
  2. gradients are all-reduced (SUM) in replica context -> the global mean's
     gradient, the same on every replica;
  3. per-variable clipping of that aggregated gradient (head excluded);
  4. the optimizer gets clipped/R: Keras 3 optimizers all-reduce (SUM) inside
     `apply_gradients`, which turns clipped/R back into the clipped gradient.
So one step makes the same update with 1 or R replicas.
"""

import dataclasses
from typing import NamedTuple, Sequence

import keras
import tensorflow as tf

from seqmnist.model import dropout
from seqmnist.optim import clipping

SUM = tf.distribute.ReduceOp.SUM
MEAN = tf.distribute.ReduceOp.MEAN

# What one train loop call returns in `LoopResult.sums`, summed over its
# steps: `loss` (each step's mean cross-entropy over the global batch),
# `grad_norm` and `clipped_grad_norm` (each step's global L2 norm of the
# gradient before and after per-variable clipping), `clipped_fraction` (each
# step's fraction of clipped variables), `correct` and `examples` (counts).
# `train_means` turns them into the figures shown and summarised.
TRAIN_METRICS = ('loss', 'grad_norm', 'clipped_grad_norm', 'clipped_fraction',
                 'correct', 'examples')
EVAL_METRICS = ('loss_sum', 'correct', 'examples', 'confusion')


@dataclasses.dataclass(frozen=True)
class StepOptions:
  """How a train step updates the model.

  Attributes:
    global_batch_size: examples per step over all replicas.
    clip_norm: max L2 norm of each variable's aggregated gradient; 0 = off.
    clip_exclude: regexes of variable paths never clipped.
    histograms: return the last step's raw and clipped gradients (the first
      replica's), for gradient histograms.
    max_loss: a step whose loss exceeds this has diverged (as has one whose
      loss or gradient is NaN or Inf); 0 = no bound.
    jit_compile: compile each replica's forward and backward pass with XLA
      (the all-reduce, clipping and update stay outside it).
    loss_scale: the optimizer is a keras LossScaleOptimizer (float16): the
      loss is scaled before the backward pass, gradients are unscaled before
      clipping, and a step whose gradients overflow is skipped by the
      optimizer (not a divergence).
    label_smoothing: smooth the training targets by this much (0 = off).
    seed: Trainer.seed, which with the global step keys dropout masks.
  """
  global_batch_size: int
  clip_norm: float
  clip_exclude: Sequence[str]
  histograms: bool = False
  max_loss: float = 0.0
  jit_compile: bool = False
  loss_scale: bool = False
  label_smoothing: float = 0.0
  seed: int = 0


def _per_example_loss(labels, logits, label_smoothing=0.0):
  logits = tf.cast(logits, tf.float32)
  labels = tf.cast(labels, tf.int32)
  if not label_smoothing:
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels,
                                                          logits=logits)
  classes = tf.shape(logits)[-1]
  targets = (tf.one_hot(labels, classes) * (1.0 - label_smoothing) +
             label_smoothing / tf.cast(classes, tf.float32))
  return tf.nn.softmax_cross_entropy_with_logits(labels=targets, logits=logits)


def _correct(labels, logits, weights=None):
  hits = tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32),
                          tf.cast(labels, tf.int32)), tf.float32)
  if weights is not None:
    hits *= weights
  return tf.reduce_sum(hits)


class LoopResult(NamedTuple):
  """What one call of the train loop returns.

  Attributes:
    sums: TRAIN_METRICS summed over the healthy steps run.
    steps_run: steps taken (optimizer updates applied), <= num_steps.
    diverged: True if the last step's loss or gradient norm was NaN or Inf,
      or its loss above `max_loss`; the loop stops right after such a step,
      whose update is already applied.
    last_loss, last_grad_norm: the last step's values.
    last_grads, last_clipped: with `StepOptions.histograms`, the last step's
      raw and clipped gradients (the first replica's copy), else ().
  """
  sums: dict
  steps_run: tf.Tensor
  diverged: tf.Tensor
  last_loss: tf.Tensor
  last_grad_norm: tf.Tensor
  last_grads: tuple = ()
  last_clipped: tuple = ()


def train_means(sums, steps: int, seconds: float) -> dict:
  """TRAIN_METRICS sums over `steps` steps and `seconds` -> the figures
  shown and summarised: mean loss and gradient statistics per step,
  accuracy over the examples, examples per second."""
  return {
      'loss': sums['loss'] / steps,
      'accuracy': sums['correct'] / sums['examples'],
      'examples_per_second': sums['examples'] / seconds,
      'grad_norm': sums['grad_norm'] / steps,
      'clipped_grad_norm': sums['clipped_grad_norm'] / steps,
      'clipped_fraction': sums['clipped_fraction'] / steps,
  }


def make_train_loop(strategy: tf.distribute.Strategy, model: keras.Model,
                    optimizer: keras.optimizers.Optimizer,
                    options: StepOptions, average=None):
  """Returns `train_loop(iterator, num_steps) -> LoopResult`.

  The loop stops early after a step that diverged (see LoopResult).
  `average`, an averaging.WeightAverage, is updated after every step.
  """
  variables = model.trainable_variables

  def forward_backward(sequences, labels, first_row):
    with tf.GradientTape() as tape:
      with dropout.masks(options.seed, optimizer.iterations, first_row,
                         options.global_batch_size):
        logits = model(sequences, training=True)
      loss = tf.nn.compute_average_loss(
          _per_example_loss(labels, logits, options.label_smoothing),
          global_batch_size=options.global_batch_size)
      scaled = optimizer.scale_loss(loss) if options.loss_scale else loss
    return loss, logits, tape.gradient(scaled, variables)

  if options.jit_compile:
    forward_backward = tf.function(forward_backward, jit_compile=True)

  def replica_step(sequences, labels):
    ctx = tf.distribute.get_replica_context()
    # This replica's rows of the global batch (data._per_replica_batches).
    first_row = (tf.cast(ctx.replica_id_in_sync_group, tf.int32) *
                 tf.shape(labels)[0])
    loss, logits, grads = forward_backward(sequences, labels, first_row)
    grads = ctx.all_reduce(SUM, grads)
    if options.loss_scale:
      scale = tf.cast(optimizer.dynamic_scale, tf.float32)
      grads = [g / scale for g in grads]
    clipped, stats = clipping.clip_gradients(
        grads, variables, options.clip_norm, options.clip_exclude)
    replicas = ctx.num_replicas_in_sync
    to_apply = clipped if replicas == 1 else [g / replicas for g in clipped]
    if options.loss_scale:
      # The optimizer unscales (and skips the step on overflow) itself. The
      # scale is a power of two: multiplying back is exact.
      to_apply = [g * scale for g in to_apply]
      finite = optimizer.check_finite(grads)
      stats = {k: tf.where(finite, v, tf.zeros_like(v))
               for k, v in stats.items()}
    optimizer.apply_gradients(zip(to_apply, variables))
    if average is not None:
      average.update(optimizer.iterations)
    metrics = dict(stats, loss=loss, correct=_correct(labels, logits),
                   examples=tf.cast(tf.shape(labels)[0], tf.float32))
    return metrics, grads, clipped

  def reduce(metrics):
    out = {}
    for key, value in metrics.items():
      # loss is each replica's share of the global mean; counts add up;
      # gradient statistics are already identical on every replica.
      op = SUM if key in ('loss', 'correct', 'examples') else MEAN
      out[key] = strategy.reduce(op, value, axis=None)
    return out

  def first_replica(values):
    return tuple(strategy.experimental_local_results(v)[0] for v in values)

  @tf.function
  def train_loop(iterator, num_steps):
    totals = {k: tf.constant(0.0) for k in TRAIN_METRICS}
    steps_run = tf.constant(0)
    diverged = tf.constant(False)
    last = {'loss': tf.constant(0.0), 'grad_norm': tf.constant(0.0)}
    last_grads = last_clipped = ()
    if options.histograms:
      last_grads = tuple(tf.zeros_like(v) for v in variables)
      last_clipped = last_grads
    for _ in tf.range(num_steps):
      sequences, labels = next(iterator)
      metrics, grads, clipped = strategy.run(replica_step,
                                             (sequences, labels))
      if options.histograms:
        last_grads, last_clipped = first_replica(grads), first_replica(clipped)
      reduced = reduce(metrics)
      steps_run += 1
      last = {k: reduced[k] for k in last}
      # Reduced values are the same on every replica and worker, so all of
      # them leave the loop at the same step.
      # (Under loss scaling an overflowing gradient is skipped, not fatal.)
      diverged = ~(tf.math.is_finite(reduced['loss']) &
                   tf.math.is_finite(reduced['grad_norm']))
      if options.max_loss > 0:
        diverged |= reduced['loss'] > options.max_loss
      if diverged:
        break
      totals = {k: totals[k] + reduced[k] for k in TRAIN_METRICS}
    return LoopResult(totals, steps_run, diverged, last['loss'],
                      last['grad_norm'], last_grads, last_clipped)

  return train_loop


def make_eval_loop(strategy: tf.distribute.Strategy, model: keras.Model):
  """Returns `eval_loop(iterator, num_steps) -> dict of metric sums`.

  The iterator yields (sequences, labels, weights); weight-0 rows are padding.
  Sums: loss_sum, correct, examples, and confusion [true, predicted] counts.
  """
  num_classes = model.output_shape[-1]

  def replica_step(sequences, labels, weights):
    logits = model(sequences, training=False)
    predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
    return {
        'loss_sum': tf.reduce_sum(_per_example_loss(labels, logits) * weights),
        'correct': _correct(labels, logits, weights),
        'examples': tf.reduce_sum(weights),
        'confusion': tf.math.confusion_matrix(
            tf.cast(labels, tf.int32), predicted, num_classes=num_classes,
            weights=weights, dtype=tf.float32),
    }

  @tf.function
  def eval_loop(iterator, num_steps):
    totals = {k: tf.constant(0.0) for k in EVAL_METRICS}
    totals['confusion'] = tf.zeros([num_classes, num_classes])
    for _ in tf.range(num_steps):
      sequences, labels, weights = next(iterator)
      out = strategy.run(replica_step, (sequences, labels, weights))
      totals = {k: totals[k] + strategy.reduce(SUM, out[k], axis=None)
                for k in EVAL_METRICS}
    return totals

  return eval_loop
