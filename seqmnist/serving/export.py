r"""Exports a finished (or running) run's best weights as a SavedModel.

  python -m seqmnist.serving.export --model_dir=DIR --export_dir=DIR \
      [--weights=best]

The SavedModel's `serving_default` signature takes `images`: uint8
[batch, size, size], the dataset's own pixels (28 x 28 for the shipped
datasets), and returns `probabilities`: float32 [batch, classes] (10 for
the shipped datasets). The run's sequence order (row, pixel, or the seeded
permutation) and the normalisation are inside the graph, read from the run's
operative_config.gin, so a client sends raw images. The export is written
under a temporary name and renamed: an export dir is complete or absent.
"""

import dataclasses
import json
import os
import shutil
import tempfile
import time

from absl import flags
from absl import logging

from seqmnist import cli
from seqmnist.model import implementations

implementations.prepare_tensorflow()  # TensorFlow's switches, before it imports
cli.import_tensorflow_quietly()  # before the modules below import it

# pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf

from seqmnist import gin_files
from seqmnist import rundir
from seqmnist.config import drift
from seqmnist.data import pipeline
from seqmnist.errors import UserError, exit_on_error
from seqmnist.loop import checkpoints
from seqmnist.loop import experiment
from seqmnist.optim import averaging

SIGNATURE = 'serving_default'
METADATA = 'seqmnist_export.json'

_MODEL_DIR = flags.DEFINE_string('model_dir', None, 'The run directory.')
_EXPORT_DIR = flags.DEFINE_string('export_dir', None,
                                  'Where the SavedModel goes (must not exist).')
_WEIGHTS = flags.DEFINE_enum('weights', 'best', ['best', 'latest'],
                             "'best': the best-validation checkpoint (what "
                             "results.json's test figure used); 'latest'.")
_ALLOW_GIN_IMPORTS = flags.DEFINE_boolean(
    'allow_gin_imports', False, 'Permit `import` statements in the run\'s '
    'operative_config.gin (a run of a cell or dataset registered by your '
    'own module); they run that module\'s code.')


class _Serving(tf.Module):
  """The model behind a raw-image signature."""

  def __init__(self, model, data_config: pipeline.DataConfig):
    super().__init__()
    self.model = model
    self._data_config = data_config
    size = data_config.spec.image_size  # the dataset's images, raw
    self.serve = tf.function(self._serve, input_signature=[
        tf.TensorSpec([None, size, size], tf.uint8, name='images')])

  def _serve(self, images):
    sequences = pipeline.to_sequences(images, self._data_config)
    logits = tf.cast(self.model(sequences, training=False), tf.float32)
    return {'probabilities': tf.nn.softmax(logits)}


# A SavedModel is written under this prefix beside --export_dir, then
# renamed; an export killed midway leaves one behind.
TEMP_PREFIX = '.export-'
# Older than this, a temporary export is abandoned (an export takes seconds;
# a running one never leaves its folder untouched this long).
ABANDONED_SECONDS = 3600


def _remove_abandoned_exports(parent: str) -> None:
  """Removes the temporary folders of exports killed midway (untouched for
  an hour: a running export's is never that old)."""
  now = time.time()
  for name in os.listdir(parent):
    path = os.path.join(parent, name)
    if (name.startswith(TEMP_PREFIX) and os.path.isdir(path) and
        not os.path.islink(path) and
        now - os.path.getmtime(path) > ABANDONED_SECONDS):
      logging.warning('Removing %s, left by an export that was cut short.',
                      path)
      shutil.rmtree(path, ignore_errors=True)


def export(model_dir: str, export_dir: str, weights: str = 'best',
           allow_imports: bool = False) -> dict:
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
  # As the run trained: a setting added since it was made takes the value
  # the run ran with.
  gin_files.parse([run_dir.operative_config], [], allow_imports=allow_imports,
               run_defaults=drift.earlier_defaults(
                   saved, experiment.ADDED_LATER, run_dir.operative_config))
  configs = experiment.Configs.from_gin()
  # Keras' layers, not the fused op: the SavedModel serves without it (the
  # variables are the same).
  configs = dataclasses.replace(configs, model=dataclasses.replace(
      configs.model, implementation='keras'))
  model = experiment.build_model(configs)
  # With a weight average, the weights validation saw.
  average = averaging.make(model.trainable_variables,
                           configs.trainer.ema_decay)
  tf.train.Checkpoint(model=model, **averaging.checkpoint_items(
      average)).read(path).expect_partial()
  if average:
    average.copy_into_model()
  serving = _Serving(model, configs.data)
  metadata = {
      'checkpoint': path, 'order': configs.data.order,
      'dataset': configs.data.dataset, 'cell': configs.model.cell,
      'step': rundir.checkpoint_step(path),
  }
  parent = os.path.dirname(os.path.abspath(export_dir))
  os.makedirs(parent, exist_ok=True)
  _remove_abandoned_exports(parent)
  tmp = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=parent)
  try:
    tf.saved_model.save(serving, tmp, signatures={SIGNATURE: serving.serve})
    rundir.write_json(os.path.join(tmp, METADATA), metadata)
    rundir.share_as_umask_allows(tmp)
    os.rename(tmp, export_dir)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return metadata


def main(argv):
  cli.no_positional_arguments('seqmnist.serving.export', argv)
  metadata = exit_on_error('seqmnist.serving.export', export, _MODEL_DIR.value,
                           _EXPORT_DIR.value, _WEIGHTS.value,
                           _ALLOW_GIN_IMPORTS.value)
  print(f'exported {metadata["checkpoint"]} ({metadata["order"]} order) to '
        f'{_EXPORT_DIR.value}: {json.dumps(metadata)}')


if __name__ == '__main__':
  cli.run('seqmnist.serving.export', main)
