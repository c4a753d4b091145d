"""The benchmark harness in its smoke mode: it runs every variant for real
(tiny sizes) and produces the table and JSON. No timing is asserted: speed is
measured by `python -m seqmnist.tools.bench` itself (docs/benchmarks.md), never by a
test.
"""

import json
import os
import subprocess
import sys

import gin
import pytest

from conftest import REPO
from seqmnist.errors import ConfigError
from seqmnist.model import fused
from seqmnist.tools import bench
from seqmnist.tools import bench_measurements


# Each measurement function once, and the trainer with bindings and an
# environment (two replicas, one thread each, the fused op); the other trainer
# variants differ only in their bindings, which
# test_every_trainer_variant_is_a_valid_config checks without training.
SMOKE_VARIANTS = ('ours', 'replicas_2_fused', 'keras_fit', 'torch', 'limit',
                  'core_pipeline', 'core_in_memory', 'steps_per_loop_1')


def test_smoke_run_produces_the_table_and_json(tmp_path, mnist_dir):
  output = tmp_path / 'bench.json'
  result = subprocess.run(
      [sys.executable, '-m', 'seqmnist.tools.bench', '--smoke',
       f'--variants={",".join(SMOKE_VARIANTS)}',
       f'--data_dir={mnist_dir}', f'--output={output}'],
      cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(output.read_text())
  assert report['markdown'] in result.stdout
  machine = report['machine']
  assert machine['tensorflow'].startswith('2.21')
  assert set(machine['vector_extensions']) == {'AVX2', 'AVX-512', 'AMX'}
  assert isinstance(machine['onednn_ops'], bool)
  assert result.stdout.startswith(f'CPU: {machine["cpu"]} (')
  assert "TensorFlow's oneDNN ops o" in result.stdout.splitlines()[0]
  assert report['matmul_gflops'] > 0
  rows = {r['variant']: r for r in report['rows']}
  assert set(rows) == set(SMOKE_VARIANTS)
  # The test extra installs torch: CI measures the PyTorch reference too.
  assert report['machine']['torch'] is not None or not os.environ.get('CI')
  for name, row in rows.items():
    if name == 'torch' and report['machine']['torch'] is None:
      assert 'pip install -e ".[bench]"' in row['note']
      continue
    if 'fused' in name and not fused.available():  # CI builds it
      assert not os.environ.get('CI')
      assert "Model.implementation='fused' but" in row['note']
      continue
    assert row['examples_per_second'] > 0, (name, row)
    assert row['ms_per_step'] > 0 and row['gflops'] > 0
    line = next(l for l in result.stdout.splitlines()
                if l.startswith(f'| row | gru | {name} |'))
    assert f'{row["examples_per_second"]:,.0f}' in line
  assert 'input pipeline overhead' in result.stdout
  assert 'steps_per_loop many vs 1' in result.stdout
  ours = next(l for l in result.stdout.splitlines()
              if l.startswith('| row | gru | ours |'))
  limit = rows['limit']['examples_per_second']
  assert f'{rows["ours"]["examples_per_second"] / limit:.2f}x' in ours
  (roof,) = report['rooflines']
  assert roof['step_matmul_gflops'] > 0 and roof['examples_per_second'] > 0
  assert 'row gru: roofline' in result.stdout


@pytest.mark.unit
@pytest.mark.parametrize('variant', sorted(
    bench_measurements.TRAINER_VARIANTS))
@pytest.mark.parametrize('task', ['row', 'pixel'])
def test_every_trainer_variant_is_a_valid_config(variant, task):
  """Its bindings parse and validate on the task's gin file, the layers it
  asks for can be built, and its environment is a set of strings."""
  from seqmnist.loop import experiment  # pylint: disable=g-import-not-at-top
  from seqmnist.model import network  # pylint: disable=g-import-not-at-top
  assert variant in bench.VARIANTS
  spec = bench_measurements.Spec(variant, task, 'gru', 8, 32, 4, 2, None)
  bindings, environment = bench_measurements.TRAINER_VARIANTS[variant]
  assert all(isinstance(k, str) and isinstance(v, str)
             for k, v in environment.items())
  bench_measurements._parse(spec, **bindings)  # pylint: disable=protected-access
  try:
    configs = experiment.Configs.from_gin()
  finally:
    gin.clear_config()  # the task's bindings would reach later tests
  assert configs.trainer.steps_per_loop == 2
  if 'fused' in variant and not fused.available():
    return
  if 'unroll' in variant and task == 'pixel':  # the bench reports a skip
    with pytest.raises(ConfigError, match='at most 128 steps'):
      network.choose_implementation(configs.model,
                                    configs.data.sequence_shape[0])
    return
  choice = network.choose_implementation(configs.model,
                                         configs.data.sequence_shape[0])
  wanted = bindings.get('Model.implementation', "'auto'").strip("'")
  assert wanted == 'auto' or choice.implementation == wanted


@pytest.mark.unit
def test_the_reference_measures_full_batches_past_the_split():
  """More measured steps than the training split holds batches (row at
  --steps=1200: 153,984 examples, the split 55,000) still measure full
  batches, as our trainer's repeating pipeline does."""
  examples = 55_000
  for step in range(1_200):
    batch = bench_measurements.batch_slice(step, 128, examples)
    assert len(range(examples)[batch]) == 128, step
  # 429 full batches: the last one, then the first again.
  assert bench_measurements.batch_slice(428, 128, examples) == slice(
      54_784, 54_912)
  assert bench_measurements.batch_slice(429, 128, examples) == slice(0, 128)


@pytest.mark.parametrize('cell', ['gru', 'lstm'])
@pytest.mark.unit
def test_the_limit_variant_computes_the_models_loss(cell):
  """The bare recurrence is the same function as the Keras layer it is
  measured against: same weights, same loss."""
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  units, features = 8, 5
  variables, loss_fn = bench_measurements.bare_recurrence(cell, units, features)
  rng = np.random.default_rng(0)
  for v in variables:
    v.assign(rng.normal(scale=0.3, size=v.shape).astype('float32'))
  layer_class = {'gru': keras.layers.GRU, 'lstm': keras.layers.LSTM}[cell]
  model = keras.Sequential([keras.Input((7, features)), layer_class(units),
                            keras.layers.Dense(10)])
  kernel, recurrent, bias, head, head_bias = variables[:5]
  if cell == 'gru':  # reset_after: [input bias; recurrent bias]
    layer_bias = np.stack([bias.numpy(), variables[5].numpy()])
  else:
    layer_bias = bias.numpy()
  model.layers[0].set_weights([kernel.numpy(), recurrent.numpy(), layer_bias])
  model.layers[1].set_weights([head.numpy(), head_bias.numpy()])
  x = tf.constant(rng.normal(size=(4, 7, features)).astype('float32'))
  y = tf.constant([0, 3, 9, 5])
  expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
      y, model(x))
  np.testing.assert_allclose(loss_fn(x, y).numpy(), expected.numpy(),
                             rtol=1e-5)


@pytest.mark.unit
def test_flops_per_example_by_hand():
  # GRU, row: 28 steps x 2 x 3 gates x (28*128 + 128*128) + head, x3.
  forward = 28 * 2 * 3 * (28 * 128 + 128 * 128) + 2 * 128 * 10
  assert bench.train_flops_per_example('row', 'gru', 128) == 3 * forward
  # LSTM, pixel: 784 steps of 1 feature, 4 gates.
  forward = 784 * 2 * 4 * (1 * 64 + 64 * 64) + 2 * 64 * 10
  assert bench.train_flops_per_example('pixel', 'lstm', 64) == 3 * forward


def test_unknown_variant_is_one_line_error():
  result = subprocess.run(
      [sys.executable, '-m', 'seqmnist.tools.bench', '--variants=ours,fast'],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(
      "seqmnist.tools.bench: error: unknown task, cell or variant 'fast'")
