"""Where the time of one training step goes, from TensorFlow's own profiler.

  python docs/bench/profile_step.py [lstm|gru] [row|pixel]

Traces 20 steps (row; 3 for pixel) of the framework's model
(`seqmnist.model.network.build`: the cell with 128 units + Dense 10, no BatchNorm),
batch 128, RMSProp, one tf.function per step, data in memory, with
tf.profiler, reads the host trace (XSpace protobuf) and sums the duration of
every TensorFlow op by type over the executor threads. Printed: the wall time
per step, the summed op time per step (above wall when 2 threads overlap),
and the op types with their share of the summed op time. The matmul share
against the rest says whether the step is bound by the matmuls (what a
faster kernel or larger matmuls would fix) or by the many small ops around
them (what fusion would fix).
"""

import collections
import glob
import os
import sys
import tempfile
import time

import keras
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from seqmnist.model import network

cell = sys.argv[1] if len(sys.argv) > 1 else 'lstm'
task = sys.argv[2] if len(sys.argv) > 2 else 'row'
steps, features = {'row': (28, 28), 'pixel': (784, 1)}[task]
measured = 20 if task == 'row' else 3
keras.utils.set_random_seed(0)
model = network.build(network.ModelConfig(cell=cell, units=128), (steps, features),
                     10, seed=0)  # the framework's model, no BatchNorm
optimizer = keras.optimizers.RMSprop(1e-3)
loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
x = tf.random.normal((128, steps, features), seed=1)
y = tf.random.uniform((128,), 0, 10, tf.int32, seed=2)


@tf.function
def train_step(x, y):
  with tf.GradientTape() as tape:
    loss = loss_fn(y, model(x, training=True))
  grads = tape.gradient(loss, model.trainable_variables)
  optimizer.apply_gradients(zip(grads, model.trainable_variables))
  return loss


for _ in range(5):
  train_step(x, y)
logdir = tempfile.mkdtemp(prefix='seqmnist-profile-')
tf.profiler.experimental.start(logdir)
start = time.perf_counter()
for _ in range(measured):
  loss = train_step(x, y)
loss.numpy()
wall = (time.perf_counter() - start) / measured
tf.profiler.experimental.stop()

(path,) = glob.glob(os.path.join(logdir, '**', '*.xplane.pb'), recursive=True)
space = xplane_pb2.XSpace()
with open(path, 'rb') as f:
  space.ParseFromString(f.read())
by_type = collections.Counter()
for plane in space.planes:
  if plane.name != '/host:CPU':
    continue
  names = {i: m.name for i, m in plane.event_metadata.items()}
  for line in plane.lines:
    for event in line.events:
      name = names.get(event.metadata_id, '')
      if ':' not in name:  # TF ops are "name:Type"
        continue
      op_type = name.rsplit(':', 1)[1].strip()
      # Records that contain ops rather than being one: the executor's
      # Process/Run spans and the tf.function call itself.
      if op_type in ('Process', 'Run') or op_type.startswith('__inference'):
        continue
      by_type[op_type] += event.duration_ps / 1e12
total = sum(by_type.values()) / measured
print(f'{cell} {task}: wall {wall * 1e3:.1f} ms/step, summed op time '
      f'{total * 1e3:.1f} ms/step over the executor threads')
matmul = sum(t for k, t in by_type.items() if 'MatMul' in k) / measured
print(f'matmuls: {matmul * 1e3:.1f} ms/step ({matmul / total:.0%} of op time); '
      f'all other ops: {(total - matmul) * 1e3:.1f} ms/step')
print('| op type | ms/step | share |')
print('|---|---|---|')
for op, seconds in by_type.most_common(12):
  print(f'| {op} | {seconds / measured * 1e3:.2f} | {seconds / measured / total:.1%} |')
