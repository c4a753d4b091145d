"""The recurrent classifier: stacked GRU/LSTM/SimpleRNN -> [BatchNorm] -> Dense.

Every GRU and LSTM layer is configured so that, on a GPU, Keras runs cuDNN's
fused kernel. `cudnn_eligible` states the conditions Keras documents for it
(keras.io, `keras.layers.GRU` / `keras.layers.LSTM`: "Based on available
runtime hardware and constraints, this layer will choose different
implementations ... the requirements to use the cuDNN implementation are:
activation == tanh, recurrent_activation == sigmoid, recurrent_dropout == 0,
unroll is False, use_bias is True, reset_after is True (GRU), inputs, if
masking is used, strictly right-padded, eager execution enabled in the
outermost context"), checked on the built layer. There is no GPU on our CI,
so the kernel itself has not been run by our tests.
"""

import dataclasses
from typing import Tuple

from absl import logging
import gin
import keras
import tensorflow as tf

from seqmnist.model import cells
from seqmnist.model import dropout as dropout_lib
from seqmnist.model import fused
from seqmnist.model import gates
from seqmnist.model import implementations
# Imported for its side effect: registering the layers' Keras classes.
from seqmnist import validators
from seqmnist.errors import ConfigError
from seqmnist.model import rnn_layers  # pylint: disable=unused-import

# Name of the Dense head; the default `Trainer.clip_exclude` matches it.
HEAD_NAME = 'head'

PRECISIONS = ('float32', 'mixed_bfloat16', 'mixed_float16')
# Bounds that catch typos before they allocate: 8,192 units make a recurrent
# kernel of 1 GiB (LSTM, float32) per layer.
MAX_UNITS = 8192
MAX_LAYERS = 64

# What the head reads of the last recurrent layer: its last state (the
# classic protocol of these tasks), the mean over time, or both.
READOUTS = ('last', 'mean', 'last_mean')
MAX_DILATION = 1024
IMPLEMENTATIONS = implementations.IMPLEMENTATIONS

@gin.configurable('Model')
@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The network.

  Attributes:
    cell: a registered cell (cells.py): 'gru', 'lstm', or 'simple' (a plain
      tanh RNN, kept to reproduce the vanishing-gradient failure of
      "Tensorflow Day25").
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
    input_dropout: dropout rate on the input sequence (every step's features
      independently), a layer before the first recurrent one; 0 = off.
    output_dropout: dropout rate on what the head reads (after BatchNorm);
      0 = off. Both are separate layers, not Keras' `dropout=` argument of
      the recurrent layer (one mask per sequence, reused at every step, and
      not cuDNN's), and their masks are a function of (Trainer.seed, global
      step, example's row in the global batch): see dropout.py.
    readout: what the head reads of the last recurrent layer: 'last' (its
      final state, the classic protocol of these tasks), 'mean' (the mean of
      its states over time) or 'last_mean' (both, concatenated). Results of
      anything but 'last' are not the classic protocol.
    dilations: () for plain stacked layers, or one dilation per layer
      (len == layers), e.g. (1, 2, 4, 8): layer i is a standard GRU/LSTM run
      over the sequence split into dilations[i] interleaved subsequences, so
      its state at step t follows from its state at t - dilations[i] (Chang
      et al. 2017, Dilated RNN); every layer stays cuDNN-eligible. With
      gate_init='chrono', a layer's time scales span the ceil(T / d) steps
      it runs, not the T of the whole sequence.
    implementation: how GRU/LSTM layers run: 'keras' (Keras' layer: its
      step loop on a CPU, cuDNN on a GPU), 'fused' (the whole layer as one
      oneDNN op, fused.py), 'unroll' (Keras' layer unrolled, for short
      sequences on a CPU) or 'auto' (picked from the machine: a GPU, the
      CPU's features, threads and sequence length; implementations.py).
      The variables are the same either way, so a run may switch on
      resume.
  """
  cell: str = 'gru'
  units: int = 128
  layers: int = 1
  batch_norm: bool = False
  head_initializer: str = 'orthogonal'
  gate_init: str = validators.added_later('default', before='default')
  precision: str = 'float32'
  input_dropout: float = validators.added_later(0.0, before=0.0)
  output_dropout: float = validators.added_later(0.0, before=0.0)
  readout: str = validators.added_later('last', before='last')
  dilations: Tuple[int, ...] = validators.added_later((), before=())
  # May change on resume (drift.RESUMABLE): the same variables either way.
  implementation: str = validators.added_later('auto', before='keras')

  def __post_init__(self):
    validators.check_choice('Model.precision', self.precision, PRECISIONS)
    cell = cells.get(self.cell)  # a registered cell (cells.py)
    validators.check_int('Model.units', self.units, minimum=1,
                         maximum=MAX_UNITS)
    validators.check_int('Model.layers', self.layers, minimum=1,
                         maximum=MAX_LAYERS)
    validators.check_choice('Model.gate_init', self.gate_init, gates.SCHEMES)
    if self.gate_init != 'default' and cell.set_forget_bias is None:
      raise ConfigError(f'Model.gate_init={self.gate_init!r} needs gates; '
                        f"Model.cell={self.cell!r} has none (use 'default')")
    validators.check_bool('Model.batch_norm', self.batch_norm)
    for name in ('input_dropout', 'output_dropout'):
      validators.check_number(f'Model.{name}', getattr(self, name), minimum=0,
                              maximum=0.95, why='0 turns it off')
    validators.check_choice('Model.readout', self.readout, READOUTS)
    validators.check_choice('Model.implementation', self.implementation,
                            IMPLEMENTATIONS)
    if (isinstance(self.dilations, (str, bytes)) or
        not isinstance(self.dilations, (tuple, list))):
      raise ConfigError(f'Model.dilations={self.dilations!r} must be a list '
                        'of one dilation per layer, such as (1, 2, 4), or ()')
    for d in self.dilations:
      validators.check_int(f'Model.dilations={tuple(self.dilations)!r}: each',
                           d, minimum=1, maximum=MAX_DILATION)
    if self.dilations and len(self.dilations) != self.layers:
      raise ConfigError(
          f'Model.dilations={tuple(self.dilations)!r} has '
          f'{len(self.dilations)} entries but Model.layers={self.layers}; '
          'give one dilation per layer')
    try:
      keras.initializers.get(self.head_initializer)
    except (ValueError, TypeError) as e:
      raise ConfigError(
          f'Model.head_initializer={self.head_initializer!r} is not a Keras '
          "initializer name such as 'orthogonal' or 'glorot_uniform'") from e


def choose_implementation(config: ModelConfig,
                          sequence_length: int) -> implementations.Choice:
  """What runs this config's GRU/LSTM layers on sequences of
  `sequence_length` steps: `Model.implementation`, or what 'auto' picks here
  (implementations.py).

  Raises:
    ConfigError: an implementation was asked for that cannot run this
      config ('fused' without the op, or for a cell or precision it does
      not cover; 'unroll' over more than MAX_UNROLL_STEPS steps).
  """
  requested = config.implementation
  cell = cells.get(config.cell)
  # The most steps one layer runs: a layer at dilation d runs ceil(T / d).
  steps = -(-sequence_length // min(tuple(config.dilations) or (1,)))
  if requested == 'fused':
    if not cell.fused:
      covered = [n for n in cells.names() if cells.get(n).fused]
      raise ConfigError(
          f"Model.implementation='fused' but the fused op has no "
          f'recurrence for Model.cell={config.cell!r} (it covers '
          f"{', '.join(map(repr, covered))}); use 'auto' or 'keras'")
    if config.precision != 'float32':  # the op computes in float32 only
      raise ConfigError(f"Model.implementation='fused' computes in float32; "
                        f'Model.precision={config.precision!r} needs '
                        "'keras' or 'auto'")
    if not fused.available():
      raise ConfigError(f"Model.implementation='fused' but {fused.why()}")
  if requested == 'unroll' and steps > implementations.MAX_UNROLL_STEPS:
    raise ConfigError(
        f"Model.implementation='unroll' would copy the cell {steps} "
        f'times into the graph (at most {implementations.MAX_UNROLL_STEPS} '
        "steps); use 'auto', 'keras' or 'fused' for this sequence")
  gpu = bool(tf.config.list_physical_devices('GPU'))
  threads = implementations.thread_budget()
  covered = bool(cell.fused) and config.precision == 'float32'
  available = covered and not gpu and fused.available()
  if (requested == 'auto' and covered and not gpu and not available and
      threads <= 1):  # where 'auto' would have run the op
    _say_once('keras', f'Keras layers, not the fused op: {fused.why()}',
              logging.warning)
  return implementations.choose(
      requested, cell_fused=bool(cell.fused),
      float32=config.precision == 'float32', sequence_length=steps,
      threads=threads, gpu=gpu, fused_available=available)


def uses_fused(config: ModelConfig, sequence_length: int) -> bool:
  """Whether this config's GRU/LSTM layers run the fused op (see
  choose_implementation)."""
  return choose_implementation(config, sequence_length).implementation == (
      'fused')


_said = set()


def _say_once(key, message, log=logging.info):
  if key not in _said:
    _said.add(key)
    log('%s', message)


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
  dilations = tuple(config.dilations) or (1,) * config.layers
  choice = choose_implementation(config, sequence_shape[0])
  _say_once(f'layers {choice}', f'Recurrent layers: {choice.implementation} '
            f"({choice.why}); TensorFlow's oneDNN ops "
            f'{implementations.onednn_state()}.')
  if config.input_dropout:
    x = dropout_lib.StatelessDropout(config.input_dropout, salt=1,
                                     name='input_dropout', dtype=policy)(x)
  for i, dilation in enumerate(dilations):
    last = i == config.layers - 1
    # Chrono spreads a layer's time scales over the steps it sees: a layer
    # at dilation d runs ceil(T / d) of them.
    layer = _rnn_layer(config, i, seed,
                       sequence_length=-(-sequence_shape[0] // dilation),
                       return_sequences=not last or config.readout != 'last'
                       or dilation > 1, dtype=policy,
                       implementation=choice.implementation)
    if dilation > 1:
      x = Dilate(dilation, name=f'dilate_{i}')(x)
      x = Undilate(dilation, sequence_shape[0], name=f'undilate_{i}')(
          layer(x))
      if last and config.readout == 'last':
        x = LastStep(name='last_step')(x)
    else:
      x = layer(x)
  if config.readout == 'mean':
    x = keras.layers.GlobalAveragePooling1D(name='readout_mean')(x)
  elif config.readout == 'last_mean':
    x = keras.layers.Concatenate(name='readout_last_mean')([
        LastStep(name='last_step')(x),
        keras.layers.GlobalAveragePooling1D(name='readout_mean')(x)])
  if config.batch_norm:
    x = keras.layers.BatchNormalization(synchronized=True, name='batch_norm',
                                        dtype=policy)(x)
  if config.output_dropout:
    x = dropout_lib.StatelessDropout(config.output_dropout, salt=2,
                                     name='output_dropout', dtype=policy)(x)
  head_init = keras.initializers.get(
      {'class_name': config.head_initializer,
       'config': {'seed': seed + 10_000}})
  logits = keras.layers.Dense(num_classes, kernel_initializer=head_init,
                              name=HEAD_NAME, dtype='float32')(x)
  return keras.Model(inputs, logits, name=f'seq_{config.cell}')


def _rnn_layer(config, index, seed, sequence_length, return_sequences,
               dtype, implementation='keras'):
  layer_seed = seed + 100 * index
  cell = cells.get(config.cell)
  bias_initializer = gates.GateBias(
      config.cell, config.gate_init, sequence_length,
      seed=layer_seed + 2) if config.gate_init != 'default' else None
  return cell.layer(cells.Layer(
      arguments=dict(
          units=config.units,
          return_sequences=return_sequences,
          dtype=dtype,
          kernel_initializer=keras.initializers.GlorotUniform(seed=layer_seed),
          recurrent_initializer=keras.initializers.Orthogonal(
              seed=layer_seed + 1),
          name=f'{config.cell}_{index}'),
      gate_init=config.gate_init, bias_initializer=bias_initializer,
      fused=implementation == 'fused' and bool(cell.fused),
      unroll=implementation == 'unroll'))


def recurrent_layers(model: keras.Model):
  return [l for l in model.layers if isinstance(l, keras.layers.RNN)]


def cudnn_eligible(layer) -> bool:
  """Whether `layer` meets Keras' documented conditions for the cuDNN kernel
  (the module docstring quotes them). Inputs here are never masked, and the
  trainer runs eagerly at the outermost level, so those two always hold."""
  if isinstance(layer, keras.layers.GRU):
    if not layer.cell.reset_after:
      return False
  elif not isinstance(layer, keras.layers.LSTM):
    return False
  cell = layer.cell
  return (cell.activation is keras.activations.tanh and
          cell.recurrent_activation is keras.activations.sigmoid and
          not cell.recurrent_dropout and not layer.unroll and cell.use_bias and
          layer.use_cudnn in ('auto', True))


@keras.saving.register_keras_serializable(package='seqmnist')
class Dilate(keras.layers.Layer):
  """[batch, T, F] -> [dilation * batch, ceil(T / dilation), F]: the
  sequence split into `dilation` interleaved subsequences (steps t with the
  same t mod dilation, counted from the end), each run as its own sequence.
  The front is zero-padded to a multiple of the dilation, so the last step
  of the sequence is the last step of one subsequence."""

  def __init__(self, dilation: int, **kwargs):
    super().__init__(**kwargs)
    self.dilation = dilation

  def call(self, x):
    d = self.dilation
    steps = x.shape[1]
    padded = -(-steps // d) * d
    if padded != steps:
      x = keras.ops.pad(x, [[0, 0], [padded - steps, 0], [0, 0]])
    features = x.shape[2]
    # [b, T/d, d, F] -> [d, b, T/d, F] -> [d * b, T/d, F]
    x = keras.ops.reshape(x, (-1, padded // d, d, features))
    x = keras.ops.transpose(x, (2, 0, 1, 3))
    return keras.ops.reshape(x, (-1, padded // d, features))

  def compute_output_shape(self, shape):
    return (None, -(-shape[1] // self.dilation), shape[2])

  def get_config(self):
    return dict(super().get_config(), dilation=self.dilation)


@keras.saving.register_keras_serializable(package='seqmnist')
class Undilate(keras.layers.Layer):
  """Dilate's inverse on a layer's output sequence: [d * b, T/d, H] ->
  [b, T, H], the front padding dropped."""

  def __init__(self, dilation: int, steps: int, **kwargs):
    super().__init__(**kwargs)
    self.dilation = dilation
    self.steps = steps

  def call(self, x):
    d = self.dilation
    sub, units = x.shape[1], x.shape[2]
    x = keras.ops.reshape(x, (d, -1, sub, units))
    x = keras.ops.transpose(x, (1, 2, 0, 3))
    x = keras.ops.reshape(x, (-1, sub * d, units))
    return x[:, sub * d - self.steps:]

  def compute_output_shape(self, shape):
    return (None, self.steps, shape[2])

  def get_config(self):
    return dict(super().get_config(), dilation=self.dilation,
                steps=self.steps)


@keras.saving.register_keras_serializable(package='seqmnist')
class LastStep(keras.layers.Layer):
  """[batch, T, H] -> [batch, H]: the last step's state."""

  def call(self, x):
    return x[:, -1]

  def compute_output_shape(self, shape):
    return (shape[0], shape[2])
