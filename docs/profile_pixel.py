"""What limits the pixel step on this CPU: time per time step and ops per step."""
import time
import tensorflow as tf
from seqmnist.model import network
from seqmnist.tools import bench
B, T = 128, 784
model = network.build(network.ModelConfig(cell='gru', units=128), (T, 1), 10, seed=0)
x = tf.random.normal([B, T, 1]); y = tf.zeros([B], tf.int32)
fwd = tf.function(lambda x: model(x, training=False))
@tf.function
def fwd_bwd(x):
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=model(x, training=True)))
  return tape.gradient(loss, model.trainable_variables)
def timeit(f, n=5):
  f(x); t = time.perf_counter()
  for _ in range(n): r = f(x)
  tf.nest.map_structure(lambda t: t.numpy(), r)
  return (time.perf_counter() - t) / n
tf_, tb = timeit(fwd), timeit(fwd_bwd)
g = fwd_bwd.get_concrete_function(x).graph
def whiles(graph):
  out = []
  for op in graph.get_operations():
    if op.type in ('While', 'StatelessWhile'):
      body = graph._functions[op.get_attr('body').name] if hasattr(graph, '_functions') else None
      out.append((op.name, len(body.graph.get_operations()) if body else None))
  return out
loops = whiles(g)
peak = bench.matmul_gflops()
flops = bench.train_flops_per_example('pixel', 'gru', 128) * B
print(f'forward {tf_*1000:.0f} ms/batch = {tf_/T*1e6:.0f} us per time step')
print(f'forward+backward {tb*1000:.0f} ms/batch = {tb/T*1e6:.0f} us per time step')
print(f'while loops (name, ops in body): {loops}')
print(f'matmul peak {peak:.0f} GFLOP/s; fwd+bwd achieves {flops/tb/1e9:.1f} GFLOP/s ({100*flops/tb/1e9/peak:.1f}%)')
recurrent = 2 * B * 128 * 3 * 128
print(f'one recurrent matmul [128x128]x[128x384]: {recurrent/1e6:.1f} MFLOP = {recurrent/peak/1e3:.1f} us at peak')
