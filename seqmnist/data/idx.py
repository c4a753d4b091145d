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

from seqmnist import user_files
from seqmnist.data import datasets
from seqmnist.errors import DataError

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


# No MNIST-like IDX file comes near this (MNIST's largest: 47 MB). A header
# claiming more is refused before its body is read or decompressed.
MAX_BODY_BYTES = 1 << 30


# The first bytes of image formats a user might hand over instead.
_IMAGE_MAGIC = ((b'\x89PNG\r\n\x1a\n', 'PNG'), (b'\xff\xd8\xff', 'JPEG'),
                (b'GIF8', 'GIF'), (b'BM', 'BMP'), (b'RIFF', 'WebP'))


def image_format(head: bytes) -> Optional[str]:
  """'PNG', 'JPEG', ... if `head` (a file's first bytes) starts one."""
  for magic, name in _IMAGE_MAGIC:
    if head.startswith(magic):
      return name
  return None


def _open(path: str):
  return gzip.open(path, 'rb') if path.endswith('.gz') else open(path, 'rb')


def _read_exactly(f, n: int, path: str) -> bytes:
  try:
    return f.read(n)
  except (OSError, EOFError, gzip.BadGzipFile) as e:
    raise DataError(f'cannot read IDX file {path}: {e}') from e


def read_content(path: str, expected_ndim: int) -> bytes:
  """The file's (uncompressed) IDX bytes, read header first and bounded.

  The magic number and dimensions are checked before the body is read, and
  the body is read (decompressed) up to the size the header announces plus
  one byte: a gzip bomb or a header whose dimensions multiply to 2**64 is
  refused without being inflated.
  """
  user_files.check_regular(path, 'an IDX file')
  with open(path, 'rb') as head:
    other = image_format(head.read(8))
  if other:
    raise DataError(f'{path} is a {other} image, not an IDX file')
  try:
    f = _open(path)
  except OSError as e:
    raise DataError(f'cannot read IDX file {path}: {e.strerror}') from e
  with f:
    magic = _read_exactly(f, 4, path)
    if len(magic) < 4:
      raise DataError(f'IDX file {path} is truncated: {len(magic)} bytes, '
                      'shorter than its 4-byte magic number')
    if tuple(magic) != (0, 0, _UBYTE_TYPE_CODE, expected_ndim):
      raise DataError(
          f'IDX file {path} has a wrong magic number 0x{magic.hex()}; '
          f'expected 0x000008{expected_ndim:02x} (unsigned bytes, '
          f'{expected_ndim} dimensions)')
    header = _read_exactly(f, 4 * expected_ndim, path)
    if len(header) < 4 * expected_ndim:
      raise DataError(f'IDX file {path} is truncated inside its header')
    dims = [int.from_bytes(header[4 * i:4 * i + 4], 'big')
            for i in range(expected_ndim)]
    body = 1
    for d in dims:  # Python ints: no overflow, whatever the header says
      body *= d
    if body > MAX_BODY_BYTES:
      raise DataError(
          f'IDX file {path} claims dimensions {tuple(dims)} ({body:,} bytes), '
          f'more than the {MAX_BODY_BYTES:,} any MNIST-like file needs; '
          'refusing to read it')
    # One byte more than announced tells a too-long file from a right one.
    return magic + header + _read_exactly(f, body + 1, path)


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
  expected_len = header_len + _product(dims)
  if len(content) < expected_len:
    raise DataError(
        f'IDX file {path} is truncated: {len(content)} bytes, but its header '
        f'{dims} needs {expected_len}')
  if len(content) > expected_len:
    raise DataError(
        f'IDX file {path} is too long: its header {dims} needs '
        f'{expected_len} bytes, and more follow')
  return np.frombuffer(content, dtype=np.uint8, offset=header_len).reshape(dims)


def _product(dims) -> int:
  out = 1
  for d in dims:
    out *= d
  return out


def verify(content: bytes, path: str, name: str, dataset: str) -> bool:
  """Checks a file's content against the published checksum of `dataset`'s
  file `name`; returns False when none is known (the file is unverified).

  Raises:
    DataError: the checksum differs, or the content is another known
      dataset's published file (MNIST's files under Data.dataset=
      'fashion_mnist', say).
  """
  digest = hashlib.sha256(content).hexdigest()
  expected = datasets.get(dataset).sha256.get(name)
  if expected is not None:
    if digest != expected:
      raise DataError(
          f'IDX file {path} fails its checksum: SHA-256 of its content is '
          f'{digest}, the published file has {expected}')
    return True
  for other in datasets.registered():
    if other.sha256.get(name) == digest:
      raise DataError(
          f'IDX file {path} is {other.name!r}\'s published {name} (its '
          f'SHA-256 matches), but Data.dataset={dataset!r}; set Data.dataset='
          f'{other.name!r}, or point --data_dir at {dataset!r}\'s own files')
  return False


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
  content = read_content(path, expected_ndim)
  array = parse(content, path, expected_ndim)
  if expected_sha256 is not None:
    digest = hashlib.sha256(content).hexdigest()
    if digest != expected_sha256:
      raise DataError(
          f'IDX file {path} fails its checksum: SHA-256 of its content is '
          f'{digest}, the published file has {expected_sha256}')
  return array


def read_dataset_content(path: str, name: str, dataset: str,
                         expected_ndim: int):
  """(content, array, verified) of one file of `dataset`: its uncompressed
  bytes, parsed and checked (see `verify`)."""
  content = read_content(path, expected_ndim)
  array = parse(content, path, expected_ndim)
  return content, array, verify(content, path, name, dataset)


def read_dataset_file(path: str, name: str, dataset: str,
                      expected_ndim: int):
  """(array, verified) of one file of `dataset` (see `verify`)."""
  _, array, verified = read_dataset_content(path, name, dataset,
                                            expected_ndim)
  return array, verified


def check_labels(labels: np.ndarray, num_classes: int, path: str) -> None:
  """Raises DataError unless every label is in [0, num_classes)."""
  if labels.size and int(labels.max()) >= num_classes:
    bad = int(labels.max())
    raise DataError(f'IDX file {path} has label {bad}; labels must be in '
                    f'0..{num_classes - 1}')
