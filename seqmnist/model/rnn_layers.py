"""The Keras recurrent layers seqmnist builds its GRU and LSTM cells from
(the cell registry, cells.py, says which cell uses which).

Both keep Keras' variables, names and checkpoint layout, and the cuDNN
eligibility of `keras.layers.GRU` / `keras.layers.LSTM`; they differ only in
what runs without a GPU: `SplitGateGRU`'s generic step splits its gates
instead of slicing them, and with `fused=KERNEL` either trains with the whole
sequence as the fused oneDNN op (fused.py), with `unroll_training=True` with
its recurrence unrolled; inference runs Keras' loop either way.
"""

import keras

from seqmnist.model import fused


@keras.saving.register_keras_serializable(package='seqmnist')
class SplitGateGRUCell(keras.layers.GRUCell):
  """Keras' GRUCell with its gates split by `ops.split` instead of slicing.

  Keras' step (implementation 2, reset_after) takes the three recurrent gate
  blocks as slices `matrix_inner[:, :units]`, ...; the gradient of each slice
  is a StridedSliceGrad that writes a zero-padded [batch, 3 * units] tensor,
  three per time step. Profiled on the row task, those were a quarter of the
  step's op time (docs/benchmarks.md). `split` has a concat as
  gradient instead. The values are the same (slicing and splitting copy the
  same numbers; adding the zero padding is exact): outputs and gradients are
  bit for bit Keras' (tests/test_models.py). Only the generic step changes:
  on a GPU the layer still runs cuDNN's kernel, which never calls the cell.
  Configurations this step does not cover (dropout, reset_after=False,
  implementation 1) run Keras' own.
  """

  def call(self, inputs, states, training=False):
    if (not self.reset_after or not self.use_bias or self.implementation != 2
        or (training and (self.dropout or self.recurrent_dropout))):
      return super().call(inputs, states, training=training)
    nested = isinstance(states, (list, tuple))
    h_tm1 = states[0] if nested else states
    input_bias, recurrent_bias = keras.ops.unstack(self.bias, 2, axis=0)
    x_z, x_r, x_h = keras.ops.split(
        keras.ops.add(keras.ops.matmul(inputs, self.kernel), input_bias), 3,
        axis=-1)
    r_z, r_r, r_h = keras.ops.split(
        keras.ops.matmul(h_tm1, self.recurrent_kernel) + recurrent_bias, 3,
        axis=-1)
    z = self.recurrent_activation(x_z + r_z)
    r = self.recurrent_activation(x_r + r_r)
    candidate = self.activation(x_h + r * r_h)
    h = z * h_tm1 + (1 - z) * candidate
    return h, ([h] if nested else h)


class _Fusable:
  """A Keras GRU/LSTM layer that, with `fused` naming the op's recurrence
  (the cell registry's `Cell.fused`: 'gru', 'lstm'), trains with the whole
  sequence as the fused oneDNN op (fused.py) when the call is one the op
  covers: float32, zero initial state, no mask, forwards, no dropout, not
  stateful, no returned state. Its variables are Keras' own, untouched.

  Inference (training=False: validation, test, the dashboard) runs Keras'
  step, as an export serves it, so a run's test accuracy is the one its
  SavedModel reproduces, image for image."""

  def _init_fused(self, kernel, unroll_training=False):
    """kernel: the fused op's recurrence for this cell (the cell registry's
    `Cell.fused`), or '' for Keras' step; unroll_training: train with the
    recurrence unrolled (Model.implementation='unroll'), while inference
    runs Keras' loop as an export serves it."""
    self._fused_kernel = kernel or ''
    self.fused = bool(self._fused_kernel)
    self.unroll_training = bool(unroll_training)

  def _fused_covers(self, sequences, initial_state, mask, training):
    cell = self.cell
    return (self.fused and training and initial_state is None and
            mask is None and
            not self.go_backwards and not self.stateful and
            not self.return_state and not cell.dropout and
            not cell.recurrent_dropout and self.compute_dtype == 'float32'
            and cell.activation is keras.activations.tanh and
            cell.recurrent_activation is keras.activations.sigmoid and
            cell.use_bias and len(sequences.shape) == 3)

  def call(self, sequences, initial_state=None, mask=None, training=False):
    if self.unroll_training and training:
      # Keras reads `unroll` when the call is traced; the layer keeps
      # unroll=False otherwise (its config, cuDNN eligibility, inference).
      self.unroll = True
      try:
        return super().call(sequences, initial_state=initial_state,
                            mask=mask, training=training)
      finally:
        self.unroll = False
    if not self._fused_covers(sequences, initial_state, mask, training):
      return super().call(sequences, initial_state=initial_state, mask=mask,
                          training=training)
    cell = self.cell
    outputs = fused.rnn(self._fused_kernel, sequences, cell.kernel.value,
                        cell.recurrent_kernel.value, cell.bias.value,
                        training=True)
    return outputs if self.return_sequences else outputs[:, -1]

  def get_config(self):
    return dict(super().get_config(), fused=self._fused_kernel,
                unroll_training=self.unroll_training)


@keras.saving.register_keras_serializable(package='seqmnist')
class SplitGateGRU(_Fusable, keras.layers.GRU):
  """keras.layers.GRU whose generic (non-cuDNN) step is SplitGateGRUCell's,
  or with `fused='gru'` the fused op; the same weights, layout, cuDNN
  eligibility and checkpoint paths."""

  def __init__(self, *args, fused='', unroll_training=False, **kwargs):  # pylint: disable=redefined-outer-name
    super().__init__(*args, **kwargs)
    self.cell = SplitGateGRUCell.from_config(self.cell.get_config())
    self._init_fused(fused if self.cell.reset_after else '', unroll_training)


@keras.saving.register_keras_serializable(package='seqmnist')
class FusedLSTM(_Fusable, keras.layers.LSTM):
  """keras.layers.LSTM, or with `fused='lstm'` the fused op; the same
  weights, layout, cuDNN eligibility and checkpoint paths."""
  def __init__(self, *args, fused='', unroll_training=False, **kwargs):  # pylint: disable=redefined-outer-name
    super().__init__(*args, **kwargs)
    self._init_fused(fused, unroll_training)
