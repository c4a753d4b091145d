"""The run directory (`--model_dir`): its layout, and the one owner of it.

  checkpoints/          rolling checkpoints (resume from the newest)
  best/                 the best-validation checkpoint, kept apart
  train/ validation/ test/   TensorBoard events (HParams in the folder itself)
  operative_config.gin  every gin value the run used
  results.json          the finished run's figures
  .lock                 held (flock) by the process training in it

`RunDir` is the only code that joins these names to a path; everything else
asks it. Nothing is created before every input has been validated; files are
written to a temporary name and renamed, so a failed or killed run never
leaves a half-written file behind; and a folder that holds something else
(not a seqmnist run) is refused rather than written into.
"""

import errno
import fcntl
import json
import os
import socket
import tempfile
from typing import Optional

from seqmnist.errors import UserError

CHECKPOINTS = 'checkpoints'
BEST = 'best'
TRAIN, VALIDATION, TEST = 'train', 'validation', 'test'
# Where a run's event files are: the run dir itself ('') and one folder per split.
EVENT_SPLITS = ('', TRAIN, VALIDATION, TEST)
OPERATIVE_CONFIG = 'operative_config.gin'
RESULTS = 'results.json'
LOCK = '.lock'
# A run dir is recognised by one of these: the run's first write is its
# operative config, right after it takes the lock. (A results.json alone is
# not enough: it is a common name.)
_MARKS = (OPERATIVE_CONFIG, CHECKPOINTS, BEST)
# Everything seqmnist writes, rotates or deletes in a run dir. None of them
# may be a symbolic link: a run dir may come from someone else (a copy, an
# archive, a shared filesystem), and a link would carry a write, a rotation
# or a deletion outside it.
WRITTEN = (LOCK, CHECKPOINTS, BEST, TRAIN, VALIDATION, TEST, OPERATIVE_CONFIG,
           RESULTS, os.path.join(CHECKPOINTS, 'checkpoint'),
           os.path.join(BEST, 'checkpoint'))


def checkpoint_step(path: str) -> int:
  """The global step of a checkpoint path such as `.../ckpt-430`."""
  try:
    return int(os.path.basename(path).rsplit('-', 1)[1])
  except (IndexError, ValueError) as e:
    raise ValueError(f'{path} is not a checkpoint path ending in -STEP') from e


class RunDir:
  """One run directory: paths, creation, recognition, atomic files, lock."""

  def __init__(self, path: str, flag: str = '--model_dir'):
    if not path:
      raise UserError(f'{flag} is required: the folder the run writes to')
    self.path = path
    self._flag = flag
    self._lock_fd = None

  def __repr__(self):
    return f'RunDir({self.path!r})'

  @property
  def name(self) -> str:
    """The folder's own name (a sweep's point name, say)."""
    return os.path.basename(os.path.normpath(os.path.abspath(self.path)))

  # Layout ---------------------------------------------------------------

  def join(self, *names: str) -> str:
    return os.path.join(self.path, *names)

  @property
  def checkpoints(self) -> str:
    return self.join(CHECKPOINTS)

  @property
  def best(self) -> str:
    return self.join(BEST)

  def events(self, split: str = '') -> str:
    """The TensorBoard folder of 'train', 'validation', 'test', or '' (the
    run folder itself, where the HParams summary goes)."""
    if split not in EVENT_SPLITS:
      raise ValueError(f'no event folder for {split!r}')
    return self.join(split) if split else self.path

  @property
  def operative_config(self) -> str:
    return self.join(OPERATIVE_CONFIG)

  @property
  def results(self) -> str:
    return self.join(RESULTS)

  # Recognition and creation ---------------------------------------------

  def exists(self) -> bool:
    return os.path.isdir(self.path)

  def is_run_dir(self) -> bool:
    """True if the folder holds a seqmnist run (any of its marks)."""
    return any(os.path.exists(self.join(m)) for m in _MARKS)

  def entries(self):
    """What the folder holds (sorted), bar the lock; [] if it is absent."""
    if not self.exists():
      return []
    return sorted(e for e in os.listdir(self.path) if e != LOCK)

  def check_usable(self) -> None:
    """Raises UserError unless the run may be created or resumed here.

    Creates nothing. Refuses: a path that is not (and cannot become) a
    folder, one without write access, and an existing non-empty folder that
    is not a seqmnist run dir (its files are the user's, not ours to
    overwrite).
    """
    path = os.path.abspath(self.path)
    if os.path.exists(path) and not os.path.isdir(path):
      raise UserError(f'{self._flag}={self.path} is a file, not a folder')
    parent = path
    while not os.path.exists(parent):
      if os.path.islink(parent):
        raise UserError(f'{self._flag}={self.path} cannot be created: '
                        f'{parent} is a broken symbolic link')
      parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
      raise UserError(f'{self._flag}={self.path} cannot be created: {parent} '
                      'is not a directory')
    if not os.access(parent, os.W_OK | os.X_OK):
      raise UserError(f'{self._flag}={self.path} is not writable ({parent} '
                      'denies write access)')
    self.check_no_links()
    foreign = self.entries()
    if foreign and not self.is_run_dir():
      shown = ', '.join(foreign[:3]) + (', ...' if len(foreign) > 3 else '')
      raise UserError(
          f'{self._flag}={self.path} is a non-empty folder that is not a '
          f'seqmnist run directory (it holds {shown}); give a new or empty '
          'folder, or an existing run directory to resume')

  def check_no_links(self) -> None:
    """Raises UserError naming the first entry seqmnist would write through
    that is a symbolic link (see WRITTEN)."""
    for name in WRITTEN:
      path = self.join(name)
      if os.path.islink(path):
        raise UserError(
            f'{self._flag}={self.path}: {name} is a symbolic link (to '
            f'{os.readlink(path)}); seqmnist writes only inside the run '
            'directory and never through a link: replace the link with the '
            'file or folder itself')

  def create(self) -> None:
    """Creates the folder (checked first by `check_usable`)."""
    try:
      os.makedirs(self.path, exist_ok=True)
    except OSError as e:
      raise UserError(f'{self._flag}={self.path} cannot be created: '
                      f'{e.strerror}') from e
    if not os.access(self.path, os.W_OK | os.X_OK):
      raise UserError(f'{self._flag}={self.path} is not writable')

  # The lock -------------------------------------------------------------

  def lock(self) -> None:
    """Takes the run dir's lock, or raises UserError naming its holder.

    Call after `create`; see `take_lock`.
    """
    try:
      self._lock_fd = take_lock(self.join(LOCK), f'{self._flag}={self.path}')
    except UserError:
      if os.path.islink(self.join(LOCK)):
        self.check_no_links()
      raise

  def unlock(self) -> None:
    if self._lock_fd is not None:
      os.close(self._lock_fd)  # closing releases the flock
      self._lock_fd = None

  # Files ----------------------------------------------------------------

  def read_operative_config(self) -> Optional[str]:
    if not os.path.isfile(self.operative_config):
      return None
    return _read_text(self.operative_config)

  def write_operative_config(self, text: str) -> None:
    write_atomic(self.operative_config, text)

  def read_results(self) -> Optional[dict]:
    """results.json's dict; None if absent, empty or not a JSON object."""
    if not os.path.isfile(self.results):
      return None
    try:
      value = json.loads(_read_text(self.results))
    except (ValueError, UnicodeDecodeError):
      return None
    return value if isinstance(value, dict) else None

  def write_results(self, results: dict) -> None:
    write_json(self.results, results)

  def is_finished(self, steps) -> bool:
    """results.json is written and its global_step reached `steps` (the
    run's Trainer.steps): what sweeps, the report and release call finished."""
    results = self.read_results()
    return (bool(results) and isinstance(steps, int) and
            results.get('global_step', -1) >= steps)


def _read_text(path: str) -> str:
  with open(path, encoding='utf-8', errors='replace') as f:
    return f.read()


def take_lock(path: str, what: str) -> int:
  """Takes an exclusive flock on `path` (created if absent) and writes the
  holder (pid, host) into it; returns the open descriptor, whose closing
  releases the lock. The OS releases it when the process ends, however it
  ends (SIGKILL included), so no stale lock survives a crash.

  Raises:
    UserError: naming `what` and the holder, when another process has it,
      or why the file cannot be opened (never through a symbolic link).
  """
  try:  # O_NOFOLLOW: never write through a link planted as the lock
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
  except OSError as e:
    raise UserError(f'{what}: cannot open {path} ({e.strerror})') from e
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    os.close(fd)
    if e.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
      raise
    holder = _read_text(path).strip() or 'another process'
    raise UserError(f'{what} is in use by {holder}; wait for it to end, or '
                    'give another folder') from None
  os.ftruncate(fd, 0)
  os.write(fd, f'seqmnist pid {os.getpid()} on {socket.gethostname()}\n'
           .encode())
  return fd


def current_umask() -> int:
  umask = os.umask(0)
  os.umask(umask)
  return umask


def share_as_umask_allows(folder: str) -> None:
  """mkdtemp makes a folder 0700: give a staged folder (an export, a
  release) and everything in it the permissions the umask allows, as for any
  folder the user creates."""
  umask = current_umask()
  for root, dirs, files in os.walk(folder):
    os.chmod(root, 0o777 & ~umask)
    for name in files:
      os.chmod(os.path.join(root, name), 0o666 & ~umask)
    del dirs


def write_atomic(path: str, text: str) -> None:
  """Writes text to path through a temporary file and a rename. The file
  gets the permissions the umask allows (as `open` would), not mkstemp's
  owner-only 0600."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path))
  try:
    os.fchmod(fd, 0o666 & ~current_umask())
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
