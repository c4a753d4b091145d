"""Multi-node Slurm, for real: launch/slurm/train.sbatch, unchanged, on a
three-node cluster whose nodes are separate network hosts.

`.ci/slurm_up.sh --nodes=3` (run by .ci/run) starts slurmd n1, n2, n3, each in
its own network namespace with its own address (10.251.0.11-13) on a bridge:
workers on different nodes talk over a real network stack and bind the same
port on different addresses. Where no such cluster is up, every test here
skips and says why.

  * across nodes: 2 nodes x 1 task and 2 nodes x 2 tasks (the per-node port
    logic) train to the weights of one process, up to the floating-point
    order of the all-reduce; 2 x 1 gives bit for bit the weights of 2 workers
    on one host (same fingerprint);
  * preemption across nodes: every task saves the same step, the job
    requeues itself and resumes, and ends with the uninterrupted result;
  * a node dies without warning: the workers left stop with exit 75 (worker
    lost, one line), Slurm requeues the job, it lands on the surviving nodes,
    resumes from the newest checkpoint and ends with the uninterrupted result.
"""

import os
import re
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from conftest import FAST, REPO, gin_params
from seqmnist.cluster.discover import expand_hostlist
from test_distribute import _local_cluster, assert_float_weights_close
from test_main import _results, _weights
from test_slurm import _follow_until_done, _job_field

pytestmark = [pytest.mark.ci_provides('the three-node Slurm cluster'),
              pytest.mark.usefixtures('one_slurm_test_at_a_time')]

SHORT = (*FAST, 'Trainer.steps=20', 'Trainer.eval_every=20',
         'Trainer.checkpoint_every=20')
# Long enough to be cut in the middle: ~15-30 s on the 3-node cluster.
LONG = (*FAST, 'Trainer.steps_per_loop=1', 'Trainer.steps=300',
        'Trainer.eval_every=100', 'Trainer.checkpoint_every=20')


def _node_states():
  out = subprocess.run(['sinfo', '-h', '-N', '-o', '%N %T'],
                       capture_output=True, text=True, check=False,
                       timeout=30).stdout
  return dict(line.split() for line in out.splitlines() if line.strip())


def _three_nodes_or_skip():
  reason = None
  if not subprocess.run(['which', 'sbatch'], capture_output=True,
                        check=False).returncode == 0:
    reason = 'sbatch is not installed (Debian: slurm-wlm)'
  else:
    states = _node_states()
    up = [n for n, s in states.items() if re.fullmatch(r'n\d+', n)
          and s.rstrip('*') in ('idle', 'mixed', 'allocated')]
    if len(up) < 3:
      reason = (f'no 3-node cluster is up (sinfo: {states}); start one with '
                '.ci/slurm_up.sh --nodes=3')
  if reason:
    pytest.skip(f'MULTI-NODE SLURM NOT AVAILABLE, test not run: {reason}')


def _submit(tmp_path, mnist_dir, shape, params, *, wait):
  """launch/slurm/train.sbatch as a user submits it: run in tmp_path/run,
  task logs in tmp_path/logs, the batch log in tmp_path/slurm-<job>.out."""
  env = dict(os.environ, PYTHON=sys.executable, TF_CPP_MIN_LOG_LEVEL='2',
             SEQMNIST_LOG_DIR=str(tmp_path / 'logs'))
  return subprocess.run(
      ['sbatch', '--wait' if wait else '--parsable', *shape,
       f'--chdir={REPO}', f'--output={tmp_path}/slurm-%j.out',
       'launch/slurm/train.sbatch', '--gin_file=row.gin',
       f'--model_dir={tmp_path / "run"}', f'--data_dir={mnist_dir}',
       *gin_params(*params)],
      env=env, capture_output=True, text=True, timeout=900, check=False)


def _task_logs(tmp_path):
  return sorted((tmp_path / 'logs').glob('slurm-*.task-*.log'))


def _dump(tmp_path):
  logs = [p.read_text()[-3000:] for p in sorted(tmp_path.glob('slurm-*.out'))]
  return '\n'.join(logs + [p.read_text()[-3000:] for p in _task_logs(tmp_path)])


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory, mnist_dir):
  """What the runs here must equal: one process (SHORT), and 2 workers on
  one host over loopback (SHORT and LONG), through launch/local_cluster.sh."""
  _three_nodes_or_skip()
  found = {}
  for name, params in (('short', SHORT), ('long', LONG)):
    tmp = tmp_path_factory.mktemp(f'local2_{name}')
    result = _local_cluster(2, tmp / 'run', mnist_dir, tmp, *params)
    assert result.returncode == 0, result.stdout + result.stderr
    found[f'two_workers_{name}'] = _results(tmp / 'run')['weights_fingerprint']
  tmp = tmp_path_factory.mktemp('one_process')
  result = subprocess.run(
      [sys.executable, '-m', 'seqmnist.main', '--gin_file=row.gin',
       f'--model_dir={tmp / "run"}', f'--data_dir={mnist_dir}',
       *gin_params(*SHORT)],
      cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  assert result.returncode == 0, result.stderr[-3000:]
  found['one_process_weights'] = _weights(
      tf.train.latest_checkpoint(str(tmp / 'run' / 'checkpoints')))
  return found


def _assert_close_to_one_process(model_dir, one):
  assert_float_weights_close(
      _weights(tf.train.latest_checkpoint(str(model_dir / 'checkpoints'))),
      one, at_least=5)


@pytest.mark.parametrize('per_node', [1, 2])
def test_training_across_two_nodes(tmp_path, mnist_dir, uninterrupted,
                                   per_node):
  result = _submit(tmp_path, mnist_dir,
                   ('--nodes=2', f'--ntasks-per-node={per_node}'), SHORT,
                   wait=True)
  assert result.returncode == 0, result.stdout + result.stderr + _dump(tmp_path)
  workers = 2 * per_node
  assert len(_task_logs(tmp_path)) == workers
  # Every task saw the same cluster: two hosts, per_node ports on each
  # (SEQMNIST_PORT + the task's rank on its node).
  specs = set()
  for log in _task_logs(tmp_path):
    text = log.read_text()
    assert (f'Strategy: multi_worker_mirrored (a Slurm job step of {workers} '
            f'tasks), {workers} replica(s)') in text, text[-3000:]
    specs.add(re.search(r"Cluster: \{'worker': \[([^\]]*)\]\}",
                        text).group(1))
  assert len(specs) == 1, specs
  addresses = re.findall(r"'([^':]+):(\d+)'", specs.pop())
  hosts = sorted({host for host, _ in addresses})
  assert len(hosts) == 2 and all(re.fullmatch(r'n\d', h) for h in hosts)
  for host in hosts:
    ports = sorted(int(p) for h, p in addresses if h == host)
    assert ports == list(range(8888, 8888 + per_node)), addresses
  results = _results(tmp_path / 'run')
  assert results['replicas'] == workers and results['global_step'] == 20
  _assert_close_to_one_process(tmp_path / 'run',
                               uninterrupted['one_process_weights'])
  if per_node == 1:  # the network between nodes changes nothing at all
    assert results['weights_fingerprint'] == (
        uninterrupted['two_workers_short'])


def _wait_for_checkpoint(tmp_path, job, deadline):
  task0 = tmp_path / 'logs' / f'slurm-{job}.task-0.log'
  while 'Saved checkpoint' not in (task0.read_text() if task0.exists()
                                   else ''):
    assert time.time() < deadline, 'no checkpoint was saved\n' + _dump(tmp_path)
    time.sleep(0.1)


def test_preemption_across_nodes_resumes_to_the_uninterrupted_result(
    tmp_path, mnist_dir, uninterrupted):
  submitted = _submit(tmp_path, mnist_dir,
                      ('--nodes=2', '--ntasks-per-node=1'), LONG, wait=False)
  assert submitted.returncode == 0, submitted.stderr
  job = submitted.stdout.strip().split(';')[0]
  deadline = time.time() + 600
  try:
    _wait_for_checkpoint(tmp_path, job, deadline)
    subprocess.run(['scancel', '--signal=TERM', job], check=True)
    states = _follow_until_done(
        job, tmp_path, deadline, lambda: all(s == 'idle' for s in
                                   _node_states().values()))
  finally:
    subprocess.run(['scancel', job], check=False)
  assert states[-1] == 'COMPLETED', (states, _dump(tmp_path))
  assert 'PENDING' in states and _job_field(job, 'Restarts') == '1', states
  batch_log = (tmp_path / f'slurm-{job}.out').read_text()
  assert f'preempted (exit 143); requeueing job {job}' in batch_log
  saved = set()
  for log in _task_logs(tmp_path):  # appended to across the requeue
    text = log.read_text()
    step = re.search(r'seqmnist: preempted: checkpoint saved at step (\d+)',
                     text)
    assert step, text[-3000:]
    saved.add(int(step.group(1)))
    assert f'ckpt-{step.group(1)} at step {step.group(1)}' in text  # resumed
  assert len(saved) == 1, saved  # every task saved the same step
  results = _results(tmp_path / 'run')
  assert results['global_step'] == 300 and results['replicas'] == 2
  assert results['steps_this_run'] == 300 - saved.pop()
  assert results['weights_fingerprint'] == uninterrupted['two_workers_long']


def test_a_node_that_dies_costs_a_requeue_not_the_run(tmp_path, mnist_dir,
                                                     uninterrupted):
  submitted = _submit(tmp_path, mnist_dir,
                      ('--nodes=2', '--ntasks-per-node=1'), LONG, wait=False)
  assert submitted.returncode == 0, submitted.stderr
  job = submitted.stdout.strip().split(';')[0]
  deadline = time.time() + 600
  dead = None
  try:
    _wait_for_checkpoint(tmp_path, job, deadline)
    first, dead = expand_hostlist(_job_field(job, 'NodeList'))
    # Without warning: SIGKILL to the node's slurmd, its step daemon and the
    # worker, as if the machine lost power.
    subprocess.run(['bash', '.ci/slurm_up.sh', 'kill-node', dead], cwd=REPO,
                   check=True)
    states = _follow_until_done(
        job, tmp_path, deadline, lambda: (_node_states()[dead].startswith('down')
                                and _node_states()[first] == 'idle'))
    final_nodes = expand_hostlist(_job_field(job, 'NodeList'))
  finally:
    subprocess.run(['scancel', job], check=False)
    if dead:  # the node comes back for the tests after this one
      subprocess.run(['bash', '.ci/slurm_up.sh', 'revive-node', dead],
                     cwd=REPO, check=False)
      for _ in range(60):
        if _node_states().get(dead) == 'idle':
          break
        time.sleep(1)
  assert states[-1] == 'COMPLETED', (states, _dump(tmp_path))
  assert int(_job_field(job, 'Restarts')) >= 1, states
  assert dead not in final_nodes and len(final_nodes) == 2, final_nodes
  # The worker left on the first node said what happened, in one line.
  survivor = (tmp_path / 'logs' / f'slurm-{job}.task-0.log').read_text()
  lost = re.search(r'seqmnist: worker lost: worker 1 \((\S+):8888\) stopped '
                   r'answering.*the newest checkpoint is step (\d+)', survivor)
  assert lost and lost.group(1) == dead, survivor[-4000:]
  assert 'Resumed from ' in survivor.split(lost.group(0))[1]
  results = _results(tmp_path / 'run')
  assert results['global_step'] == 300 and results['replicas'] == 2
  assert results['weights_fingerprint'] == uninterrupted['two_workers_long']


def test_a_search_runs_as_a_job_array_of_workers_across_nodes(tmp_path,
                                                               mnist_dir):
  """`seqmnist-search --backend=slurm --workers=3` with a journal file on
  the shared filesystem: three array tasks on the nodes, workers of one
  study, that share its 5 trials and run each once."""
  import optuna  # pylint: disable=import-outside-toplevel
  from test_slurm import _wait_for_job  # pylint: disable=import-outside-toplevel
  _three_nodes_or_skip()
  runs = tmp_path / 'search'
  journal = f'journal:{runs}/study.journal'
  submitted = subprocess.run(
      [sys.executable, '-m', 'seqmnist.tools.search', '--backend=slurm',
       '--workers=3', '--gin_file=row.gin',
       *gin_params(*FAST, 'Trainer.steps=20', 'Trainer.eval_every=10'),
       '--space=LEARNING_RATE=loguniform(1e-4, 3e-2)', '--trials=5',
       f'--storage={journal}', f'--runs_dir={runs}',
       f'--data_dir={mnist_dir}', f'--sbatch_arg=--chdir={REPO}'],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  assert submitted.returncode == 0, submitted.stderr[-3000:]
  job = submitted.stdout.strip()
  assert f'submitted Slurm job array {job} (3 worker(s))' in submitted.stderr
  _wait_for_job(job)
  worker_logs = sorted((runs / 'logs').glob(f'slurm-search-{job}_*.out'))
  dump = '\n'.join(p.read_text()[-2000:] for p in worker_logs)
  assert len(worker_logs) == 3, dump
  nodes = set(re.findall(r'search worker \d of job \d+ on (n\d)', dump))
  assert len(nodes) >= 2, dump  # the array spread over the nodes
  study = optuna.load_study(
      study_name='search', storage=optuna.storages.journal.JournalStorage(
          optuna.storages.journal.JournalFileBackend(
              str(runs / 'study.journal'))))
  assert sorted(t.number for t in study.trials) == [0, 1, 2, 3, 4], dump
  assert all(t.state.name in ('COMPLETE', 'PRUNED') for t in study.trials)
  started = re.findall(r'trial (\d) (?:started|resumed)', dump)
  assert sorted(started) == ['0', '1', '2', '3', '4'], dump  # each once
  for number in range(5):
    log = (runs / 'logs' / f'trial-{number:04d}.log').read_text()
    assert log.count('Training from step 0 ') == 1, number
