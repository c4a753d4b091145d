r"""Exports a finished (or running) run's best weights as a SavedModel.

  python -m seqmnist.export --model_dir=DIR --export_dir=DIR [--weights=best]

The SavedModel's `serving_default` signature takes `images`: uint8
[batch, 28, 28], MNIST's own pixels, and returns `probabilities`: float32
[batch, 10]. The run's sequence order (row, pixel, or the seeded
permutation) and the normalisation are inside the graph, read from the run's
operative_config.gin, so a client sends raw images. The export is written
under a temporary name and renamed: an export dir is complete or absent.
"""

import json
import os
import shutil
import tempfile

from absl import flags

from seqmnist import cli

cli.import_tensorflow_quietly()  # before the modules below import it

# pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf

from seqmnist import checkpoints
from seqmnist import config
from seqmnist import data
from seqmnist import experiment
from seqmnist import rundir
from seqmnist.errors import UserError, exit_on_error

SIGNATURE = 'serving_default'
METADATA = 'seqmnist_export.json'

_MODEL_DIR = flags.DEFINE_string('model_dir', None, 'The run directory.')
_EXPORT_DIR = flags.DEFINE_string('export_dir', None,
                                  'Where the SavedModel goes (must not exist).')
_WEIGHTS = flags.DEFINE_enum('weights', 'best', ['best', 'latest'],
                             "'best': the best-validation checkpoint (what "
                             "results.json's test figure used); 'latest'.")


class _Serving(tf.Module):
  """The model behind a raw-image signature."""

  def __init__(self, model, data_config: data.DataConfig):
    super().__init__()
    self.model = model
    self._data_config = data_config

  @tf.function(input_signature=[
      tf.TensorSpec([None, data.IMAGE_SIZE, data.IMAGE_SIZE], tf.uint8,
                    name='images')])
  def serve(self, images):
    sequences = data.to_sequences(images, self._data_config)
    logits = tf.cast(self.model(sequences, training=False), tf.float32)
    return {'probabilities': tf.nn.softmax(logits)}


def export(model_dir: str, export_dir: str, weights: str = 'best') -> dict:
  """Writes the SavedModel; returns its metadata."""
  if not model_dir or not export_dir:
    raise UserError('--model_dir and --export_dir are both required')
  run_dir = rundir.RunDir(model_dir)
  saved = run_dir.read_operative_config()
  if saved is None:
    raise UserError(f'--model_dir={model_dir} has no {rundir.OPERATIVE_CONFIG}'
                    ': not a seqmnist run directory')
  if os.path.exists(export_dir):
    raise UserError(f'--export_dir={export_dir} already exists; give a new '
                    'folder')
  rundir.RunDir(export_dir, flag='--export_dir').check_usable()
  folder = run_dir.best if weights == 'best' else run_dir.checkpoints
  path = checkpoints.state_latest(folder)
  if not path:
    raise UserError(f'--model_dir={model_dir} has no checkpoint in '
                    f'{os.path.basename(folder)}/ (has the run validated yet?)')
  config.parse([run_dir.operative_config], [])
  configs = experiment.Configs.from_gin()
  model = experiment.build_model(configs)
  tf.train.Checkpoint(model=model).read(path).expect_partial()
  serving = _Serving(model, configs.data)
  metadata = {
      'checkpoint': path, 'order': configs.data.order,
      'dataset': configs.data.dataset, 'cell': configs.model.cell,
      'step': rundir.checkpoint_step(path),
  }
  parent = os.path.dirname(os.path.abspath(export_dir))
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix='.export-', dir=parent)
  try:
    tf.saved_model.save(serving, tmp, signatures={SIGNATURE: serving.serve})
    rundir.write_json(os.path.join(tmp, METADATA), metadata)
    rundir.share_as_umask_allows(tmp)
    os.rename(tmp, export_dir)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return metadata


def main(argv):
  cli.no_positional_arguments('seqmnist.export', argv)
  metadata = exit_on_error('seqmnist.export', export, _MODEL_DIR.value,
                           _EXPORT_DIR.value, _WEIGHTS.value)
  print(f'exported {metadata["checkpoint"]} ({metadata["order"]} order) to '
        f'{_EXPORT_DIR.value}: {json.dumps(metadata)}')


if __name__ == '__main__':
  cli.run('seqmnist.export', main)
