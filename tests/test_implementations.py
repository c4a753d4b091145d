"""How GRU/LSTM layers run (seqmnist/model/implementations.py): the CPU's
features as read, when TensorFlow's oneDNN ops are turned on, the rule 'auto'
follows, the unrolled layer against Keras' step loop on the same variables,
and a run that switches implementation (and oneDNN ops) on resume."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import ONEDNN_SET_BY_CONFTEST
from test_fused import assert_a_switch_on_resume_ends_as_keras_loop

from seqmnist.errors import ConfigError
from seqmnist.model import cells
from seqmnist.model import implementations
from seqmnist.model import network
from seqmnist.model import rnn_layers

AVX2 = frozenset({'sse4_2', 'avx', 'avx2', 'fma'})
AVX512 = AVX2 | {'avx512f', 'avx512bw', 'avx512_vnni'}
AMX = AVX512 | {'amx_tile', 'amx_bf16', 'avx512_bf16'}


def test_vector_extensions_are_read_from_the_flags():
  assert implementations.vector_extensions(AVX2) == {
      'AVX2': True, 'AVX-512': False, 'AMX': False}
  assert implementations.vector_extensions(AMX) == {
      'AVX2': True, 'AVX-512': True, 'AMX': True}
  assert [implementations.cpu_kind(f) for f in (frozenset(), AVX2, AVX512,
                                                AMX)] == [
      'other', 'AVX2', 'AVX-512', 'AVX-512']
  # This machine's: what the bench prints above its table.
  assert implementations.cpu_model()
  assert set(implementations.vector_extensions()) == {'AVX2', 'AVX-512',
                                                      'AMX'}
  assert isinstance(implementations.onednn_ops_on(), bool)


@pytest.mark.parametrize('flags', [frozenset(), AVX2, AVX512, AMX])
def test_onednn_ops_are_turned_on_where_they_measured_faster(flags):
  """TensorFlow leaves its oneDNN ops off without AVX-512; the entry points
  turn them on where that measured faster (AVX2), and leave TensorFlow's
  default elsewhere and the user's setting everywhere."""
  environ = {}
  turned_on = implementations.prepare_tensorflow(environ, flags)
  assert turned_on == (flags == AVX2)
  assert environ == ({'TF_ENABLE_ONEDNN_OPTS': '1'} if turned_on else {})
  for users in ('0', '1'):
    environ = {'TF_ENABLE_ONEDNN_OPTS': users}
    assert not implementations.prepare_tensorflow(environ, flags)
    assert environ == {'TF_ENABLE_ONEDNN_OPTS': users}


def test_the_switch_set_before_import_reaches_tensorflow():
  """conftest prepared TensorFlow as the entry points do, before it imported:
  TensorFlow runs its oneDNN ops as the switch says, and the start-up
  state names who set it."""
  switch = os.environ.get('TF_ENABLE_ONEDNN_OPTS')
  if implementations.cpu_kind() in implementations.ONEDNN_MEASURED_FASTER_ON:
    assert switch is not None  # set by conftest unless the user had
  if switch in ('0', '1'):
    assert implementations.onednn_ops_on() == (switch == '1')
  state = implementations.onednn_state()
  assert state.startswith('on' if implementations.onednn_ops_on() else 'off')
  assert ('set by seqmnist' in state) == ONEDNN_SET_BY_CONFTEST, state


def _choose(requested='auto', **kw):
  args = dict(cell_fused=True, float32=True, sequence_length=28, threads=2,
              gpu=False, fused_available=True, flags=AVX2)
  args.update(kw)
  return implementations.choose(requested, **args).implementation


@pytest.mark.parametrize('flags', [frozenset(), AVX2, AVX512, AMX])
def test_auto_follows_the_measured_rule(flags):
  # A GPU: Keras' layer, which runs cuDNN's kernel.
  assert _choose(gpu=True, flags=flags) == 'keras'
  assert _choose(gpu=True, threads=1, flags=flags) == 'keras'
  # One thread: the fused op wherever it covers the layer.
  for steps in (28, 784):
    assert _choose(threads=1, sequence_length=steps, flags=flags) == 'fused'
  assert _choose(threads=1, float32=False, flags=flags) != 'fused'
  assert _choose(threads=1, cell_fused=False, flags=flags) != 'fused'
  assert _choose(threads=1, fused_available=False, flags=flags) != 'fused'
  # More threads: short sequences unrolled where that was measured faster
  # (AVX2), long ones and other CPUs Keras' loop.
  short = 'unroll' if flags == AVX2 else 'keras'
  assert _choose(flags=flags) == short
  assert _choose(sequence_length=implementations.MAX_UNROLL_STEPS,
                 flags=flags) == short
  assert _choose(sequence_length=implementations.MAX_UNROLL_STEPS + 1,
                 flags=flags) == 'keras'
  assert _choose(sequence_length=784, threads=8, flags=flags) == 'keras'
  assert _choose(cell_fused=False, flags=flags) == 'keras'  # a plain RNN
  # What is asked for is what runs.
  for name in ('keras', 'fused', 'unroll'):
    assert _choose(name, gpu=True, flags=flags) == name


def test_the_layers_built_for_a_gpu_stay_cudnn_eligible(monkeypatch):
  """No GPU here: the list of GPUs is replaced by one (the edge of what this
  machine has); 'auto' then builds Keras' layers, each cuDNN-eligible, and
  says why in its start-up line."""
  monkeypatch.setattr(tf.config, 'list_physical_devices',
                      lambda kind=None: ['/physical_device:GPU:0']
                      if kind == 'GPU' else [])
  for cell in ('gru', 'lstm'):
    config = network.ModelConfig(cell=cell, units=8, layers=2)
    choice = network.choose_implementation(config, 28)
    assert choice == implementations.Choice(
        'keras', 'auto: a GPU is visible (cuDNN)')
    model = network.build(config, (28, 28), 10, seed=0)
    layers = network.recurrent_layers(model)
    assert len(layers) == 2 and all(map(network.cudnn_eligible, layers))


def test_unroll_is_refused_over_a_long_sequence():
  with pytest.raises(ConfigError, match=r"Model.implementation='unroll' "
                     r'would copy the cell 784 times into the graph \(at '
                     r'most 128 steps\)'):
    network.choose_implementation(
        network.ModelConfig(implementation='unroll'), 784)
  # A dilated stack's longest layer is what counts: 784 / 8 = 98 steps.
  assert network.choose_implementation(
      network.ModelConfig(implementation='unroll', layers=2,
                          dilations=(8, 16)), 784).implementation == 'unroll'


def _outputs_and_gradients(layer, x, dy):
  layer(x)  # builds it
  with tf.GradientTape() as tape:
    tape.watch(x)
    loss = tf.reduce_sum(layer(x, training=True) * dy)
  grads = tape.gradient(loss, [x] + [v.value for v in
                                     layer.trainable_variables])
  return [g.numpy() for g in grads], [v.path for v in layer.weights]


@pytest.mark.parametrize('cell', ['gru', 'lstm', 'simple'])
def test_the_unrolled_layer_is_keras_loop_on_the_same_variables(cell):
  rng = np.random.default_rng(0)
  x = tf.constant(rng.normal(size=(4, 11, 3)), tf.float32)
  dy = tf.constant(rng.normal(size=(4, 11, 6)), tf.float32)
  results = {}
  for unroll in (False, True):
    keras.utils.set_random_seed(1)
    layer = cells.get(cell).layer(cells.Layer(
        arguments=dict(units=6, return_sequences=True, name=f'{cell}_0'),
        unroll=unroll))
    results[unroll] = (layer(x, training=True).numpy(),
                       *_outputs_and_gradients(layer, x, dy),
                       layer(x, training=False).numpy())
    if cell != 'simple':
      # Unrolled only while training: at rest it is Keras' layer.
      assert layer.unroll_training == unroll and not layer.unroll
      assert network.cudnn_eligible(layer)
  (y_loop, g_loop, names_loop, infer_loop), (
      y_unrolled, g_unrolled, names_unrolled, infer_unrolled) = (
          results[False], results[True])
  assert names_unrolled == names_loop  # the same checkpoint paths
  np.testing.assert_allclose(y_unrolled, y_loop, rtol=1e-6, atol=1e-6)
  for got, want in zip(g_unrolled, g_loop):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  if cell != 'simple':  # inference is Keras' loop, as the export serves it
    np.testing.assert_array_equal(infer_unrolled, infer_loop)
  if cell == 'gru':
    assert isinstance(layer, rnn_layers.SplitGateGRU)


@pytest.mark.e2e
def test_a_run_switches_to_the_unrolled_layer_on_resume(tmp_path, mnist_dir):
  assert_a_switch_on_resume_ends_as_keras_loop(tmp_path, mnist_dir, 'unroll')
