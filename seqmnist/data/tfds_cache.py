"""TFDS's download cache: seeding it from verified IDX files, and knowing
when a TFDS load would need the network.

TFDS's `mnist` builder downloads four gzip files whose SHA-256 it has
registered, into `DATA_DIR/downloads/mnist/` under names made of the URL and
that checksum, each with a `.INFO` file; a file found there is trusted
without being hashed again, then extracted and prepared as if downloaded.
`seed` puts MNIST there from local IDX files, so TFDS's own builder prepares
the dataset on a machine without internet. The gzip bytes cannot be the
registered ones (those depend on the compressor that made them), so seqmnist
verifies what it writes instead: each file's uncompressed content must match
the dataset's published SHA-256 (datasets.py), and the cache gets a gzip of
exactly the verified bytes.

`needs_network` and `check_network` let a load without the data fail in one
line at once instead of after minutes of download retries.
"""

import contextlib
import gzip
import logging
import os
import socket
import urllib.parse
import urllib.request
from typing import Dict, List, Optional, Tuple

from seqmnist.data import datasets
from seqmnist.data import idx
from seqmnist.errors import DataError, first_line

_GZ = '.gz'
PROBE_TIMEOUT_SECONDS = 10


class _TfdsProbeRecords(logging.Filter):
  """Drops TFDS's warnings while it looks for a prepared dataset (it warns
  about every folder it probes), so a missing dataset is one line."""

  def filter(self, record):
    return not (record.levelno <= logging.WARNING and
                f'{os.sep}tensorflow_datasets{os.sep}' in record.pathname)


@contextlib.contextmanager
def _quiet_probes():
  absl_logger, probe_filter = logging.getLogger('absl'), _TfdsProbeRecords()
  absl_logger.addFilter(probe_filter)
  try:
    yield
  finally:
    absl_logger.removeFilter(probe_filter)


def builder(dataset: str, data_dir: Optional[str]):
  """TFDS's builder of `dataset` in `data_dir` (TFDS's default when None)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    with _quiet_probes():
      return tfds.builder(dataset, data_dir=data_dir)
  except Exception as e:  # DatasetNotFoundError and kin: an unknown name
    raise DataError(f'Data.dataset={dataset!r} is not a TFDS dataset: '
                    f'{first_line(e)}') from e


def _cache_paths(dataset_builder) -> Dict[str, str]:
  """{url: path in TFDS's download cache} for every file the builder gets."""
  from tensorflow_datasets.core.download import resource as resource_lib  # pylint: disable=g-import-not-at-top
  downloads = os.path.join(os.fspath(dataset_builder.data_dir_root),
                           'downloads', dataset_builder.name)
  return {url: os.path.join(downloads,
                            resource_lib.get_dl_fname(url, info.checksum))
          for url, info in (dataset_builder.url_infos or {}).items()}


def is_cached(dataset_builder) -> bool:
  """True if every registered download of the builder is in the cache."""
  paths = _cache_paths(dataset_builder)
  return bool(paths) and all(
      os.path.isfile(p) and os.path.isfile(p + '.INFO')
      for p in paths.values())


def needs_network(dataset_builder) -> bool:
  """True if loading the builder's dataset through TFDS would download."""
  with _quiet_probes():
    return (not dataset_builder.is_prepared() and
            not is_cached(dataset_builder))


def hosts(dataset_builder) -> List[str]:
  """The hosts TFDS downloads the builder's dataset from (its registered
  URLs)."""
  return sorted({urllib.parse.urlsplit(url).hostname
                 for url in (dataset_builder.url_infos or {})} - {None})


def probe_address(host: str) -> Tuple[str, int, str]:
  """(host, port, description) of the first hop a download from `host`
  takes: the HTTPS proxy the environment configures (as requests, which TFDS
  downloads with, reads it), unless `host` bypasses it; else host:443."""
  proxies = urllib.request.getproxies()
  proxy = proxies.get('https') or proxies.get('all')
  if proxy and not urllib.request.proxy_bypass(host):
    if '://' not in proxy:
      proxy = f'http://{proxy}'
    parts = urllib.parse.urlsplit(proxy)
    port = parts.port or (443 if parts.scheme == 'https' else 80)
    return parts.hostname, port, f'{host} via the proxy {parts.hostname}:{port}'
  return host, 443, host


def check_network(dataset_builder) -> None:
  """Raises DataError in one line unless the way to some download host of
  the builder's dataset (directly, or its proxy) takes a TCP connection
  within PROBE_TIMEOUT_SECONDS."""
  errors = []
  for host in hosts(dataset_builder):
    address, port, described = probe_address(host)
    try:
      socket.create_connection((address, port),
                               timeout=PROBE_TIMEOUT_SECONDS).close()
      return
    except OSError as e:
      errors.append(f'{described}: {e.strerror or type(e).__name__}')
  if errors:
    raise DataError(
        f'no network: cannot download Data.dataset={dataset_builder.name!r} '
        'through TFDS '
        f'({"; ".join(errors)}); without internet, pass --data_dir=FOLDER '
        'holding the four IDX files, or prepare TFDS from them with '
        '`python -m seqmnist.tools.prepare_tfds --idx_dir=FOLDER`')


def seed(idx_dir: str, dataset_builder) -> None:
  """Writes verified gzip copies of the IDX files in `idx_dir` into the
  builder's download cache (existing entries are replaced).

  Raises:
    DataError: a file is missing or fails its dataset's published checksum,
      or the dataset has no published checksum to verify against.
  """
  dataset = dataset_builder.name
  known = sorted(d.name for d in datasets.registered() if d.sha256)
  if dataset not in known:
    raise DataError(
        f'Data.dataset={dataset!r} has no published checksum of its IDX '
        f'content, so seqmnist cannot verify files for it; known: '
        f'{", ".join(known)}')
  if not os.path.isdir(idx_dir):
    raise DataError(f'--idx_dir={idx_dir} is not a folder')
  kinds = {base: kind for (_, kind), base in idx.IDX_FILES.items()}
  contents = {}
  for url, path in _cache_paths(dataset_builder).items():
    name = urllib.parse.urlsplit(url).path.rsplit('/', 1)[-1]
    base = name[:-len(_GZ)] if name.endswith(_GZ) else name
    if base not in kinds:
      raise DataError(f'TFDS {dataset!r} downloads {url}, which is not one of '
                      f'the IDX files seqmnist verifies')
    source = idx.find(idx_dir, base)
    if source is None:
      raise DataError(f'--idx_dir={idx_dir} lacks {base} (or {base}.gz)')
    content, _, _ = idx.read_dataset_content(
        source, base, dataset, 3 if kinds[base] == 'images' else 1)
    contents[url] = (path, name, content)
  if len(contents) != len(idx.IDX_FILES):
    raise DataError(f'TFDS {dataset!r} registers {len(contents)} downloads, '
                    f'not the {len(idx.IDX_FILES)} IDX files')
  # Everything is verified before the first file is written.
  for url, (path, name, content) in contents.items():
    _write_entry(dataset_builder, url, path, name,
                 gzip.compress(content, mtime=0))


def _write_entry(dataset_builder, url, path, name, data: bytes) -> None:
  """A cache file, then its .INFO (TFDS reads a file as cached only once its
  .INFO exists), each written whole or not at all."""
  from tensorflow_datasets.core.download import resource as resource_lib  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  os.makedirs(os.path.dirname(path), exist_ok=True)
  info = path + '.INFO'
  if os.path.exists(info):
    os.remove(info)  # TFDS's INFO writer refuses to change a stored value
  tmp = f'{path}.tmp.{os.getpid()}'
  with open(tmp, 'wb') as f:
    f.write(data)
  os.replace(tmp, path)
  resource_lib.write_info_file(
      url=url, path=epath.Path(path), dataset_name=dataset_builder.name,
      original_fname=name, url_info=dataset_builder.url_infos[url])


def prepare(idx_dir: str, data_dir: Optional[str], dataset: str = 'mnist'
            ) -> str:
  """Seeds the cache and has TFDS's builder prepare the dataset from it
  (nothing to do if it is prepared already).

  Returns:
    The prepared dataset's folder.
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  dataset_builder = builder(dataset, data_dir)
  if not dataset_builder.is_prepared():
    seed(idx_dir, dataset_builder)
    dataset_builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return os.fspath(dataset_builder.data_dir)
