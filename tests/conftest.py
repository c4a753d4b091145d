"""Shared fixtures: the real MNIST files and a way to run the real CLI.

Tests read MNIST from ../shared/data/mnist beside the repository (as CI has
it), or from $SEQMNIST_MNIST_DIR. Its absence is a failure, not a skip.

Tests of components that CI sets up (`.ci/run`: the Slurm cluster, the
container image, the fused op that `pip install` builds) carry
`@pytest.mark.ci_provides(NAME)`. A developer's plain `pytest` skips them,
saying why, where the component cannot be had; under `CI` (set by
`.ci/run`) such a skip is a failure, so CI cannot pass without them.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST_DIR = os.environ.get(
    'SEQMNIST_MNIST_DIR',
    os.path.join(os.path.dirname(REPO), 'shared', 'data', 'mnist'))
IDX_NAMES = ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte',
             't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')

# A fast configuration for end-to-end runs: the row task, a small GRU. No
# BatchNorm: its moving statistics need far more than a test's 40 steps.
FAST = ('Model.units=16', 'Model.batch_norm=False', 'Trainer.steps_per_loop=10',
        'Trainer.summary_every=10', 'Data.eval_batch_size=1000')


@pytest.fixture(scope='session')
def mnist_dir():
  missing = [n for n in IDX_NAMES
             if not os.path.exists(os.path.join(MNIST_DIR, n + '.gz'))]
  if missing:
    pytest.fail(f'real MNIST not found in {MNIST_DIR} (missing {missing}); '
                'tests need ../shared/data/mnist or $SEQMNIST_MNIST_DIR')
  return MNIST_DIR


@pytest.fixture
def mnist_copy(mnist_dir, tmp_path):
  """A writable copy of the four IDX files, to corrupt."""
  copy = tmp_path / 'mnist'
  copy.mkdir()
  for name in IDX_NAMES:
    shutil.copy(os.path.join(mnist_dir, name + '.gz'), copy / (name + '.gz'))
  return copy


def gin_params(*params):
  return [f'--gin_param={p}' for p in params]


def run_cli(*args, timeout=600):
  """Runs `python -m seqmnist.main ARGS` in a subprocess; returns the result."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run([sys.executable, '-m', 'seqmnist.main', *args],
                        capture_output=True, text=True, timeout=timeout,
                        env=env, cwd=REPO, check=False)


def start_cli(*args, log, env=None):
  """Starts `python -m seqmnist.main ARGS` in the background, stderr to log."""
  env = dict(os.environ if env is None else env, TF_CPP_MIN_LOG_LEVEL='2')
  with open(log, 'w') as stderr:
    return subprocess.Popen([sys.executable, '-m', 'seqmnist.main', *args],
                            stdout=subprocess.DEVNULL, stderr=stderr,
                            env=env, cwd=REPO)


def wait_for_line(log, marker, procs, timeout=300):
  """Waits until `marker` appears in the file `log`; fails if procs end."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    text = open(log).read() if os.path.exists(log) else ''
    if marker in text:
      return text
    if any(p.poll() is not None for p in procs):
      pytest.fail(f'process ended before logging {marker!r}:\n{text[-3000:]}')
    time.sleep(0.02)
  pytest.fail(f'{marker!r} not logged within {timeout}s')


def free_ports(n):
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(('127.0.0.1', 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


def two_free_ports():
  """A port p with p+1 also free, both on loopback (workers that derive
  their ports as base + index)."""
  for _ in range(50):
    with socket.socket() as s:
      s.bind(('127.0.0.1', 0))
      port = s.getsockname()[1]
    try:
      with socket.socket() as s:
        s.bind(('127.0.0.1', port + 1))
      return port
    except OSError:
      continue
  raise RuntimeError('no two consecutive free ports on loopback')


def assert_indexed_job_pod(output, index, port):
  """A pod's output: the entrypoint derived worker `index` of the 2-worker
  cluster on 127.0.0.1:port and port+1 from the Indexed Job's variables."""
  derived = json.loads(output.split('seqmnist entrypoint: ', 1)[1]
                       .splitlines()[0])
  assert derived['tf_config'] == {
      'cluster': {'worker': [f'127.0.0.1:{port}', f'127.0.0.1:{port + 1}']},
      'task': {'type': 'worker', 'index': index}}
  assert derived['source'] == 'a Kubernetes Indexed Job of 2 pods'


def start_workers(n, args, log_dir):
  """Starts n local MultiWorkerMirroredStrategy workers; logs worker-<i>.log."""
  workers = [f'127.0.0.1:{p}' for p in free_ports(n)]
  procs = []
  for i in range(n):
    tf_config = {'cluster': {'worker': workers},
                 'task': {'type': 'worker', 'index': i}}
    procs.append(start_cli(*args, log=os.path.join(log_dir, f'worker-{i}.log'),
                           env=dict(os.environ,
                                    TF_CONFIG=json.dumps(tf_config))))
  return procs


def pytest_configure(config):
  config.addinivalue_line(
      'markers', 'ci_provides(component): needs a component .ci/run sets up '
      '(a skip fails the run when CI is set)')


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
  outcome = yield
  report = outcome.get_result()
  marker = item.get_closest_marker('ci_provides')
  if (report.skipped and marker is not None and os.environ.get('CI')
      and not hasattr(report, 'wasxfail')):
    component = marker.args[0] if marker.args else 'a component'
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else (
        str(report.longrepr))
    report.outcome = 'failed'
    report.longrepr = (f'CI=true and {component}, which .ci/run sets up, is '
                       f'missing, so this test cannot be skipped: {reason}')
