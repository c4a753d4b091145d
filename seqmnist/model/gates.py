"""Gate-bias initialisation of GRU and LSTM layers (`Model.gate_init`).

  'default'  Keras' own: GRU biases 0; LSTM biases 0 with the forget gate's 1.
  'chrono'   Tallec & Ollivier 2018, "Can recurrent neural networks warp
             time?": the forget gate's bias log(U(1, T - 1)), T the steps the
             layer runs (the sequence length; ceil(length / d) for a layer
             at dilation d), so gate values spread the memory's time scales over
             1..T; the LSTM input gate's bias is its negative.
  'uniform'  Gu et al. 2020, "Improving the Gating Mechanism of Recurrent
             Neural Networks" (UGI): the forget gate's bias logit(U(1/d,
             1 - 1/d)), d the units, so its activations start uniform on
             (0, 1); the other biases stay Keras' 0.

Only bias values change, so a layer stays cuDNN-eligible under every scheme.

Where the "forget gate" is in a cell's bias is the cell's own knowledge
(`Cell.set_forget_bias`, cells.py: GRU's update gate, LSTM's forget gate).
"""

import keras
import numpy as np

from seqmnist.model import cells

SCHEMES = ('default', 'chrono', 'uniform')


def forget_bias(scheme: str, units: int, sequence_length: int,
                rng: np.random.Generator) -> np.ndarray:
  """The forget (LSTM) or update (GRU) gate's bias values, shape (units,)."""
  if scheme == 'chrono':
    # T <= 2 leaves U(1, T - 1) empty: every time scale is 1 step, bias 0.
    high = max(sequence_length - 1, 1)
    return np.log(rng.uniform(1.0, high, units))
  if scheme == 'uniform':
    u = rng.uniform(1.0 / units, 1.0 - 1.0 / units, units) if units > 2 else (
        np.full(units, 0.5))
    return np.log(u) - np.log1p(-u)
  raise ValueError(f'no forget bias for gate_init={scheme!r}')


@keras.saving.register_keras_serializable(package='seqmnist')
class GateBias(keras.initializers.Initializer):
  """The bias initializer of one GRU (reset_after) or LSTM layer."""

  def __init__(self, cell: str, scheme: str, sequence_length: int,
               seed: int):
    if scheme not in SCHEMES[1:] or cells.get(cell).set_forget_bias is None:
      raise ValueError(f'GateBias({cell!r}, {scheme!r}) is not supported')
    self.cell = cell
    self.scheme = scheme
    self.sequence_length = sequence_length
    self.seed = seed

  def __call__(self, shape, dtype=None):
    rng = np.random.default_rng(self.seed)
    bias = np.zeros(shape, np.float32)
    units = shape[-1] // cells.get(self.cell).gates
    cells.get(self.cell).set_forget_bias(
        bias, forget_bias(self.scheme, units, self.sequence_length, rng),
        self.scheme)
    return keras.ops.convert_to_tensor(bias, dtype=dtype or 'float32')

  def get_config(self):
    return {'cell': self.cell, 'scheme': self.scheme,
            'sequence_length': self.sequence_length, 'seed': self.seed}
