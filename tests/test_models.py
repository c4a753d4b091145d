"""The model: shapes, seeding, gate initialisation, and cuDNN eligibility.

No GPU exists on these machines, so the cuDNN kernel itself never runs here:
the tests check our layers against the conditions Keras documents for it,
that each condition, broken alone, makes a layer ineligible, and that our
predicate agrees with what Keras' TensorFlow backend dispatches when it is
told a GPU is there (the GPU and the cuDNN call are mocked: the edge of what
runs here).
"""

import dataclasses
import importlib

import keras
import numpy as np
import pytest

from seqmnist.errors import ConfigError
from seqmnist.model import cells
from seqmnist.model import fused
from seqmnist.model import network
from seqmnist.model import rnn_layers


@pytest.mark.parametrize('cell', ['gru', 'lstm'])
def test_gated_layers_are_cudnn_eligible(cell):
  model = network.build(network.ModelConfig(cell=cell, units=8, layers=2),
                       (784, 1), 10, seed=0)
  layers = network.recurrent_layers(model)
  assert len(layers) == 2
  assert all(network.cudnn_eligible(layer) for layer in layers)


# Each documented cuDNN condition, broken alone.
_BROKEN = [
    (keras.layers.GRU, dict(reset_after=False)),
    (keras.layers.GRU, dict(activation='relu')),
    (keras.layers.GRU, dict(recurrent_activation='hard_sigmoid')),
    (keras.layers.GRU, dict(recurrent_dropout=0.1)),
    (keras.layers.GRU, dict(unroll=True)),
    (keras.layers.GRU, dict(use_bias=False)),
    (keras.layers.GRU, dict(use_cudnn=False)),
    (keras.layers.LSTM, dict(activation='relu')),
    (keras.layers.LSTM, dict(recurrent_activation='relu')),
    (keras.layers.LSTM, dict(recurrent_dropout=0.1)),
    (keras.layers.LSTM, dict(unroll=True)),
    (keras.layers.LSTM, dict(use_bias=False)),
    (keras.layers.LSTM, dict(use_cudnn=False)),
]


@pytest.mark.parametrize('cls, broken', _BROKEN)
def test_each_documented_cudnn_condition_is_checked(cls, broken):
  assert network.cudnn_eligible(cls(4))  # Keras' defaults are eligible
  assert not network.cudnn_eligible(cls(4, **broken))


class _Dispatched(Exception):
  """Raised by the mocked cuDNN call: Keras chose the cuDNN kernel."""


def _dispatches_to_cudnn(layer, monkeypatch) -> bool:
  """Calls `layer` with Keras' TensorFlow backend believing a GPU is there
  and the cuDNN kernels replaced by a recorder; True if Keras chose them."""
  tf_rnn = importlib.import_module('keras.src.backend.tensorflow.rnn')
  def dispatched(*args, **kwargs):
    raise _Dispatched()
  monkeypatch.setattr(tf_rnn, '_is_gpu_available', lambda: True)
  monkeypatch.setattr(tf_rnn, '_cudnn_gru', dispatched)
  monkeypatch.setattr(tf_rnn, '_cudnn_lstm', dispatched)
  try:
    layer(np.zeros((2, 3, 4), np.float32))
  except _Dispatched:
    return True
  return False


# Keras' defaults (eligible), then each condition broken alone.
_KERAS_LAYERS = [(keras.layers.GRU, {}), (keras.layers.LSTM, {}), *_BROKEN]


@pytest.mark.parametrize('cls, kwargs', _KERAS_LAYERS)
def test_the_predicate_agrees_with_what_keras_dispatches(cls, kwargs,
                                                         monkeypatch):
  layer = cls(4, **kwargs)
  assert network.cudnn_eligible(layer) == _dispatches_to_cudnn(layer,
                                                              monkeypatch)


@pytest.mark.parametrize('cell', ['gru', 'lstm'])
@pytest.mark.parametrize('gate_init', ['default', 'chrono', 'uniform'])
def test_keras_dispatches_our_layers_to_cudnn(cell, gate_init, monkeypatch):
  """The layers a recipe builds, as a GPU run builds them (Keras'
  implementation: on a GPU 'auto' never picks the fused op)."""
  config = network.ModelConfig(cell=cell, units=4, layers=2,
                              gate_init=gate_init, implementation='keras')
  model = network.build(config, (3, 4), 10, seed=0)
  for layer in network.recurrent_layers(model):
    assert network.cudnn_eligible(layer)
    assert _dispatches_to_cudnn(layer, monkeypatch), layer.name


def test_a_plain_rnn_is_never_cudnn_eligible():
  assert not network.cudnn_eligible(keras.layers.SimpleRNN(4))


def test_shapes_head_and_batch_norm():
  model = network.build(network.ModelConfig(units=8, batch_norm=True), (28, 28),
                       10, seed=0)
  logits = model(np.zeros((3, 28, 28), np.float32))
  assert logits.shape == (3, 10)
  names = [layer.name for layer in model.layers]
  assert names[-2:] == ['batch_norm', network.HEAD_NAME]
  plain = network.build(network.ModelConfig(units=8, batch_norm=False),
                       (28, 28), 10, seed=0)
  assert 'batch_norm' not in [layer.name for layer in plain.layers]


def test_same_seed_same_weights():
  config = network.ModelConfig(cell='lstm', units=8)
  a = network.build(config, (28, 28), 10, seed=5).get_weights()
  b = network.build(config, (28, 28), 10, seed=5).get_weights()
  c = network.build(config, (28, 28), 10, seed=6).get_weights()
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize('kwargs, message', [
    (dict(units=0), 'Model.units=0 must be an integer from 1 to 8,192'),
    (dict(units=100000), 'Model.units=100000 must be an integer from 1 to'),
    (dict(cell='transformer'), "Model.cell='transformer' is not one of"),
    (dict(layers='two'), "Model.layers='two' must be an integer"),
    (dict(head_initializer='nope'), "Model.head_initializer='nope'"),
])
def test_bad_model_config(kwargs, message):
  with pytest.raises(ConfigError, match=message):
    network.ModelConfig(**kwargs)


# Gate initialisation (Model.gate_init) --------------------------------------


def _bias(cell, gate_init, units=256, seq=(784, 1), seed=0):
  model = network.build(network.ModelConfig(cell=cell, units=units,
                                          gate_init=gate_init),
                       seq, 10, seed=seed)
  layer = network.recurrent_layers(model)[0]
  return layer, layer.cell.bias.numpy()


@pytest.mark.parametrize('cell', ['gru', 'lstm'])
@pytest.mark.parametrize('gate_init', ['default', 'chrono', 'uniform'])
def test_every_gate_init_keeps_the_layer_cudnn_eligible(cell, gate_init):
  layer, _ = _bias(cell, gate_init, units=8)
  assert network.cudnn_eligible(layer)


def test_default_gate_init_is_keras_own():
  _, lstm = _bias('lstm', 'default', units=4)
  np.testing.assert_array_equal(lstm, [0] * 4 + [1] * 4 + [0] * 8)
  _, gru = _bias('gru', 'default', units=4)
  np.testing.assert_array_equal(gru, np.zeros((2, 12)))


def test_chrono_lstm_forget_bias_is_log_uniform_and_input_its_negative():
  units, T = 256, 784
  _, b = _bias('lstm', 'chrono', units=units, seq=(T, 1))
  i, f, c, o = np.split(b, 4)  # Keras' LSTM gate order
  np.testing.assert_array_equal(i, -f)
  np.testing.assert_array_equal(c, 0)
  np.testing.assert_array_equal(o, 0)
  # exp(f) ~ U(1, T - 1): inside the range, and spread over it.
  assert np.all(np.exp(f) >= 1 - 1e-4) and np.all(np.exp(f) <= T - 1 + 1e-2)
  assert abs(np.mean(np.exp(f)) - T / 2) < 0.1 * T
  # On the row task (T = 28) the time scales shrink with the sequence.
  _, row = _bias('lstm', 'chrono', units=units, seq=(28, 28))
  assert np.exp(np.split(row, 4)[1]).max() <= 27 + 1e-3


def test_chrono_gru_sets_only_the_update_gate_input_bias():
  units, T = 256, 784
  _, b = _bias('gru', 'chrono', units=units, seq=(T, 1))
  assert b.shape == (2, 3 * units)  # reset_after: input row, recurrent row
  z = b[0, :units]
  np.testing.assert_array_equal(b[0, units:], 0)  # reset and candidate
  np.testing.assert_array_equal(b[1], 0)  # the recurrent bias row
  assert np.all(np.exp(z) >= 1 - 1e-4) and np.all(np.exp(z) <= T - 1 + 1e-2)
  assert z.std() > 0.5  # spread, not one value


def test_the_update_gate_keeps_memory_in_keras_gru():
  # Keras' GRU: h = z * h_prev + (1 - z) * candidate. With a chrono update
  # bias and no input, the state must decay slowly: check it on the layer.
  layer, _ = _bias('gru', 'chrono', units=64, seq=(50, 1))
  cell = layer.cell
  h0 = np.ones((1, 64), np.float32)
  x = np.zeros((1, 1), np.float32)
  h1, _ = cell(x, [h0])
  default_layer, _ = _bias('gru', 'default', units=64, seq=(50, 1))
  d1, _ = default_layer.cell(x, [h0])
  # Sigmoid of a bias >= 0 keeps at least half of h; the default keeps less
  # on average than chrono's log-uniform biases (mean z about 0.9 here).
  assert np.mean(np.abs(np.asarray(h1))) > np.mean(np.abs(np.asarray(d1)))


def test_uniform_gate_init_gives_uniform_gate_activations():
  units = 512
  _, b = _bias('lstm', 'uniform', units=units)
  f = np.split(b, 4)[1]
  u = 1 / (1 + np.exp(-f))  # the forget gate's initial activation
  assert u.min() >= 1 / units - 1e-5 and u.max() <= 1 - 1 / units + 1e-5
  # Uniform on (0, 1): mean 1/2, variance 1/12, quartiles near 1/4 and 3/4.
  assert abs(u.mean() - 0.5) < 0.05
  assert abs(u.var() - 1 / 12) < 0.02
  np.testing.assert_allclose(np.quantile(u, [0.25, 0.75]), [0.25, 0.75],
                             atol=0.06)
  other = np.concatenate([np.split(b, 4)[i] for i in (0, 2, 3)])
  np.testing.assert_array_equal(other, 0)
  _, g = _bias('gru', 'uniform', units=units)
  np.testing.assert_array_equal(g[0, units:], 0)
  np.testing.assert_array_equal(g[1], 0)


def test_gate_init_is_seeded():
  _, a = _bias('gru', 'chrono', units=16, seed=1)
  _, b = _bias('gru', 'chrono', units=16, seed=1)
  _, c = _bias('gru', 'chrono', units=16, seed=2)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


@pytest.mark.parametrize('kwargs, message', [
    (dict(gate_init='glorot'),
     "Model.gate_init='glorot' is not one of 'default', 'chrono', 'uniform'"),
    (dict(cell='simple', gate_init='chrono'),
     "Model.gate_init='chrono' needs gates; Model.cell='simple' has none"),
])
def test_bad_gate_init(kwargs, message):
  with pytest.raises(ConfigError, match=message):
    network.ModelConfig(**kwargs)


@pytest.mark.parametrize('cell', ['gru', 'lstm'])
def test_gate_init_survives_keras_serialisation(cell):
  # The dashboard rebuilds layers from their config, and export saves them.
  layer, bias = _bias(cell, 'chrono', units=8)
  clone = type(layer).from_config(layer.get_config())
  clone.build((None, 784, 1))
  np.testing.assert_array_equal(clone.cell.bias.numpy(), bias)


@pytest.mark.parametrize('gate_init', ['default', 'uniform'])
def test_split_gate_gru_is_keras_gru_bit_for_bit(gate_init):
  """The GRU's CPU step splits its gates instead of slicing them (faster
  backward on the CPU): outputs and gradients are exactly Keras' own."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  ours = network.build(network.ModelConfig(cell='gru', units=16,
                                         gate_init=gate_init,
                                         implementation='keras'), (28, 28),
                      10, seed=0)
  layer = ours.get_layer('gru_0')
  assert isinstance(layer.cell, rnn_layers.SplitGateGRUCell)
  assert network.cudnn_eligible(layer)
  inputs = keras.Input((28, 28))
  plain = keras.Model(inputs, keras.layers.Dense(10)(
      keras.layers.GRU(16, reset_after=True)(inputs)))
  plain.set_weights(ours.get_weights())
  assert [v.path.split('/')[-1] for v in layer.weights] == [
      'kernel', 'recurrent_kernel', 'bias']
  rng = np.random.default_rng(0)
  x = tf.constant(rng.normal(size=(8, 28, 28)), tf.float32)
  y = tf.constant(rng.integers(0, 10, 8))
  results = []
  for model in (ours, plain):
    with tf.GradientTape() as tape:
      logits = model(x, training=True)
      loss = keras.losses.sparse_categorical_crossentropy(
          y, logits, from_logits=True)
    grads = tape.gradient(loss, model.trainable_variables)
    results.append([logits.numpy()] + [g.numpy() for g in grads])
  for a, b in zip(*results):
    np.testing.assert_array_equal(a, b)
  # A Keras round trip keeps the class (so export and reloads see it).
  again = keras.layers.deserialize(keras.layers.serialize(layer))
  assert isinstance(again.cell, rnn_layers.SplitGateGRUCell)


@pytest.mark.parametrize('name', cells.names())
def test_each_cells_registry_entry_is_what_its_layers_are(name):
  """`Cell.cudnn` and `Cell.fused` say what the built layers do; `gates`
  is the kernel's width in units."""
  cell = cells.get(name)
  config = network.ModelConfig(cell=name, units=8, implementation='keras')
  model = network.build(config, (28, 28), 10, seed=0)
  layer, = network.recurrent_layers(model)
  assert network.cudnn_eligible(layer) == cell.cudnn
  assert not getattr(layer, 'fused', False)  # Keras' step, as asked
  assert layer.cell.kernel.shape[-1] == cell.gates * 8
  if cell.fused and fused.available():
    # The op's recurrence is the registry's, handed to the layer it builds.
    fused_model = network.build(dataclasses.replace(
        config, implementation='fused'), (28, 28), 10, seed=0)
    layer, = network.recurrent_layers(fused_model)
    assert layer.fused and layer.get_config()['fused'] == cell.fused
