"""Shifted training images (`Data.max_shift`): the translation by hand, the
shifts a function of (seed, epoch, example), and the training pipeline on
real MNIST serving exactly those images, the same after a resume and on
every input pipeline; validation untouched."""

import numpy as np
import pytest
import tensorflow as tf

from seqmnist.data import augment
from seqmnist.data import pipeline
from seqmnist.errors import ConfigError


@pytest.fixture(scope='module')
def split(mnist_dir):
  train = pipeline.load(pipeline.DataConfig(), mnist_dir).train
  return pipeline.Split(train.images[:600], train.labels[:600])


def _shift_by_hand(image, dy, dx):
  out = np.zeros_like(image)
  h, w = image.shape
  for i in range(h):
    for j in range(w):
      if 0 <= i - dy < h and 0 <= j - dx < w:
        out[i, j] = image[i - dy, j - dx]
  return out


def test_translate_matches_a_hand_shift():
  images = np.arange(3 * 6 * 5, dtype=np.uint8).reshape(3, 6, 5) + 1
  shifts = np.array([[1, -2], [0, 0], [-3, 3]], np.int32)
  got = augment.translate(tf.constant(images), tf.constant(shifts), 3)
  assert got.dtype == tf.uint8
  for image, (dy, dx), out in zip(images, shifts, got.numpy()):
    np.testing.assert_array_equal(out, _shift_by_hand(image, dy, dx))
  # No shift allowed: the images themselves.
  np.testing.assert_array_equal(
      augment.translate(tf.constant(images), tf.zeros([3, 2], tf.int32),
                        0).numpy(), images)


def test_shifts_are_a_function_of_seed_and_epoch():
  shifts = augment.epoch_shifts(5000, 2, tf.constant(3, tf.int64),
                                tf.constant(0, tf.int64)).numpy()
  assert shifts.shape == (5000, 2) and shifts.dtype == np.int32
  # Every offset from -2 to 2 drawn, about equally often, on both axes.
  for axis in range(2):
    counts = np.bincount(shifts[:, axis] + 2, minlength=5)
    assert len(counts) == 5 and counts.min() > 850, counts
  again = augment.epoch_shifts(5000, 2, tf.constant(3, tf.int64),
                               tf.constant(0, tf.int64)).numpy()
  np.testing.assert_array_equal(again, shifts)
  for seed, epoch in ((3, 1), (4, 0)):
    other = augment.epoch_shifts(5000, 2, tf.constant(seed, tf.int64),
                                 tf.constant(epoch, tf.int64)).numpy()
    assert (other != shifts).mean() > 0.5


def _batches(dataset, n):
  return [tuple(t.numpy() for t in b) for b in dataset.take(n)]


def test_training_batches_hold_each_example_shifted_by_its_draw(split):
  """Step k's batch is rows [kB, (k+1)B) of the epoch's shuffle, each
  image moved by the epoch's draw for it: 600 images at batch 200, so
  steps 0-2 are epoch 0 and 3-4 epoch 1."""
  config = pipeline.DataConfig(batch_size=200, max_shift=2)
  got = _batches(pipeline.train_dataset(split, config, seed=3, start_step=0), 5)
  n = len(split)
  for step, (sequences, labels) in enumerate(got):
    epoch, first = divmod(step * 200, n)
    order = tf.random.experimental.stateless_shuffle(
        tf.range(n, dtype=tf.int64), seed=[3, epoch]).numpy()
    rows = order[first:first + 200]
    shifts = augment.epoch_shifts(n, 2, tf.constant(3, tf.int64),
                                  tf.constant(epoch, tf.int64)).numpy()[rows]
    want = np.stack([_shift_by_hand(split.images[r], dy, dx)
                     for r, (dy, dx) in zip(rows, shifts)])
    np.testing.assert_array_equal(labels, split.labels[rows])
    np.testing.assert_array_equal(
        sequences, pipeline.to_sequences(tf.constant(want), config).numpy())
    # 24 of the 25 offsets move the image.
    assert (shifts != 0).any(axis=1).mean() > 0.85


def test_shifted_batches_resume_and_shard_exactly(split):
  config = pipeline.DataConfig(batch_size=8, max_shift=3)
  whole = _batches(pipeline.train_dataset(split, config, seed=1, start_step=0),
                   80)  # past the epoch boundary at step 75
  # Resumed in epoch 0 (across the boundary) and in epoch 1.
  for start in (74, 77):
    resumed = _batches(pipeline.train_dataset(split, config, seed=1,
                                          start_step=start), 80 - start)
    for a, b in zip(whole[start:], resumed):
      np.testing.assert_array_equal(a[0], b[0])
      np.testing.assert_array_equal(a[1], b[1])
  shards = []
  for pipeline_id in range(2):
    ctx = tf.distribute.InputContext(num_input_pipelines=2,
                                     input_pipeline_id=pipeline_id,
                                     num_replicas_in_sync=4)
    shards.append(_batches(pipeline.train_dataset(
        split, config, seed=1, start_step=0, input_context=ctx), 6))
  for step in range(3):
    parts = [shards[p][2 * step + r][0] for p in range(2) for r in range(2)]
    np.testing.assert_array_equal(np.concatenate(parts), whole[step][0])


def test_shifts_change_the_training_images_only(split):
  plain = pipeline.DataConfig(batch_size=50)
  shifted = pipeline.DataConfig(batch_size=50, max_shift=2)
  a = _batches(pipeline.train_dataset(split, plain, seed=0, start_step=0), 1)
  b = _batches(pipeline.train_dataset(split, shifted, seed=0, start_step=0), 1)
  np.testing.assert_array_equal(a[0][1], b[0][1])  # the same order
  assert not np.array_equal(a[0][0], b[0][0])      # other images
  for config in (plain, shifted):
    evals = _batches(pipeline.eval_dataset(split, pipeline.DataConfig(
        eval_batch_size=600, max_shift=config.max_shift)), 1)
    np.testing.assert_array_equal(
        evals[0][0], pipeline.to_sequences(tf.constant(split.images),
                                       plain).numpy())


@pytest.mark.parametrize('value, message', [
    (-1, r'Data.max_shift=-1 must be an integer from 0 to 27 \(one less '
     r'than the 28-pixel side of mnist\'s images\)'),
    (28, r'Data.max_shift=28 must be an integer from 0 to 27'),
    (1.5, r'Data.max_shift=1.5 must be an integer'),
])
def test_bad_max_shift(value, message):
  with pytest.raises(ConfigError, match=message):
    pipeline.DataConfig(max_shift=value)
