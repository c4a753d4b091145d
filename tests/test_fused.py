"""The fused CPU recurrence (seqmnist/model/fused.py, seqmnist/native/
fused_rnn.cc): the oneDNN op against Keras' own layers, on the same
variables.

Outputs and gradients equal Keras' within float32 tolerance for GRU and
LSTM under every gate initialisation and stacked; a run switches
implementation on resume; 2 mirrored replicas train as one device; a
library that does not load falls back to Keras with one line, and
'fused' asked for without it is refused; an export serves without the op.
Every test here needs the op built (pip install -e . builds it): without
it they skip, saying why.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import FAST, REPO, gin_params, run_cli
from test_distribute import assert_float_weights_close
from test_main import _results, _weights

from seqmnist.model import cells
from seqmnist.model import fused
from seqmnist.model import gates
from seqmnist.model import implementations
from seqmnist.model import network
from seqmnist.model import rnn_layers

pytestmark = [pytest.mark.ci_provides('the fused op'), pytest.mark.skipif(
    not fused.available(), reason=f'the fused op is not available: '
    f'{fused.why()}')]


def _layer(cell, units, gate_init, return_sequences=True, use_fused=False,
           sequence_length=9):
  cls = rnn_layers.SplitGateGRU if cell == 'gru' else rnn_layers.FusedLSTM
  kwargs = dict(reset_after=True) if cell == 'gru' else {}
  if gate_init != 'default':
    kwargs['bias_initializer'] = gates.GateBias(cell, gate_init,
                                                sequence_length, seed=3)
  # The op's recurrence for the cell is the registry's (cells.Cell.fused).
  return cls(units, return_sequences=return_sequences,
             fused=cells.get(cell).fused if use_fused else '', **kwargs)


def _outputs_and_gradients(layers, x, dy):
  y = x
  for layer in layers:  # builds them
    y = layer(y)
  variables = [v for layer in layers for v in layer.trainable_variables]
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = x
    for layer in layers:
      y = layer(y, training=True)
    loss = tf.reduce_sum(y * dy)
  grads = tape.gradient(loss, [x] + [v.value for v in variables])
  return y.numpy(), [g.numpy() for g in grads]


@pytest.mark.parametrize('cell', ['gru', 'lstm'])
@pytest.mark.parametrize('gate_init', gates.SCHEMES)
@pytest.mark.parametrize('depth', [1, 2])
def test_fused_equals_keras_outputs_and_gradients(cell, gate_init, depth):
  rng = np.random.default_rng(0)
  batch, steps, features, units = 6, 9, 3, 8
  x = tf.constant(rng.normal(size=(batch, steps, features)), tf.float32)
  dy = tf.constant(rng.normal(size=(batch, units) if depth else ()),
                   tf.float32)
  results = {}
  for use_fused in (False, True):
    keras.utils.set_random_seed(1)
    layers = [_layer(cell, units, gate_init, return_sequences=i < depth - 1,
                     use_fused=use_fused) for i in range(depth)]
    results[use_fused] = _outputs_and_gradients(layers, x, dy)
  (y_k, g_k), (y_f, g_f) = results[False], results[True]
  np.testing.assert_allclose(y_f, y_k, rtol=1e-5, atol=1e-6)
  assert len(g_f) == len(g_k) == 1 + 3 * depth
  for got, want in zip(g_f, g_k):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-6)
  # The gradient really reaches every variable.
  assert all(np.abs(g).max() > 0 for g in g_f)


@pytest.mark.parametrize('cell', ['gru', 'lstm'])
def test_the_op_without_a_workspace_matches_training(cell):
  rng = np.random.default_rng(2)
  layer = _layer(cell, 5, 'default', use_fused=True)
  x = tf.constant(rng.normal(size=(4, 7, 2)), tf.float32)
  trained = layer(x, training=True).numpy()
  c = layer.cell
  inference = fused.rnn(cell, x, c.kernel.value, c.recurrent_kernel.value,
                        c.bias.value, training=False).numpy()
  np.testing.assert_allclose(inference, trained, rtol=1e-5, atol=1e-6)


def test_inference_runs_keras_step_as_the_export_does():
  """Validation and test passes run Keras' step, so the run's test accuracy
  is what its SavedModel (Keras' layers) reproduces exactly."""
  x = tf.constant(np.random.default_rng(3).normal(size=(4, 7, 2)), tf.float32)
  keras.utils.set_random_seed(1)
  plain = _layer('gru', 5, 'default', use_fused=False)
  keras.utils.set_random_seed(1)
  fast = _layer('gru', 5, 'default', use_fused=True)
  np.testing.assert_array_equal(fast(x, training=False).numpy(),
                                plain(x, training=False).numpy())


def _row_run(model_dir, mnist_dir, *params):
  return ('--gin_file=row.gin', f'--model_dir={model_dir}',
          f'--data_dir={mnist_dir}',
          *gin_params(*FAST, 'Model.layers=2', 'Trainer.eval_every=20',
                      'Trainer.checkpoint_every=20', *params))


def _checkpoint(model_dir):
  return {k: v for k, v in _weights(tf.train.latest_checkpoint(
      str(model_dir / 'checkpoints'))).items()
          if not k.startswith('save_counter/')}


def assert_a_switch_on_resume_ends_as_keras_loop(tmp_path, mnist_dir,
                                                implementation):
  """Keras' loop for 20 steps with TensorFlow's oneDNN ops off (as a run
  dir made before the package turned them on), then `implementation` for 20
  with the entry point's own switches: the weights of the same 40 steps in
  Keras' loop alone with the ops off, within float32 tolerance."""
  off = dict(os.environ, TF_ENABLE_ONEDNN_OPTS='0')
  own = {k: v for k, v in os.environ.items() if k != 'TF_ENABLE_ONEDNN_OPTS'}
  keras_only = tmp_path / 'keras'
  result = run_cli(*_row_run(keras_only, mnist_dir, 'Trainer.steps=40',
                             "Model.implementation='keras'"), env=off)
  assert result.returncode == 0, result.stderr[-3000:]
  switched = tmp_path / 'switched'
  for steps, name, env in ((20, 'keras', off), (40, implementation, own)):
    result = run_cli(*_row_run(switched, mnist_dir, f'Trainer.steps={steps}',
                               f"Model.implementation='{name}'"), env=env)
    assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resumed from' in result.stderr
  assert (f'Recurrent layers: {implementation} (Model.implementation)' in
          result.stderr)
  if implementations.cpu_kind() in implementations.ONEDNN_MEASURED_FASTER_ON:
    assert ("oneDNN ops on (TF_ENABLE_ONEDNN_OPTS=1 set by seqmnist: "
            f"{implementations.cpu_kind()} CPU" in result.stderr)
  else:
    assert "(TensorFlow's default on this CPU)" in result.stderr
  assert _results(switched)['global_step'] == 40
  assert_float_weights_close(_checkpoint(switched), _checkpoint(keras_only),
                             at_least=8, atol=1e-5)


@pytest.mark.e2e
def test_a_run_switches_implementation_on_resume(tmp_path, mnist_dir):
  assert_a_switch_on_resume_ends_as_keras_loop(tmp_path, mnist_dir, 'fused')


@pytest.mark.e2e
def test_fused_two_replicas_match_one_device(tmp_path, mnist_dir):
  weights = {}
  for strategy in ('one_device', 'mirrored'):
    model_dir = tmp_path / strategy
    result = run_cli(*_row_run(model_dir, mnist_dir, 'Trainer.steps=20',
                               "Model.implementation='fused'",
                               f"Distribute.strategy='{strategy}'",
                               'Distribute.logical_cpus=2'))
    assert result.returncode == 0, result.stderr[-3000:]
    weights[strategy] = _checkpoint(model_dir)
  assert_float_weights_close(weights['mirrored'], weights['one_device'],
                             at_least=8)


_FALLBACK = '''
import sys
from seqmnist.errors import ConfigError
from seqmnist.model import fused
from seqmnist.model import network
fused.LIBRARY = sys.argv[1]
config = network.ModelConfig(units=4)
model = network.build(config, (28, 28), 10, seed=0)
print('fused layers:', sum(l.fused for l in network.recurrent_layers(model)))
try:
  network.uses_fused(network.ModelConfig(implementation='fused'), 28)
except ConfigError as e:
  print('refused:', e)
'''


def test_auto_runs_the_op_only_where_it_measured_faster(monkeypatch):
  """One thread per process (the op ahead of Keras' layer there), not two
  (Keras' layer faster): docs/benchmarks.md; the whole rule is in
  tests/test_implementations.py."""
  monkeypatch.setenv('TF_NUM_INTRAOP_THREADS', '1')
  for steps in (28, 784):
    assert network.uses_fused(network.ModelConfig(), steps)
    assert network.uses_fused(network.ModelConfig(cell='lstm'), steps)
    assert not network.uses_fused(
        network.ModelConfig(implementation='keras'), steps)
    assert not network.uses_fused(network.ModelConfig(cell='simple'), steps)
  monkeypatch.setenv('TF_NUM_INTRAOP_THREADS', '2')
  assert not network.uses_fused(network.ModelConfig(), 784)
  assert network.uses_fused(network.ModelConfig(implementation='fused'), 784)


@pytest.mark.e2e
def test_a_library_that_does_not_load_falls_back_with_one_line(tmp_path):
  garbage = tmp_path / '_fused_rnn.so'
  garbage.write_bytes(os.urandom(4096))
  result = subprocess.run(
      [sys.executable, '-c', _FALLBACK, str(garbage)], capture_output=True,
      text=True, cwd=REPO, timeout=300, check=False,
      # One thread: where 'auto' would run the op.
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2',
               TF_NUM_INTRAOP_THREADS='1'))
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'fused layers: 0' in result.stdout
  assert f"refused: Model.implementation='fused' but {garbage} did not " \
         'load' in result.stdout
  said = [l for l in result.stderr.splitlines()
          if 'Keras layers, not the fused op' in l]
  assert len(said) == 1 and str(garbage) in said[0], result.stderr[-3000:]
  assert 'Traceback' not in result.stderr


@pytest.mark.e2e
def test_an_export_of_a_fused_run_serves_without_the_op(tmp_path, mnist_dir):
  model_dir, export_dir = tmp_path / 'run', tmp_path / 'export'
  result = run_cli(*_row_run(model_dir, mnist_dir, 'Trainer.steps=20',
                             "Model.implementation='fused'"))
  assert result.returncode == 0, result.stderr[-3000:]
  exported = subprocess.run(
      [sys.executable, '-m', 'seqmnist.serving.export', f'--model_dir={model_dir}',
       f'--export_dir={export_dir}'], capture_output=True, text=True,
      cwd=REPO, timeout=300, check=False)
  assert exported.returncode == 0, exported.stderr[-3000:]
  graph = (export_dir / 'saved_model.pb').read_bytes()
  assert b'SeqmnistFusedRnn' not in graph
  assert b'MatMul' in graph  # Keras' step is what serves


@pytest.mark.e2e
def test_every_lever_with_the_op_resumes_exactly_after_sigterm(tmp_path,
                                                               mnist_dir):
  """With the op forced (two threads: 'auto' would pick Keras' layer), a run
  with every lever on, SIGTERMed after its first checkpoint and resumed,
  ends with the uninterrupted run's weights, bit for bit."""
  import re  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  from conftest import start_cli, wait_for_line  # pylint: disable=g-import-not-at-top
  from test_levers import _checkpoint_weights, _lever_run  # pylint: disable=g-import-not-at-top
  from test_reliability import EXACT, PREEMPTED  # pylint: disable=g-import-not-at-top
  fused_ = "Model.implementation='fused'"
  reference = tmp_path / 'reference'
  result = run_cli(*_lever_run(reference, mnist_dir, fused_))
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Recurrent layers: fused (Model.implementation)' in result.stderr
  model_dir, log = tmp_path / 'run', tmp_path / 'stderr.log'
  proc = start_cli(*_lever_run(model_dir, mnist_dir, fused_,
                               'Trainer.steps_per_loop=1'), log=log)
  wait_for_line(log, 'Saved checkpoint', [proc])
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == PREEMPTED, log.read_text()[-3000:]
  assert int(re.search(r'checkpoint saved at step (\d+) of',
                       log.read_text()).group(1)) < 60
  resumed = run_cli(*_lever_run(model_dir, mnist_dir, fused_))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  want, got = _checkpoint_weights(reference), _checkpoint_weights(model_dir)
  assert got.keys() == want.keys()
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  for key in EXACT:
    assert _results(model_dir)[key] == _results(reference)[key], key
