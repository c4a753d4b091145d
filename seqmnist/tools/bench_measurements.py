"""The measurements of `python -m seqmnist.tools.bench`, one function per
variant.

Each runs in its own process (the harness, bench.py, starts one per
measurement) and returns {'examples_per_second': ...} or {'skipped': why}.
Ours are built through the experiment builder, exactly as the trainer builds
them; the alternatives (Keras `fit`, PyTorch) as a user would write them.
"""

import dataclasses
import tempfile
import time

from seqmnist.errors import ConfigError
from seqmnist.errors import UserError
from seqmnist.model import cells
from seqmnist.model import implementations

# Each task's shipped gin file.
TASK_GIN_FILES = {'row': 'row.gin', 'pixel': 'pixel.gin'}

@dataclasses.dataclass(frozen=True)
class Spec:
  """One measurement."""
  variant: str
  task: str
  cell: str
  units: int
  batch_size: int
  steps: int
  steps_per_loop: int
  data_dir: str


# Measurements (each in its own process) ------------------------------------


def _bindings(spec: Spec, **extra):
  b = {
      'Model.cell': repr(spec.cell), 'Model.units': spec.units,
      'Model.batch_norm': False, 'Data.batch_size': spec.batch_size,
      'Trainer.steps_per_loop': spec.steps_per_loop,
  }
  b.update(extra)
  return [f'{k}={v}' for k, v in b.items()]


def _parse(spec: Spec, **extra):
  from seqmnist import gin_files  # pylint: disable=g-import-not-at-top
  gin_files.parse([TASK_GIN_FILES[spec.task]], _bindings(spec, **extra))


def _measure_trainer(spec: Spec, **extra) -> dict:
  from seqmnist.loop import job  # pylint: disable=g-import-not-at-top
  # The first loop traces and is left out; then `steps` measured steps.
  total = spec.steps_per_loop + spec.steps
  _parse(spec, **{'Trainer.steps': total, 'Trainer.eval_every': total,
                  'Trainer.checkpoint_every': total // 2, **extra})
  with tempfile.TemporaryDirectory() as model_dir:
    results = job.train_and_evaluate(model_dir, spec.data_dir)
  return {'examples_per_second': results['train_examples_per_second']}


def _experiment(spec: Spec):
  """The trainer's own experiment (strategy, data, model, optimizer, step
  options), from the task's gin file and the spec's bindings."""
  # pylint: disable=g-import-not-at-top
  from seqmnist.data import pipeline
  from seqmnist.cluster import distribute
  from seqmnist.loop import experiment
  _parse(spec)
  configs = experiment.Configs.from_gin()
  strategy = distribute.make_strategy(configs.distribute)
  configs.check_with(strategy)
  splits = pipeline.load(configs.data, spec.data_dir)
  return experiment.build(configs, strategy, splits)


def _measure_core(spec: Spec, in_memory: bool) -> dict:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from seqmnist.data import pipeline
  from seqmnist.loop import steps  # pylint: disable=g-import-not-at-top
  exp = _experiment(spec)
  configs = exp.configs
  loop = steps.make_train_loop(exp.strategy, exp.model, exp.optimizer,
                               exp.step_options)

  def dataset_fn(ctx):
    ds = pipeline.train_dataset(exp.splits.train, configs.data,
                            seed=configs.trainer.seed, start_step=0,
                            input_context=ctx)
    return ds.take(1).cache().repeat() if in_memory else ds

  iterator = iter(exp.strategy.distribute_datasets_from_function(dataset_fn))
  per_call = tf.constant(spec.steps_per_loop)
  loop(iterator, per_call).steps_run.numpy()  # trace + warm up
  calls = max(1, spec.steps // spec.steps_per_loop)
  start = time.perf_counter()
  for _ in range(calls):
    loop(iterator, per_call).steps_run.numpy()
  seconds = time.perf_counter() - start
  return {'examples_per_second':
          calls * spec.steps_per_loop * spec.batch_size / seconds}


def _measure_keras_fit(spec: Spec, jit_compile='auto') -> dict:
  import keras  # pylint: disable=g-import-not-at-top
  from seqmnist.data import pipeline
  from seqmnist.loop import experiment  # pylint: disable=g-import-not-at-top
  # No op determinism: a Keras user does not ask for it, and with it Keras
  # turns 'auto' XLA off. Keras' own layers, as a Keras user has them.
  _parse(spec, **{'Trainer.deterministic': False,
                  'Model.implementation': "'keras'"})
  configs = experiment.Configs.from_gin()
  data_config, config = configs.data, configs.trainer
  splits = pipeline.load(data_config, spec.data_dir)
  experiment.seed_everything(configs)
  model = experiment.build_model(configs)
  # What a Keras user writes: clipnorm clips each variable (the head too).
  optimizer = keras.optimizers.get({
      'class_name': config.optimizer,
      'config': {'learning_rate': config.learning_rate,
                 **({'clipnorm': config.clip_norm} if config.clip_norm
                    else {})}})
  model.compile(optimizer=optimizer,
                loss=keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True),
                metrics=['accuracy'], jit_compile=jit_compile)
  dataset = pipeline.train_dataset(splits.train, data_config, seed=config.seed,
                               start_step=0)
  model.fit(dataset, steps_per_epoch=spec.steps_per_loop, epochs=1,
            verbose=0)  # trace + warm up
  start = time.perf_counter()
  model.fit(dataset, steps_per_epoch=spec.steps, epochs=1, verbose=0)
  seconds = time.perf_counter() - start
  return {'examples_per_second': spec.steps * spec.batch_size / seconds,
          'jit_compile': bool(model.jit_compile)}


def batch_slice(step: int, batch_size: int, examples: int) -> slice:
  """The examples of `step`'s batch: full batches in order, from the first
  again once the examples run out (as the real pipeline repeats its split;
  more steps than the split holds must not measure empty batches)."""
  start = step % (examples // batch_size) * batch_size
  return slice(start, start + batch_size)


def _measure_torch(spec: Spec) -> dict:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    return {'skipped': 'torch is not installed (pip install -e ".[bench]")'}
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from seqmnist.data import pipeline
  from seqmnist.loop import experiment  # pylint: disable=g-import-not-at-top
  _parse(spec)
  configs = experiment.Configs.from_gin()
  data_config, config = configs.data, configs.trainer
  splits = pipeline.load(data_config, spec.data_dir)
  torch.manual_seed(config.seed)
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  n = (spec.steps + 3) * spec.batch_size
  x = torch.from_numpy(pipeline.to_sequences(
      tf.constant(splits.train.images[:n]), data_config).numpy()).to(device)
  y = torch.from_numpy(splits.train.labels[:n].astype('int64')).to(device)
  steps_, features = data_config.sequence_shape
  del steps_
  rnn_class = getattr(torch.nn, cells.get(spec.cell).torch)
  rnn = rnn_class(features, spec.units, batch_first=True).to(device)
  head = torch.nn.Linear(spec.units,
                         data_config.spec.num_classes).to(device)
  lr = 1e-3
  optimizer = torch.optim.RMSprop([*rnn.parameters(), *head.parameters()],
                                  lr=lr, alpha=0.9, eps=1e-7)
  loss_fn = torch.nn.CrossEntropyLoss()

  def step(i):
    batch = batch_slice(i, spec.batch_size, len(x))
    xb, yb = x[batch], y[batch]
    out, _ = rnn(xb)
    loss = loss_fn(head(out[:, -1]), yb)
    optimizer.zero_grad()
    loss.backward()
    if config.clip_norm:
      for p in rnn.parameters():  # per variable, head excluded, as ours
        torch.nn.utils.clip_grad_norm_([p], config.clip_norm)
    optimizer.step()
    return loss

  for i in range(3):
    step(i).item()
  start = time.perf_counter()
  for i in range(spec.steps):
    loss = step(i + 3)
  loss.item()
  if device == 'cuda':
    torch.cuda.synchronize()
  seconds = time.perf_counter() - start
  return {'examples_per_second': spec.steps * spec.batch_size / seconds,
          'torch_threads': torch.get_num_threads(), 'device': device}


def bare_recurrence(cell: str, units: int, features: int, seed: int = 0):
  """(variables, loss_fn) of the same model with no Keras layer: the input
  projection of all time steps as one matmul, then per step one matmul with
  the recurrent kernel and the gate arithmetic (Keras' layouts: GRU
  reset_after [z, r, h] with a recurrent bias, LSTM [i, f, c, o]), a dense
  head on the last output, softmax cross-entropy."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  entry = cells.get(cell)
  if entry.bare_step is None:
    raise UserError(f'cell {cell!r} has no bare recurrence written out '
                    '(cells.Cell.bare_step) for the limit variant')
  gates = entry.gates
  init = tf.keras.initializers.GlorotUniform(seed)
  kernel = tf.Variable(init([features, gates * units]))
  recurrent = tf.Variable(tf.keras.initializers.Orthogonal(seed)(
      [units, gates * units]))
  bias = tf.Variable(tf.zeros([gates * units]))
  recurrent_bias = tf.Variable(tf.zeros([gates * units]))
  head = tf.Variable(init([units, 10]))
  head_bias = tf.Variable(tf.zeros([10]))
  variables = [kernel, recurrent, bias, head, head_bias]
  if entry.recurrent_bias:
    variables.append(recurrent_bias)

  def step(state, xt):
    return entry.bare_step(state, xt, recurrent, recurrent_bias)

  def loss_fn(x, y):  # x: [B, T, F]
    batch = tf.shape(x)[0]
    projected = tf.einsum('btf,fg->tbg', x, kernel) + bias  # one matmul
    initial = (tf.zeros([batch, units]),) * entry.bare_states
    last = tf.scan(step, projected, initializer=initial)[0][-1]
    logits = tf.matmul(last, head) + head_bias
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=y, logits=logits))

  return variables, loss_fn


def _measure_limit(spec: Spec) -> dict:
  """The bare recurrence (bare_recurrence) trained by plain SGD on one
  in-memory batch, `steps_per_loop` steps per tf.function call: what the
  framework's loop is measured against."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from seqmnist.data import pipeline
  from seqmnist.loop import experiment  # pylint: disable=g-import-not-at-top
  _parse(spec)
  data_config = experiment.Configs.from_gin().data
  splits = pipeline.load(data_config, spec.data_dir)
  x = pipeline.to_sequences(tf.constant(splits.train.images[:spec.batch_size]),
                        data_config)
  y = tf.constant(splits.train.labels[:spec.batch_size])
  variables, loss_fn = bare_recurrence(spec.cell, spec.units,
                                       data_config.sequence_shape[1])

  @tf.function
  def loop(n):
    loss = tf.constant(0.0)
    for _ in tf.range(n):
      with tf.GradientTape() as tape:
        loss = loss_fn(x, y)
      for v, g in zip(variables, tape.gradient(loss, variables)):
        v.assign_sub(1e-3 * g)
    return loss

  per_call = tf.constant(spec.steps_per_loop)
  loop(per_call).numpy()  # trace + warm up
  calls = max(1, spec.steps // spec.steps_per_loop)
  start = time.perf_counter()
  for _ in range(calls):
    loop(per_call).numpy()
  seconds = time.perf_counter() - start
  return {'examples_per_second':
          calls * spec.steps_per_loop * spec.batch_size / seconds}


def step_matmul_gflops(cell: str, units: int, batch_size: int,
                       repeats: int = 2000) -> float:
  """float32 GFLOP/s of the recurrent step's own matmul, [batch, units] x
  [units, gates * units], chained as the recurrence chains it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  gates = cells.get(cell).gates
  a = tf.random.normal([batch_size, units])
  b = tf.random.normal([units, gates * units]) / units
  back = tf.random.normal([gates * units, units]) / units

  @tf.function
  def chain(n):
    h = a
    for _ in tf.range(n):
      h = tf.matmul(tf.matmul(h, b), back)  # keeps the shapes of a step
    return h

  chain(tf.constant(10)).numpy()
  start = time.perf_counter()
  chain(tf.constant(repeats)).numpy()
  seconds = time.perf_counter() - start
  return 2 * 2 * batch_size * units * gates * units * repeats / seconds / 1e9


# Variants that are the real trainer with bindings, and environment
# variables set before TensorFlow starts (the harness starts each measurement
# in its own process with them).
TRAINER_VARIANTS = {
    'ours': ({}, {}),
    'ours_keras': ({'Model.implementation': "'keras'"}, {}),
    'ours_fused': ({'Model.implementation': "'fused'"}, {}),
    'ours_unroll': ({'Model.implementation': "'unroll'"}, {}),
    'onednn': ({}, {implementations.ONEDNN_SWITCH: '1'}),
    'onednn_off': ({}, {implementations.ONEDNN_SWITCH: '0'}),
    'replicas_2': ({'Distribute.logical_cpus': 2,
                    'Model.implementation': "'keras'"},
                   {'TF_NUM_INTRAOP_THREADS': '1'}),
    'replicas_2_fused': ({'Distribute.logical_cpus': 2,
                          'Model.implementation': "'fused'"},
                         {'TF_NUM_INTRAOP_THREADS': '1'}),
    'jit': ({'Trainer.jit_compile': True}, {}),
    'bf16': ({'Model.precision': "'mixed_bfloat16'"}, {}),
}


def environment(variant: str) -> dict:
  """The environment variables a variant's process starts with."""
  return TRAINER_VARIANTS.get(variant, ({}, {}))[1]


def measure(spec: Spec) -> dict:
  if spec.variant in TRAINER_VARIANTS:
    try:
      return _measure_trainer(spec, **TRAINER_VARIANTS[spec.variant][0])
    except ConfigError as e:  # e.g. 'fused' without the op, 'unroll' on pixel
      return {'skipped': str(e)}
  if spec.variant == 'steps_per_loop_1':
    return _measure_trainer(dataclasses.replace(spec, steps_per_loop=1))
  if spec.variant == 'core_pipeline':
    return _measure_core(spec, in_memory=False)
  if spec.variant == 'core_in_memory':
    return _measure_core(spec, in_memory=True)
  if spec.variant == 'keras_fit':
    return _measure_keras_fit(spec)
  if spec.variant == 'keras_fit_no_xla':
    return _measure_keras_fit(spec, jit_compile=False)
  if spec.variant == 'torch':
    return _measure_torch(spec)
  if spec.variant == 'limit':
    return _measure_limit(spec)
  raise ValueError(spec.variant)
