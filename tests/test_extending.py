"""BUILD.md's "Extending", done exactly as it says: a new cell, a new
dataset and a new sweep backend, each one file registered the documented way
and run through the real framework; a new action, one module in
loop/actions/. (A new setting on an old run dir: tests/test_rundir.py; a new
loss term: tests/test_levers.py.)"""

import json
import os
import subprocess
import sys
import textwrap

import gin
import pytest

from conftest import FAST, REPO, gin_params

from seqmnist import gin_files
from seqmnist.errors import ConfigError
from seqmnist.loop import experiment
from seqmnist.model import cells
from seqmnist.model import network

# BUILD.md's worked example of a new cell, verbatim: one file.
MY_CELLS = textwrap.dedent('''\
    """An IndRNN cell (Li et al. 2018): h = relu(W x + u * h + b)."""
    import keras

    from seqmnist.model import cells


    @keras.saving.register_keras_serializable(package='my_cells')
    class IndRNNCell(keras.layers.Layer):

      def __init__(self, units, kernel_initializer='glorot_uniform',
                   **kwargs):
        super().__init__(**kwargs)
        self.units = self.state_size = self.output_size = units
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

      def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.units), name='kernel',
            initializer=self.kernel_initializer)
        self.recurrent_kernel = self.add_weight(
            shape=(self.units,), name='recurrent_kernel',
            initializer=keras.initializers.RandomUniform(0.0, 1.0, seed=0))
        self.bias = self.add_weight(shape=(self.units,), name='bias',
                                    initializer='zeros')

      def call(self, inputs, states):
        h = keras.ops.relu(keras.ops.matmul(inputs, self.kernel) +
                           states[0] * self.recurrent_kernel + self.bias)
        return h, [h]

      def get_config(self):
        return dict(super().get_config(), units=self.units,
                    kernel_initializer=keras.initializers.serialize(
                        self.kernel_initializer))


    def _indrnn(layer):
      arguments = dict(layer.arguments)
      cell = IndRNNCell(arguments.pop('units'),
                        arguments.pop('kernel_initializer'))
      del arguments['recurrent_initializer']  # a vector here: its own init
      return keras.layers.RNN(cell, **arguments)


    cells.register(cells.Cell('indrnn', _indrnn, gates=1))
    ''')


@pytest.fixture
def my_cells(tmp_path):
  (tmp_path / 'my_cells.py').write_text(MY_CELLS)
  (tmp_path / 'indrnn.gin').write_text(
      "import my_cells\n\nModel.cell = 'indrnn'\n")
  return tmp_path


def test_a_new_cell_is_one_file_and_trains_through_the_cli(my_cells,
                                                             mnist_dir):
  model_dir = my_cells / 'run'
  command = [sys.executable, '-m', 'seqmnist.main', '--gin_file=row.gin',
             f'--gin_file={my_cells / "indrnn.gin"}', '--allow_gin_imports',
             f'--model_dir={model_dir}', f'--data_dir={mnist_dir}',
             *gin_params(*FAST, 'Trainer.steps=100', 'Trainer.eval_every=100',
                         'Model.units=32')]
  env = dict(os.environ, PYTHONPATH=str(my_cells), TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run(command, capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads((model_dir / 'results.json').read_text())
  # 100 steps of a 32-unit IndRNN on rows: twice chance (0.10) or more
  # (29% after 60 steps).
  assert results['test_accuracy'] > 0.2, results
  operative = (model_dir / 'operative_config.gin').read_text()
  assert "Model.cell = 'indrnn'" in operative
  # The same command again only reports the finished run.
  again = subprocess.run(command, capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=600, check=False)
  assert again.returncode == 0, again.stderr[-3000:]
  assert 'Run already finished at step 100' in again.stderr


def test_a_sweep_over_a_new_cell_needs_and_passes_allow_gin_imports(
    my_cells, mnist_dir):
  """A user's cell swept like a shipped one: without --allow_gin_imports
  the sweep refuses the gin import in one line and writes nothing; with it,
  every point runs with it."""
  runs_dir = my_cells / 'sweep'
  command = [sys.executable, '-m', 'seqmnist.tools.sweep',
             '--gin_file=row.gin', f'--gin_file={my_cells / "indrnn.gin"}',
             f'--runs_dir={runs_dir}', f'--data_dir={mnist_dir}',
             *gin_params(*FAST, 'Trainer.steps=20', 'Trainer.eval_every=20'),
             '--sweep=Model.units=8,16']
  env = dict(os.environ, PYTHONPATH=str(my_cells), TF_CPP_MIN_LOG_LEVEL='2')

  def sweep(*extra):
    return subprocess.run(command + list(extra), capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=600,
                          check=False)

  refused = sweep()
  assert refused.returncode == 2, refused.stderr[-3000:]
  (line,) = [l for l in refused.stderr.splitlines() if l.strip()]
  assert line.startswith('seqmnist.tools.sweep: error: grid point 0 '
                         '(Model.units=8): '), line
  assert line.endswith('pass --allow_gin_imports if you trust this config')
  assert not runs_dir.exists()
  ran = sweep('--allow_gin_imports')
  assert ran.returncode == 0, ran.stderr[-3000:]
  for units in (8, 16):
    point = runs_dir / f'Model.units={units}'
    operative = (point / 'operative_config.gin').read_text()
    assert "Model.cell = 'indrnn'" in operative
    assert f'Model.units = {units}' in operative
    results = json.loads((point / 'results.json').read_text())
    assert results['global_step'] == 20, results


def test_a_registered_cell_reaches_every_table(my_cells, monkeypatch):
  """Registered in-process: the memory check, the gate-init check and the
  fused-op choice read the registry, not a table of their own."""
  def memory(cell):
    gin_files.parse(['row.gin'], [f"Model.cell='{cell}'"])
    return experiment.Configs.from_gin().memory_bytes()

  monkeypatch.syspath_prepend(str(my_cells))
  monkeypatch.setattr(cells.CELLS, 'entries',
                      dict(cells.CELLS.entries))  # undone after
  import importlib  # pylint: disable=g-import-not-at-top
  importlib.import_module('my_cells')
  try:
    # One weight block, as the plain RNN: the same estimate, below GRU's 3.
    assert memory('indrnn') == memory('simple') < memory('gru')
    # Not a cell the op covers: 'auto' takes Keras' layer, 'fused' is
    # refused naming the cell.
    assert not network.uses_fused(network.ModelConfig(cell='indrnn'), 28)
    with pytest.raises(ConfigError, match="no recurrence for "
                       "Model.cell='indrnn'"):
      network.uses_fused(network.ModelConfig(cell='indrnn',
                                             implementation='fused'), 28)
    with pytest.raises(ConfigError, match="Model.gate_init='chrono' needs "
                       "gates; Model.cell='indrnn' has none"):
      gin_files.parse(['row.gin'], ["Model.cell='indrnn'",
                                 "Model.gate_init='chrono'"])
      experiment.Configs.from_gin()
    with pytest.raises(ConfigError, match="Model.cell='nope' is not one of "
                       "'gru', 'lstm', 'simple', 'indrnn'"):
      cells.get('nope')
  finally:
    sys.modules.pop('my_cells', None)
    gin.clear_config()  # the bindings above name a cell that is gone


# BUILD.md's worked example of a new dataset, verbatim: one file.
MY_DATASETS = textwrap.dedent('''\
    """Stripes: 14x14 images of one bright line, 4 classes by direction."""
    from seqmnist.data import datasets

    datasets.register(datasets.Dataset(
        'stripes', mean=0.0714, std=0.2575,
        statistics='computed from its training images',
        class_names=('horizontal', 'vertical', 'diagonal', 'anti-diagonal'),
        image_size=14))
    ''')


def _stripes(n, seed):
  """n 14x14 images: a line across a random row, column or diagonal."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 4, n).astype(np.uint8)
  images = np.zeros((n, 14, 14), np.uint8)
  for image, label in zip(images, labels):
    k = rng.integers(0, 14)
    if label == 0:
      image[k, :] = 255
    elif label == 1:
      image[:, k] = 255
    elif label == 2:
      np.fill_diagonal(image, 255)
    else:
      np.fill_diagonal(np.fliplr(image), 255)
  return images, labels


def _write_idx(path, array):
  import numpy as np  # pylint: disable=g-import-not-at-top
  header = bytes([0, 0, 8, array.ndim]) + b''.join(
      int(d).to_bytes(4, 'big') for d in array.shape)
  path.write_bytes(header + np.ascontiguousarray(array).tobytes())


def test_a_new_dataset_is_one_file_and_trains_exports_and_predicts(tmp_path):
  (tmp_path / 'my_datasets.py').write_text(MY_DATASETS)
  (tmp_path / 'stripes.gin').write_text(
      "import my_datasets\n\nData.dataset = 'stripes'\n"
      'Data.validation_size = 100\nData.batch_size = 32\n')
  data_dir = tmp_path / 'data'
  data_dir.mkdir()
  for split, n, seed in (('train', 600, 0), ('t10k', 200, 1)):
    images, labels = _stripes(n, seed)
    _write_idx(data_dir / f'{split}-images-idx3-ubyte', images)
    _write_idx(data_dir / f'{split}-labels-idx1-ubyte', labels)
  env = dict(os.environ, PYTHONPATH=str(tmp_path), TF_CPP_MIN_LOG_LEVEL='2')

  def tool(module, *args):
    return subprocess.run([sys.executable, '-m', module, *args],
                          capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=600, check=False)

  model_dir = tmp_path / 'run'
  result = tool('seqmnist.main', '--gin_file=row.gin',
                f'--gin_file={tmp_path / "stripes.gin"}',
                '--allow_gin_imports', f'--model_dir={model_dir}',
                f'--data_dir={data_dir}',
                *gin_params(*FAST, 'Trainer.steps=150',
                            'Trainer.eval_every=50', 'Model.units=32'))
  assert result.returncode == 0, result.stderr[-3000:]
  # Its own files are not verified (no published checksum), and it says so.
  assert "no published checksum of Data.dataset='stripes'" in result.stderr
  results = json.loads((model_dir / 'results.json').read_text())
  assert results['test_accuracy'] > 0.6, results  # 4 classes: chance 0.25
  # The export takes 14x14 images, and predict scores them to the figure.
  exported = tmp_path / 'export'
  made = tool('seqmnist.serving.export', f'--model_dir={model_dir}',
              f'--export_dir={exported}', '--allow_gin_imports')
  assert made.returncode == 0, made.stderr[-3000:]
  scored = tool('seqmnist.serving.predict', f'--export_dir={exported}',
                f'--labels={data_dir / "t10k-labels-idx1-ubyte"}',
                str(data_dir / 't10k-images-idx3-ubyte'))
  assert scored.returncode == 0, scored.stderr[-3000:]
  right = round(results['test_accuracy'] * 200)
  assert scored.stdout.startswith(
      f'accuracy {results["test_accuracy"]:.4f} ({right} of 200 images '
      'right'), scored.stdout


# BUILD.md's worked example of a new sweep backend, verbatim: one file.
MY_BACKENDS = textwrap.dedent('''\
    """A sweep backend that prints each point's command, one a line (for
    GNU parallel, xargs or a batch system of your own)."""
    import shlex
    import sys

    from seqmnist.tools import sweep_backends
    from seqmnist.tools import sweep_grid


    def _print_commands(sweep, options, steps):
      del steps  # every point is printed; a finished one only reports
      for point in sweep.points():
        command = sweep_grid.main_command(sweep, point, options.runs_dir,
                                          options.data_dir)
        sys.stdout.write(shlex.join(command) + '\\n')
      return 0


    sweep_backends.register(sweep_backends.Backend(
        'commands', _print_commands, least_parallel=0))
    ''')


def test_a_new_sweep_backend_is_one_file_and_runs_a_sweep(tmp_path,
                                                          mnist_dir):
  (tmp_path / 'my_backends.py').write_text(MY_BACKENDS)
  (tmp_path / 'commands.gin').write_text('import my_backends\n')
  runs_dir = tmp_path / 'sweep'
  env = dict(os.environ, PYTHONPATH=str(tmp_path), TF_CPP_MIN_LOG_LEVEL='2')
  printed = subprocess.run(
      [sys.executable, '-m', 'seqmnist.tools.sweep', '--gin_file=row.gin',
       f'--gin_file={tmp_path / "commands.gin"}', '--allow_gin_imports',
       '--backend=commands', f'--runs_dir={runs_dir}',
       f'--data_dir={mnist_dir}',
       *gin_params(*FAST, 'Trainer.steps=20', 'Trainer.eval_every=20'),
       '--sweep=Model.units=8,16'],
      capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
      check=False)
  assert printed.returncode == 0, printed.stderr[-3000:]
  commands = printed.stdout.splitlines()
  assert len(commands) == 2, printed.stdout
  assert (runs_dir / 'sweep.json').exists()  # a sweep's runs dir, as local's
  for command in commands:  # what the user's own launcher would do
    ran = subprocess.run(command, shell=True, capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=600, check=False)
    assert ran.returncode == 0, ran.stderr[-3000:]
  report = subprocess.run(
      [sys.executable, '-m', 'seqmnist.tools.report', '--json',
       str(runs_dir)], capture_output=True, text=True, env=env, cwd=REPO,
      timeout=300, check=False)
  assert report.returncode == 0, report.stderr[-3000:]
  for units in (8, 16):
    results = json.loads(
        (runs_dir / f'Model.units={units}' / 'results.json').read_text())
    assert results['global_step'] == 20, results
  # Without the gin file that imports it, the name is unknown, in one line.
  unknown = subprocess.run(
      [sys.executable, '-m', 'seqmnist.tools.sweep', '--gin_file=row.gin',
       '--backend=commands', f'--runs_dir={tmp_path / "other"}',
       '--sweep=Model.units=8'], capture_output=True, text=True, env=env,
      cwd=REPO, timeout=600, check=False)
  assert unknown.returncode == 2
  assert unknown.stderr.strip().splitlines()[-1].startswith(
      "seqmnist.tools.sweep: error: --backend='commands' is not one of "
      "'local', 'slurm', 'kubernetes'"), unknown.stderr
  assert not (tmp_path / 'other').exists()
