"""Data safety when the run dir is damaged or the user interrupts: real runs of
the CLI on real MNIST, with real files broken the way disks and users break
them, and real signals. (The foreign folder and the lock: test_rundir.py.)
"""

import json
import os
import re
import signal
import time

import pytest

from conftest import FAST, gin_params, run_cli, start_cli, wait_for_line
from test_reliability import _assert_same_run, _final_weights, _one_line
from test_main import _results

STEPS = 40
RUN = (*FAST, 'Trainer.steps_per_loop=5', f'Trainer.steps={STEPS}',
       'Trainer.eval_every=10', 'Trainer.checkpoint_every=10')


def _args(model_dir, mnist_dir, *params):
  return ('--gin_file=row.gin', f'--model_dir={model_dir}',
          f'--data_dir={mnist_dir}', *gin_params(*RUN, *params))


@pytest.fixture(scope='module')
def finished(tmp_path_factory, mnist_dir):
  """An uninterrupted run: what every damaged-then-resumed one must equal."""
  model_dir = tmp_path_factory.mktemp('finished') / 'run'
  result = run_cli(*_args(model_dir, mnist_dir))
  assert result.returncode == 0, result.stderr[-3000:]
  return model_dir, (_results(model_dir), _final_weights(model_dir))


def _stopped_at_30(tmp_path, mnist_dir):
  """A run stopped after its step-30 checkpoint (ckpt-10, 20, 30 on disk)."""
  model_dir = tmp_path / 'run'
  result = run_cli(*_args(model_dir, mnist_dir, 'Trainer.steps=30'))
  assert result.returncode == 0, result.stderr[-3000:]
  os.remove(model_dir / 'results.json')
  return model_dir


def test_a_garbage_checkpoint_state_file_resumes_from_the_files(
    tmp_path, mnist_dir, finished):
  model_dir = _stopped_at_30(tmp_path, mnist_dir)
  (model_dir / 'checkpoints' / 'checkpoint').write_bytes(b'\x00garbage {{\n')
  result = run_cli(*_args(model_dir, mnist_dir))
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'is unreadable; rebuilding it from the 3 checkpoint(s)' in (
      result.stderr)
  assert f'Resumed from {model_dir}/checkpoints/ckpt-30 at step 30' in (
      result.stderr)
  _assert_same_run(model_dir, finished[1])


@pytest.mark.parametrize('damage', ['missing data', 'truncated index'])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(
    tmp_path, mnist_dir, finished, damage):
  model_dir = _stopped_at_30(tmp_path, mnist_dir)
  newest = model_dir / 'checkpoints' / 'ckpt-30'
  if damage == 'missing data':
    os.remove(f'{newest}.data-00000-of-00001')
  else:
    with open(f'{newest}.index', 'r+b') as f:
      f.truncate(20)
  result = run_cli(*_args(model_dir, mnist_dir))
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'Checkpoint {newest} is damaged' in result.stderr
  assert f'Resumed from {model_dir}/checkpoints/ckpt-20 at step 20' in (
      result.stderr)
  _assert_same_run(model_dir, finished[1])


def test_no_intact_checkpoint_stops_with_one_line_and_starts_nothing(
    tmp_path, mnist_dir):
  model_dir = _stopped_at_30(tmp_path, mnist_dir)
  for name in os.listdir(model_dir / 'checkpoints'):
    if name.endswith('.index'):
      (model_dir / 'checkpoints' / name).write_bytes(b'')
  before = sorted(os.listdir(model_dir / 'checkpoints'))
  result = run_cli(*_args(model_dir, mnist_dir))
  assert result.returncode == 2, result.stderr[-3000:]
  line = _one_line(result.stderr, 'error')
  assert line.startswith(f'seqmnist: error: no intact checkpoint in '
                         f'{model_dir}/checkpoints: '
                         'ckpt-30 (')
  assert line.endswith('refusing to start over them from step 0 (move the '
                       'folder away to start a new run)')
  assert sorted(os.listdir(model_dir / 'checkpoints')) == before


@pytest.mark.parametrize('content', [b'', b'{"test_accuracy": 0.9', b'[1, 2]'])
def test_a_damaged_results_json_is_recomputed_from_the_best_checkpoint(
    tmp_path, mnist_dir, finished, content):
  model_dir = tmp_path / 'run'
  result = run_cli(*_args(model_dir, mnist_dir))
  assert result.returncode == 0, result.stderr[-3000:]
  (model_dir / 'results.json').write_bytes(content)
  rerun = run_cli(*_args(model_dir, mnist_dir))
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert 'results.json is missing or unreadable: recomputing it' in (
      rerun.stderr)
  assert 'Traceback' not in rerun.stderr
  results, reference = _results(model_dir), finished[1][0]
  for key in ('test_accuracy', 'test_loss', 'best_val_accuracy', 'best_step',
              'global_step', 'weights_fingerprint'):
    assert results[key] == reference[key], key
  assert results['steps_this_run'] == 0


def test_ctrl_c_saves_at_the_next_boundary_and_exits_130(tmp_path, mnist_dir,
                                                         finished):
  model_dir, log = tmp_path / 'run', tmp_path / 'stderr.log'
  proc = start_cli(*_args(model_dir, mnist_dir, 'Trainer.steps_per_loop=1'),
                   log=log)
  wait_for_line(log, 'Saved checkpoint', [proc])
  proc.send_signal(signal.SIGINT)
  assert proc.wait(timeout=120) == 130, log.read_text()[-3000:]
  text = log.read_text()
  assert 'Traceback' not in text and 'KeyboardInterrupt' not in text
  line = _one_line(text, 'interrupted')
  step = int(re.search(r'checkpoint saved at step (\d+) of 40; rerun the '
                       r'same command to resume', line).group(1))
  assert (model_dir / 'checkpoints' / f'ckpt-{step}.index').exists()
  resumed = run_cli(*_args(model_dir, mnist_dir))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  _assert_same_run(model_dir, finished[1])


def test_a_second_ctrl_c_stops_at_once(tmp_path, mnist_dir):
  # One loop of 100,000 steps: the first Ctrl-C would wait for its end.
  model_dir, log = tmp_path / 'run', tmp_path / 'stderr.log'
  proc = start_cli(*_args(model_dir, mnist_dir, 'Trainer.steps=100000',
                          'Trainer.steps_per_loop=100000',
                          'Trainer.eval_every=100000',
                          'Trainer.checkpoint_every=100000',
                          'Trainer.summary_every=100000'), log=log)
  wait_for_line(log, 'Training from step 0', [proc])
  time.sleep(2)
  proc.send_signal(signal.SIGINT)
  wait_for_line(log, 'Ctrl-C again to stop at once', [proc])
  started = time.time()
  proc.send_signal(signal.SIGINT)
  code = proc.wait(timeout=60)
  assert code != 0 and time.time() - started < 30
  assert not (model_dir / 'checkpoints').exists()  # nothing half-saved
