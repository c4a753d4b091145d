"""What every reader of a user's path checks before opening it.

A path the user names (an IDX file, a PNG, a label file) must be a regular
file of a plausible size: a folder, a FIFO (which would block the reader
forever), a device or a socket is refused with one line saying which, as is
a file larger than the reader's bound.
"""

import os
import stat
from typing import Optional

from seqmnist.errors import UserError


def check_regular(path: str, what: str = 'a file',
                  max_bytes: Optional[int] = None) -> int:
  """Returns the file's size; raises UserError unless `path` is a regular
  file (links followed) of at most `max_bytes`."""
  try:
    info = os.stat(path)
  except FileNotFoundError:
    if os.path.islink(path):
      raise UserError(f'{path} is a broken symbolic link (to '
                      f'{os.readlink(path)})') from None
    raise UserError(f'{path} does not exist') from None
  except OSError as e:
    raise UserError(f'cannot read {path}: {e.strerror}') from e
  if stat.S_ISDIR(info.st_mode):
    raise UserError(f'{path} is a folder; give {what}')
  if not stat.S_ISREG(info.st_mode):
    kind = ('a FIFO' if stat.S_ISFIFO(info.st_mode) else
            'a socket' if stat.S_ISSOCK(info.st_mode) else 'a device')
    raise UserError(f'{path} is {kind}, not a regular file; give {what}')
  if max_bytes is not None and info.st_size > max_bytes:
    raise UserError(f'{path} is {info.st_size:,} bytes, more than the '
                    f'{max_bytes:,} allowed for {what}')
  return info.st_size
