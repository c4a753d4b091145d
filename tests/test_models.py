"""The model: shapes, seeding, and cuDNN eligibility.

No GPU exists on these machines. Keras decides to use cuDNN from the layer's
arguments *and* whether a GPU is visible; the tests below take the argument
half from Keras itself, and the one test that needs "a GPU is visible" patches
exactly that function (Keras' `_is_gpu_available`) and nothing else.
"""

from unittest import mock

import keras
import numpy as np
import pytest

from seqmnist import models
from seqmnist.errors import ConfigError


@pytest.mark.parametrize('cell', ['gru', 'lstm'])
def test_gated_layers_are_cudnn_eligible(cell):
  model = models.build(models.ModelConfig(cell=cell, units=8, layers=2),
                       (784, 1), 10, seed=0)
  layers = models.recurrent_layers(model)
  assert len(layers) == 2
  assert all(models.cudnn_eligible(layer) for layer in layers)


def test_keras_itself_would_pick_cudnn_with_a_gpu():
  # The edge we cannot run: pretend a GPU is visible, and let Keras' own
  # `cudnn_ok` judge the layer configuration we build.
  tf_rnn = models.keras_tf_rnn()
  model = models.build(models.ModelConfig(cell='gru', units=8), (28, 28), 10,
                       seed=0)
  layer = models.recurrent_layers(model)[0]
  with mock.patch.object(tf_rnn, '_is_gpu_available', return_value=True):
    assert tf_rnn.cudnn_ok(layer.cell.activation,
                           layer.cell.recurrent_activation, layer.unroll,
                           layer.cell.use_bias,
                           reset_after=layer.cell.reset_after)


def test_the_eligibility_check_can_fail():
  not_eligible = [
      keras.layers.GRU(4, reset_after=False),
      keras.layers.LSTM(4, activation='relu'),
      keras.layers.GRU(4, recurrent_dropout=0.1),
      keras.layers.LSTM(4, unroll=True),
      keras.layers.SimpleRNN(4),
  ]
  assert not any(models.cudnn_eligible(layer) for layer in not_eligible)


def test_shapes_head_and_batch_norm():
  model = models.build(models.ModelConfig(units=8, batch_norm=True), (28, 28),
                       10, seed=0)
  logits = model(np.zeros((3, 28, 28), np.float32))
  assert logits.shape == (3, 10)
  names = [layer.name for layer in model.layers]
  assert names[-2:] == ['batch_norm', models.HEAD_NAME]
  plain = models.build(models.ModelConfig(units=8, batch_norm=False),
                       (28, 28), 10, seed=0)
  assert 'batch_norm' not in [layer.name for layer in plain.layers]


def test_same_seed_same_weights():
  config = models.ModelConfig(cell='lstm', units=8)
  a = models.build(config, (28, 28), 10, seed=5).get_weights()
  b = models.build(config, (28, 28), 10, seed=5).get_weights()
  c = models.build(config, (28, 28), 10, seed=6).get_weights()
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize('kwargs, message', [
    (dict(units=0), 'Model.units=0 must be an integer >= 1'),
    (dict(cell='transformer'), "Model.cell='transformer' is not one of"),
    (dict(layers='two'), "Model.layers='two' must be an integer"),
    (dict(head_initializer='nope'), "Model.head_initializer='nope'"),
])
def test_bad_model_config(kwargs, message):
  with pytest.raises(ConfigError, match=message):
    models.ModelConfig(**kwargs)
