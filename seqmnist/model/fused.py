"""The fused CPU recurrence: a whole GRU/LSTM layer as one oneDNN op.

`native/fused_rnn.cc` is a TensorFlow custom op running oneDNN's RNN
primitives (lbr_gru, vanilla_lstm) forward and backward over the whole
sequence. `pip install -e .` builds it (setup.py) into
`seqmnist/_fused_rnn.so` against the installed TensorFlow's headers and the
oneDNN of the `onednn-cpu-gomp` package. It reads the Keras layer's own
variables in their own layouts, so a layer switches between it and Keras'
implementation with the same weights, names and checkpoints
(`Model.implementation`, network.py).

`load()` loads it once; when it cannot (not built, another TensorFlow, no
oneDNN library), it says why and `available()` is False: the models then
use Keras' layers.

oneDNN runs on OpenMP threads, not TensorFlow's pool. Their number is
`OMP_NUM_THREADS` if set, else `TF_NUM_INTRAOP_THREADS` if set, else the
CPUs this process may use. A run whose layers use the op hands the CPU to
them (`hand_threads_to_onednn`): TensorFlow's own intra-op pool, spinning
beside oneDNN's threads, made the op slower with two threads than with one
(docs/benchmarks.md).
"""

import ctypes
import glob
import os
import sys
from typing import Optional

from absl import logging
import tensorflow as tf

from seqmnist.model import implementations

# setup.py builds it as an extension module of the package (seqmnist/).
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBRARY = next(iter(sorted(glob.glob(os.path.join(_PACKAGE_DIR,
                                                  '_fused_rnn*.so')))),
               os.path.join(_PACKAGE_DIR, '_fused_rnn.so'))
_DNNL_PACKAGE = 'onednn-cpu-gomp'

_state = {'loaded': None, 'why': None}


def _dnnl_library() -> Optional[str]:
  """Path of libdnnl.so.3 as the oneDNN package installed it."""
  try:
    from importlib import metadata  # pylint: disable=import-outside-toplevel
    files = metadata.files(_DNNL_PACKAGE) or []
    for f in files:
      if os.path.basename(str(f)) == 'libdnnl.so.3':
        return str(f.locate())
  except Exception:  # pylint: disable=broad-except
    pass
  found = glob.glob(os.path.join(sys.prefix, 'lib', 'libdnnl.so.3'))
  return found[0] if found else None


def load():
  """The op module, loading it on first use; None (and `why()`) if it
  cannot be loaded."""
  if _state['loaded'] is not None or _state['why'] is not None:
    return _state['loaded']
  if not os.path.exists(LIBRARY):
    _state['why'] = (f'{LIBRARY} was not built (pip install -e . builds it; '
                     'the build needs g++ and the onednn-devel-cpu-gomp '
                     'package)')
    return None
  # Before oneDNN's OpenMP runtime starts (it reads this once).
  os.environ.setdefault('OMP_NUM_THREADS', str(implementations.thread_budget()))
  dnnl = _dnnl_library()
  try:
    if dnnl:
      ctypes.CDLL(dnnl, mode=ctypes.RTLD_GLOBAL)
    _state['loaded'] = tf.load_op_library(LIBRARY)
  except (OSError, tf.errors.NotFoundError) as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
    _state['why'] = f'{LIBRARY} did not load: {first}'
  return _state['loaded']


def hand_threads_to_onednn() -> None:
  """TensorFlow's intra-op pool down to one thread, for a run whose
  recurrence (nearly all of its work) runs on oneDNN's threads. Call before
  TensorFlow runs its first op."""
  try:
    tf.config.threading.set_intra_op_parallelism_threads(1)
  except RuntimeError as e:  # TensorFlow already started
    logging.warning('TensorFlow\'s intra-op threads stay as they are: %s', e)


def available() -> bool:
  return load() is not None


def why() -> Optional[str]:
  """Why the op is not available (None when it is)."""
  load()
  return _state['why']


def rnn(cell: str, x, kernel, recurrent_kernel, bias, training: bool):
  """Every step's hidden state [batch, time, units] of a GRU ('gru',
  reset_after) or LSTM layer from zero state; differentiable."""
  op = load()
  if op is None:
    raise RuntimeError(why())
  y, _ = op.seqmnist_fused_rnn(x, kernel, recurrent_kernel, bias, cell=cell,
                               training=training)
  return y


@tf.RegisterGradient('SeqmnistFusedRnn')
def _fused_rnn_grad(op, dy, unused_dworkspace):
  if not op.get_attr('training'):
    raise ValueError('the fused RNN op was run with training=False, which '
                     'keeps no workspace for a gradient')
  x, kernel, recurrent_kernel, bias = op.inputs
  y, workspace = op.outputs
  return load().seqmnist_fused_rnn_grad(
      x, kernel, recurrent_kernel, bias, y, workspace, dy,
      cell=op.get_attr('cell'))
