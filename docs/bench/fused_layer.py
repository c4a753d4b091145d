"""One GRU/LSTM layer's forward + backward, Keras' step loop against the
fused oneDNN op (seqmnist/model/fused.py), on the same variables, in one process.

  TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 OMP_NUM_THREADS=2 \
      python docs/bench/fused_layer.py gru 784 1

args: cell (gru|lstm), time steps, features per step (pixel: 784 1, row:
28 28). Batch 128, 128 units. Alternates the two for 3 rounds of 3 s each
and prints the best round of each (examples/s) and their ratio. The thread
counts are the environment's: TensorFlow's pool for Keras' loop, OpenMP's
(OMP_NUM_THREADS) for oneDNN.
"""
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from seqmnist.model import fused

from seqmnist.model import rnn_layers

cell = sys.argv[1]
steps, features = int(sys.argv[2]), int(sys.argv[3])
batch, units = 128, 128
layer = (rnn_layers.SplitGateGRU(units, reset_after=True) if cell == 'gru'
         else keras.layers.LSTM(units))
layer.build((None, steps, features))
x = tf.constant(np.random.default_rng(0).normal(
    size=(batch, steps, features)).astype(np.float32))
variables = [layer.cell.kernel, layer.cell.recurrent_kernel, layer.cell.bias]


@tf.function
def keras_step():
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(layer(x, training=True))
  return tape.gradient(loss, [v.value for v in variables])


@tf.function
def fused_step():
  with tf.GradientTape() as tape:
    y = fused.rnn(cell, x, *[v.value for v in variables], training=True)
    loss = tf.reduce_sum(y[:, -1])
  return tape.gradient(loss, [v.value for v in variables])


for fn in (keras_step, fused_step):
  fn()
best = {}
for _ in range(3):
  for name, fn in (('keras', keras_step), ('fused', fused_step)):
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < 3:
      fn()
      n += 1
    rate = n * batch / (time.perf_counter() - start)
    best[name] = max(best.get(name, 0), rate)
print(f'{cell} T={steps}: keras {best["keras"]:.0f} ex/s, fused '
      f'{best["fused"]:.0f} ex/s, fused/keras {best["fused"] / best["keras"]:.2f}')
