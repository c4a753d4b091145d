"""The recurrent classifier: stacked GRU/LSTM/SimpleRNN -> [BatchNorm] -> Dense.

Every GRU and LSTM layer is configured so that, on a GPU, Keras runs cuDNN's
fused kernel (`CudnnRNNV3`): tanh activation, sigmoid recurrent activation,
bias on, no recurrent dropout, no unrolling, and for GRU `reset_after=True`.
`cudnn_eligible` checks a built layer against Keras' own predicates; there is
no GPU on our CI, so the kernel itself has not been run by our tests.
"""

import dataclasses
import importlib

import gin
import keras

from seqmnist import gates
from seqmnist.errors import ConfigError, check_int

# Name of the Dense head; the default `Trainer.clip_exclude` matches it.
HEAD_NAME = 'head'

PRECISIONS = ('float32', 'mixed_bfloat16', 'mixed_float16')

CELLS = {
    'gru': keras.layers.GRU,
    'lstm': keras.layers.LSTM,
    'simple': keras.layers.SimpleRNN,
}


@gin.configurable('Model')
@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The network.

  Attributes:
    cell: 'gru', 'lstm', or 'simple' (a plain tanh RNN, kept to reproduce the
      vanishing-gradient failure of "Tensorflow Day25").
    units: hidden units of each recurrent layer.
    layers: number of stacked recurrent layers.
    batch_norm: a BatchNormalization between the last RNN output and the head
      (as in "Building RNN Models to Solve Sequential MNIST"). Its statistics
      are synchronised over replicas, so the result does not depend on them.
    head_initializer: Keras initializer name of the Dense head's kernel.
    gate_init: the GRU/LSTM gate biases: 'default' (Keras'), 'chrono'
      (Tallec & Ollivier 2018) or 'uniform' (Gu et al. 2020); see gates.py.
      Only biases change, so layers stay cuDNN-eligible.
    precision: 'float32'; 'mixed_bfloat16' (bf16 compute, float32 weights;
      CPUs with AVX512_BF16/AMX, and Ampere or later GPUs); or
      'mixed_float16' (float16 compute, float32 weights, dynamic loss
      scaling: for GPUs with tensor cores). The head always computes in
      float32.
  """
  cell: str = 'gru'
  units: int = 128
  layers: int = 1
  batch_norm: bool = False
  head_initializer: str = 'orthogonal'
  gate_init: str = 'default'
  precision: str = 'float32'

  def __post_init__(self):
    if self.precision not in PRECISIONS:
      raise ConfigError(
          f'Model.precision={self.precision!r} is not one of '
          f'{", ".join(repr(p) for p in PRECISIONS)}')
    if self.cell not in CELLS:
      raise ConfigError(f'Model.cell={self.cell!r} is not one of '
                        f'{", ".join(repr(c) for c in CELLS)}')
    for name in ('units', 'layers'):
      check_int(f'Model.{name}', getattr(self, name), minimum=1)
    if self.gate_init not in gates.SCHEMES:
      raise ConfigError(f'Model.gate_init={self.gate_init!r} is not one of '
                        f'{", ".join(repr(g) for g in gates.SCHEMES)}')
    if self.gate_init != 'default' and self.cell == 'simple':
      raise ConfigError(f'Model.gate_init={self.gate_init!r} needs gates; '
                        "Model.cell='simple' has none (use 'default')")
    if not isinstance(self.batch_norm, bool):
      raise ConfigError(
          f'Model.batch_norm={self.batch_norm!r} must be True or False')
    try:
      keras.initializers.get(self.head_initializer)
    except (ValueError, TypeError) as e:
      raise ConfigError(
          f'Model.head_initializer={self.head_initializer!r} is not a Keras '
          "initializer name such as 'orthogonal' or 'glorot_uniform'") from e


def needs_loss_scaling(config: ModelConfig) -> bool:
  """float16 gradients underflow without loss scaling; bfloat16 ones do not."""
  return config.precision == 'mixed_float16'


def build(config: ModelConfig, sequence_shape, num_classes: int,
          seed: int) -> keras.Model:
  """Builds the classifier; call it under `strategy.scope()`.

  Args:
    config: the Model configuration.
    sequence_shape: (time steps, features per step) of one example.
    num_classes: size of the logits.
    seed: seeds every initializer, so a seed gives the same weights.

  Returns:
    A built keras.Model mapping float32 [batch, T, F] to logits [batch, C].
  """
  inputs = keras.Input(shape=tuple(sequence_shape), name='sequence')
  x = inputs
  policy = keras.DTypePolicy(config.precision)
  for i in range(config.layers):
    x = _rnn_layer(config, i, seed, sequence_length=sequence_shape[0],
                   return_sequences=i < config.layers - 1, dtype=policy)(x)
  if config.batch_norm:
    x = keras.layers.BatchNormalization(synchronized=True, name='batch_norm',
                                        dtype=policy)(x)
  head_init = keras.initializers.get(
      {'class_name': config.head_initializer,
       'config': {'seed': seed + 10_000}})
  logits = keras.layers.Dense(num_classes, kernel_initializer=head_init,
                              name=HEAD_NAME, dtype='float32')(x)
  return keras.Model(inputs, logits, name=f'seq_{config.cell}')


def _rnn_layer(config, index, seed, sequence_length, return_sequences,
               dtype):
  layer_seed = seed + 100 * index
  kwargs = dict(
      units=config.units,
      return_sequences=return_sequences,
      dtype=dtype,
      kernel_initializer=keras.initializers.GlorotUniform(seed=layer_seed),
      recurrent_initializer=keras.initializers.Orthogonal(seed=layer_seed + 1),
      name=f'{config.cell}_{index}')
  if config.cell == 'simple':
    return keras.layers.SimpleRNN(activation='tanh', **kwargs)
  # The cuDNN-eligible configuration; these are Keras' defaults, spelled out
  # so that a change of default cannot silently move us off the fused kernel.
  kwargs.update(activation='tanh', recurrent_activation='sigmoid',
                use_bias=True, dropout=0.0, recurrent_dropout=0.0,
                unroll=False, use_cudnn='auto')
  if config.gate_init != 'default':
    kwargs['bias_initializer'] = gates.GateBias(
        config.cell, config.gate_init, sequence_length, seed=layer_seed + 2)
  if config.cell == 'gru':
    return keras.layers.GRU(reset_after=True, **kwargs)
  return keras.layers.LSTM(unit_forget_bias=config.gate_init == 'default',
                           **kwargs)


def keras_tf_rnn():
  """Keras' TensorFlow-backend RNN module (its package re-exports a function
  of the same name, so `from ... import rnn` would give the function)."""
  return importlib.import_module('keras.src.backend.tensorflow.rnn')


def recurrent_layers(model: keras.Model):
  return [l for l in model.layers if isinstance(l, keras.layers.RNN)]


def cudnn_eligible(layer) -> bool:
  """Whether Keras would run `layer` with cuDNN on a GPU.

  Uses the argument predicates of Keras' TensorFlow backend (the same ones its
  `cudnn_ok` combines with "is a GPU available"), plus the layer-level
  conditions Keras checks before calling them.
  """
  # pylint: disable=protected-access
  tf_rnn = keras_tf_rnn()
  if isinstance(layer, keras.layers.GRU):
    args_ok = tf_rnn._do_gru_arguments_support_cudnn(
        activation=layer.cell.activation,
        recurrent_activation=layer.cell.recurrent_activation,
        unroll=layer.unroll, use_bias=layer.cell.use_bias,
        reset_after=layer.cell.reset_after)
  elif isinstance(layer, keras.layers.LSTM):
    args_ok = tf_rnn._do_lstm_arguments_support_cudnn(
        activation=layer.cell.activation,
        recurrent_activation=layer.cell.recurrent_activation,
        unroll=layer.unroll, use_bias=layer.cell.use_bias)
  else:
    return False
  return bool(args_ok and layer.use_cudnn in ('auto', True)
              and not layer.cell.recurrent_dropout)
