r"""Trains an RNN on sequential MNIST.

  python -m seqmnist.main --gin_file=gin/pixel.gin \
      [--gin_param="Trainer.steps=200"] --model_dir=DIR [--data_dir=DIR]

Flags hold only the execution environment; everything about the experiment
is gin (see gin/ and the README).
"""

from absl import flags

from seqmnist import cli
from seqmnist.model import implementations

implementations.prepare_tensorflow()  # TensorFlow's switches, before it imports
cli.import_tensorflow_quietly()  # before the modules below import it

# pylint: disable=g-import-not-at-top,wrong-import-position
from seqmnist import gin_files
from seqmnist.errors import UserError, exit_on_error
from seqmnist.loop import job

_GIN_FILE = flags.DEFINE_multi_string(
    'gin_file', [], 'Gin config file(s): a path, or a name shipped in the '
    "package's gin folder such as pixel.gin. Repeatable; later files win.")
_GIN_PARAM = flags.DEFINE_multi_string(
    'gin_param', [], 'Gin binding(s) applied after the files, e.g. '
    '"Trainer.steps=200". Repeatable.')
_MODEL_DIR = flags.DEFINE_string(
    'model_dir', None, 'Run directory: checkpoints, TensorBoard events, '
    'operative_config.gin, results.json. Rerunning resumes.')
_ALLOW_GIN_IMPORTS = flags.DEFINE_boolean(
    'allow_gin_imports', False, 'Permit `import` statements in gin files and '
    "bindings (they run the module's code: only for configs you trust).")
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'A folder with the four MNIST IDX files (read offline), '
    "or TFDS's data_dir; default: TFDS's own, downloading if needed.")


def train(trial=None):
  """Parses the flags' gin, then trains (job.train_and_evaluate), as
  `trial` of a search if given (tools/search_trial.py)."""
  if not _GIN_FILE.value:
    raise UserError('--gin_file is required, e.g. --gin_file=row.gin')
  gin_files.parse(_GIN_FILE.value, _GIN_PARAM.value,
               allow_imports=_ALLOW_GIN_IMPORTS.value,
               run_defaults=job.resume_bindings(_MODEL_DIR.value))
  return job.train_and_evaluate(_MODEL_DIR.value, _DATA_DIR.value, trial)


def print_results(results) -> None:
  """The closing line of a training command."""
  nothing = (f'nothing trained ({results.untrained}); recorded: '
             if results.untrained else '')
  print(f'{nothing}test accuracy {results["test_accuracy"]:.4f} '
        f'(best validation {results["best_val_accuracy"]:.4f} at step '
        f'{results["best_step"]}); results in {_MODEL_DIR.value}')


def main(argv):
  cli.no_positional_arguments('seqmnist', argv)
  print_results(exit_on_error('seqmnist', train))


def run():
  """The training command (`python -m seqmnist.main`, the `seqmnist` script)."""
  cli.run('seqmnist', main)


if __name__ == '__main__':
  run()
