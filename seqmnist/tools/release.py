r"""Releases a finished run as a small run directory, e.g. for zoo/.

  python -m seqmnist.tools.release --model_dir=RUN --out=zoo/pixel_gru

The release keeps what a user needs to check and use the model, and is still
a run directory: `results.json`, `operative_config.gin`, the best checkpoint
(`best/`), the newest rolling checkpoint (so the shipped command, given a
copy of the release as --model_dir, sees a finished run and only reports),
and the TensorBoard events without histograms and images (scalars, the
HParams and text records stay). It is written to a temporary folder beside
OUT and renamed into place: nothing half-written. Refuses an unfinished run
and an existing OUT (exit 2).
"""

import os
import shutil
import tempfile

from absl import flags

from seqmnist import cli

cli.import_tensorflow_quietly()

# pylint: disable=g-import-not-at-top,wrong-import-position
import tensorflow as tf
from tensorboard.compat.proto import event_pb2

from seqmnist import rundir as rundir_lib
from seqmnist.config import drift
from seqmnist.errors import UserError, exit_on_error
from seqmnist.loop import checkpoints as checkpoints_lib

_MODEL_DIR = flags.DEFINE_string('model_dir', None, 'The finished run.')
_OUT = flags.DEFINE_string('out', None, 'The release folder to create.')

# TensorBoard plugins whose records are dropped: the bulk of a run's events.
DROPPED_PLUGINS = frozenset({'histograms', 'images'})


def _check_finished(run: rundir_lib.RunDir) -> None:
  if not run.is_run_dir():
    raise UserError(f'--model_dir={run.path} is not a seqmnist run directory')
  results, bindings = run.read_results(), drift.saved_bindings(run)
  if results is None or bindings is None:
    raise UserError(f'--model_dir={run.path} is not finished (no readable '
                    'results.json or operative_config.gin); rerun its '
                    'command to finish it first')
  steps = bindings.get('Trainer.steps')
  if not run.is_finished(steps):
    raise UserError(f'--model_dir={run.path} stopped at step '
                    f'{results.get("global_step")} of {steps}; finish it first')


def filter_events(source: str, target: str) -> int:
  """Copies an event file without the records of DROPPED_PLUGINS; returns
  the number of summary values kept."""
  plugins = {}  # tag -> plugin: TF2 writes a tag's metadata only once
  kept = 0
  with tf.io.TFRecordWriter(target) as writer:
    for record in tf.data.TFRecordDataset(source, buffer_size=1 << 18):
      event = event_pb2.Event.FromString(record.numpy())
      if event.HasField('summary'):
        values = []
        for value in event.summary.value:
          plugin = value.metadata.plugin_data.plugin_name
          if plugin:
            plugins[value.tag] = plugin
          if value.HasField('histo') or value.HasField('image'):
            continue  # TF1-style records of the same kinds
          if plugins.get(value.tag) not in DROPPED_PLUGINS:
            values.append(value)
        if not values:
          continue
        del event.summary.value[:]
        event.summary.value.extend(values)
        kept += len(values)
      writer.write(event.SerializeToString())
  return kept


def _copy_checkpoint(source_dir: str, target_dir: str, prefix: str) -> None:
  """One checkpoint (its index and data files) and a state file naming it."""
  os.makedirs(target_dir)
  name = os.path.basename(prefix)
  for entry in os.listdir(source_dir):
    if entry.startswith(name + '.'):
      shutil.copy2(os.path.join(source_dir, entry), target_dir)
  tf.compat.v1.train.update_checkpoint_state(
      target_dir, name, all_model_checkpoint_paths=[name])


def release(model_dir: str, out: str) -> str:
  """Writes the release of the finished run `model_dir` to `out`."""
  run = rundir_lib.RunDir(model_dir)
  _check_finished(run)
  inside = os.path.realpath(out)
  if inside == os.path.realpath(model_dir) or inside.startswith(
      os.path.realpath(model_dir) + os.sep):
    raise UserError(f'--out={out} is inside --model_dir={model_dir}; give a '
                    'folder outside the run (TensorBoard would show the run '
                    'twice)')
  if os.path.exists(out):
    raise UserError(f'--out={out} exists; give a new folder (a release is '
                    'never written over another)')
  parent = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(parent):
    raise UserError(f'--out={out}: its folder {parent} does not exist')
  latest = checkpoints_lib.state_latest(run.checkpoints)
  best = checkpoints_lib.state_latest(run.best)
  if latest is None or best is None:
    raise UserError(f'--model_dir={run.path} lacks its newest or best '
                    'checkpoint')
  staging = tempfile.mkdtemp(prefix='.release-', dir=parent)
  try:
    target = rundir_lib.RunDir(staging)
    shutil.copy2(run.operative_config, target.operative_config)
    shutil.copy2(run.results, target.results)
    _copy_checkpoint(run.checkpoints, target.checkpoints, latest)
    _copy_checkpoint(run.best, target.best, best)
    for split in rundir_lib.EVENT_SPLITS:
      source, dest = run.events(split), target.events(split)
      if not os.path.isdir(source):
        continue
      os.makedirs(dest, exist_ok=True)
      for entry in sorted(os.listdir(source)):
        if entry.startswith('events.out.tfevents.'):
          filter_events(os.path.join(source, entry), os.path.join(dest, entry))
    rundir_lib.share_as_umask_allows(staging)
    os.rename(staging, out)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return out


def _release():
  if not _MODEL_DIR.value or not _OUT.value:
    raise UserError('--model_dir and --out are both required')
  return release(_MODEL_DIR.value, _OUT.value)


def main(argv):
  cli.no_positional_arguments('seqmnist.tools.release', argv)
  out = exit_on_error('seqmnist.tools.release', _release)
  size = sum(os.path.getsize(os.path.join(d, f))
             for d, _, files in os.walk(out) for f in files)
  print(f'released {_MODEL_DIR.value} as {out} ({size / 1e6:.2f} MB)')


if __name__ == '__main__':
  cli.run('seqmnist.tools.release', main)
