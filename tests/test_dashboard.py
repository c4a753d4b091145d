"""The TensorBoard dashboard: what a finished run's event files hold, and a
real TensorBoard server (launch/tensorboard.sh) serving them over HTTP."""

import json
import re
import subprocess
import time
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

from conftest import FAST, REPO, free_ports, gin_params, run_cli
from seqmnist.loop import dashboard
from test_main import _results, _tags


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory, mnist_dir):
  model_dir = tmp_path_factory.mktemp('dashboard') / 'run'
  result = run_cli('--gin_file=row.gin', f'--model_dir={model_dir}',
                   f'--data_dir={mnist_dir}',
                   *gin_params(*FAST, 'Trainer.steps=20',
                               'Trainer.eval_every=10',
                               'Trainer.checkpoint_every=10',
                               'Dashboard.probe_examples=300'))
  assert result.returncode == 0, result.stderr[-3000:]
  return model_dir


def test_event_files_hold_the_dashboard(run_dir):
  train = _tags(run_dir / 'train')
  text = train.Tensors('operative_config')
  assert "Data.order = 'row'" in text[0].tensor_proto.string_val[0].decode()

  validation = _tags(run_dir / 'validation')
  tags = set(validation.Tags()['tensors'])
  assert {'misclassified', 'saturation/gru_0', 'hidden_state/gru_0'} <= tags
  assert [e.step for e in validation.Tensors('misclassified')] == [10, 20]
  saturation = [float(tf.make_ndarray(e.tensor_proto))
                for e in validation.Tensors('saturation/gru_0')]
  assert all(0.0 <= s <= 1.0 for s in saturation)

  test = _tags(run_dir / 'test')
  table = test.Tensors('confusion_matrix_counts')[0].tensor_proto.string_val[0]
  counts = np.array([[int(v) for v in row.split('|')[2:-1]]
                     for row in table.decode().splitlines()[2:]])
  assert counts.shape == (10, 10) and counts.sum() == 10000
  # The confusion matrix is the test pass's: its diagonal is the accuracy.
  assert np.trace(counts) / 10000 == pytest.approx(
      _results(run_dir)['test_accuracy'], abs=1e-9)
  assert 'confusion_matrix' in test.Tags()['tensors']


def _get(url, data=None):
  request = urllib.request.Request(
      url, data=data, headers={'Content-Type': 'application/json'} if data
      else {})
  with urllib.request.urlopen(request, timeout=10) as response:
    body = response.read()
  return json.loads(body) if body[:1] in (b'{', b'[') else body


def test_a_real_tensorboard_serves_the_run(run_dir):
  port = free_ports(1)[0]
  server = subprocess.Popen(
      ['bash', 'launch/tensorboard.sh', str(run_dir), str(port)], cwd=REPO,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  base = f'http://localhost:{port}'
  try:
    deadline, runs = time.time() + 120, []
    while time.time() < deadline and not {'train', 'validation',
                                          'test'} <= set(runs):
      assert server.poll() is None, server.stdout.read()
      try:
        runs = _get(f'{base}/data/runs')
      except OSError:
        pass
      time.sleep(0.5)
    assert {'.', 'train', 'validation', 'test'} <= set(runs), runs

    scalars = _get(f'{base}/data/plugin/scalars/tags')
    assert {'loss', 'accuracy', 'learning_rate'} <= set(scalars['train'])
    assert {'accuracy', 'saturation/gru_0'} <= set(scalars['validation'])
    points = _get(f'{base}/data/plugin/scalars/scalars?run=validation&'
                  'tag=accuracy')
    assert [p[1] for p in points] == [10, 20]

    histograms = _get(f'{base}/data/plugin/histograms/tags')
    assert 'hidden_state/gru_0' in histograms['validation']

    images = _get(f'{base}/data/plugin/images/tags')
    assert 'misclassified' in images['validation']
    assert 'confusion_matrix' in images['test']
    entries = _get(f'{base}/data/plugin/images/images?run=test&'
                   'tag=confusion_matrix&sample=0')
    png = _get(f'{base}/data/plugin/images/individualImage?'
               f'{entries[0]["query"]}')
    assert png[:8] == b'\x89PNG\r\n\x1a\n'

    texts = _get(f'{base}/data/plugin/text/tags')
    assert 'operative_config' in texts['train']

    experiment = _get(f'{base}/data/plugin/hparams/experiment',
                      data=b'{"experimentName": ""}')
    names = {h['name'] for h in experiment['hparamInfos']}
    assert {'Model.cell', 'Model.units', 'Data.order',
            'CosineDecay.initial_learning_rate'} <= names
  finally:
    server.terminate()
    server.wait(timeout=30)


def test_tensorboard_launcher_usage(tmp_path):
  for args, message in (([], 'usage'),
                        ([str(tmp_path / 'none')], 'is not a directory'),
                        ([str(tmp_path), 'x'], 'PORT=x')):
    result = subprocess.run(['bash', 'launch/tensorboard.sh', *args],
                            cwd=REPO, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 2 and message in result.stderr


# The drawing, checked pixel by pixel -----------------------------------------


@pytest.mark.unit
def test_glyphs_are_ten_distinct_digits():
  glyphs = {d: dashboard._glyph(d, 1).tobytes() for d in range(10)}  # pylint: disable=protected-access
  assert len(set(glyphs.values())) == 10


@pytest.mark.unit
def test_misclassified_grid_shows_digit_and_both_labels():
  images = np.zeros((2, 28, 28), np.uint8)
  images[0, 10:20, 10:20] = 255
  grid = dashboard.misclassified_grid(images, [7, 1], [2, 3], columns=2)
  assert grid.shape == (1, 72, 116, 3) and grid.dtype == np.uint8
  tile = grid[0, :70, :56]
  assert (tile[20:40, 20:40] == 255).all()          # the digit, scaled x2
  band = tile[56:70]
  red = (band == dashboard.RED).all(axis=-1)
  green = (band == dashboard.GREEN).all(axis=-1)
  assert red[:, :28].any() and not red[:, 28:].any()   # predicted, left
  assert green[:, 28:].any() and not green[:, :28].any()  # true, right
  # The red pixels spell a 7: the glyph's own mask.
  ys, xs = np.nonzero(red)
  assert (red[ys.min():ys.max() + 1, xs.min():xs.max() + 1] ==
          dashboard._glyph(7)).all()  # pylint: disable=protected-access


@pytest.mark.unit
def test_confusion_image_shades_by_share_of_the_true_class():
  matrix = np.zeros((10, 10))
  matrix[3, 3], matrix[3, 5] = 75, 25
  image = dashboard.confusion_image(matrix)[0]
  cell = lambda t, p: image[16 + t * 24 + 12, 16 + p * 24 + 12]
  assert tuple(cell(0, 0)) == (255, 255, 255)
  assert cell(3, 3)[0] < cell(3, 5)[0] < 255   # 75% darker than 25%
  assert re.search(r'\| \*\*3\*\* \| 0 \| 0 \| 0 \| 75 \| 0 \| 25 \|',
                   dashboard.confusion_markdown(matrix))


@pytest.mark.unit
def test_saturation_counts_values_beyond_099():
  h = np.array([0.0, 0.5, -0.995, 0.999, 1.0, -0.98])
  assert dashboard.saturation(h) == pytest.approx(3 / 6)
