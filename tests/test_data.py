"""Data: real MNIST from IDX files, the split, sequence orders, pipelines."""

import gzip
import os

import numpy as np
import pytest
import tensorflow as tf

from seqmnist.data import datasets
from seqmnist.data import idx
from seqmnist.data import pipeline
from seqmnist.errors import ConfigError, DataError


@pytest.fixture(scope='module')
def splits(mnist_dir):
  return pipeline.load(pipeline.DataConfig(), mnist_dir)


def test_split_sizes_and_content(splits):
  assert (len(splits.train), len(splits.validation), len(splits.test)) == (
      55000, 5000, 10000)
  assert splits.train.images.shape == (55000, 28, 28)
  assert splits.train.images.dtype == np.uint8
  assert splits.test.labels.dtype == np.int32
  # The 60k training images are MNIST's published class counts ...
  counts = np.bincount(np.concatenate([splits.train.labels,
                                       splits.validation.labels]))
  np.testing.assert_array_equal(
      counts, [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
  # ... and every split holds all ten classes, each near its share (a
  # random 5k split keeps each class within a few tenths of a point).
  for split in (splits.train, splits.validation, splits.test):
    share = np.bincount(split.labels, minlength=10) / len(split)
    assert share.shape == (10,)
    np.testing.assert_allclose(share, counts / counts.sum(), atol=0.01)


def test_split_is_fixed_and_disjoint(splits, mnist_dir):
  again = pipeline.load(pipeline.DataConfig(batch_size=64), mnist_dir)
  np.testing.assert_array_equal(again.validation.images,
                                splits.validation.images)
  train = {img.tobytes() for img in splits.train.images[:3000]}
  val = {img.tobytes() for img in splits.validation.images}
  assert not train & val


def test_row_and_pixel_orders(splits):
  images = splits.train.images[:4]
  expected = (images.astype(np.float32) / 255 - 0.1307) / 0.3081
  row = pipeline.to_sequences(tf.constant(images), pipeline.DataConfig(order='row'))
  pixel = pipeline.to_sequences(tf.constant(images),
                            pipeline.DataConfig(order='pixel'))
  assert row.shape == (4, 28, 28)
  assert pixel.shape == (4, 784, 1)
  np.testing.assert_allclose(row.numpy(), expected, rtol=1e-6, atol=1e-6)
  # Pixel order is row-major: step 28*r + c is pixel (r, c).
  np.testing.assert_allclose(pixel.numpy()[:, :, 0],
                             expected.reshape(4, 784), rtol=1e-6, atol=1e-6)


def test_normalisation_gives_zero_mean_unit_std(splits):
  x = pipeline.to_sequences(tf.constant(splits.train.images[:20000]),
                        pipeline.DataConfig(order='pixel')).numpy()
  assert abs(x.mean()) < 0.01
  assert abs(x.std() - 1) < 0.01


def test_permutation_is_the_articles_seed_100_and_stable(splits):
  config = pipeline.DataConfig(order='permuted')
  np.random.seed(100)  # the source article's own code
  article = np.random.permutation(784)
  np.testing.assert_array_equal(pipeline.permutation(config), article)
  images = tf.constant(splits.test.images[:3])
  permuted = pipeline.to_sequences(images, config).numpy()
  pixel = pipeline.to_sequences(images, pipeline.DataConfig(order='pixel')).numpy()
  np.testing.assert_array_equal(permuted, pixel[:, article])
  np.testing.assert_array_equal(permuted,
                                pipeline.to_sequences(images, config).numpy())
  other = pipeline.permutation(pipeline.DataConfig(order='permuted',
                                           permutation_seed=101))
  assert not np.array_equal(other, article)


def _batches(dataset, n):
  return [tuple(t.numpy() for t in b) for b in dataset.take(n)]


def test_train_order_is_a_function_of_seed_and_step(splits):
  config = pipeline.DataConfig(batch_size=256)
  split = pipeline.Split(splits.train.images[:1000], splits.train.labels[:1000])
  from_zero = _batches(pipeline.train_dataset(split, config, seed=3,
                                          start_step=0), 10)
  assert from_zero[0][0].shape == (256, 28, 28)
  # Resuming at step 6 (past an epoch boundary: 1000 / 256 < 4) sees exactly
  # the batches an uninterrupted run sees at steps 6..9.
  resumed = _batches(pipeline.train_dataset(split, config, seed=3,
                                        start_step=6), 4)
  for a, b in zip(from_zero[6:], resumed):
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])
  other_seed = _batches(pipeline.train_dataset(split, config, seed=4,
                                           start_step=0), 1)
  assert not np.array_equal(other_seed[0][1], from_zero[0][1])
  # Every example once per epoch: the first 3 full batches have no repeats.
  first_epoch = np.concatenate([b[0].reshape(256, -1) for b in from_zero[:3]])
  assert len({r.tobytes() for r in first_epoch}) == len(first_epoch)


def test_input_pipelines_split_the_same_global_batch(splits):
  config = pipeline.DataConfig(batch_size=8)
  split = pipeline.Split(splits.train.images[:100], splits.train.labels[:100])
  whole = _batches(pipeline.train_dataset(split, config, seed=1, start_step=0),
                   3)
  shards = []
  for pipeline_id in range(2):
    ctx = tf.distribute.InputContext(num_input_pipelines=2,
                                     input_pipeline_id=pipeline_id,
                                     num_replicas_in_sync=4)
    # 2 local replicas per pipeline: consecutive per-replica batches of 2.
    shards.append(_batches(pipeline.train_dataset(split, config, seed=1,
                                              start_step=0,
                                              input_context=ctx), 6))
  for step in range(3):
    parts = [shards[p][2 * step + r][1] for p in range(2) for r in range(2)]
    assert all(len(p) == 2 for p in parts)
    np.testing.assert_array_equal(np.concatenate(parts), whole[step][1])


def test_batch_that_does_not_divide_over_replicas_is_an_error(splits):
  ctx = tf.distribute.InputContext(num_replicas_in_sync=3)
  with pytest.raises(ConfigError, match='global batch 8 does not divide'):
    pipeline.train_dataset(splits.validation, pipeline.DataConfig(batch_size=8),
                       seed=0, start_step=0, input_context=ctx)


def test_eval_pass_covers_every_example_once(splits):
  config = pipeline.DataConfig(eval_batch_size=300)
  split = pipeline.Split(splits.test.images[:1000], splits.test.labels[:1000])
  batches = _batches(pipeline.eval_dataset(split, config), 100)
  assert len(batches) == pipeline.eval_steps(split, config) == 4
  weights = np.concatenate([b[2] for b in batches])
  labels = np.concatenate([b[1] for b in batches])
  assert weights.sum() == 1000
  np.testing.assert_array_equal(labels[weights == 1], split.labels)


# Bad input -------------------------------------------------------------


def _rewrite(path, transform):
  # Checksums are of the uncompressed content: the fastest gzip level will do.
  with gzip.open(path, 'rb') as f:
    content = f.read()
  with gzip.open(path, 'wb', compresslevel=1) as f:
    f.write(transform(content))


def test_checksum_mismatch_names_the_file(mnist_copy):
  path = mnist_copy / 'train-labels-idx1-ubyte.gz'
  # A valid IDX file (labels still 0..9) whose content is not MNIST's.
  _rewrite(path, lambda c: c[:8] + bytes([(c[8] + 1) % 10]) + c[9:])
  with pytest.raises(DataError, match='train-labels-idx1-ubyte.gz fails its '
                     'checksum'):
    pipeline.load(pipeline.DataConfig(), str(mnist_copy))


def test_truncated_file_names_the_file(mnist_copy):
  path = mnist_copy / 't10k-images-idx3-ubyte.gz'
  _rewrite(path, lambda c: c[:-100])
  with pytest.raises(DataError,
                     match='t10k-images-idx3-ubyte.gz is truncated'):
    pipeline.load(pipeline.DataConfig(), str(mnist_copy))


@pytest.mark.e2e
def test_wrong_magic_number_names_the_file(mnist_copy):
  path = mnist_copy / 'train-images-idx3-ubyte.gz'
  _rewrite(path, lambda c: b'\x00\x00\x08\x01' + c[4:])
  with pytest.raises(DataError, match='train-images-idx3-ubyte.gz has a '
                     'wrong magic number 0x00000801'):
    pipeline.load(pipeline.DataConfig(), str(mnist_copy))


@pytest.mark.e2e
def test_labels_out_of_range_name_the_file(mnist_copy):
  path = mnist_copy / 't10k-labels-idx1-ubyte.gz'
  _rewrite(path, lambda c: c[:20] + b'\x0c' + c[21:])
  # A dataset without published checksums is still checked for its labels.
  # (Its files must not be MNIST's own, which are refused under another
  # name: one pixel of each image file changes, and one label.)
  for name in ('train-images-idx3-ubyte.gz', 't10k-images-idx3-ubyte.gz'):
    _rewrite(mnist_copy / name, lambda c: c[:-1] + b'\x01')
  _rewrite(mnist_copy / 'train-labels-idx1-ubyte.gz',
           lambda c: c[:-1] + bytes([(c[-1] + 1) % 10]))
  with pytest.raises(DataError, match='t10k-labels-idx1-ubyte.gz has label '
                     '12; labels must be in 0..9'):
    pipeline.load(pipeline.DataConfig(dataset='kmnist'), str(mnist_copy))


def test_missing_file_is_named(mnist_copy):
  os.remove(mnist_copy / 't10k-labels-idx1-ubyte.gz')
  with pytest.raises(DataError, match='lacks t10k-labels-idx1-ubyte'):
    pipeline.load(pipeline.DataConfig(), str(mnist_copy))


def test_uncompressed_files_are_read_and_verified(mnist_copy):
  for name in ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'):
    with gzip.open(mnist_copy / (name + '.gz'), 'rb') as f:
      (mnist_copy / name).write_bytes(f.read())
    os.remove(mnist_copy / (name + '.gz'))
  loaded = pipeline.load(pipeline.DataConfig(), str(mnist_copy))
  assert len(loaded.train) == 55000
  assert idx.find(str(mnist_copy), 'train-images-idx3-ubyte').endswith('ubyte')


def test_batch_larger_than_split(mnist_dir):
  with pytest.raises(ConfigError, match=r'Data.batch_size=60000 is larger '
                     r'than the training split \(55000 images\)'):
    pipeline.load(pipeline.DataConfig(batch_size=60000), mnist_dir)


@pytest.mark.parametrize('kwargs, message', [
    (dict(order='diagonal'), "Data.order='diagonal' is not one of"),
    (dict(batch_size=0),
     'Data.batch_size=0 must be an integer from 1 to 70,000'),
    (dict(batch_size=12.5), 'Data.batch_size=12.5 must be an integer'),
    (dict(validation_size=-1), 'Data.validation_size=-1'),
])
def test_bad_data_config(kwargs, message):
  with pytest.raises(ConfigError, match=message):
    pipeline.DataConfig(**kwargs)


@pytest.mark.e2e
def test_a_dataset_without_a_known_checksum_is_used_with_one_warning(
    mnist_copy, caplog):
  """Files of a dataset whose checksums are unknown (here MNIST's images
  inverted, posing as KMNIST) are read, checked for format, and used with
  one 'not verified' warning."""
  for name in idx.IDX_FILES.values():
    if 'images' in name:
      _rewrite(mnist_copy / (name + '.gz'), lambda c: c[:16] + (
          255 - np.frombuffer(c[16:], np.uint8)).tobytes())
    else:  # other labels too, or they are MNIST's (and refused as such)
      _rewrite(mnist_copy / (name + '.gz'), lambda c: c[:8] + (
          (np.frombuffer(c[8:], np.uint8) + 1) % 10).astype(np.uint8)
                                                    .tobytes())
  with caplog.at_level('WARNING'):
    loaded = pipeline.load(pipeline.DataConfig(dataset='kmnist'), str(mnist_copy))
  assert len(loaded.train) == 55000
  warnings = [r.getMessage() for r in caplog.records
              if 'not verified' in r.getMessage()]
  assert warnings == [
      f"{mnist_copy}: no published checksum of Data.dataset='kmnist' is "
      'known, so its files were checked for format only, not verified.']


# The dataset registry ---------------------------------------------------------


def test_mnists_statistics_are_its_training_images(mnist_dir):
  pixels = idx.read(os.path.join(mnist_dir, 'train-images-idx3-ubyte.gz'),
                    expected_ndim=3).astype(np.float64) / 255.0
  assert abs(pixels.mean() - datasets.MNIST.mean) < 1e-4
  assert abs(pixels.std() - datasets.MNIST.std) < 1e-4


@pytest.mark.parametrize('dataset, normalization, expected', [
    ('mnist', 'dataset', (0.1307, 0.3081)),
    ('mnist', 'mnist', (0.1307, 0.3081)),
    ('fashion_mnist', 'dataset', (0.2860, 0.3530)),
    # Runs made before the setting existed normalised every dataset so.
    ('fashion_mnist', 'mnist', (0.1307, 0.3081)),
    ('kmnist', 'dataset', (0.1307, 0.3081)),  # none registered: MNIST's
])
def test_each_dataset_is_normalised_with_its_own_statistics(
    dataset, normalization, expected):
  config = pipeline.DataConfig(dataset=dataset, normalization=normalization)
  assert config.pixel_statistics == expected
  images = tf.fill([1, 28, 28], tf.constant(255, tf.uint8))
  value = pipeline.to_sequences(images, config)[0, 0, 0].numpy()
  assert value == pytest.approx((1.0 - expected[0]) / expected[1], rel=1e-6)


def test_an_unregistered_dataset_is_refused_naming_the_registered_ones():
  with pytest.raises(ConfigError, match="Data.dataset='emnist' is not one of "
                     "'mnist', 'fashion_mnist', 'kmnist'"):
    pipeline.DataConfig(dataset='emnist')
  with pytest.raises(ConfigError, match="Data.normalization='imagenet' is "
                     "not one of 'dataset', 'mnist'"):
    pipeline.DataConfig(normalization='imagenet')
