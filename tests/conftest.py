"""Shared fixtures: the real MNIST files and a way to run the real CLI.

Tests read MNIST from ../shared/data/mnist beside the repository (as CI has
it), or from $SEQMNIST_MNIST_DIR. Its absence is a failure, not a skip.

Every test has one tier (`-m` selects them; BUILD.md, "Tests"):
  unit    quick: in-process (or a helper process that starts no
          TensorFlow), no training run beyond a few steps; the quick tier,
          run after every change (`python -m pytest -m unit tests`)
  e2e     real runs of the CLI and the tools on real MNIST, real signals,
          real processes, servers
  system  the Slurm cluster and the container image .ci/run sets up
A file's tier is `TIERS` below; a test of another tier than its file's says
so with its own marker (`@pytest.mark.unit`).

Tests of components that CI sets up (`.ci/run`: the Slurm cluster, the
container image, the fused op that `pip install` builds) carry
`@pytest.mark.ci_provides(NAME)`. A developer's plain `pytest` skips them,
saying why, where the component cannot be had; under `CI` (set by
`.ci/run`) such a skip is a failure, so CI cannot pass without them.
"""

import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from seqmnist.model import implementations

# TensorFlow in the test processes runs with the switches the product's entry
# points set (before any test imports it); their subprocesses inherit them.
ONEDNN_SET_BY_CONFTEST = implementations.prepare_tensorflow()

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


@pytest.fixture
def one_slurm_test_at_a_time(tmp_path_factory):
  """Waits for, then holds, a lock that every pytest worker (and session)
  shares while a test uses the Slurm cluster: two jobs on one node would both
  take its port 8888 (train.sbatch's SEQMNIST_PORT), and a test that kills
  a node would take the other's job down with it. The xdist groups already
  keep the Slurm files on one worker; this holds under any distribution."""
  path = tmp_path_factory.getbasetemp().parent / 'seqmnist-slurm-tests.lock'
  with open(path, 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    yield


def gin_params(*params):
  return [f'--gin_param={p}' for p in params]


def run_cli(*args, timeout=600, env=None):
  """Runs `python -m seqmnist.main ARGS` in a subprocess; returns the result."""
  env = dict(os.environ if env is None else env, TF_CPP_MIN_LOG_LEVEL='2')
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


# Each test file's tier (see the module docstring); a file missing here
# fails the collection, so no test is left out of every tier.
TIERS = {
    'test_cli.py': 'unit',
    'test_clipping.py': 'unit', 'test_config.py': 'unit',
    'test_cluster.py': 'unit', 'test_data.py': 'unit',
    'test_augment.py': 'unit',
    'test_models.py': 'unit', 'test_levers.py': 'unit',
    'test_fused.py': 'unit', 'test_implementations.py': 'unit',
    'test_rundir.py': 'unit',
    'test_kubernetes.py': 'unit', 'test_layout.py': 'unit',
    # One file per module of seqmnist/loop/actions/.
    'actions/test_validate.py': 'unit',
    'actions/test_save_checkpoint.py': 'unit',
    'actions/test_show_progress.py': 'unit',
    'actions/test_write_train_summaries.py': 'unit',
    'actions/test_write_gradient_histograms.py': 'unit',
    'actions/test_stop_on_signal.py': 'unit',
    'actions/test_report_to_trial.py': 'unit',
    'test_search_space.py': 'unit',
    'test_bench.py': 'e2e',
    'test_dashboard.py': 'e2e', 'test_distribute.py': 'e2e',
    'test_export.py': 'e2e', 'test_extending.py': 'e2e',
    'test_hardening.py': 'e2e', 'test_main.py': 'e2e',
    'test_first_hour.py': 'e2e',
    'test_reliability.py': 'e2e', 'test_repo.py': 'e2e',
    'test_reproduce.py': 'e2e', 'test_sweep.py': 'e2e',
    'test_search.py': 'e2e',
    'test_tfds.py': 'e2e', 'test_zoo.py': 'e2e',
    'test_slurm.py': 'system', 'test_slurm_multinode.py': 'system',
    'test_container.py': 'system',
}
# Each tier's marker description; the names are the tiers.
TIER_HELP = {'unit': 'in-process and quick: the quick tier',
             'e2e': 'real runs of the CLI and tools',
             'system': 'the Slurm cluster or the container image'}
TIER_NAMES = tuple(TIER_HELP)
# The README runs the suite on three pytest-xdist workers (`-n 3 --dist
# loadgroup`; three on 2 cores, as tests spend much of their time waiting on
# a process, a signal or Slurm). A group runs on one worker, in order; a test
# in no group is a unit of work of its own, for whichever worker is free.
# Tests share a group only where they must share a worker: the two Slurm
# files (one cluster and its fixed ports: two jobs on one node would both
# take port 8888), the container file (one image), and, per file, the tests
# that use one of its module-scoped fixtures (the runs they share, made once
# per worker). Work is handed out in this order (pytest_configure turns off
# xdist's reordering by test count): the system tier, then e2e (its groups,
# then single tests), unit last, so that long items start early and the
# short ones fill the end instead of one worker finishing a long file alone.
FILE_GROUPS = {'test_slurm.py': 'slurm', 'test_slurm_multinode.py': 'slurm',
               'test_container.py': 'container'}
TIER_ORDER = ('system', 'e2e', 'unit')
SHARED_SCOPES = ('module', 'class', 'package')  # session: once per worker


def pytest_configure(config):
  config.addinivalue_line(
      'markers', 'ci_provides(component): needs a component .ci/run sets up '
      '(a skip fails the run when CI is set)')
  for name, what in TIER_HELP.items():
    config.addinivalue_line('markers', f'{name}: tier: {what}')
  if hasattr(config.option, 'loadscopereorder'):  # pytest-xdist
    config.option.loadscopereorder = False  # our order: see FILE_GROUPS


def _shares_a_fixture(item) -> bool:
  """Whether the test uses a fixture made once for several tests of its
  file (a module, class or package scope)."""
  defs = item._fixtureinfo.name2fixturedefs  # pylint: disable=protected-access
  return any(d[-1].scope in SHARED_SCOPES for d in defs.values())


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
  """Gives each test its file's tier unless it carries its own, and the
  xdist group it needs (if any); orders the work (see FILE_GROUPS)."""
  del config
  rank = {}
  for index, item in enumerate(items):
    own = [m.name for m in item.own_markers if m.name in TIER_NAMES]
    if len(own) > 1:
      raise pytest.UsageError(f'{item.nodeid} has two tiers: {own}')
    name = os.path.relpath(str(item.fspath), os.path.dirname(
        os.path.abspath(__file__)))
    if name.startswith('..'):
      rank[item.nodeid] = (len(TIER_ORDER), 0, index)
      continue  # a test file made by a test (tests/test_repo.py)
    if name not in TIERS:
      raise pytest.UsageError(f'{name} has no tier: add it to TIERS in '
                              'tests/conftest.py')
    tier = own[0] if own else TIERS[name]
    if not own:
      item.add_marker(tier)
    group = FILE_GROUPS.get(name) or (name if _shares_a_fixture(item)
                                      else None)
    if group:
      item.add_marker(pytest.mark.xdist_group(group))
    rank[item.nodeid] = (TIER_ORDER.index(tier), 0 if group else 1, index)
  items.sort(key=lambda item: rank[item.nodeid])


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
