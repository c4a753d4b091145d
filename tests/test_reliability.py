"""Fault tolerance: preemption, exact resume, divergence, atomic checkpoints,
config drift. Real runs of the CLI on real MNIST, real signals, real local
multi-worker clusters. (Corrupt data files: test_data.py and test_main.py.)
"""

import os
import random
import re
import shutil
import signal
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import (FAST, gin_params, run_cli, start_cli, start_workers,
                      wait_for_line)
from test_main import _results, _weights

from seqmnist.tools import report

STEPS = 100
# One step per tf.function call, so that a signal can land at any step.
RUN = (*FAST, 'Trainer.steps_per_loop=1', f'Trainer.steps={STEPS}',
       'Trainer.eval_every=20', 'Trainer.checkpoint_every=20')
# What must not depend on interruptions (timings and steps_this_run may).
EXACT = ('test_accuracy', 'test_loss', 'best_val_accuracy', 'best_step',
         'final_val_accuracy', 'global_step', 'weights_fingerprint')
PREEMPTED = 143


def _args(model_dir, mnist_dir, *params):
  return ('--gin_file=row.gin', f'--model_dir={model_dir}',
          f'--data_dir={mnist_dir}', *gin_params(*RUN, *params))


def _latest(model_dir):
  return tf.train.latest_checkpoint(str(model_dir / 'checkpoints'))


def _final_weights(model_dir):
  """Every variable of the newest checkpoint: model, optimizer slots, step.

  Except `save_counter`, which counts saves, not training.
  """
  return {name: value for name, value in _weights(_latest(model_dir)).items()
          if not name.startswith('save_counter/')}


def _assert_same_run(model_dir, reference):
  results, weights = _results(model_dir), _final_weights(model_dir)
  ref_results, ref_weights = reference
  for key in EXACT:
    assert results[key] == ref_results[key], key
  assert weights.keys() == ref_weights.keys() and weights
  for name in weights:
    np.testing.assert_array_equal(weights[name], ref_weights[name],
                                  err_msg=name)


def _one_line(text, label):
  lines = [line for line in text.splitlines()
           if line.startswith(f'seqmnist: {label}: ')]
  assert len(lines) == 1, text[-3000:]
  assert 'Traceback' not in text
  return lines[0]


@pytest.fixture(scope='module')
def reference(tmp_path_factory, mnist_dir):
  """The uninterrupted run every interrupted one must reproduce exactly."""
  model_dir = tmp_path_factory.mktemp('reference') / 'run'
  result = run_cli(*_args(model_dir, mnist_dir))
  assert result.returncode == 0, result.stderr[-3000:]
  return _results(model_dir), _final_weights(model_dir)


# Preemption and exact resume ---------------------------------------------


@pytest.mark.parametrize('seed', [1, 2, 3])
def test_sigterm_saves_exits_143_and_resume_is_exact(seed, tmp_path,
                                                     mnist_dir, reference):
  model_dir, log = tmp_path / 'run', tmp_path / 'stderr.log'
  started = time.time()
  proc = start_cli(*_args(model_dir, mnist_dir), log=log)
  wait_for_line(log, 'Saved checkpoint', [proc])  # step 20: training runs
  time.sleep(random.Random(seed).uniform(0.0, 0.5))  # ~10 ms a step
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == PREEMPTED, log.read_text()[-3000:]
  first_process = time.time() - started

  line = _one_line(log.read_text(), 'preempted')
  step = int(re.search(r'checkpoint saved at step (\d+) of', line).group(1))
  assert 20 <= step < STEPS
  assert _latest(model_dir).endswith(f'ckpt-{step}')
  assert not (model_dir / 'results.json').exists()

  started = time.time()
  resumed = run_cli(*_args(model_dir, mnist_dir))
  second_process = time.time() - started
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'Resumed from {model_dir}/checkpoints/ckpt-{step}' in resumed.stderr
  results = _results(model_dir)
  assert results['steps_this_run'] == STEPS - step
  _assert_same_run(model_dir, reference)
  # The report times both processes (results.json times only the second).
  wall, processes = report.training_time(str(model_dir), results)
  assert processes == 2
  assert results['wall_seconds'] < wall < first_process + second_process


def test_sigkill_during_a_save_keeps_the_previous_checkpoint(
    tmp_path, mnist_dir, reference):
  # A save every step; SIGKILL the moment a save's temporary files appear.
  for attempt in range(5):
    model_dir = tmp_path / f'run{attempt}'
    checkpoints = model_dir / 'checkpoints'
    proc = start_cli(*_args(model_dir, mnist_dir,
                            'Trainer.checkpoint_every=1'),
                     log=tmp_path / f'stderr{attempt}.log')
    while proc.poll() is None:
      names = os.listdir(checkpoints) if checkpoints.is_dir() else []
      if 'ckpt-10.index' in names and any(n.endswith('_temp') for n in names):
        proc.send_signal(signal.SIGKILL)
        break
    assert proc.wait(timeout=60) in (-signal.SIGKILL, 0)
    # What the kill cut short is read after the process is gone: a save seen
    # in progress may have finished before the signal arrived.
    temps = [n for n in os.listdir(checkpoints) if n.endswith('_temp')]
    latest = _latest(model_dir)
    if temps and latest:
      in_progress = int(re.match(r'ckpt-(\d+)_temp', temps[0]).group(1))
      if not latest.endswith(f'ckpt-{in_progress}'):
        break  # the kill landed inside a save
  else:
    pytest.fail('no SIGKILL landed inside a save in 5 attempts')

  # The save that was cut short left debris but is not the current one; the
  # current one reads back whole.
  assert len(temps) == 1, temps
  previous = int(latest.rsplit('-', 1)[1])
  assert previous == in_progress - 1
  assert all(np.all(np.isfinite(w)) for w in _weights(latest).values())

  resumed = run_cli(*_args(model_dir, mnist_dir, 'Trainer.checkpoint_every=1'))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'Resumed from {latest}' in resumed.stderr
  assert not (checkpoints / f'ckpt-{in_progress}_temp').exists()
  _assert_same_run(model_dir, reference)


def test_two_workers_agree_on_preemption_and_resume_exactly(tmp_path,
                                                           mnist_dir):
  def run_workers(name, *, sigterm_worker=None):
    logs = tmp_path / name
    logs.mkdir()
    procs = start_workers(2, _args(tmp_path / f'run_{name}',
                                   mnist_dir), str(logs))
    if sigterm_worker is not None:
      wait_for_line(logs / 'worker-0.log', 'Saved checkpoint', procs)
      time.sleep(random.Random(0).uniform(0.0, 0.5))
      procs[sigterm_worker].send_signal(signal.SIGTERM)
    codes = [p.wait(timeout=300) for p in procs]
    texts = [(logs / f'worker-{i}.log').read_text() for i in (0, 1)]
    return codes, texts

  codes, texts = run_workers('reference')
  assert codes == [0, 0], texts[0][-3000:] + texts[1][-3000:]
  reference = (_results(tmp_path / 'run_reference'),
               _final_weights(tmp_path / 'run_reference'))

  # SIGTERM reaches only worker 1, the non-chief: both stop after the same
  # step, and the chief's checkpoint of that step persists.
  codes, texts = run_workers('preempted', sigterm_worker=1)
  assert codes == [PREEMPTED, PREEMPTED], texts[0][-3000:] + texts[1][-3000:]
  steps = {int(re.search(r'saved at step (\d+)',
                         _one_line(t, 'preempted')).group(1)) for t in texts}
  assert len(steps) == 1, steps
  step = steps.pop()
  assert 20 <= step < STEPS
  model_dir = tmp_path / 'run_preempted'
  assert _latest(model_dir).endswith(f'ckpt-{step}')

  os.rename(model_dir, tmp_path / 'run_resumed')  # same run, new logs folder
  codes, texts = run_workers('resumed')
  assert codes == [0, 0], texts[0][-3000:] + texts[1][-3000:]
  for text in texts:
    assert f'ckpt-{step} at step {step}' in text
  _assert_same_run(tmp_path / 'run_resumed', reference)


# Divergence ---------------------------------------------------------------


@pytest.mark.parametrize('params, why', [
    # RMSProp's normalised steps keep a 1e30 learning rate finite: the loss
    # reaches ~1e31 instead, above Trainer.max_loss.
    ((), r'the loss \S+ exceeds Trainer.max_loss=1000'),
    # Plain SGD at 1e38 overflows float32: NaN/Inf, with the bound off.
    (("Trainer.optimizer='sgd'", 'Trainer.max_loss=0'),
     r'the (loss|gradient norm) is (nan|inf)'),
], ids=['loss-bound', 'nan-or-inf'])
def test_divergence_stops_and_keeps_the_last_good_checkpoint(
    tmp_path, mnist_dir, params, why):
  huge = '1e38' if 'sgd' in str(params) else '1e30'
  model_dir = tmp_path / 'run'
  # A good learning rate up to step 30, then a huge one.
  result = run_cli(*_args(
      model_dir, mnist_dir, *params, 'Trainer.checkpoint_every=10',
      'Trainer.learning_rate=@schedules.PiecewiseConstantDecay()',
      'schedules.PiecewiseConstantDecay.boundaries=[30]',
      f'schedules.PiecewiseConstantDecay.values=[0.001, {huge}]'))
  assert result.returncode == 3, result.stderr[-3000:]
  line = _one_line(result.stderr, 'error')
  match = re.search(r'training diverged at step (\d+): (.*); the last good '
                    r'checkpoint \(step 30\) is kept', line)
  assert match, line
  assert 30 < int(match.group(1)) <= 40
  assert re.fullmatch(why, match.group(2)), line
  # Nothing after the divergence was saved.
  assert _latest(model_dir).endswith('ckpt-30')
  weights = _weights(_latest(model_dir))
  assert all(np.all(np.isfinite(w)) for w in weights.values())
  assert not (model_dir / 'results.json').exists()


# Config drift ---------------------------------------------------------------


def _snapshot(model_dir):
  return {p: p.read_bytes() for p in model_dir.rglob('*') if p.is_file()}


@pytest.fixture(scope='module')
def finished_at_20(tmp_path_factory, mnist_dir):
  """A run of 20 steps, finished; tests resume copies of it."""
  model_dir = tmp_path_factory.mktemp('at20') / 'run'
  first = run_cli(*_args(model_dir, mnist_dir, 'Trainer.steps=20'))
  assert first.returncode == 0, first.stderr[-3000:]
  return model_dir


def test_resume_with_another_model_is_refused(tmp_path, mnist_dir,
                                              finished_at_20):
  model_dir = tmp_path / 'run'
  shutil.copytree(finished_at_20, model_dir, symlinks=True)
  before = _snapshot(model_dir)

  result = run_cli(*_args(model_dir, mnist_dir, 'Trainer.steps=40',
                          'Model.units=32', "Trainer.optimizer='adam'"))
  assert result.returncode == 2, result.stderr[-3000:]
  line = _one_line(result.stderr, 'error')
  assert (f'cannot resume: Model.units is 16 in {model_dir}/'
          'operative_config.gin but 32 now (and 1 more)') in line
  assert _snapshot(model_dir) == before

  # Without the saved config, the checkpoint itself still refuses.
  os.remove(model_dir / 'operative_config.gin')
  result = run_cli(*_args(model_dir, mnist_dir, 'Trainer.steps=40',
                          'Model.units=32'))
  assert result.returncode == 2, result.stderr[-3000:]
  assert ('does not match the configured model and optimizer' in
          _one_line(result.stderr, 'error'))


def test_run_length_and_cadence_may_change_on_resume(tmp_path, mnist_dir,
                                                    finished_at_20):
  model_dir = tmp_path / 'run'
  shutil.copytree(finished_at_20, model_dir, symlinks=True)
  result = run_cli(*_args(model_dir, mnist_dir, 'Trainer.steps=30',
                          'Trainer.eval_every=5', 'Trainer.checkpoint_every=5',
                          'Trainer.steps_per_loop=5',
                          'Data.eval_batch_size=500'))
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resumed from' in result.stderr
  assert _results(model_dir)['global_step'] == 30
  assert "Trainer.eval_every = 5" in (model_dir /
                                      'operative_config.gin').read_text()


# Resume onto another topology ------------------------------------------------


def _assert_close_run(model_dir, reference, rtol=1e-4, atol=1e-5):
  """The same run up to the floating-point order of a different all-reduce
  (2 workers sum per-worker gradients; 1 process sums one batch)."""
  results, weights = _results(model_dir), _final_weights(model_dir)
  ref_results, ref_weights = reference
  assert results['global_step'] == ref_results['global_step']
  assert abs(results['test_accuracy'] - ref_results['test_accuracy']) <= 0.002
  assert weights.keys() == ref_weights.keys() and weights
  for name in weights:
    np.testing.assert_allclose(weights[name], ref_weights[name], rtol=rtol,
                               atol=atol, err_msg=name)


@pytest.mark.parametrize('first, then', [(2, 1), (1, 2)],
                         ids=['2-workers-then-1', '1-then-2-workers'])
def test_resume_onto_another_number_of_workers(tmp_path, mnist_dir, reference,
                                               first, then):
  model_dir = tmp_path / 'run'
  args = _args(model_dir, mnist_dir)

  def start(n, name):
    logs = tmp_path / name
    logs.mkdir()
    if n == 1:
      return [start_cli(*args, log=logs / 'worker-0.log')], logs
    return start_workers(n, args, str(logs)), logs

  procs, logs = start(first, 'first')
  wait_for_line(logs / 'worker-0.log', 'Saved checkpoint', procs)
  for proc in procs:
    proc.send_signal(signal.SIGTERM)
  assert [p.wait(timeout=300) for p in procs] == [PREEMPTED] * first
  step = int(re.search(r'saved at step (\d+)', _one_line(
      (logs / 'worker-0.log').read_text(), 'preempted')).group(1))
  assert 20 <= step < STEPS

  procs, logs = start(then, 'then')
  assert [p.wait(timeout=300) for p in procs] == [0] * then, (
      logs / 'worker-0.log').read_text()[-3000:]
  text = (logs / 'worker-0.log').read_text()
  assert f'ckpt-{step} at step {step}' in text
  assert _results(model_dir)['replicas'] == then
  _assert_close_run(model_dir, reference)


def _train_points(model_dir, tag='loss'):
  """{step: value} of a train scalar, every event file of the run."""
  from test_main import _tags  # pylint: disable=g-import-not-at-top
  return {e.step: float(tf.make_ndarray(e.tensor_proto))
          for e in _tags(model_dir / 'train').Tensors(tag)}


def test_the_first_train_point_after_a_resume_averages_only_new_steps(
    tmp_path, mnist_dir):
  """Stopped at 35 and resumed, the point at 40 averages steps 36-40 (as an
  uninterrupted run writing every 5 steps has it), not 31-40."""
  base = (*FAST, 'Trainer.eval_every=100', 'Trainer.checkpoint_every=5',
          'Trainer.steps_per_loop=5')
  runs = {}
  for name, summary_every, stops in (('every_10', 10, (40,)),
                                     ('every_5', 5, (40,)),
                                     ('resumed', 10, (35, 40))):
    model_dir = tmp_path / name
    for steps in stops:
      result = run_cli('--gin_file=row.gin', f'--model_dir={model_dir}',
                       f'--data_dir={mnist_dir}',
                       *gin_params(*base, f'Trainer.steps={steps}',
                                   f'Trainer.summary_every={summary_every}'))
      assert result.returncode == 0, result.stderr[-3000:]
    runs[name] = _train_points(model_dir)
  assert sorted(runs['resumed']) == [10, 20, 30, 35, 40]
  assert runs['resumed'][40] == pytest.approx(runs['every_5'][40], rel=1e-5)
  assert runs['resumed'][40] != pytest.approx(runs['every_10'][40], rel=1e-3)


def test_sigterm_finishes_only_the_call_in_flight(tmp_path, mnist_dir):
  """With 50 steps per tf.function call, a SIGTERM right after the step-50
  save stops at the end of the call in flight: step 50 or 100, no later."""
  model_dir, log = tmp_path / 'run', tmp_path / 'stderr.log'
  proc = start_cli('--gin_file=row.gin', f'--model_dir={model_dir}',
                   f'--data_dir={mnist_dir}',
                   *gin_params(*FAST, 'Trainer.steps_per_loop=50',
                               'Trainer.summary_every=50',
                               'Trainer.checkpoint_every=50',
                               'Trainer.eval_every=100000',
                               'Trainer.steps=100000'), log=log)
  wait_for_line(log, 'ckpt-50', [proc])
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=300) == PREEMPTED, log.read_text()[-3000:]
  line = _one_line(log.read_text(), 'preempted')
  step = int(re.search(r'checkpoint saved at step (\d+) of', line).group(1))
  assert step in (50, 100), line
  assert _latest(model_dir).endswith(f'ckpt-{step}')
