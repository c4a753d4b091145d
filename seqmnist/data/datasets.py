"""The datasets `Data.dataset` names: one registry entry per dataset.

Everything seqmnist knows about a dataset is its `Dataset`: its TFDS name,
the published SHA-256 of its IDX files (offline data is verified against
them), its image size and classes (the model's head, the label check,
export's signature and predict's resizing read them), and the statistics
its pixels are normalised with. Nothing else in
seqmnist holds a per-dataset table.

A new dataset of square grayscale images is one `register(Dataset(...))`,
here or in your own module that a gin file imports (`import my_datasets`
with --allow_gin_imports); see BUILD.md, "Extending", and
tests/test_extending.py, which does exactly that.
"""

import dataclasses
from typing import Mapping, Optional, Tuple

from seqmnist import registry

DIGITS = tuple('0123456789')


@dataclasses.dataclass(frozen=True)
class Dataset:
  """One dataset of square grayscale images, split into train and test.

  Attributes:
    name: its `Data.dataset` value, and its TFDS name.
    mean, std: of its training pixels scaled to [0, 1], the normalisation
      `Data.normalization='dataset'` applies; both None when seqmnist knows
      none (MNIST's are used then, as README's `Data.normalization` says).
    statistics: where `mean` and `std` come from (a record for readers).
    sha256: the SHA-256 of each IDX file's uncompressed content, by base
      name (train-images-idx3-ubyte, ...); {} when none is published (the
      files are used, checked for format only, with one warning).
    class_names: one per label, in label order; at most 10 (the
      dashboard draws labels as one digit).
    image_size: images are image_size x image_size.
    train_images: how many images its training set holds, if known: a
      config is checked against it before any data is read (a sweep checks
      every point before the first trains).
  """
  name: str
  mean: Optional[float] = None
  std: Optional[float] = None
  statistics: str = 'none known'
  sha256: Mapping[str, str] = dataclasses.field(default_factory=dict)
  class_names: Tuple[str, ...] = DIGITS
  image_size: int = 28
  train_images: Optional[int] = None

  def __post_init__(self):
    if (self.mean is None) != (self.std is None) or (
        self.std is not None and not self.std > 0):
      raise ValueError(f'dataset {self.name!r}: give mean and std (> 0) '
                       'together, or neither')
    if not 2 <= len(self.class_names) <= 10:
      raise ValueError(f'dataset {self.name!r}: {len(self.class_names)} '
                       'classes; seqmnist handles 2 to 10')
    if not isinstance(self.image_size, int) or self.image_size < 1:
      raise ValueError(f'dataset {self.name!r}: image_size='
                       f'{self.image_size!r} must be a positive integer')

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def num_pixels(self) -> int:
    return self.image_size * self.image_size


DATASETS = registry.Registry(
    'Data.dataset', 'a new one is one datasets.register call: BUILD.md, '
    '"Extending"')
register = DATASETS.register
names = DATASETS.names
get = DATASETS.get


def registered() -> Tuple[Dataset, ...]:
  return tuple(DATASETS.entries.values())


# The datasets seqmnist ships ---------------------------------------------

MNIST = register(Dataset(
    'mnist', mean=0.1307, std=0.3081, train_images=60_000,
    # numpy over the 60,000 training images /255: 0.13066, 0.30811.
    statistics="computed from MNIST's 60,000 training images",
    # The published files, as listed in shared/data/mnist/README.md.
    sha256={
        'train-images-idx3-ubyte':
            'ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db',
        'train-labels-idx1-ubyte':
            '65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5',
        't10k-images-idx3-ubyte':
            '0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7',
        't10k-labels-idx1-ubyte':
            'ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2',
    }))
# Fashion-MNIST and KMNIST publish checksums of their .gz files only, which
# depend on the compression: their files are read, but not verified.
FASHION_MNIST = register(Dataset(
    'fashion_mnist', mean=0.2860, std=0.3530, train_images=60_000,
    statistics="Fashion-MNIST's published training-set mean and std",
    class_names=('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat',
                 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot')))
KMNIST = register(Dataset(
    'kmnist', train_images=60_000,
    class_names=('o', 'ki', 'su', 'tsu', 'na', 'ha', 'ma', 'ya', 're', 'wo')))
