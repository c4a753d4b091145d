"""Released models (zoo/), the release command and the curves command.

A zoo entry is checked as zoo/README.md tells users to: the shipped command
given a copy of it only reports; export + predict over the full 10k test set
reproduces the accuracy in its results.json. `seqmnist.tools.release` is run on a
real finished run; `seqmnist.tools.curves` draws a real PNG from the entry's events.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import FAST, REPO, gin_params
from seqmnist.tools import report

ZOO = os.path.join(REPO, 'zoo')


def _python(module, *args, timeout=600):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO,
                        env=env, capture_output=True, text=True,
                        timeout=timeout, check=False)


def _export_and_score(model_dir, export_dir, mnist_dir, labels):
  """`seqmnist.serving.export` then `seqmnist.serving.predict --labels` over the 10k test
  images (as zoo/README.md tells users); returns predict's result."""
  exported = _python('seqmnist.serving.export', f'--model_dir={model_dir}',
                     f'--export_dir={export_dir}')
  assert exported.returncode == 0, exported.stderr[-3000:]
  return _python('seqmnist.serving.predict', f'--export_dir={export_dir}',
                 f'--labels={mnist_dir}/{labels}',
                 f'{mnist_dir}/t10k-images-idx3-ubyte.gz')


def _entries():
  return sorted(e for e in os.listdir(ZOO)
                if os.path.isdir(os.path.join(ZOO, e)))


def test_every_zoo_entry_is_a_small_run_dir_documented_in_the_readme():
  readme = open(os.path.join(ZOO, 'README.md')).read()
  assert _entries(), 'zoo/ holds no entry'
  for entry in _entries():
    path = os.path.join(ZOO, entry)
    for name in ('results.json', 'operative_config.gin', 'best/checkpoint',
                 'checkpoints/checkpoint'):
      assert os.path.exists(os.path.join(path, name)), (entry, name)
    size = sum(os.path.getsize(os.path.join(d, f))
               for d, _, files in os.walk(path) for f in files)
    # Two checkpoints (best, newest), each the weights, the optimizer's
    # state and the weight average where the recipe keeps one: 15 MB for
    # the two GRU layers of 256 (617k parameters), 2 MB for one of 128.
    assert size < 16e6, (entry, size)
    assert f'zoo/{entry}' in readme, entry


# Each entry and the shipped gin file that made it.
SHIPPED = {'row_gru': 'gin/row.gin', 'pixel_gru': 'gin/pixel.gin',
           'permuted_gru': 'gin/permuted.gin',
           'permuted_dilated_gru': 'gin/permuted_dilated.gin',
           'row_stacked_gru': 'gin/row_stacked.gin'}


def test_every_zoo_entry_is_checked_below():
  assert sorted(SHIPPED) == _entries()


@pytest.mark.parametrize('entry, gin_file', sorted(SHIPPED.items()))
def test_a_zoo_entry_reports_as_finished_and_its_export_reproduces_it(
    entry, gin_file, tmp_path, mnist_dir):
  copy = tmp_path / entry
  shutil.copytree(os.path.join(ZOO, entry), copy)
  files = {p: (copy / p).read_bytes() for p in ('results.json',
                                                'operative_config.gin')}
  stated = json.loads(files['results.json'])
  shipped = _python('seqmnist.main', f'--gin_file={gin_file}',
                    f'--model_dir={copy}', f'--data_dir={mnist_dir}')
  assert shipped.returncode == 0, shipped.stderr[-3000:]
  assert 'Run already finished' in shipped.stderr
  assert 'Training from step' not in shipped.stderr
  for path, content in files.items():  # reporting rewrites nothing
    assert (copy / path).read_bytes() == content, path
  checked = _export_and_score(copy, tmp_path / 'export', mnist_dir,
                              't10k-labels-idx1-ubyte.gz')
  assert checked.returncode == 0, checked.stderr[-3000:]
  # The entry was trained and scored on another CPU: oneDNN's kernels
  # there differ in the low bits, which can flip a near-tie of the 10,000
  # (784-step sequences most of all). A few images of slack, no more.
  match = re.match(r'accuracy (\d\.\d{4}) \((\d+) of 10000 images right, '
                   r'(\d+) wrong\)', checked.stdout)
  assert match, checked.stdout
  right = round(stated['test_accuracy'] * 10000)
  assert abs(int(match.group(2)) - right) <= 5, (match.group(0), right)


def test_predict_labels_of_another_length_is_one_line(tmp_path, mnist_dir):
  checked = _export_and_score(f'{ZOO}/row_gru', tmp_path / 'export',
                              mnist_dir, 'train-labels-idx1-ubyte.gz')
  assert checked.returncode == 2
  assert checked.stderr.strip().splitlines()[-1] == (
      f'seqmnist.serving.predict: error: --labels={mnist_dir}/train-labels-idx1-'
      'ubyte.gz holds 60000 labels for 10000 images')


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory, mnist_dir):
  """A short real run with the dashboard's histograms and images on."""
  run = tmp_path_factory.mktemp('release') / 'run'
  result = _python('seqmnist.main', '--gin_file=row.gin', f'--model_dir={run}',
                   f'--data_dir={mnist_dir}',
                   *gin_params(*FAST, 'Trainer.steps=20', 'Trainer.eval_every=10',
                               'Trainer.checkpoint_every=10',
                               'Trainer.histogram_every=10'))
  assert result.returncode == 0, result.stderr[-3000:]
  return run


def _plugins(folder):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  acc = event_accumulator.EventAccumulator(str(folder), size_guidance={
      event_accumulator.TENSORS: 0})
  acc.Reload()
  return {tag: acc.SummaryMetadata(tag).plugin_data.plugin_name
          for tag in acc.Tags()['tensors']}


def test_release_keeps_a_run_dir_without_histograms_and_images(finished_run,
                                                               tmp_path):
  out = tmp_path / 'zoo_entry'
  result = _python('seqmnist.tools.release', f'--model_dir={finished_run}',
                   f'--out={out}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'released {finished_run} as {out}' in result.stdout
  assert sorted(os.listdir(out / 'checkpoints')) == [
      'checkpoint', 'ckpt-20.data-00000-of-00001', 'ckpt-20.index']
  before = set(_plugins(finished_run / 'validation').values()) | set(
      _plugins(finished_run / 'train').values())
  assert {'histograms', 'images'} & before  # the source had them
  after = set(_plugins(out / 'validation').values()) | set(
      _plugins(out / 'train').values())
  assert not {'histograms', 'images'} & after
  assert report.validation_curve(str(out)) == report.validation_curve(
      str(finished_run))
  assert report.scalar_curve(str(out), 'train', 'loss') == report.scalar_curve(
      str(finished_run), 'train', 'loss')
  assert not [e for e in os.listdir(tmp_path) if e.startswith('.release-')]


def test_release_refuses_an_unfinished_run_and_an_existing_out(finished_run,
                                                               tmp_path):
  unfinished = tmp_path / 'unfinished'
  shutil.copytree(finished_run, unfinished)
  os.remove(unfinished / 'results.json')
  result = _python('seqmnist.tools.release', f'--model_dir={unfinished}',
                   f'--out={tmp_path / "out"}')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(
      f'seqmnist.tools.release: error: --model_dir={unfinished} is not finished')
  (tmp_path / 'taken').mkdir()
  result = _python('seqmnist.tools.release', f'--model_dir={finished_run}',
                   f'--out={tmp_path / "taken"}')
  assert result.returncode == 2
  assert 'exists; give a new folder' in result.stderr
  assert sorted(os.listdir(tmp_path)) == ['taken', 'unfinished']


def test_curves_draw_a_png_from_a_zoo_entry(tmp_path):
  out = tmp_path / 'row.png'
  result = _python('seqmnist.tools.curves', f'--model_dir={ZOO}/row_gru',
                   f'--out={out}', '--anchor=LSTM (Day25)=98.39',
                   '--accuracy_from=95', '--title=row')
  assert result.returncode == 0, result.stderr[-3000:]
  data = out.read_bytes()
  assert data[:8] == b'\x89PNG\r\n\x1a\n' and len(data) > 10_000
  assert 'directory_watcher' not in result.stderr  # no per-file log lines


@pytest.mark.unit
def test_curves_title_a_run_outside_the_classic_protocol(tmp_path):
  from seqmnist.tools import curves  # pylint: disable=g-import-not-at-top
  shifted = tmp_path / 'shifted'
  shutil.copytree(os.path.join(ZOO, 'row_gru'), shifted)
  config = shifted / 'operative_config.gin'
  config.write_text(config.read_text() +
                    "Data.max_shift = 2\nModel.readout = 'mean'\n")
  data = curves.curves([os.path.join(ZOO, 'row_gru'), str(shifted)])
  assert [r['departures'] for r in data] == [
      [], ['mean readout', 'training images shifted by up to 2 pixels']]
  assert curves.figure_title('row', data) == (
      'row\nshifted: mean readout, training images shifted by up to 2 '
      'pixels (not the classic protocol)')
  assert curves.figure_title(None, data[:1]) is None
  out = tmp_path / 'both.png'
  curves.draw([os.path.join(ZOO, 'row_gru'), str(shifted)], str(out))
  assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


@pytest.mark.parametrize('anchor', ['LSTM', 'LSTM=101'])
def test_curves_bad_anchor_is_one_line(anchor, tmp_path):
  result = _python('seqmnist.tools.curves', f'--model_dir={ZOO}/row_gru',
                   f'--out={tmp_path / "x.png"}', f'--anchor={anchor}')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      f'seqmnist.tools.curves: error: --anchor={anchor!r} must be LABEL=PERCENT '
      'with a percent in (0, 100], e.g. --anchor="tuned LSTM=98.9"')
  assert not (tmp_path / 'x.png').exists()


def test_curves_accuracy_axis_out_of_range_is_one_line(tmp_path):
  result = _python('seqmnist.tools.curves', f'--model_dir={ZOO}/row_gru',
                   f'--out={tmp_path / "x.png"}', '--accuracy_from=100')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      'seqmnist.tools.curves: error: --accuracy_from=100 must be a percent in '
      '[0, 100)')
  assert not (tmp_path / 'x.png').exists()
