"""The recurrent cells `Model.cell` names: one registry entry per cell.

Everything the framework knows about a cell is its `Cell`: how to build one
layer of it, how many weight blocks ("gates") its kernels hold (the memory
check and the benchmark's FLOPs use it), where its forget gate's bias lives
(`Model.gate_init`), whether it can run cuDNN's kernel or the fused CPU op,
and its PyTorch counterpart (the benchmark's reference). Nothing else in
seqmnist holds a per-cell table.

A new cell is one `register(Cell(...))`, in this file or in your own module
that a gin file imports (`import my_cells` with --allow_gin_imports); see
BUILD.md, "Extending", and tests/test_extending.py, which does exactly that.
"""

import dataclasses
from typing import TYPE_CHECKING, Callable, Dict, Optional

import numpy as np

from seqmnist import registry

if TYPE_CHECKING:
  import keras  # pylint: disable=g-bad-import-order

# What Keras requires of a GRU/LSTM layer for cuDNN's kernel. These are
# Keras' defaults, spelled out so that a change of default cannot silently
# move a layer off the fused kernel (network.cudnn_eligible checks them).
CUDNN_ARGUMENTS = dict(activation='tanh', recurrent_activation='sigmoid',
                       use_bias=True, dropout=0.0, recurrent_dropout=0.0,
                       unroll=False, use_cudnn='auto')


@dataclasses.dataclass(frozen=True)
class Layer:
  """What `Cell.layer` gets: the arguments common to every cell's layer
  (units, return_sequences, dtype, kernel and recurrent initializers, name)
  and the model's choices that a cell may use."""
  arguments: Dict
  gate_init: str = 'default'
  bias_initializer: Optional[object] = None  # a Keras initializer
  fused: bool = False
  # Model.implementation='unroll': train with the recurrence unrolled (the
  # GRU/LSTM layers unroll only in training; a plain RNN always).
  unroll: bool = False


@dataclasses.dataclass(frozen=True)
class Cell:
  """One recurrent cell.

  Attributes:
    name: its `Model.cell` value.
    layer: builds one Keras RNN layer from a `Layer`.
    gates: weight blocks of `units` columns in its kernels (GRU 3, LSTM 4, a
      plain RNN 1): parameters and activations scale with it.
    set_forget_bias: writes a gate-init scheme's forget-gate bias values
      (gates.forget_bias) into a zero bias of the layer's shape; None if the
      cell has no forget gate (then only `Model.gate_init='default'`).
    cudnn: its layers can run cuDNN's kernel (network.cudnn_eligible checks
      a built layer).
    fused: the fused CPU op's name for it (fused.py), '' if not covered.
    torch: the torch.nn class of the same recurrence (the benchmark's
      reference), '' if none.
    bare_step: the recurrence in plain TensorFlow ops in Keras' layouts,
      for the benchmark's bare recurrence (its `limit` variant): (state
      tuple, one step's projected input x W + b, recurrent kernel,
      recurrent bias) -> the new state tuple, whose first element is the
      output; None if not written out.
    bare_states: the tensors in bare_step's state (GRU 1, LSTM 2).
    recurrent_bias: its layer holds a recurrent bias of its own (Keras'
      reset_after GRU), beside the input bias.
  """
  name: str
  layer: Callable[[Layer], 'keras.layers.Layer']
  gates: int
  set_forget_bias: Optional[Callable[[np.ndarray, np.ndarray, str],
                                     None]] = None
  cudnn: bool = False
  fused: str = ''
  torch: str = ''
  bare_step: Optional[Callable] = None
  bare_states: int = 1
  recurrent_bias: bool = False


CELLS = registry.Registry(
    'Model.cell', 'a new one is one cells.register call: BUILD.md, '
    '"Extending"')
register = CELLS.register
names = CELLS.names
get = CELLS.get


# The cells seqmnist ships ----------------------------------------------------
# (Keras is imported where a layer is built: the benchmark's harness reads
# this registry without loading TensorFlow.)


def _gru(spec: Layer) -> 'keras.layers.Layer':
  from seqmnist.model import rnn_layers  # pylint: disable=g-import-not-at-top
  # reset_after=True: cuDNN's GRU, and oneDNN's linear-before-reset one.
  extra = {'bias_initializer': spec.bias_initializer} if (
      spec.bias_initializer) else {}
  return rnn_layers.SplitGateGRU(reset_after=True,
                                 fused=GRU.fused if spec.fused else '',
                                 unroll_training=spec.unroll,
                                 **CUDNN_ARGUMENTS, **extra, **spec.arguments)


def _gru_forget_bias(bias: np.ndarray, forget: np.ndarray, scheme: str):
  """reset_after bias (2, 3u): row 0 the input bias, row 1 the recurrent one
  (they add), each [update z | reset r | candidate h]; h_t = z * h_{t-1} +
  (1 - z) * candidate, so z keeps memory: its input bias takes the value."""
  del scheme
  bias[0, :bias.shape[1] // 3] = forget


def _lstm(spec: Layer) -> 'keras.layers.Layer':
  from seqmnist.model import rnn_layers  # pylint: disable=g-import-not-at-top
  extra = {'bias_initializer': spec.bias_initializer} if (
      spec.bias_initializer) else {}
  return rnn_layers.FusedLSTM(unit_forget_bias=spec.gate_init == 'default',
                              fused=LSTM.fused if spec.fused else '',
                              unroll_training=spec.unroll,
                              **CUDNN_ARGUMENTS, **extra,
                              **spec.arguments)


def _lstm_forget_bias(bias: np.ndarray, forget: np.ndarray, scheme: str):
  """bias (4u,): [input i | forget f | candidate c | output o]; chrono also
  sets the input gate's bias to the forget gate's negative."""
  units = bias.shape[0] // 4
  bias[units:2 * units] = forget
  if scheme == 'chrono':
    bias[:units] = -forget


def _gru_bare_step(state, xt, recurrent, recurrent_bias):
  """reset_after GRU: [z, r, h] blocks, r applied to the recurrent part."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  (h,) = state
  hz, hr, hh = tf.split(tf.matmul(h, recurrent) + recurrent_bias, 3, -1)
  xz, xr, xh = tf.split(xt, 3, -1)
  z, r = tf.sigmoid(xz + hz), tf.sigmoid(xr + hr)
  return (z * h + (1 - z) * tf.tanh(xh + r * hh),)


def _lstm_bare_step(state, xt, recurrent, recurrent_bias):
  """LSTM: [i, f, c, o] blocks, one bias (in xt)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  del recurrent_bias
  h, c = state
  i, f, g, o = tf.split(xt + tf.matmul(h, recurrent), 4, -1)
  c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
  return tf.sigmoid(o) * tf.tanh(c), c


def _simple(spec: Layer) -> 'keras.layers.Layer':
  import keras  # pylint: disable=g-import-not-at-top
  return keras.layers.SimpleRNN(activation='tanh', unroll=spec.unroll,
                                **spec.arguments)


GRU = register(Cell('gru', _gru, gates=3, set_forget_bias=_gru_forget_bias,
                    cudnn=True, fused='gru', torch='GRU',
                    bare_step=_gru_bare_step, recurrent_bias=True))
LSTM = register(Cell('lstm', _lstm, gates=4,
                     set_forget_bias=_lstm_forget_bias, cudnn=True,
                     fused='lstm', torch='LSTM', bare_step=_lstm_bare_step,
                     bare_states=2))
# A plain tanh RNN, kept to reproduce the vanishing-gradient failure of
# "Tensorflow Day25".
SIMPLE = register(Cell('simple', _simple, gates=1))
