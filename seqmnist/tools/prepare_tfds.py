r"""Prepares TensorFlow Datasets' `mnist` from local IDX files, offline.

  python -m seqmnist.tools.prepare_tfds --idx_dir=DIR [--tfds_dir=DIR]

For machines behind a firewall: afterwards the default data path (no
`--data_dir`, or `--data_dir` set to the TFDS folder) trains through TFDS's
own builder without downloading. The files' uncompressed content is verified
against MNIST's published SHA-256 first (see tfds_cache.py).
"""

import time

from absl import flags

from seqmnist import cli

cli.import_tensorflow_quietly()

# pylint: disable=g-import-not-at-top,wrong-import-position
from seqmnist.data import tfds_cache
from seqmnist.errors import UserError, exit_on_error

_IDX_DIR = flags.DEFINE_string(
    'idx_dir', None, 'Folder holding the four MNIST IDX files (optionally '
    '.gz), e.g. as downloaded from the MNIST page.')
_TFDS_DIR = flags.DEFINE_string(
    'tfds_dir', None, "TFDS's data_dir to prepare (default: TFDS's own, "
    '~/tensorflow_datasets or $TFDS_DATA_DIR).')


def _prepare():
  if not _IDX_DIR.value:
    raise UserError('--idx_dir is required: the folder of the IDX files')
  start = time.time()
  path = tfds_cache.prepare(_IDX_DIR.value, _TFDS_DIR.value)
  return path, time.time() - start


def main(argv):
  cli.no_positional_arguments('seqmnist.tools.prepare_tfds', argv)
  path, seconds = exit_on_error('seqmnist.tools.prepare_tfds', _prepare)
  print(f'TFDS mnist is prepared in {path} ({seconds:.0f} s), from IDX files '
        f'verified against MNIST\'s published SHA-256 in {_IDX_DIR.value}')


if __name__ == '__main__':
  cli.run('seqmnist.tools.prepare_tfds', main)
