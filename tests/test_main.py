"""The command line, end to end: real runs on real MNIST, in subprocesses."""

import gzip
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from conftest import FAST, gin_params, run_cli

RESULT_KEYS = {'test_accuracy', 'test_loss', 'best_val_accuracy', 'best_step',
               'global_step', 'train_examples_per_second', 'wall_seconds'}


def _train(model_dir, data_dir, *params):
  result = run_cli('--gin_file=row.gin', f'--model_dir={model_dir}',
                   f'--data_dir={data_dir}', *gin_params(*FAST, *params))
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def _results(model_dir):
  with open(os.path.join(model_dir, 'results.json')) as f:
    return json.load(f)


def _tags(event_dir):
  acc = event_accumulator.EventAccumulator(
      str(event_dir), size_guidance={event_accumulator.TENSORS: 0})
  acc.Reload()
  return acc


def _weights(checkpoint_path):
  reader = tf.train.load_checkpoint(checkpoint_path)
  return {name: reader.get_tensor(name)
          for name in reader.get_variable_to_shape_map()
          if name.endswith('VARIABLE_VALUE')}


def test_short_run_writes_the_whole_run_directory(tmp_path, mnist_dir):
  model_dir = tmp_path / 'run'
  result = _train(model_dir, mnist_dir, 'Trainer.steps=40',
                  'Trainer.eval_every=20', 'Trainer.checkpoint_every=20',
                  'Trainer.histogram_every=20')
  assert 'test accuracy' in result.stdout
  for name in ('checkpoints', 'best', 'train', 'validation'):
    assert (model_dir / name).is_dir(), name
  operative = (model_dir / 'operative_config.gin').read_text()
  assert "Data.order = 'row'" in operative
  assert 'Model.units = 16' in operative
  results = _results(model_dir)
  assert RESULT_KEYS <= set(results)
  assert results['global_step'] == 40
  assert results['best_step'] in (20, 40)
  # 40 steps of a 16-unit GRU already beat chance (10%) by far (0.36 seen).
  assert results['test_accuracy'] > 0.25
  assert results['train_examples_per_second'] > 0
  assert tf.train.latest_checkpoint(str(model_dir / 'checkpoints')).endswith(
      'ckpt-40')
  assert tf.train.latest_checkpoint(str(model_dir / 'best'))

  train = _tags(model_dir / 'train')
  tags = set(train.Tags()['tensors'])
  assert {'loss', 'accuracy', 'learning_rate', 'examples_per_second',
          'grad_norm', 'clipped_grad_norm', 'clipped_fraction'} <= tags
  assert [e.step for e in train.Tensors('loss')] == [10, 20, 30, 40]
  histograms = {t for t in tags if t.startswith(('gradients/',
                                                 'clipped_gradients/'))}
  assert 'gradients/gru_0/gru_cell/kernel' in histograms
  assert 'clipped_gradients/head/kernel' in histograms
  assert [e.step for e in train.Tensors('gradients/head/bias')] == [20, 40]
  validation = _tags(model_dir / 'validation')
  assert [e.step for e in validation.Tensors('accuracy')] == [20, 40]


def test_rerun_resumes_to_the_new_step_count(tmp_path, mnist_dir):
  model_dir = tmp_path / 'run'
  common = ('Trainer.eval_every=10', 'Trainer.checkpoint_every=10')
  _train(model_dir, mnist_dir, 'Trainer.steps=20', *common)
  first = _results(model_dir)
  assert (first['global_step'], first['steps_this_run']) == (20, 20)

  result = _train(model_dir, mnist_dir, 'Trainer.steps=40', *common)
  resumed = _results(model_dir)
  assert (resumed['global_step'], resumed['steps_this_run']) == (40, 20)
  assert 'Resumed from' in result.stderr
  loss_steps = [e.step for e in _tags(model_dir / 'train').Tensors('loss')]
  assert loss_steps == [10, 20, 30, 40]

  # A finished run just reports, and changes nothing.
  before = (model_dir / 'results.json').read_text()
  again = _train(model_dir, mnist_dir, 'Trainer.steps=40', *common)
  assert 'already finished' in again.stderr
  assert (model_dir / 'results.json').read_text() == before


def test_same_seed_same_run(tmp_path, mnist_dir):
  runs = []
  for name, seed in (('a', 3), ('b', 3), ('c', 4)):
    model_dir = tmp_path / name
    _train(model_dir, mnist_dir, 'Trainer.steps=20', f'Trainer.seed={seed}',
           'Trainer.eval_every=20', 'Trainer.checkpoint_every=20')
    runs.append((_results(model_dir), _weights(
        tf.train.latest_checkpoint(str(model_dir / 'checkpoints')))))
  (res_a, w_a), (res_b, w_b), (_, w_c) = runs
  assert res_a['test_loss'] == res_b['test_loss']
  assert w_a.keys() == w_b.keys() and w_a
  for name in w_a:
    np.testing.assert_array_equal(w_a[name], w_b[name], err_msg=name)
  assert any(not np.array_equal(w_a[n], w_c[n]) for n in w_a)


def test_console_script_is_installed():
  assert shutil.which('seqmnist'), 'pip install -e . provides `seqmnist`'


# Bad input: one line, exit code 2, and no run directory left behind. ------


def _corrupt_checksum(data_dir):
  # Checksums are of the uncompressed content: the fastest gzip level will do
  # (here and in the rewrites below).
  path = os.path.join(data_dir, 'train-labels-idx1-ubyte.gz')
  with gzip.open(path, 'rb') as f:
    content = f.read()
  with gzip.open(path, 'wb', compresslevel=1) as f:
    f.write(content[:8] + bytes([(content[8] + 1) % 10]) + content[9:])


def _truncate_test_images(data_dir):
  path = os.path.join(data_dir, 't10k-images-idx3-ubyte.gz')
  with gzip.open(path, 'rb') as f:
    content = f.read()
  with gzip.open(path, 'wb', compresslevel=1) as f:
    f.write(content[:-100])


def _wrong_magic(data_dir):
  path = os.path.join(data_dir, 'train-images-idx3-ubyte.gz')
  with gzip.open(path, 'rb') as f:
    content = f.read()
  with gzip.open(path, 'wb', compresslevel=1) as f:
    f.write(b'\x00\x00\x08\x01' + content[4:])


def _label_out_of_range(data_dir):
  def rewrite(name, change):
    path = os.path.join(data_dir, name)
    with gzip.open(path, 'rb') as f:
      content = f.read()
    with gzip.open(path, 'wb', compresslevel=1) as f:
      f.write(change(content))
  rewrite('t10k-labels-idx1-ubyte.gz', lambda c: c[:20] + b'\x0c' + c[21:])
  # Not MNIST's own files any more (which are refused under another name).
  for name in ('train-images-idx3-ubyte.gz', 't10k-images-idx3-ubyte.gz'):
    rewrite(name, lambda c: c[:-1] + b'\x01')
  rewrite('train-labels-idx1-ubyte.gz',
          lambda c: c[:-1] + bytes([(c[-1] + 1) % 10]))


def _remove_test_labels(data_dir):
  os.remove(os.path.join(data_dir, 't10k-labels-idx1-ubyte.gz'))


@pytest.mark.parametrize('params, damage, message', [
    (['Trainer.stepz=5'], None,
     "Configurable 'Trainer' doesn't have a parameter named 'stepz'"),
    (["Data.order='diagonal'"], None,
     "Data.order='diagonal' is not one of 'row', 'pixel', 'permuted'"),
    (['Model.units=0'], None,
     'Model.units=0 must be an integer from 1 to 8,192'),
    (['Data.batch_size=60000'], None,
     'Data.batch_size=60000 is larger than the training split'),
    ([], _remove_test_labels, 'lacks t10k-labels-idx1-ubyte'),
    ([], _corrupt_checksum, 'train-labels-idx1-ubyte.gz fails its checksum'),
    ([], _truncate_test_images, 't10k-images-idx3-ubyte.gz is truncated'),
    ([], _wrong_magic, 'train-images-idx3-ubyte.gz has a wrong magic number'),
    # kmnist: no MNIST checksum to trip first; the label check still runs.
    (["Data.dataset='kmnist'"], _label_out_of_range,
     't10k-labels-idx1-ubyte.gz has label 12; labels must be in 0..9'),
], ids=['unknown-name', 'bad-order', 'zero-units', 'batch-too-large',
        'missing-file', 'checksum', 'truncated', 'magic', 'label-range'])
def test_bad_input_fails_cleanly(tmp_path, mnist_copy, params, damage,
                                 message):
  if damage:
    damage(str(mnist_copy))
  model_dir = tmp_path / 'run'
  result = run_cli('--gin_file=row.gin', f'--model_dir={model_dir}',
                   f'--data_dir={mnist_copy}', *gin_params(*params))
  _assert_clean_failure(result, message)
  assert not model_dir.exists()


def test_unwritable_model_dir_fails_cleanly(tmp_path, mnist_dir):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  result = run_cli('--gin_file=row.gin', f'--model_dir={blocker}/run',
                   f'--data_dir={mnist_dir}')
  _assert_clean_failure(result, f'--model_dir={blocker}/run cannot be '
                        f'created: {blocker} is not a directory')


def _assert_clean_failure(result, message):
  assert result.returncode == 2, result.stderr[-2000:]
  assert 'Traceback' not in result.stderr
  errors = [line for line in result.stderr.splitlines()
            if line.startswith('seqmnist: error: ')]
  assert len(errors) == 1, result.stderr[-2000:]
  assert message in errors[0]


@pytest.mark.parametrize('params', [
    ("Model.precision='mixed_bfloat16'",),
    # float16 compute on the CPU (slow, but the same code as on a GPU): the
    # loss is scaled, gradients unscaled before clipping, overflowing steps
    # skipped by Keras' LossScaleOptimizer.
    ("Model.precision='mixed_float16'",),
    ('Trainer.jit_compile=True',),
], ids=['bf16', 'fp16-loss-scaled', 'xla'])
def test_precision_and_xla_options_train(tmp_path, mnist_dir, params):
  model_dir = tmp_path / 'run'
  _train(model_dir, mnist_dir, 'Trainer.steps=40', 'Trainer.eval_every=40',
         'Trainer.checkpoint_every=40', *params)
  results = _results(model_dir)
  assert results['global_step'] == 40
  assert results['test_accuracy'] > 0.25  # chance is 0.10
  weights = _weights(tf.train.latest_checkpoint(str(model_dir /
                                                    'checkpoints')))
  if 'mixed_float16' in params[0]:
    scale = [v for k, v in weights.items() if 'dynamic_scale' in k]
    assert len(scale) == 1 and scale[0] > 0  # the loss scale is saved
  assert all(np.all(np.isfinite(w)) for w in weights.values())


def test_xla_with_batch_norm_over_replicas_is_refused(tmp_path, mnist_dir):
  # (One replica compiles fine; two fail inside XLA on the BN all-reduce.)
  result = run_cli('--gin_file=row.gin', f'--model_dir={tmp_path}/run',
                   f'--data_dir={mnist_dir}',
                   *gin_params('Trainer.jit_compile=True',
                               "Distribute.strategy='mirrored'",
                               'Distribute.logical_cpus=2'))
  _assert_clean_failure(result, "Trainer.jit_compile=True cannot compile "
                        "Model.batch_norm=True's all-reduce over 2 replicas")
  assert not (tmp_path / 'run').exists()
