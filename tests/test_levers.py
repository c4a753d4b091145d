"""The long-memory levers: dropout layers, decoupled weight decay, label
smoothing, weight averaging, readouts and dilated stacks.

Unit checks of each against a hand computation, then the framework's two
promises for a config with every lever at once, on real MNIST through the
CLI: a SIGTERM-ed run resumes bit for bit, and 2 mirrored replicas train
the same weights as one device.
"""

import re
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import FAST, gin_params, run_cli, start_cli, wait_for_line
from test_distribute import assert_float_weights_close
from test_main import _results, _weights
from test_reliability import EXACT, PREEMPTED

from seqmnist.errors import ConfigError
from seqmnist.loop import experiment
from seqmnist.loop import steps
from seqmnist.model import dropout
from seqmnist.model import network
from seqmnist.optim import averaging
from seqmnist.optim import optimizers

# Every lever on at once (a dilated 2-layer stack, both dropouts, weight
# decay, label smoothing, the weight average, the both-readout, shifted
# training images).
LEVERS = ('Model.layers=2', 'Model.dilations=(1, 4)',
          'Model.input_dropout=0.1', 'Model.output_dropout=0.3',
          "Model.readout='last_mean'", 'Model.batch_norm=True',
          'Trainer.weight_decay=0.1', 'Trainer.label_smoothing=0.1',
          'Trainer.ema_decay=0.99', 'Data.max_shift=2')


# Dropout ------------------------------------------------------------------


def _key(seed=0, step=5, first_row=0, global_batch=8):
  return dropout.MaskKey(tf.constant(seed, tf.int64),
                         tf.constant(step, tf.int64),
                         tf.constant(first_row, tf.int32), global_batch)


def test_dropout_masks_are_a_function_of_seed_step_and_row():
  shape = tf.constant([8, 28, 1])
  whole = dropout.keep_mask(_key(), 1, 0.3, shape).numpy()
  # Two replicas' rows are the global batch's rows.
  half = tf.constant([4, 28, 1])
  parts = [dropout.keep_mask(_key(first_row=r), 1, 0.3, half).numpy()
           for r in (0, 4)]
  np.testing.assert_array_equal(np.concatenate(parts), whole)
  # The same key again: the same mask (no state anywhere).
  np.testing.assert_array_equal(
      dropout.keep_mask(_key(), 1, 0.3, shape).numpy(), whole)
  # Another step, seed or layer salt: another mask.
  for other in (dropout.keep_mask(_key(step=6), 1, 0.3, shape),
                dropout.keep_mask(_key(seed=1), 1, 0.3, shape),
                dropout.keep_mask(_key(), 2, 0.3, shape)):
    assert (other.numpy() != whole).any()


def test_dropout_rate_and_scaling():
  layer = dropout.StatelessDropout(0.25, salt=1)
  x = tf.ones([64, 100, 2])
  with dropout.masks(0, 3, 0, 64):
    y = layer(x, training=True).numpy()
  kept = y != 0
  assert abs(kept.mean() - 0.75) < 0.01
  np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
  # Every step of a sequence draws its own mask (not Keras' one per
  # sequence): steps of one example differ.
  assert kept[0, :, 0].any() and not kept[0, :, 0].all()
  # Identity at inference.
  np.testing.assert_array_equal(layer(x, training=False).numpy(), x.numpy())


# Weight decay, label smoothing, averaging -----------------------------------


def test_decoupled_weight_decay_spares_biases_and_batch_norm():
  config = network.ModelConfig(units=4, batch_norm=True)
  model = network.build(config, (28, 28), 10, seed=0)
  variables = model.trainable_variables
  exempt = experiment.matching(variables, (r'(^|/)bias$', r'(^|/)batch_norm/'))
  assert {v.path for v in exempt} == {
      'gru_0/gru_cell/bias', 'batch_norm/gamma', 'batch_norm/beta',
      'head/bias'}
  optimizer = optimizers.build('sgd', 0.5, weight_decay=0.1,
                               decay_exempt=exempt)
  optimizer.build(variables)
  before = [v.numpy() for v in variables]
  optimizer.apply_gradients([(tf.zeros_like(v), v) for v in variables])
  for v, old in zip(variables, before):
    factor = 1.0 if any(v is e for e in exempt) else 1 - 0.5 * 0.1
    np.testing.assert_allclose(v.numpy(), old * factor, rtol=1e-6,
                               err_msg=v.path)


def test_label_smoothing_loss_by_hand():
  logits = tf.constant([[2.0, 0.0, -1.0]])
  labels = tf.constant([0])
  s = 0.3
  targets = np.array([1 - s + s / 3, s / 3, s / 3])
  log_p = logits.numpy()[0] - np.log(np.exp(logits.numpy()[0]).sum())
  want = -(targets * log_p).sum()
  got = steps._per_example_loss(labels, logits, s).numpy()[0]
  np.testing.assert_allclose(got, want, rtol=1e-6)
  plain = steps._per_example_loss(labels, logits).numpy()[0]
  np.testing.assert_allclose(plain, -log_p[0], rtol=1e-6)


def test_weight_average_update_and_swap():
  v = keras.Variable([1.0, 2.0], name="w")
  average = averaging.WeightAverage([v], decay=0.9)
  v.assign([3.0, 6.0])
  average.update(tf.constant(100))  # warm-up over: decay 0.9
  want = 0.9 * np.array([1.0, 2.0]) + 0.1 * np.array([3.0, 6.0])
  np.testing.assert_allclose(average.averages[0].numpy(), want, rtol=1e-6)
  average.update(tf.constant(0))  # warm-up: decay min(0.9, 1/10)
  want = 0.1 * want + 0.9 * np.array([3.0, 6.0])
  np.testing.assert_allclose(average.averages[0].numpy(), want, rtol=1e-6)
  with average.swapped_in():
    np.testing.assert_allclose(v.numpy(), want, rtol=1e-6)
  np.testing.assert_array_equal(v.numpy(), [3.0, 6.0])


# Readout and dilation -------------------------------------------------------


def _sequences(batch=3, steps=12, features=2, seed=0):
  return np.random.default_rng(seed).normal(
      size=(batch, steps, features)).astype(np.float32)


@pytest.mark.parametrize('steps_', [12, 13])
def test_dilate_then_undilate_is_the_identity(steps_):
  x = _sequences(steps=steps_)
  dilated = network.Dilate(4)(x)
  assert dilated.shape == (12, -(-steps_ // 4), 2)
  back = network.Undilate(4, steps_)(dilated)
  np.testing.assert_array_equal(keras.ops.convert_to_numpy(back), x)


def test_a_dilated_layer_runs_each_interleaved_subsequence():
  """Layer output at step t equals the plain layer run over the steps
  t' = t mod d (counted from the end), so its memory skips d steps."""
  config = network.ModelConfig(units=5, layers=1, dilations=(3,),
                              readout='mean')
  model = network.build(config, (12, 2), 10, seed=0)
  rnn = network.recurrent_layers(model)[0]
  x = _sequences(steps=12)
  full = keras.Model(model.inputs, model.get_layer('undilate_0').output)(x)
  full = keras.ops.convert_to_numpy(full)
  plain = type(rnn).from_config(
      dict(rnn.get_config(), return_sequences=True))
  plain.build((None, 4, 2))
  plain.set_weights(rnn.get_weights())
  for k in range(3):
    sub = keras.ops.convert_to_numpy(plain(x[:, k::3]))
    np.testing.assert_allclose(full[:, k::3], sub, rtol=1e-5, atol=1e-6)


def test_readouts():
  x = _sequences(steps=10, features=3)
  for readout in network.READOUTS:
    config = network.ModelConfig(units=4, readout=readout)
    model = network.build(config, (10, 3), 10, seed=0)
    rnn = network.recurrent_layers(model)[0]
    states = keras.ops.convert_to_numpy(
        keras.Model(model.inputs, rnn.output)(x))
    head_input = keras.ops.convert_to_numpy(
        keras.Model(model.inputs, model.get_layer('head').input)(x))
    if readout == 'last':
      want = states  # return_sequences=False: the last state
    elif readout == 'mean':
      want = states.mean(axis=1)
    else:
      want = np.concatenate([states[:, -1], states.mean(axis=1)], axis=1)
    np.testing.assert_allclose(head_input, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('cell', ['gru', 'lstm'])
def test_every_layer_of_a_dilated_recipe_is_cudnn_eligible(cell):
  config = network.ModelConfig(cell=cell, units=8, layers=4,
                              dilations=(1, 2, 4, 8), readout='last_mean',
                              input_dropout=0.1, output_dropout=0.2,
                              gate_init='chrono' if cell == 'lstm' else
                              'uniform')
  model = network.build(config, (784, 1), 10, seed=0)
  layers = network.recurrent_layers(model)
  assert len(layers) == 4
  assert all(network.cudnn_eligible(layer) for layer in layers)


@pytest.mark.parametrize('cell', ['gru', 'lstm'])
def test_chrono_spans_the_steps_a_dilated_layer_sees(cell):
  """log U(1, T - 1) with T = ceil(784 / d) for the layer at dilation d."""
  config = network.ModelConfig(cell=cell, units=64, layers=3,
                              dilations=(1, 16, 64), gate_init='chrono')
  model = network.build(config, (784, 1), 10, seed=0)
  for layer, steps in zip(network.recurrent_layers(model), (784, 49, 13)):
    bias = layer.cell.bias.numpy()
    memory = bias[0, :64] if cell == 'gru' else bias[64:128]
    assert memory.min() >= 0 and memory.max() <= np.log(steps - 1) + 1e-6
    # spread over the range, not bunched at its low end
    assert memory.max() > np.log(steps - 1) - 0.5, (layer.name, memory.max())


@pytest.mark.parametrize('kwargs, message', [
    (dict(output_dropout=1.0), r'Model.output_dropout=1.0 must be a number '
     r'from 0 to 0.95'),
    (dict(input_dropout=-0.1), r'Model.input_dropout=-0.1'),
    (dict(readout='max'), r"Model.readout='max' is not one of"),
    (dict(layers=2, dilations=(1,)), r'has 1 entries but Model.layers=2'),
    (dict(dilations=(0,)), r'each=0 must be an integer from 1'),
    (dict(dilations='1,2'), r"Model.dilations='1,2' must be a list"),
])
def test_bad_lever_config(kwargs, message):
  with pytest.raises(ConfigError, match=message):
    network.ModelConfig(**kwargs)


# The promises, with every lever on ----------------------------------------


def _lever_run(model_dir, mnist_dir, *params):
  return ('--gin_file=row.gin', f'--model_dir={model_dir}',
          f'--data_dir={mnist_dir}',
          *gin_params(*FAST, *LEVERS, 'Trainer.steps=60',
                      'Trainer.eval_every=20', 'Trainer.checkpoint_every=20',
                      *params))


def _checkpoint_weights(model_dir, folder='checkpoints'):
  return {k: v for k, v in _weights(tf.train.latest_checkpoint(
      str(model_dir / folder))).items() if not k.startswith('save_counter/')}


@pytest.fixture(scope='module')
def lever_reference(tmp_path_factory, mnist_dir):
  """One uninterrupted run with every lever on, which tests only read."""
  reference = tmp_path_factory.mktemp('levers') / 'reference'
  result = run_cli(*_lever_run(reference, mnist_dir))
  assert result.returncode == 0, result.stderr[-3000:]
  return reference


@pytest.mark.e2e
def test_every_lever_resumes_exactly_after_sigterm(tmp_path, mnist_dir,
                                                   lever_reference):
  reference = lever_reference
  # results.json says the run left the classic protocol, and how.
  assert {k: _results(reference)[k] for k in ('readout', 'max_shift')} == {
      'readout': 'last_mean', 'max_shift': 2}
  want = _checkpoint_weights(reference)
  assert any(k.startswith('average/') for k in want), sorted(want)

  model_dir, log = tmp_path / 'run', tmp_path / 'stderr.log'
  proc = start_cli(*_lever_run(model_dir, mnist_dir,
                               'Trainer.steps_per_loop=1'), log=log)
  wait_for_line(log, 'Saved checkpoint', [proc])
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == PREEMPTED, log.read_text()[-3000:]
  step = int(re.search(r'checkpoint saved at step (\d+) of',
                       log.read_text()).group(1))
  assert step < 60
  resumed = run_cli(*_lever_run(model_dir, mnist_dir))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  got = _checkpoint_weights(model_dir)
  assert got.keys() == want.keys()
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)
  for key in EXACT:
    assert _results(model_dir)[key] == _results(reference)[key], key


@pytest.mark.e2e
def test_every_lever_two_replicas_match_one_device(tmp_path, mnist_dir):
  weights, results = {}, {}
  for strategy in ('one_device', 'mirrored'):
    model_dir = tmp_path / strategy
    result = run_cli(*_lever_run(model_dir, mnist_dir,
                                 f"Distribute.strategy='{strategy}'",
                                 'Distribute.logical_cpus=2'))
    assert result.returncode == 0, result.stderr[-3000:]
    results[strategy] = _results(model_dir)
    weights[strategy] = _checkpoint_weights(model_dir)
  assert results['mirrored']['replicas'] == 2
  assert_float_weights_close(weights['mirrored'], weights['one_device'],
                             at_least=20, atol=5e-6)


@pytest.mark.e2e
def test_the_best_checkpoint_holds_the_averaged_weights(lever_reference):
  model_dir = lever_reference
  best = _checkpoint_weights(model_dir, 'best')
  rolling = _checkpoint_weights(model_dir)
  # The model's trainable variables are saved once, under the optimizer's
  # list of them (the same objects), in the order of the averages.
  averaged = sorted(k for k in best if k.startswith('average/'))
  assert len(averaged) == 10  # two GRUs (3 each), BatchNorm (2), the head
  live_differs = 0
  for i in range(len(averaged)):
    value = f'optimizer/_trainable_variables/{i}/.ATTRIBUTES/VARIABLE_VALUE'
    average = f'average/{i}/.ATTRIBUTES/VARIABLE_VALUE'
    # In the best checkpoint, the model's weights are the averages ...
    np.testing.assert_array_equal(best[value], best[average])
    # ... in the rolling one, the live weights (which differ).
    live_differs += not np.array_equal(rolling[value], rolling[average])
  assert live_differs == len(averaged)


def test_the_report_labels_runs_outside_the_classic_protocol():
  from seqmnist.tools import report  # pylint: disable=g-import-not-at-top
  runs = [{'run': name, 'status': 'finished', 'bindings': {}, 'step': 10,
           'wall_seconds': 1.0, 'processes': 1,
           'results': {'test_accuracy': 0.9, 'best_val_accuracy': 0.9,
                       'train_examples_per_second': 100.0, **extra}}
          for name, extra in (
              ('old', {}), ('last', {'readout': 'last', 'max_shift': 0}),
              ('mean', {'readout': 'mean'}), ('shift', {'max_shift': 2}),
              ('both', {'readout': 'last_mean', 'max_shift': 1}))]
  table = report.markdown(runs, []).splitlines()
  rows = {line.split(' | ')[0][2:]: line for line in table[2:]
          if line.startswith('| ') and ' | finished | ' in line}
  assert set(rows) == {'old', 'last', 'mean', 'shift', 'both'}
  assert 'not the classic protocol' not in rows['old'] + rows['last']
  assert '90.00% (mean readout: not the classic protocol)' in rows['mean']
  assert ('90.00% (training images shifted by up to 2 pixels: not the '
          'classic protocol)') in rows['shift']
  assert ('90.00% (last_mean readout, training images shifted by up to 1 '
          'pixel: not the classic protocol)') in rows['both']
  # A group of seeds says it too.
  for r, seed in zip(runs[3:], (0, 1)):
    r['bindings'] = {'Trainer.seed': seed}
    r['results'].update(readout='last', max_shift=2, global_step=10)
  group_rows = [line for line in report.markdown(
      runs[3:], report.group(runs[3:])).splitlines()
                if line.startswith('| all runs')]
  assert len(group_rows) == 1
  assert ('| 90.00 ± 0.00% (training images shifted by up to 2 pixels: not '
          'the classic protocol) |') in group_rows[0]
