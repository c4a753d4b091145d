"""The default data path through TensorFlow Datasets' real `mnist` builder,
offline: its download cache seeded from the real IDX files by
`seqmnist.tools.prepare_tfds`, the builder preparing from it, and a run through it
equal to the run from the IDX files (the content-defined split). Without the
data and without network, one line at once.
"""

import gzip
import json
import os
import re
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import FAST, REPO, gin_params
from seqmnist.config import drift
from seqmnist.data import pipeline
from seqmnist.loop import experiment

RUN = (*FAST, 'Trainer.steps=20', 'Trainer.eval_every=10',
       'Trainer.checkpoint_every=10', 'Data.batch_size=32')


def _python(module, *args, env=None, timeout=600):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', **(env or {}))
  return subprocess.run([sys.executable, '-m', module, *args],
                        capture_output=True, text=True, timeout=timeout,
                        env=env, cwd=REPO, check=False)


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory, mnist_dir):
  """A TFDS data dir prepared by `seqmnist.tools.prepare_tfds` from the real IDX
  files, through TFDS's own builder."""
  path = tmp_path_factory.mktemp('tfds')
  result = _python('seqmnist.tools.prepare_tfds', f'--idx_dir={mnist_dir}',
                   f'--tfds_dir={path}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'TFDS mnist is prepared in {path}/mnist/3.0.1' in result.stdout
  return path


def test_prepare_tfds_feeds_the_real_builder(tfds_dir):
  info = json.loads((tfds_dir / 'mnist' / '3.0.1' /
                     'dataset_info.json').read_text())
  sizes = {s['name']: int(s['shardLengths'][0]) for s in info['splits']}
  assert sizes == {'train': 60000, 'test': 10000}
  cached = sorted(os.listdir(tfds_dir / 'downloads' / 'mnist'))
  assert len(cached) == 8  # four files and their .INFO, in TFDS's naming
  assert all(name.startswith('cvdf-datasets_mnist_') for name in cached)


def test_the_default_path_through_tfds_gives_the_run_of_the_idx_files(
    tfds_dir, mnist_dir, tmp_path):
  # No --data_dir: TFDS's default location, here $TFDS_DATA_DIR.
  via_tfds = _python('seqmnist.main', '--gin_file=row.gin',
                     f'--model_dir={tmp_path}/tfds', *gin_params(*RUN),
                     env={'TFDS_DATA_DIR': str(tfds_dir)})
  assert via_tfds.returncode == 0, via_tfds.stderr[-3000:]
  via_idx = _python('seqmnist.main', '--gin_file=row.gin',
                    f'--model_dir={tmp_path}/idx', f'--data_dir={mnist_dir}',
                    *gin_params(*RUN))
  assert via_idx.returncode == 0, via_idx.stderr[-3000:]
  tfds_results = json.loads((tmp_path / 'tfds' / 'results.json').read_text())
  idx_results = json.loads((tmp_path / 'idx' / 'results.json').read_text())
  assert tfds_results['data_source'] == 'tfds:mnist'
  assert idx_results['data_source'].startswith('idx:')
  for key in ('weights_fingerprint', 'test_accuracy', 'best_val_accuracy'):
    assert tfds_results[key] == idx_results[key], key
  saved = (tmp_path / 'tfds' / 'operative_config.gin').read_text()
  assert "Data.split_scheme = 'content'" in saved


def test_the_content_split_does_not_depend_on_the_file_order(mnist_dir):
  config = pipeline.DataConfig()
  (train_x, train_y), (test_x, test_y) = pipeline._load_idx(config, mnist_dir)  # pylint: disable=protected-access
  shuffle = np.random.default_rng(7).permutation(len(train_y))
  a = pipeline._split(config, train_x, train_y, test_x, test_y, 'a')  # pylint: disable=protected-access
  b = pipeline._split(config, train_x[shuffle], train_y[shuffle], test_x[::-1],  # pylint: disable=protected-access
                  test_y[::-1], 'b')
  for name in ('train', 'validation', 'test'):
    np.testing.assert_array_equal(getattr(a, name).images,
                                  getattr(b, name).images)
    np.testing.assert_array_equal(getattr(a, name).labels,
                                  getattr(b, name).labels)
  # The file order scheme (runs made before) does depend on it.
  file_config = pipeline.DataConfig(split_scheme='file')
  c = pipeline._split(file_config, train_x, train_y, test_x, test_y, 'c')  # pylint: disable=protected-access
  d = pipeline._split(file_config, train_x[shuffle], train_y[shuffle], test_x,  # pylint: disable=protected-access
                  test_y, 'd')
  assert not np.array_equal(c.validation.labels, d.validation.labels)


def test_a_run_keeps_the_split_scheme_it_was_made_with():
  old = "Model.units = 8\n"  # saved before Data.split_scheme existed
  assert "Data.split_scheme = 'file'" in drift.earlier_defaults(old, experiment.ADDED_LATER)
  new = "Model.units = 8\nData.split_scheme = 'content'\n"
  assert "Data.split_scheme = 'content'" in drift.earlier_defaults(new, experiment.ADDED_LATER)


def _network_reaches(host):
  """The product's own probe: a connection to the host, or to the HTTPS
  proxy the environment configures for it (as TFDS's downloads would go)."""
  from seqmnist.data import tfds_cache  # pylint: disable=g-import-not-at-top
  address, port, _ = tfds_cache.probe_address(host)
  try:
    socket.create_connection((address, port), timeout=5).close()
    return True
  except OSError:
    return False


def test_without_data_or_network_the_default_path_answers_at_once(tmp_path):
  if _network_reaches('storage.googleapis.com'):
    pytest.skip('this machine reaches storage.googleapis.com, so TFDS would '
                'download MNIST instead of failing')
  started = time.time()
  result = _python('seqmnist.main', '--gin_file=row.gin',
                   f'--model_dir={tmp_path}/run',
                   env={'TFDS_DATA_DIR': str(tmp_path / 'tfds')})
  assert result.returncode == 2, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines()
            if line.startswith('seqmnist: error: ')]
  assert len(errors) == 1, result.stderr
  assert re.fullmatch(
      r"seqmnist: error: no network: cannot download Data.dataset='mnist' "
      r'through TFDS \(storage.googleapis.com: [^;]+\); without internet, pass '
      r'--data_dir=FOLDER holding the four IDX files, or prepare TFDS from '
      r'them with `python -m seqmnist.tools.prepare_tfds --idx_dir=FOLDER`',
      errors[0]), errors[0]
  assert 'Traceback' not in result.stderr
  assert not [line for line in result.stderr.splitlines()
              if line.startswith('W') and 'tensorflow_datasets' in line]
  assert time.time() - started < 60
  assert not (tmp_path / 'run').exists()
  assert not (tmp_path / 'tfds').exists()


def test_prepare_tfds_refuses_a_file_that_fails_its_checksum(mnist_copy,
                                                             tmp_path):
  labels = mnist_copy / 'train-labels-idx1-ubyte.gz'
  content = bytearray(gzip.decompress(labels.read_bytes()))
  content[100] = (content[100] + 1) % 10  # one label changed
  labels.write_bytes(gzip.compress(bytes(content)))
  result = _python('seqmnist.tools.prepare_tfds', f'--idx_dir={mnist_copy}',
                   f'--tfds_dir={tmp_path}/tfds')
  assert result.returncode == 2, result.stderr[-3000:]
  line = result.stderr.strip().splitlines()[-1]
  assert line.startswith(f'seqmnist.tools.prepare_tfds: error: IDX file {labels} '
                         'fails its checksum'), result.stderr
  assert not (tmp_path / 'tfds' / 'downloads').exists()  # nothing written


@pytest.mark.parametrize('case', ['missing_file', 'no_flag', 'not_a_folder'])
def test_prepare_tfds_bad_input_is_one_line(case, mnist_copy, tmp_path):
  if case == 'missing_file':
    os.remove(mnist_copy / 't10k-labels-idx1-ubyte.gz')
    args, message = ((f'--idx_dir={mnist_copy}',),
                     f'--idx_dir={mnist_copy} lacks t10k-labels-idx1-ubyte '
                     '(or t10k-labels-idx1-ubyte.gz)')
  elif case == 'no_flag':
    args, message = (), '--idx_dir is required'
  else:
    args, message = ((f'--idx_dir={tmp_path}/nope',),
                     f'--idx_dir={tmp_path}/nope is not a folder')
  result = _python('seqmnist.tools.prepare_tfds', *args,
                   f'--tfds_dir={tmp_path}/tfds')
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr.strip().splitlines()[-1].startswith(
      f'seqmnist.tools.prepare_tfds: error: {message}'), result.stderr
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'tfds' / 'downloads').exists()


def test_behind_a_proxy_the_probe_asks_the_proxy(monkeypatch):
  from seqmnist.data import tfds_cache  # pylint: disable=g-import-not-at-top
  with socket.socket() as closed:  # a port nothing listens on
    closed.bind(('127.0.0.1', 0))
    port = closed.getsockname()[1]
  for name in ('https_proxy', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY',
               'no_proxy', 'NO_PROXY'):
    monkeypatch.delenv(name, raising=False)
  assert tfds_cache.probe_address('storage.googleapis.com') == (
      'storage.googleapis.com', 443, 'storage.googleapis.com')
  monkeypatch.setenv('HTTPS_PROXY', f'http://127.0.0.1:{port}')
  assert tfds_cache.probe_address('storage.googleapis.com') == (
      '127.0.0.1', port, f'storage.googleapis.com via the proxy 127.0.0.1:{port}')
  with pytest.raises(pipeline.DataError, match=(
      rf'no network: .*\(storage.googleapis.com via the proxy '
      rf'127.0.0.1:{port}: Connection refused\)')):
    tfds_cache.check_network(tfds_cache.builder('mnist', None))
  with socket.socket() as listening:  # a proxy that answers: the probe passes
    listening.bind(('127.0.0.1', 0))
    listening.listen(1)
    monkeypatch.setenv('HTTPS_PROXY',
                       f'http://127.0.0.1:{listening.getsockname()[1]}')
    tfds_cache.check_network(tfds_cache.builder('mnist', None))
  monkeypatch.setenv('NO_PROXY', 'storage.googleapis.com')
  assert tfds_cache.probe_address('storage.googleapis.com')[0] == (
      'storage.googleapis.com')
