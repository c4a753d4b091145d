"""Sequential MNIST data: loading, the fixed split, sequence orders, pipelines.

Two sources, one result (uint8 images [n, 28, 28] and int labels):
  * offline: `--data_dir` holding the four IDX files (optionally `.gz`), read
    directly and verified (see `idx.py`); no network;
  * online (default): `tfds.load`, which downloads on a machine with internet.

The 60k training images are split once, with a fixed seed, into 55k train and
`validation_size` validation images; the 10k test images are only read at the
end of a run. The split and the training order are defined on the examples'
content (`Data.split_scheme='content'`): both sources hold the same images in
different orders (TFDS shuffles when it prepares), and sorting by a content
hash first makes the same gin file give the same run from either. Run dirs
made before this scheme used the file order ('file'); they resume with it
(`validators.added_later`). Images become sequences in-graph (`to_sequences`), so
the same order, permutation and normalisation apply at train, eval and
export.

Pipelines take a `tf.distribute.InputContext` and know nothing else about the
strategy. The training order is a pure function of (seed, step): batch k holds
examples [k*B, (k+1)*B) of the concatenation of per-epoch stateless shuffles.
A resumed run therefore sees exactly the batches an uninterrupted run would,
and every replica count splits the same global batch. The optional shifts of
training images (`Data.max_shift`, augment.py) are drawn the same way, per
(seed, epoch, example).
"""

import dataclasses
import hashlib
import os
from typing import Optional

from absl import logging
import gin
import numpy as np
import tensorflow as tf

from seqmnist import validators
from seqmnist.data import augment
from seqmnist.data import datasets
from seqmnist.data import idx
from seqmnist.data import tfds_cache
from seqmnist.errors import ConfigError, DataError, first_line

# How pixels scaled to [0, 1] are normalised: with the dataset's own
# training mean and std (datasets.py), or with MNIST's for every dataset
# (what runs made before 2026-12-05 did).
NORMALIZATIONS = ('dataset', 'mnist')
# The train/validation split is fixed for every run whatever Trainer.seed is,
# so validation figures of different runs are comparable.
SPLIT_SEED = 0

# How examples are ordered before the seeded split: by content (the same from
# every source) or as the source stores them (before 2026-11-23).
SPLIT_SCHEMES = ('content', 'file')

# A global batch larger than MNIST's 70,000 images has no use; bounding it
# stops a typo from allocating gigabytes.
MAX_BATCH = 70_000

# order -> (time steps, features per step) of an image of a given size
ORDERS = {
    'row': lambda size: (size, size),
    'pixel': lambda size: (size * size, 1),
    'permuted': lambda size: (size * size, 1),
}


@gin.configurable('Data')
@dataclasses.dataclass(frozen=True)
class DataConfig:
  """What the model reads.

  Attributes:
    dataset: a registered dataset (datasets.py): 'mnist', 'fashion_mnist',
      'kmnist'; also its TFDS name. Offline IDX files are checked against
      the published SHA-256 where one is known (MNIST).
    order: 'row' (28 steps x 28 pixels), 'pixel' (784 x 1, row-major) or
      'permuted' (784 x 1 in one fixed order drawn from `permutation_seed`).
    permutation_seed: seed of numpy's legacy RandomState that draws the
      permutation; 100 reproduces "Building RNN Models to Solve Sequential
      MNIST" (np.random.seed(100); np.random.permutation(784)).
    validation_size: images held out of the 60k training set for validation.
    batch_size: the global training batch, over all replicas and workers.
    eval_batch_size: the global batch of validation and test passes; the last
      batch is padded with zero-weight examples, so any size is exact.
    split_scheme: 'content' (examples sorted by a hash of image and label
      before the seeded split, so IDX files and TFDS give the same run) or
      'file' (the source's own order: IDX and TFDS differ; what runs made
      before 2026-11-23 used, and still resume with).
    normalization: 'dataset' (pixels normalised with the dataset's own
      training mean and std, datasets.py; MNIST's where it has none) or
      'mnist' (MNIST's for every dataset: what runs made before 2026-12-05
      used, and still resume with). The same for MNIST itself.
    max_shift: training images are moved by a random whole-pixel offset
      (dy, dx), each in [-max_shift, max_shift], drawn per epoch and example
      from the seed (augment.py); 0 = off. Not the classic protocol.
  """
  dataset: str = 'mnist'
  order: str = 'row'
  permutation_seed: int = 100
  validation_size: int = 5000
  batch_size: int = 128
  eval_batch_size: int = 500
  # Runs made before it existed (2026-11-23) split in the file order.
  split_scheme: str = validators.added_later('content', before='file')
  # Runs made before it existed (2026-12-05) used MNIST's statistics.
  normalization: str = validators.added_later('dataset', before='mnist')
  max_shift: int = validators.added_later(0, before=0)

  def __post_init__(self):
    datasets.get(self.dataset)  # a registered dataset
    validators.check_choice('Data.order', self.order, ORDERS)
    # numpy's legacy RandomState takes seeds up to 2**32 - 1.
    validators.check_int('Data.permutation_seed', self.permutation_seed,
                         minimum=0, maximum=2**32 - 1)
    validators.check_int('Data.validation_size', self.validation_size,
                         minimum=1)
    validators.check_int('Data.batch_size', self.batch_size, minimum=1,
                         maximum=MAX_BATCH)
    validators.check_int('Data.eval_batch_size', self.eval_batch_size,
                         minimum=1, maximum=MAX_BATCH)
    validators.check_choice('Data.split_scheme', self.split_scheme,
                            SPLIT_SCHEMES)
    validators.check_choice('Data.normalization', self.normalization,
                            NORMALIZATIONS)
    known = self.spec.train_images
    if known is not None:
      if self.validation_size >= known:
        raise ConfigError(
            f'Data.validation_size={self.validation_size} leaves no training '
            f"images of {self.dataset}'s {known:,}; give fewer")
      self.check_batch_fits(known - self.validation_size)
    # A shift of the image's size or more would leave nothing of it.
    size = self.spec.image_size
    validators.check_int('Data.max_shift', self.max_shift, minimum=0,
                         maximum=size - 1,
                         why=f'one less than the {size}-pixel side of '
                         f"{self.dataset}'s images")

  def check_batch_fits(self, train_images: int) -> None:
    """Raises ConfigError if one global batch is more than the training
    split holds."""
    if self.batch_size > train_images:
      raise ConfigError(
          f'Data.batch_size={self.batch_size} is larger than the training '
          f'split ({train_images} images)')

  @property
  def spec(self) -> datasets.Dataset:
    """The dataset's registry entry."""
    return datasets.get(self.dataset)

  @property
  def sequence_shape(self):
    """(time steps, features per step) of one example."""
    return ORDERS[self.order](self.spec.image_size)

  @property
  def pixel_statistics(self):
    """(mean, std) that pixels scaled to [0, 1] are normalised with."""
    spec = self.spec
    if self.normalization == 'mnist' or spec.mean is None:
      return datasets.MNIST.mean, datasets.MNIST.std
    return spec.mean, spec.std


@dataclasses.dataclass(frozen=True)
class Split:
  images: np.ndarray  # uint8 [n, 28, 28]
  labels: np.ndarray  # int32 [n]

  def __len__(self):
    return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Splits:
  train: Split
  validation: Split
  test: Split
  source: str  # where the data came from, for logs and results.json


def load(config: DataConfig, data_dir: Optional[str]) -> Splits:
  """Loads and splits the dataset; raises DataError/ConfigError on bad input.

  Args:
    config: the Data configuration.
    data_dir: a folder holding the four IDX files (read offline), any other
      folder (used as TFDS's data_dir), or None (TFDS's default location).
  """
  if data_dir is not None:
    _check_folder(data_dir)
  offline = data_dir is not None and any(
      idx.find(data_dir, name) for name in idx.IDX_FILES.values())
  if data_dir is not None and not offline and not _is_tfds_dir(
      data_dir, config.dataset):
    raise DataError(
        f'--data_dir={data_dir} holds neither the four IDX files '
        f'({", ".join(idx.IDX_FILES.values())}, each optionally .gz) nor a '
        f'TFDS data folder ({os.path.join(data_dir, config.dataset)}/); '
        'point it at one, or leave --data_dir out to download through TFDS')
  if offline:
    (train_x, train_y), (test_x, test_y) = _load_idx(config, data_dir)
    source = f'idx:{os.path.abspath(data_dir)}'
  else:
    (train_x, train_y), (test_x, test_y) = _load_tfds(config, data_dir)
    source = f'tfds:{config.dataset}'
  return _split(config, train_x, train_y, test_x, test_y, source)


def _check_folder(data_dir: str) -> None:
  """Raises DataError unless data_dir is a readable folder, saying what it
  is instead."""
  if os.path.isdir(data_dir):
    if not os.access(data_dir, os.R_OK | os.X_OK):
      raise DataError(f'--data_dir={data_dir} is not readable')
    return
  if os.path.islink(data_dir):
    raise DataError(f'--data_dir={data_dir} is a symbolic link that does not '
                    'resolve (a loop, or its target is missing)')
  if os.path.exists(data_dir):
    raise DataError(f'--data_dir={data_dir} is a file, not a folder')
  raise DataError(f'--data_dir={data_dir} does not exist')


def _is_tfds_dir(data_dir: str, dataset: str) -> bool:
  """A TFDS data folder: one holding the dataset's prepared folder, or
  TFDS's downloads/ folder."""
  return (os.path.isdir(os.path.join(data_dir, dataset)) or
          os.path.isdir(os.path.join(data_dir, 'downloads')))


def _load_idx(config, data_dir):
  paths = {}
  for key, name in idx.IDX_FILES.items():
    path = idx.find(data_dir, name)
    if path is None:
      raise DataError(
          f'--data_dir={data_dir} lacks {name} (or {name}.gz); offline data '
          f'needs all four IDX files: {", ".join(idx.IDX_FILES.values())}')
    paths[key] = path
  arrays, unverified = {}, []
  for (split, kind), path in paths.items():
    name = idx.IDX_FILES[(split, kind)]
    arrays[(split, kind)], verified = idx.read_dataset_file(
        path, name, config.dataset, expected_ndim=3 if kind == 'images' else 1)
    if not verified:
      unverified.append(name)
  if unverified:
    logging.warning('%s: no published checksum of Data.dataset=%r is known, '
                    'so its files were checked for format only, not '
                    'verified.', data_dir, config.dataset)
  for split in ('train', 'test'):
    images, labels = arrays[(split, 'images')], arrays[(split, 'labels')]
    labels_path = paths[(split, 'labels')]
    size = config.spec.image_size
    if images.shape[1:] != (size, size):
      raise DataError(f'IDX file {paths[(split, "images")]} holds images of '
                      f'{images.shape[1:]}; expected {(size, size)}')
    if len(images) != len(labels):
      raise DataError(f'IDX file {labels_path} has {len(labels)} labels for '
                      f'{len(images)} images')
    idx.check_labels(labels, config.spec.num_classes, labels_path)
  return ((arrays[('train', 'images')], arrays[('train', 'labels')]),
          (arrays[('test', 'images')], arrays[('test', 'labels')]))


def _load_tfds(config, data_dir):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  dataset_builder = tfds_cache.builder(config.dataset, data_dir)
  if tfds_cache.needs_network(dataset_builder):
    tfds_cache.check_network(dataset_builder)  # one line, at once
  try:
    (train, test), info = tfds.load(
        config.dataset, split=['train', 'test'], batch_size=-1,
        as_supervised=True, data_dir=data_dir, with_info=True)
  except Exception as e:  # TFDS raises many types; all mean "no data".
    raise DataError(
        f'cannot load Data.dataset={config.dataset!r} through TFDS '
        f'(data_dir={data_dir}): {type(e).__name__}: {first_line(e)} -- without '
        'internet, point --data_dir at a folder with the four IDX files'
    ) from e
  image_shape = tuple(info.features['image'].shape)
  num_classes = info.features['label'].num_classes
  spec = config.spec
  expected = (spec.image_size, spec.image_size, 1)
  if image_shape != expected or num_classes != spec.num_classes:
    raise ConfigError(
        f'Data.dataset={config.dataset!r} has images {image_shape} and '
        f'{num_classes} classes in TFDS, but {expected} and '
        f'{spec.num_classes} in its registry entry (datasets.py)')
  def to_numpy(pair):
    images, labels = tfds.as_numpy(pair)
    return images[..., 0], labels
  return to_numpy(train), to_numpy(test)


def content_order(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """The indices that sort examples by SHA-256 of (label, image bytes).

  Equal keys are identical examples, so ties cannot make two sources differ.
  """
  images = np.ascontiguousarray(images, dtype=np.uint8)
  keys = np.array([
      hashlib.sha256(bytes([int(label)]) + image.tobytes()).digest()
      for image, label in zip(images, labels)], dtype='S32')
  return np.argsort(keys, kind='stable')


def _split(config, train_x, train_y, test_x, test_y, source):
  if config.split_scheme == 'content':
    train_order = content_order(train_x, train_y)
    train_x, train_y = train_x[train_order], train_y[train_order]
    test_order = content_order(test_x, test_y)
    test_x, test_y = test_x[test_order], test_y[test_order]
  n = len(train_y)
  if config.validation_size >= n:
    raise ConfigError(f'Data.validation_size={config.validation_size} must be '
                      f'smaller than the {n} training images')
  order = np.random.default_rng(SPLIT_SEED).permutation(n)
  val_idx = np.sort(order[:config.validation_size])
  train_idx = np.sort(order[config.validation_size:])
  def take(x, y, indices=None):
    if indices is not None:
      x, y = x[indices], y[indices]
    return Split(images=np.ascontiguousarray(x, dtype=np.uint8),
                 labels=np.asarray(y, dtype=np.int32))
  splits = Splits(train=take(train_x, train_y, train_idx),
                  validation=take(train_x, train_y, val_idx),
                  test=take(test_x, test_y), source=source)
  config.check_batch_fits(len(splits.train))
  return splits


def permutation(config: DataConfig) -> Optional[np.ndarray]:
  """The fixed pixel order of the 'permuted' task, else None."""
  if config.order != 'permuted':
    return None
  return np.random.RandomState(config.permutation_seed).permutation(
      config.spec.num_pixels)


def to_sequences(images: tf.Tensor, config: DataConfig) -> tf.Tensor:
  """uint8 images [b, 28, 28] -> normalised float32 sequences [b, T, F]."""
  mean, std = config.pixel_statistics
  x = (tf.cast(images, tf.float32) / 255.0 - mean) / std
  steps, features = config.sequence_shape
  x = tf.reshape(x, [-1, steps, features])
  perm = permutation(config)
  if perm is not None:
    x = tf.gather(x, tf.constant(perm, dtype=tf.int32), axis=1)
  return x


def check_batches(config: DataConfig, num_replicas: int) -> None:
  """Raises ConfigError unless both global batches divide over the replicas."""
  for name in ('batch_size', 'eval_batch_size'):
    value = getattr(config, name)
    _check_divides(f'Data.{name}={value}', value, num_replicas)


def _check_divides(label: str, global_batch: int, num_replicas: int) -> None:
  if global_batch % num_replicas:
    raise ConfigError(
        f'{label} does not divide over {num_replicas} replicas; use a '
        f'multiple of {num_replicas} (it is the global batch)')


def _per_replica_batches(global_batches: tf.data.Dataset, global_batch: int,
                         ctx: tf.distribute.InputContext) -> tf.data.Dataset:
  """Turns global batches into this pipeline's per-replica batches.

  Pipeline p takes rows [p*B/P, (p+1)*B/P) of each global batch (disjoint
  shards), then splits them into batches of B/R for its local replicas, which
  consume consecutive elements. So the union over replicas of step k is
  global batch k, whatever the number of replicas and workers.
  """
  _check_divides(f'the global batch {global_batch}', global_batch,
                 ctx.num_replicas_in_sync)
  per_pipeline = global_batch // ctx.num_input_pipelines
  per_replica = global_batch // ctx.num_replicas_in_sync
  start = ctx.input_pipeline_id * per_pipeline

  def take_shard(*tensors):  # a batch, or a tuple (with weights or shifts)
    shard = tuple(t[start:start + per_pipeline] for t in tensors)
    return shard if len(shard) > 1 else shard[0]

  shard = global_batches.map(take_shard)
  if per_pipeline == per_replica:
    return shard
  return shard.unbatch().batch(per_replica, drop_remainder=True)


def train_dataset(split: Split, config: DataConfig, *, seed: int,
                  start_step: int,
                  input_context: Optional[tf.distribute.InputContext] = None
                  ) -> tf.data.Dataset:
  """Endless (sequences, labels) batches, starting at global step start_step."""
  ctx = input_context or tf.distribute.InputContext()
  n, batch = len(split), config.batch_size
  start_epoch, offset = divmod(start_step * batch, n)
  seed = tf.constant(seed, tf.int64)

  def epoch_order(epoch):
    order = tf.random.experimental.stateless_shuffle(
        tf.range(n, dtype=tf.int64), seed=tf.stack([seed, epoch]))
    if not config.max_shift:
      return tf.data.Dataset.from_tensor_slices(order)
    shifts = augment.epoch_shifts(n, config.max_shift, seed, epoch)
    return tf.data.Dataset.from_tensor_slices(
        (order, tf.gather(shifts, order)))

  indices = (tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max)
             .flat_map(epoch_order)
             .skip(offset)
             .batch(batch, drop_remainder=True))
  indices = _per_replica_batches(indices, batch, ctx)
  return _gather(indices, split, config,
                 shifted=bool(config.max_shift)).prefetch(tf.data.AUTOTUNE)


def eval_dataset(split: Split, config: DataConfig,
                 input_context: Optional[tf.distribute.InputContext] = None
                 ) -> tf.data.Dataset:
  """One pass of (sequences, labels, weights) batches over the whole split.

  The split is padded to a multiple of the global eval batch with weight-0
  examples, so every replica gets full batches and the metrics stay exact.
  """
  ctx = input_context or tf.distribute.InputContext()
  batch = config.eval_batch_size
  steps = eval_steps(split, config)
  padded = steps * batch
  indices = np.arange(padded) % len(split)
  weights = (np.arange(padded) < len(split)).astype(np.float32)
  global_batches = tf.data.Dataset.from_tensor_slices(
      (indices, weights)).batch(batch, drop_remainder=True)
  per_replica = _per_replica_batches(global_batches, batch, ctx)
  return _gather(per_replica, split, config).prefetch(tf.data.AUTOTUNE)


def eval_steps(split: Split, config: DataConfig) -> int:
  """Global batches in one eval pass over `split` (the last one padded)."""
  return -(-len(split) // config.eval_batch_size)


def _gather(indices: tf.data.Dataset, split: Split, config: DataConfig,
            shifted: bool = False) -> tf.data.Dataset:
  """Index batches (and any passthrough, e.g. weights) -> example batches.

  With `shifted`, each index batch comes with its examples' (dy, dx), and
  the images are moved by them (augment.py) before becoming sequences.
  """
  images = tf.constant(split.images)
  labels = tf.constant(split.labels)

  def gather(idx_batch, *passthrough):
    batch_images = tf.gather(images, idx_batch)
    if shifted:
      shifts, passthrough = passthrough[0], passthrough[1:]
      batch_images = augment.translate(batch_images, shifts,
                                       config.max_shift)
    return (to_sequences(batch_images, config),
            tf.gather(labels, idx_batch)) + passthrough

  return indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE,
                     deterministic=True)
