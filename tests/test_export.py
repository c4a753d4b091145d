"""SavedModel export and the predict CLI, on finished tiny runs."""

import gzip
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import FAST, REPO, gin_params, run_cli
from seqmnist.data import idx
from test_main import _results

TEST_IMAGES = 't10k-images-idx3-ubyte.gz'


def _module(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run([sys.executable, '-m', *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=600,
                        check=False)


@pytest.fixture(scope='module', params=[
    ('row.gin', ('Trainer.steps=20', 'Trainer.eval_every=10')),
    # 784 steps of one pixel, in the seeded permuted order: only 4 steps.
    ('permuted.gin', ('Trainer.steps=4', 'Trainer.eval_every=4',
                      'Trainer.steps_per_loop=4', 'Trainer.summary_every=4')),
], ids=['row', 'permuted'])
def exported(request, tmp_path_factory, mnist_dir):
  gin_file, params = request.param
  root = tmp_path_factory.mktemp('export')
  model_dir, export_dir = root / 'run', root / 'export'
  result = run_cli(f'--gin_file={gin_file}', f'--model_dir={model_dir}',
                   f'--data_dir={mnist_dir}',
                   *gin_params(*FAST, 'Trainer.checkpoint_every=10', *params))
  assert result.returncode == 0, result.stderr[-3000:]
  result = _module('seqmnist.serving.export', f'--model_dir={model_dir}',
                   f'--export_dir={export_dir}')
  assert result.returncode == 0, result.stderr[-3000:]
  return model_dir, export_dir


def test_saved_model_matches_the_runs_test_accuracy_exactly(exported,
                                                            mnist_dir):
  model_dir, export_dir = exported
  serve = tf.saved_model.load(str(export_dir)).signatures['serving_default']
  images = idx.read(os.path.join(mnist_dir, TEST_IMAGES), expected_ndim=3)
  labels = idx.read(os.path.join(mnist_dir, 't10k-labels-idx1-ubyte.gz'),
                    expected_ndim=1)
  correct = 0
  for start in range(0, len(images), 2000):
    probs = serve(images=tf.constant(images[start:start + 2000]))[
        'probabilities'].numpy()
    assert probs.shape[1] == 10
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    correct += int((probs.argmax(axis=1) == labels[start:start + 2000]).sum())
  assert correct / len(images) == _results(model_dir)['test_accuracy']


def test_predict_cli_on_pngs_and_an_idx_file(exported, mnist_dir, tmp_path):
  _, export_dir = exported
  images = idx.read(os.path.join(mnist_dir, TEST_IMAGES), expected_ndim=3)
  pngs = []
  for i in range(3):
    path = tmp_path / f'digit{i}.png'
    path.write_bytes(tf.io.encode_png(images[i][..., None]).numpy())
    pngs.append(str(path))
  subset = tmp_path / 'first50-idx3-ubyte.gz'
  header = b'\x00\x00\x08\x03' + b''.join(
      int(d).to_bytes(4, 'big') for d in (50, 28, 28))
  with gzip.open(subset, 'wb') as f:
    f.write(header + images[:50].tobytes())

  result = _module('seqmnist.serving.predict', f'--export_dir={export_dir}', *pngs,
                   str(subset))
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 3 + 50
  serve = tf.saved_model.load(str(export_dir)).signatures['serving_default']
  expected = serve(images=tf.constant(images[:50]))['probabilities'].numpy()
  for i, line in enumerate(lines[3:]):
    digit = int(expected[i].argmax())
    assert line == (f'first50-idx3-ubyte.gz[{i}]: {digit} '
                    f'(p={expected[i, digit]:.3f})')
  for i, line in enumerate(lines[:3]):  # a PNG gives its image's answer
    assert line.startswith(f'digit{i}.png: {int(expected[i].argmax())} ')


def test_export_and_predict_errors_are_one_line(exported, tmp_path):
  model_dir, export_dir = exported
  cases = [
      (('seqmnist.serving.export', f'--model_dir={model_dir}',
        f'--export_dir={export_dir}'), 'already exists'),
      (('seqmnist.serving.export', f'--model_dir={tmp_path}',
        f'--export_dir={tmp_path}/x'), 'not a seqmnist run directory'),
      (('seqmnist.serving.predict', f'--export_dir={export_dir}',
        str(tmp_path / 'nope.png')), 'nope.png does not exist'),
      (('seqmnist.serving.predict', f'--export_dir={tmp_path}/none', 'a.png'),
       'is not a SavedModel folder'),
  ]
  for args, message in cases:
    result = _module(*args)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [l for l in result.stderr.splitlines() if ': error: ' in l
              and l.startswith('seqmnist.')]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert 'Traceback' not in result.stderr
  assert not os.path.exists(tmp_path / 'x')


def test_predict_pointed_at_a_run_dir_says_to_export_it(exported):
  model_dir, _ = exported
  result = _module('seqmnist.serving.predict', f'--export_dir={model_dir}', 'a.png')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      f'seqmnist.serving.predict: error: --export_dir={model_dir} is not a SavedModel '
      'folder (it is a run directory: export it first with python -m '
      'seqmnist.serving.export)')


def test_an_rgba_png_drawn_through_alpha_reads_as_its_digit(
    exported, mnist_dir, tmp_path):
  # What drawing apps export: black strokes whose alpha is the ink, on a
  # transparent ground. Made from real test digits; predict must answer as
  # for the same digits in MNIST's own grayscale.
  _, export_dir = exported
  images = idx.read(os.path.join(mnist_dir, TEST_IMAGES), expected_ndim=3)
  gray, rgba = [], []
  for i in range(5):
    digit = images[i]
    g = tmp_path / f'gray{i}.png'
    g.write_bytes(tf.io.encode_png(digit[..., None]).numpy())
    pixels = np.zeros((28, 28, 4), np.uint8)
    pixels[..., 3] = digit  # RGB stays black: only alpha carries the digit
    r = tmp_path / f'rgba{i}.png'
    r.write_bytes(tf.io.encode_png(pixels).numpy())
    gray.append(str(g))
    rgba.append(str(r))
  result = _module('seqmnist.serving.predict', f'--export_dir={export_dir}', *gray,
                   *rgba)
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.splitlines()
  answers = [line.split(': ', 1)[1] for line in lines]
  assert answers[:5] == answers[5:], lines


def test_a_blank_image_is_flagged(exported, tmp_path):
  _, export_dir = exported
  blank = tmp_path / 'blank.png'
  blank.write_bytes(tf.io.encode_png(np.zeros((28, 28, 1), np.uint8)).numpy())
  result = _module('seqmnist.serving.predict', f'--export_dir={export_dir}',
                   str(blank))
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip().endswith(
      '[blank image: no ink, the answer means nothing]')


def test_the_export_is_readable_as_the_umask_allows(exported, tmp_path):
  model_dir, _ = exported
  export_dir = tmp_path / 'shared_export'
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run(
      ['bash', '-c', f'umask 022 && {sys.executable} -m seqmnist.serving.export '
       f'--model_dir={model_dir} --export_dir={export_dir}'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
      check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert oct(os.stat(export_dir).st_mode & 0o777) == '0o755'
  for root, _, files in os.walk(export_dir):
    assert oct(os.stat(root).st_mode & 0o777) == '0o755', root
    for name in files:
      path = os.path.join(root, name)
      assert oct(os.stat(path).st_mode & 0o777) == '0o644', path
