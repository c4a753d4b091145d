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

import pytest

from conftest import FAST, REPO, gin_params
from test_main import _results


def _slurm_node_up():
  if not shutil.which('sbatch'):
    return 'sbatch is not installed (Debian: slurm-wlm; .ci/slurm_up.sh)'
  state = subprocess.run(['sinfo', '-h', '-o', '%T'], capture_output=True,
                         text=True, check=False, timeout=30)
  if not re.search(r'^(idle|mixed|allocated)', state.stdout, re.M):
    return (f'no Slurm node is up (sinfo: {state.stdout.strip()!r} '
            f'{state.stderr.strip()!r}); start one with .ci/slurm_up.sh')
  return None


def test_sbatch_two_tasks_train_together(tmp_path, mnist_dir):
  reason = _slurm_node_up()
  if reason:
    pytest.skip(f'SLURM NOT AVAILABLE, real-cluster test not run: {reason}')
  model_dir = tmp_path / 'run'
  logs = tmp_path / 'logs'
  env = dict(os.environ, PYTHON=sys.executable, SEQMNIST_LOG_DIR=str(logs),
             TF_CPP_MIN_LOG_LEVEL='2', SEQMNIST_PORT='23456')
  result = subprocess.run(
      ['sbatch', '--wait', '--ntasks=2', f'--chdir={REPO}',
       f'--output={tmp_path}/slurm-%j.out', 'launch/slurm/train.sbatch',
       '--gin_file=row.gin', f'--model_dir={model_dir}',
       f'--data_dir={mnist_dir}',
       *gin_params(*FAST, 'Trainer.steps=20', 'Trainer.eval_every=20')],
      env=env, capture_output=True, text=True, timeout=900, check=False)
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
  assert 0.1 < results['test_accuracy'] <= 1
