"""The run directory (`--model_dir`): checks, layout and atomic files.

  checkpoints/  best/  train/  validation/  operative_config.gin  results.json

Nothing is created before every input has been validated, and files are
written to a temporary name and renamed, so a failed or killed run never
leaves a half-written file behind.
"""

import json
import os
import tempfile

from seqmnist.errors import UserError

OPERATIVE_CONFIG = 'operative_config.gin'
RESULTS = 'results.json'


def check_writable(model_dir: str) -> None:
  """Raises UserError if model_dir cannot be created or written to.

  Creates nothing: walks up to the nearest existing ancestor and checks that
  it is a writable directory.
  """
  if not model_dir:
    raise UserError('--model_dir is required: the folder the run writes to')
  path = os.path.abspath(model_dir)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  if not os.path.isdir(path):
    raise UserError(f'--model_dir={model_dir} cannot be created: {path} is '
                    'not a directory')
  if not os.access(path, os.W_OK | os.X_OK):
    raise UserError(f'--model_dir={model_dir} is not writable ({path} denies '
                    'write access)')


def create(model_dir: str) -> None:
  """Creates model_dir (checked first by `check_writable`)."""
  try:
    os.makedirs(model_dir, exist_ok=True)
    probe = tempfile.NamedTemporaryFile(dir=model_dir, prefix='.probe')
    probe.close()
  except OSError as e:
    raise UserError(f'--model_dir={model_dir} is not writable: '
                    f'{e.strerror}') from e


def write_atomic(path: str, text: str) -> None:
  """Writes text to path through a temporary file and a rename."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path))
  try:
    with os.fdopen(fd, 'w') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: str, value) -> None:
  write_atomic(path, json.dumps(value, indent=2, sort_keys=True) + '\n')


def read_json(path: str):
  with open(path) as f:
    return json.load(f)
