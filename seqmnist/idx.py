"""Reading the original IDX files of MNIST-like datasets, verified.

The IDX format (LeCun et al.): a 4-byte magic number (0x00 0x00, a type code,
the number of dimensions), one big-endian uint32 per dimension, then the data.
Files may be gzip-compressed (`name.gz`). Every check here fails with a
`DataError` naming the file: a wrong magic number, a truncated or oversized
body, labels out of range, or content whose SHA-256 differs from the published
one. Training on a silently bad file is the failure this module exists to stop.
"""

import gzip
import hashlib
import os
from typing import Optional

import numpy as np

from seqmnist.errors import DataError

# SHA-256 of the *uncompressed* IDX content, stable whatever the gzip level.
# Source: the published MNIST files, as listed in shared/data/mnist/README.md.
MNIST_SHA256 = {
    'train-images-idx3-ubyte':
        'ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db',
    'train-labels-idx1-ubyte':
        '65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5',
    't10k-images-idx3-ubyte':
        '0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7',
    't10k-labels-idx1-ubyte':
        'ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2',
}

# The four files of a split-up IDX dataset: (split, kind) -> base name.
IDX_FILES = {
    ('train', 'images'): 'train-images-idx3-ubyte',
    ('train', 'labels'): 'train-labels-idx1-ubyte',
    ('test', 'images'): 't10k-images-idx3-ubyte',
    ('test', 'labels'): 't10k-labels-idx1-ubyte',
}

_UBYTE_TYPE_CODE = 0x08


def find(data_dir: str, base_name: str) -> Optional[str]:
  """Returns the path of `base_name` or `base_name.gz` in data_dir, or None."""
  for candidate in (base_name, base_name + '.gz'):
    path = os.path.join(data_dir, candidate)
    if os.path.isfile(path):
      return path
  return None


def _read_bytes(path: str) -> bytes:
  try:
    if path.endswith('.gz'):
      with gzip.open(path, 'rb') as f:
        return f.read()
    with open(path, 'rb') as f:
      return f.read()
  except (OSError, EOFError, gzip.BadGzipFile) as e:
    raise DataError(f'cannot read IDX file {path}: {e}') from e


def parse(content: bytes, path: str, expected_ndim: int) -> np.ndarray:
  """Parses IDX bytes into a uint8 array, checking magic and size."""
  if len(content) < 4:
    raise DataError(f'IDX file {path} is truncated: {len(content)} bytes, '
                    'shorter than its 4-byte magic number')
  zero0, zero1, type_code, ndim = content[:4]
  if (zero0, zero1, type_code, ndim) != (0, 0, _UBYTE_TYPE_CODE,
                                         expected_ndim):
    raise DataError(
        f'IDX file {path} has a wrong magic number '
        f'0x{content[:4].hex()}; expected 0x000008{expected_ndim:02x} '
        f'(unsigned bytes, {expected_ndim} dimensions)')
  header_len = 4 + 4 * ndim
  if len(content) < header_len:
    raise DataError(f'IDX file {path} is truncated inside its header')
  dims = tuple(
      int.from_bytes(content[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
  expected_len = header_len + int(np.prod(dims))
  if len(content) != expected_len:
    kind = 'truncated' if len(content) < expected_len else 'too long'
    raise DataError(
        f'IDX file {path} is {kind}: {len(content)} bytes, but its header '
        f'{dims} needs {expected_len}')
  return np.frombuffer(content, dtype=np.uint8, offset=header_len).reshape(dims)


def read(path: str,
         expected_ndim: int,
         expected_sha256: Optional[str] = None) -> np.ndarray:
  """Reads one IDX file (optionally gzip) and verifies it.

  Args:
    path: the file; `.gz` files are decompressed.
    expected_ndim: 3 for images [n, rows, cols], 1 for labels [n].
    expected_sha256: hex digest of the uncompressed content, or None to skip.

  Returns:
    A read-only uint8 array of the file's shape.
  """
  content = _read_bytes(path)
  array = parse(content, path, expected_ndim)
  if expected_sha256 is not None:
    digest = hashlib.sha256(content).hexdigest()
    if digest != expected_sha256:
      raise DataError(
          f'IDX file {path} fails its checksum: SHA-256 of its content is '
          f'{digest}, the published file has {expected_sha256}')
  return array


def check_labels(labels: np.ndarray, num_classes: int, path: str) -> None:
  """Raises DataError unless every label is in [0, num_classes)."""
  if labels.size and int(labels.max()) >= num_classes:
    bad = int(labels.max())
    raise DataError(f'IDX file {path} has label {bad}; labels must be in '
                    f'0..{num_classes - 1}')
