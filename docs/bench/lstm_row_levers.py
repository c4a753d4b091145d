"""The levers tried on the LSTM row step (issue 16), measured in one run.

  python docs/bench/lstm_row_levers.py [REPEATS]

Each measurement is its own process (no shared threads or compiled
functions); variants alternate within each repetition; medians. The step is
the framework's shape: LSTM 128 + Dense 10 on [128, 28, 28] in memory,
RMSProp, one `tf.function` per step, 100 timed steps after 5 of warm-up.

  keras        keras.layers.LSTM as seqmnist builds it (cuDNN-eligible; on a
               CPU Keras runs its generic while-loop)
  unroll       the same layer with unroll=True (28 steps inlined; not
               cuDNN-eligible)
  xla          keras, the step under jit_compile=True
  fused        a hand-written LSTM with manual backpropagation through time
               (tf.custom_gradient): the input projection, the input-weight
               and the recurrent-weight gradients as one large matmul each
               over all 28 steps, as cuDNN and oneDNN's RNN kernels do; its
               loss and gradients are checked against Keras' first
  fused_xla    fused under jit_compile=True
"""

import json
import statistics
import subprocess
import sys
import time

VARIANTS = ('keras', 'unroll', 'xla', 'fused', 'fused_xla')
BATCH, STEPS, FEATURES, UNITS = 128, 28, 28, 128


def fused_lstm_last(x, kernel, recurrent, bias):
  """The last hidden state of an LSTM in Keras' layout (gates i, f, c, o),
  with backpropagation through time written out."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  @tf.custom_gradient
  def run(x, w, r, b):
    steps, features, units = x.shape[1], x.shape[2], r.shape[0]
    xs = tf.reshape(tf.transpose(x, [1, 0, 2]), [-1, features])  # [T*B, F]
    xw = tf.unstack(tf.reshape(tf.matmul(xs, w) + b, [steps, -1, 4 * units]))
    h = tf.zeros_like(xw[0][:, :units])
    c = h
    hs, cs, acts = [h], [c], []
    for t in range(steps):
      i, f, g, o = tf.split(xw[t] + tf.matmul(h, r), 4, axis=1)
      i, f, g, o = tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)
      c = f * c + i * g
      tc = tf.tanh(c)
      h = o * tc
      hs.append(h)
      cs.append(c)
      acts.append((i, f, g, o, tc))

    def grad(dh):
      dc, dzs = tf.zeros_like(dh), [None] * steps
      for t in reversed(range(steps)):
        i, f, g, o, tc = acts[t]
        dc = dc + dh * o * (1 - tc * tc)
        dzs[t] = tf.concat([dc * g * i * (1 - i), dc * cs[t] * f * (1 - f),
                            dc * i * (1 - g * g), dh * tc * o * (1 - o)], 1)
        dc = dc * f
        dh = tf.matmul(dzs[t], r, transpose_b=True)
      dz = tf.concat(dzs, axis=0)  # [T*B, 4U]
      dx = tf.transpose(tf.reshape(tf.matmul(dz, w, transpose_b=True),
                                   [steps, -1, features]), [1, 0, 2])
      return (dx, tf.matmul(xs, dz, transpose_a=True),
              tf.matmul(tf.concat(hs[:-1], 0), dz, transpose_a=True),
              tf.reduce_sum(dz, axis=0))

    return h, grad

  return run(x, tf.convert_to_tensor(kernel), tf.convert_to_tensor(recurrent),
             tf.convert_to_tensor(bias))


def measure(variant):
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  layer = keras.layers.LSTM(UNITS, unroll=variant == 'unroll')
  head = keras.layers.Dense(10)
  model = keras.Sequential([keras.Input((STEPS, FEATURES)), layer, head])
  optimizer = keras.optimizers.RMSprop(1e-3)
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  x = tf.random.normal((BATCH, STEPS, FEATURES), seed=1)
  y = tf.random.uniform((BATCH,), 0, 10, tf.int32, seed=2)
  cell = layer.cell

  def fused(x):
    return head(fused_lstm_last(x, cell.kernel, cell.recurrent_kernel,
                                cell.bias))

  forward = fused if variant.startswith('fused') else model
  check = None
  if forward is fused:  # the same function as Keras' layer
    grads = []
    for fn in (model, fused):
      with tf.GradientTape() as tape:
        loss = loss_fn(y, fn(x))
      grads.append(tape.gradient(loss, model.trainable_variables))
    check = max(float(tf.reduce_max(tf.abs(a - b)))
                for a, b in zip(*grads))

  @tf.function(jit_compile=variant.endswith('xla'))
  def step(x, y):
    with tf.GradientTape() as tape:
      loss = loss_fn(y, forward(x))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  for _ in range(5):
    step(x, y)
  start = time.perf_counter()
  for _ in range(100):
    loss = step(x, y)
  loss.numpy()
  return {'examples_per_second': BATCH * 100 / (time.perf_counter() - start),
          'max_gradient_difference_vs_keras': check}


def main():
  if len(sys.argv) == 3 and sys.argv[1] == '--worker':
    print(json.dumps(measure(sys.argv[2])))
    return
  repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
  runs = {v: [] for v in VARIANTS}
  checks = {}
  for _ in range(repeats):
    for variant in VARIANTS:
      out = subprocess.run([sys.executable, __file__, '--worker', variant],
                           capture_output=True, text=True, check=True)
      result = json.loads(out.stdout.strip().splitlines()[-1])
      runs[variant].append(result['examples_per_second'])
      checks[variant] = result['max_gradient_difference_vs_keras']
  base = statistics.median(runs['keras'])
  print('| variant | runs (examples/s) | median | vs keras | max |grad - Keras grad| |')
  print('|---|---|---|---|---|')
  for variant in VARIANTS:
    median = statistics.median(runs[variant])
    check = checks[variant]
    print(f'| {variant} | {", ".join(f"{r:,.0f}" for r in runs[variant])} | '
          f'{median:,.0f} | {median / base:.2f}x | '
          f'{"-" if check is None else f"{check:.1e}"} |')


if __name__ == '__main__':
  main()
