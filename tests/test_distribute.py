"""Distribution on the CPU: real strategies, real worker processes.

  * MirroredStrategy over 2 logical CPU devices vs one device: the same
    weights after N steps at the same global batch, with clipping active.
  * MultiWorkerMirroredStrategy: 2 worker processes on localhost through
    launch/local_cluster.sh (TF_CONFIG, RING all-reduce).
  * A worker killed without warning: the other stops with exit 75 and one
    line naming it; the run dir keeps its checkpoints (tests/
    test_slurm_multinode.py shows the requeue and resume across nodes).
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

from conftest import FAST, REPO, gin_params, run_cli, two_free_ports
from test_main import _assert_clean_failure, _results, _tags, _weights

# The root holds the HParams event file (TensorBoard's HParams plugin reads
# the session there and its metrics from the train/validation/test runs).
RUN_FILES = {'.lock', 'best', 'checkpoints', 'train', 'validation', 'test',
             'operative_config.gin', 'results.json'}
SHORT = (*FAST, 'Trainer.steps=20', 'Trainer.eval_every=20',
         'Trainer.checkpoint_every=20')


def test_mirrored_two_replicas_match_one_device(tmp_path, mnist_dir):
  weights = {}
  for strategy in ('one_device', 'mirrored'):
    model_dir = tmp_path / strategy
    # BatchNorm on (synchronised over replicas) and a clip norm small enough
    # that every recurrent variable is clipped at every step.
    result = run_cli(
        '--gin_file=row.gin', f'--model_dir={model_dir}',
        f'--data_dir={mnist_dir}',
        *gin_params(*SHORT, 'Model.batch_norm=True', 'Trainer.clip_norm=0.05',
                    f"Distribute.strategy='{strategy}'",
                    'Distribute.logical_cpus=2'))
    assert result.returncode == 0, result.stderr[-3000:]
    expected_replicas = 2 if strategy == 'mirrored' else 1
    assert _results(model_dir)['replicas'] == expected_replicas
    clipped = [float(tf.make_ndarray(e.tensor_proto)) for e in
               _tags(model_dir / 'train').Tensors('clipped_fraction')]
    assert min(clipped) > 0.5, clipped  # clipping really is active
    weights[strategy] = _weights(
        tf.train.latest_checkpoint(str(model_dir / 'checkpoints')))
  assert_float_weights_close(weights['mirrored'], weights['one_device'],
                             at_least=7)


def assert_float_weights_close(got, want, at_least, atol=2e-6):
  """Every float tensor of two checkpoints (name -> array) within atol; at
  least `at_least` of them compared."""
  assert got.keys() == want.keys()
  compared = 0
  for name in want:
    if want[name].dtype.kind == 'f':
      np.testing.assert_allclose(got[name], want[name], rtol=0, atol=atol,
                                 err_msg=name)
      compared += 1
  assert compared >= at_least


def test_batch_must_divide_over_replicas(tmp_path, mnist_dir):
  model_dir = tmp_path / 'run'
  result = run_cli('--gin_file=row.gin', f'--model_dir={model_dir}',
                   f'--data_dir={mnist_dir}',
                   *gin_params("Distribute.strategy='mirrored'",
                               'Distribute.logical_cpus=2',
                               'Data.batch_size=127'))
  _assert_clean_failure(result, 'Data.batch_size=127 does not divide over 2 '
                        'replicas')
  assert not model_dir.exists()


def test_a_worker_whose_port_is_taken_fails_in_one_line(tmp_path, mnist_dir):
  port = two_free_ports()
  model_dir = tmp_path / 'run'
  tf_config = {'cluster': {'worker': [f'127.0.0.1:{port}',
                                      f'127.0.0.1:{port + 1}']},
               'task': {'type': 'worker', 'index': 0}}
  with socket.socket() as taken:  # another job's worker, say
    taken.bind(('127.0.0.1', port))
    taken.listen()
    result = run_cli('--gin_file=row.gin', f'--model_dir={model_dir}',
                     f'--data_dir={mnist_dir}', *gin_params(*SHORT),
                     env=dict(os.environ, TF_CONFIG=json.dumps(tf_config)))
  _assert_clean_failure(result, f'worker 0 cannot listen on its address '
                        f'127.0.0.1:{port}: the port is taken')
  assert not model_dir.exists()


def _local_cluster(n, model_dir, data_dir, tmp_path, *params):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2',
             LOG_DIR=str(tmp_path / 'logs'), TMPDIR=str(tmp_path / 'tmp'))
  os.makedirs(env['TMPDIR'])
  return subprocess.run(
      ['bash', 'launch/local_cluster.sh', str(n), '--gin_file=row.gin',
       f'--model_dir={model_dir}', f'--data_dir={data_dir}',
       *gin_params(*params)],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
      check=False)


def _log_lines(tmp_path, worker, marker):
  text = (tmp_path / 'logs' / f'worker-{worker}.log').read_text()
  return [line for line in text.splitlines() if marker in line]


def test_two_local_workers(tmp_path, mnist_dir):
  model_dir = tmp_path / 'run'
  result = _local_cluster(2, model_dir, mnist_dir, tmp_path, *SHORT,
                          'Distribute.all_reduce=\'ring\'')
  assert result.returncode == 0, result.stdout + result.stderr
  # Only the chief's files; the other worker's temporary saves are gone.
  names = set(os.listdir(model_dir))
  root_events = {n for n in names if n.startswith('events.out.tfevents.')}
  assert names - root_events == RUN_FILES and len(root_events) == 1
  assert not os.listdir(tmp_path / 'tmp')
  results = _results(model_dir)
  assert results['replicas'] == 2 and results['global_step'] == 20
  # The two workers trained what one process trains (the same global
  # batches and updates), within float32 tolerance.
  alone = tmp_path / 'alone'
  single = run_cli('--gin_file=row.gin', f'--model_dir={alone}',
                   f'--data_dir={mnist_dir}', *gin_params(*SHORT))
  assert single.returncode == 0, single.stderr[-3000:]
  assert_float_weights_close(
      _weights(tf.train.latest_checkpoint(str(model_dir / 'checkpoints'))),
      _weights(tf.train.latest_checkpoint(str(alone / 'checkpoints'))),
      at_least=5)
  assert abs(results['test_accuracy'] - _results(alone)['test_accuracy']) < (
      0.002)
  for worker in (0, 1):
    assert _log_lines(tmp_path, worker,
                      'Strategy: multi_worker_mirrored (TF_CONFIG is set)')
  prints = [_log_lines(tmp_path, w, 'Weights fingerprint') for w in (0, 1)]
  fingerprints = {lines[-1].split()[-1] for lines in prints}
  assert fingerprints == {results['weights_fingerprint']}


def test_a_failing_worker_fails_the_launcher(tmp_path, mnist_dir):
  result = _local_cluster(2, tmp_path / 'run', mnist_dir, tmp_path,
                          "Data.order='diagonal'")
  assert result.returncode == 2
  assert 'failed' in result.stderr


def test_local_cluster_usage():
  result = subprocess.run(['bash', 'launch/local_cluster.sh', 'two'],
                          cwd=REPO, capture_output=True, text=True,
                          check=False)
  assert result.returncode == 2 and 'usage' in result.stderr


def test_a_killed_worker_stops_the_other_with_one_line(tmp_path, mnist_dir):
  port = two_free_ports()
  workers = [f'127.0.0.1:{port}', f'127.0.0.1:{port + 1}']
  model_dir = tmp_path / 'run'
  procs = []
  for index in (0, 1):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', TF_CONFIG=json.dumps(
        {'cluster': {'worker': workers},
         'task': {'type': 'worker', 'index': index}}))
    procs.append(subprocess.Popen(
        [sys.executable, '-m', 'seqmnist.main', '--gin_file=row.gin',
         f'--model_dir={model_dir}', f'--data_dir={mnist_dir}',
         *gin_params(*FAST, 'Trainer.steps_per_loop=1', 'Trainer.steps=2000',
                     'Trainer.eval_every=1000', 'Trainer.checkpoint_every=20')],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / f'worker-{index}.log', 'w')))
  try:
    deadline = time.time() + 300
    while not list((model_dir / 'checkpoints').glob('ckpt-*.index')):
      assert time.time() < deadline and procs[0].poll() is None, (
          (tmp_path / 'worker-0.log').read_text()[-3000:])
      time.sleep(0.2)
    procs[1].send_signal(signal.SIGKILL)
    code = procs[0].wait(timeout=120)
  finally:
    for proc in procs:
      proc.kill()
  stderr = (tmp_path / 'worker-0.log').read_text()
  assert code == 75, stderr[-3000:]
  assert 'Traceback' not in stderr
  lost = [line for line in stderr.splitlines()
          if line.startswith('seqmnist: worker lost: ')]
  assert len(lost) == 1, stderr[-3000:]
  assert lost[0].startswith(f'seqmnist: worker lost: worker 1 '
                            f'(127.0.0.1:{port + 1}) stopped answering')
  newest = int(lost[0].split('the newest checkpoint is step ')[1].split(':')[0])
  assert (model_dir / 'checkpoints' / f'ckpt-{newest}.index').exists()
  assert not (model_dir / 'results.json').exists()


def test_the_launcher_ends_a_stopped_worker_and_exits(tmp_path, mnist_dir):
  """A worker that hangs (SIGSTOP: a frozen VM, a stuck filesystem): the
  healthy one exits 75 (worker lost), and the launcher ends the stopped one
  (SIGKILL after GRACE) instead of waiting for it forever."""
  model_dir = tmp_path / 'run'
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', GRACE='10',
             LOG_DIR=str(tmp_path / 'logs'))
  launcher = subprocess.Popen(
      ['launch/local_cluster.sh', '2', '--gin_file=row.gin',
       f'--model_dir={model_dir}', f'--data_dir={mnist_dir}',
       *gin_params(*FAST, 'Trainer.steps_per_loop=1', 'Trainer.steps=100000',
                   'Trainer.eval_every=100000',
                   'Trainer.checkpoint_every=20')],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)
  workers = []
  try:
    deadline = time.time() + 300
    while not list((model_dir / 'checkpoints').glob('ckpt-*.index')):
      assert time.time() < deadline and launcher.poll() is None
      time.sleep(0.2)
    workers = [int(p) for p in subprocess.run(
        ['pgrep', '-P', str(launcher.pid), '-f', 'seqmnist.main'],
        capture_output=True, text=True).stdout.split()]
    assert len(workers) == 2
    stopped = [p for p in workers if b'"index": 1' in open(
        f'/proc/{p}/environ', 'rb').read()]
    os.kill(stopped[0], signal.SIGSTOP)
    started = time.time()
    output, _ = launcher.communicate(timeout=150)
    took = time.time() - started
  finally:
    for pid in workers:
      try:
        os.kill(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
    launcher.kill()
  assert launcher.returncode == 75, output[-3000:]
  # The stopped worker was continued and told to stop (and killed had it
  # not stopped within GRACE): either way it ended with the launcher.
  assert re.search(r'local_cluster: worker 1 (exited with \d+|did not stop '
                   r'within 10s; killing it)', output), output[-3000:]
  assert took < 120, took
  for pid in workers:  # nothing left running
    assert not os.path.exists(f'/proc/{pid}') or '\nState:\tZ' in open(
        f'/proc/{pid}/status').read()
