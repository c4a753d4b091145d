"""A real Slurm job: launch/slurm/train.sbatch with 2 tasks on the CPU.

.ci/run installs Debian's slurm-wlm + munge and starts a one-node cluster
(.ci/slurm_up.sh). Where no Slurm cluster answers, this test is skipped with
the reason, loudly: it is never a silent pass.
"""

import os
import re
import shutil
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from conftest import FAST, REPO, gin_params, run_cli
from test_distribute import _local_cluster, assert_float_weights_close
from test_main import _results, _weights

pytestmark = [pytest.mark.ci_provides('the Slurm cluster'),
              pytest.mark.usefixtures('one_slurm_test_at_a_time')]


def _slurm_node_up():
  if not shutil.which('sbatch'):
    return 'sbatch is not installed (Debian: slurm-wlm; .ci/slurm_up.sh)'
  state = subprocess.run(['sinfo', '-h', '-o', '%T'], capture_output=True,
                         text=True, check=False, timeout=30)
  if not re.search(r'^(idle|mixed|allocated)', state.stdout, re.M):
    return (f'no Slurm node is up (sinfo: {state.stdout.strip()!r} '
            f'{state.stderr.strip()!r}); start one with .ci/slurm_up.sh')
  return None


def _sbatch(tmp_path, mnist_dir, mode, port, timeout, gin):
  """A 2-task row job through launch/slurm/train.sbatch; run in tmp_path/run,
  task logs in tmp_path/logs, the batch log in tmp_path/slurm-<job>.out."""
  env = dict(os.environ, PYTHON=sys.executable,
             SEQMNIST_LOG_DIR=str(tmp_path / 'logs'),
             TF_CPP_MIN_LOG_LEVEL='2', SEQMNIST_PORT=str(port))
  return subprocess.run(
      ['sbatch', mode, '--ntasks=2', f'--chdir={REPO}',
       f'--output={tmp_path}/slurm-%j.out', 'launch/slurm/train.sbatch',
       '--gin_file=row.gin', f'--model_dir={tmp_path / "run"}',
       f'--data_dir={mnist_dir}', *gin_params(*FAST, *gin)],
      env=env, capture_output=True, text=True, timeout=timeout, check=False)


def test_sbatch_two_tasks_train_together(tmp_path, mnist_dir):
  reason = _slurm_node_up()
  if reason:
    pytest.skip(f'SLURM NOT AVAILABLE, real-cluster test not run: {reason}')
  model_dir, logs = tmp_path / 'run', tmp_path / 'logs'
  result = _sbatch(tmp_path, mnist_dir, '--wait', port=23456, timeout=900,
                   gin=('Trainer.steps=20', 'Trainer.eval_every=20'))
  task_logs = sorted(logs.glob('slurm-*.task-*.log'))
  dump = '\n'.join(p.read_text()[-2000:] for p in task_logs)
  assert result.returncode == 0, result.stdout + result.stderr + dump
  assert len(task_logs) == 2
  for log in task_logs:  # both tasks joined one 2-worker cluster
    text = log.read_text()
    assert ('Strategy: multi_worker_mirrored (a Slurm job step of 2 tasks), '
            '2 replica(s)') in text, text[-2000:]
  results = _results(model_dir)
  assert results['replicas'] == 2 and results['global_step'] == 20
  # What one process trains from the same config, within float32 tolerance.
  alone = tmp_path / 'alone'
  single = run_cli('--gin_file=row.gin', f'--model_dir={alone}',
                   f'--data_dir={mnist_dir}',
                   *gin_params(*FAST, 'Trainer.steps=20',
                               'Trainer.eval_every=20'))
  assert single.returncode == 0, single.stderr[-3000:]
  assert_float_weights_close(
      _weights(tf.train.latest_checkpoint(str(model_dir / 'checkpoints'))),
      _weights(tf.train.latest_checkpoint(str(alone / 'checkpoints'))),
      at_least=5)


def _job_field(job_id, field):
  out = subprocess.run(['scontrol', 'show', 'job', job_id],
                       capture_output=True, text=True, check=False).stdout
  match = re.search(rf'\b{field}=(\S+)', out)
  return match.group(1) if match else None


def _node_idle():
  state = subprocess.run(['sinfo', '-h', '-o', '%T'], capture_output=True,
                         text=True, check=False, timeout=30).stdout
  return state.strip() == 'idle'


DONE = ('COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL')


def _first_run_gone(job, tmp_path):
  """Nothing of the job's first run is left on any node (one PID namespace):
  no step daemon, and no srun of it (after a node failure srun outlives its
  step daemon by up to KillWait + 2 s). Every srun of this test names its
  log folder on its command line."""
  patterns = (rf'slurmstepd: \[{job}\.', str(tmp_path / 'logs'))
  return all(subprocess.run(['pgrep', '-f', pattern], capture_output=True,
                            check=False).returncode == 1
             for pattern in patterns)


def _follow_until_done(job, tmp_path, deadline, ready_to_restart):
  """The job's states until it ends. A requeued job is held ~120 s
  (Reason=BeginTime); the test releases it (`scontrol update starttime=now`,
  an administrator's shortcut) once `ready_to_restart()` says the nodes are
  settled and the first run's processes are gone: slurmd refuses to
  relaunch a job it is still cleaning up, and a first run's srun still
  waiting out its step (up to KillWait + 2 s after a node failure) would
  terminate the new run's step, which has the same id."""
  states, released = [], False
  while time.time() < deadline:
    state = _job_field(job, 'JobState')
    if not states or states[-1] != state:
      states.append(state)
    if (state == 'PENDING' and int(_job_field(job, 'Restarts') or 0) >= 1
        and not released and ready_to_restart()
        and _first_run_gone(job, tmp_path)):
      time.sleep(2)
      subprocess.run(['scontrol', 'update', f'jobid={job}', 'starttime=now'],
                     check=False)
      released = True
    if state in DONE:
      return states
    time.sleep(1)
  return states


PREEMPTED_RUN = ('Trainer.steps_per_loop=1', 'Trainer.steps=100',
                 'Trainer.eval_every=20', 'Trainer.checkpoint_every=20')


def _preempt_after_first_checkpoint(tmp_path, mnist_dir, port):
  """Submits PREEMPTED_RUN as a 2-task job and, once it saved its first
  checkpoint, sends SIGTERM as Slurm does before a time limit (--signal) or
  a preemption. Returns the job id and the deadline the test keeps to."""
  submitted = _sbatch(tmp_path, mnist_dir, '--parsable', port=port,
                      timeout=60, gin=PREEMPTED_RUN)
  assert submitted.returncode == 0, submitted.stderr
  job = submitted.stdout.strip().split(';')[0]
  task0 = tmp_path / 'logs' / f'slurm-{job}.task-0.log'
  deadline = time.time() + 300
  try:
    while 'Saved checkpoint' not in (task0.read_text() if task0.exists()
                                     else ''):
      assert time.time() < deadline, 'training never reached step 20'
      time.sleep(0.1)
    subprocess.run(['scancel', '--signal=TERM', job], check=True)
  except BaseException:
    subprocess.run(['scancel', job], check=False)
    raise
  return job, deadline


def test_preempted_job_requeues_itself_and_resumes(tmp_path, mnist_dir):
  reason = _slurm_node_up()
  if reason:
    pytest.skip(f'SLURM NOT AVAILABLE, real-cluster test not run: {reason}')
  model_dir, logs = tmp_path / 'run', tmp_path / 'logs'
  job, deadline = _preempt_after_first_checkpoint(tmp_path, mnist_dir, 23466)
  try:
    states = _follow_until_done(job, tmp_path, deadline, _node_idle)
  finally:
    subprocess.run(['scancel', job], check=False)
  batch_log = (tmp_path / f'slurm-{job}.out').read_text()
  if states[-1] != 'COMPLETED':  # everything, where pytest shows it in full
    print(batch_log, *(p.read_text()[-4000:] for p in sorted(logs.glob('*'))))
  assert states[-1] == 'COMPLETED', states
  assert 'PENDING' in states and _job_field(job, 'Restarts') == '1', states
  assert f'requeueing job {job}' in batch_log, batch_log
  for task in (0, 1):  # each task's log, appended to across the requeue
    text = (logs / f'slurm-{job}.task-{task}.log').read_text()
    step = re.search(r'seqmnist: preempted: checkpoint saved at step (\d+)',
                     text)
    assert step, text[-3000:]
    assert f'ckpt-{step.group(1)} at step {step.group(1)}' in text
  results = _results(model_dir)
  assert results['global_step'] == 100 and results['replicas'] == 2
  assert results['steps_this_run'] == 100 - int(step.group(1))
  # The preempted job ends where an uninterrupted 2-worker run ends, bit
  # for bit (a Slurm job of 2 tasks = 2 workers over loopback: same
  # all-reduce, same order), and key by key.
  reference = tmp_path / 'uninterrupted'
  made = _local_cluster(2, reference / 'run', mnist_dir, reference,
                        *FAST, *PREEMPTED_RUN)
  assert made.returncode == 0, made.stdout + made.stderr
  expected = _results(reference / 'run')
  for key in ('weights_fingerprint', 'test_accuracy', 'test_loss',
              'best_val_accuracy', 'best_step', 'final_val_accuracy',
              'global_step', 'replicas'):
    assert results[key] == expected[key], key


def test_a_job_preempted_past_its_requeue_budget_gives_up_in_one_line(
    tmp_path, mnist_dir, monkeypatch):
  reason = _slurm_node_up()
  if reason:
    pytest.skip(f'SLURM NOT AVAILABLE, real-cluster test not run: {reason}')
  monkeypatch.setenv('SEQMNIST_MAX_REQUEUES', '0')  # sbatch passes it on
  job, _ = _preempt_after_first_checkpoint(tmp_path, mnist_dir, 23476)
  task0 = tmp_path / 'logs' / f'slurm-{job}.task-0.log'
  try:
    _wait_for_job(job, timeout=300)
  finally:
    subprocess.run(['scancel', job], check=False)
  batch_log = (tmp_path / f'slurm-{job}.out').read_text()
  gave_up = [line for line in batch_log.splitlines() if 'giving up' in line]
  assert gave_up == [
      'seqmnist: preempted (exit 143) after 0 requeues; giving up: resubmit '
      'the same command to resume from the newest checkpoint'], batch_log
  assert 'requeueing' not in batch_log
  assert 'seqmnist: training exited with 143' in batch_log
  step = re.search(r'seqmnist: preempted: checkpoint saved at step (\d+)',
                   task0.read_text())
  assert step and (tmp_path / 'run' / 'checkpoints' /
                   f'ckpt-{step.group(1)}.index').exists()
  assert not (tmp_path / 'run' / 'results.json').exists()


def _wait_for_job(job_id, timeout=900):
  deadline = time.time() + timeout
  while time.time() < deadline:
    queued = subprocess.run(['squeue', '-h', '-j', job_id], capture_output=True,
                            text=True, check=False).stdout
    if not queued.strip():
      return
    time.sleep(2)
  pytest.fail(f'Slurm job {job_id} still queued after {timeout} s')


SWEEP_RUN = (*FAST, 'Trainer.steps=20', 'Trainer.eval_every=10')


def _submit_sweep(runs_dir, mnist_dir):
  result = subprocess.run(
      [sys.executable, '-m', 'seqmnist.tools.sweep', '--backend=slurm',
       '--gin_file=row.gin', *gin_params(*SWEEP_RUN),
       '--sweep=Trainer.seed=0,1,2', f'--runs_dir={runs_dir}',
       f'--data_dir={mnist_dir}', '--parallel=2',
       f'--sbatch_arg=--chdir={REPO}'],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def test_a_sweep_runs_as_a_slurm_job_array(tmp_path, mnist_dir):
  reason = _slurm_node_up()
  if reason:
    pytest.skip(f'SLURM NOT AVAILABLE, real-cluster test not run: {reason}')
  runs = tmp_path / 'sweep'
  submitted = _submit_sweep(runs, mnist_dir)
  job = submitted.stdout.strip()
  assert (f'submitted Slurm job array {job} (3 of 3 point(s), 0 already '
          'finished)') in submitted.stderr
  _wait_for_job(job)
  logs = '\n'.join(p.read_text()[-1500:] for p in (runs / 'logs').iterdir())
  fingerprints = {}
  for seed in (0, 1, 2):
    run = runs / f'Trainer.seed={seed}'
    assert (run / 'results.json').exists(), logs
    results = _results(run)
    assert results['global_step'] == 20, logs
    assert f'Trainer.seed = {seed}' in (run / 'operative_config.gin').read_text()
    fingerprints[seed] = results['weights_fingerprint']
  assert len(set(fingerprints.values())) == 3  # three different seeds ran
  # Each array task ran exactly what `seqmnist.main` runs for its point.
  for seed in (0, 1, 2):
    local = subprocess.run(
        [sys.executable, '-m', 'seqmnist.main', '--gin_file=row.gin',
         *gin_params(*SWEEP_RUN, f'Trainer.seed={seed}'),
         f'--model_dir={tmp_path / f"local{seed}"}', f'--data_dir={mnist_dir}'],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert local.returncode == 0, local.stderr[-3000:]
    assert _results(tmp_path / f'local{seed}')['weights_fingerprint'] == (
        fingerprints[seed]), seed

  # Resubmitting submits only what is unfinished.
  os.remove(runs / 'Trainer.seed=2' / 'results.json')
  again = _submit_sweep(runs, mnist_dir)
  assert '(1 of 3 point(s), 2 already finished)' in again.stderr
  _wait_for_job(again.stdout.strip())
  assert _results(runs / 'Trainer.seed=2')['weights_fingerprint'] == (
      fingerprints[2])
