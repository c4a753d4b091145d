"""A registry: the named entries of one concept (cells.py, datasets.py),
each registered once, looked up by the gin setting that names them."""

from typing import Dict, Generic, Tuple, TypeVar

from seqmnist import validators
from seqmnist.errors import ConfigError

Entry = TypeVar('Entry')


class Registry(Generic[Entry]):
  """Entries with a `name`, chosen by the gin setting `setting`."""

  def __init__(self, setting: str, how_to_add: str):
    self.setting = setting
    self._how_to_add = how_to_add
    self.entries: Dict[str, Entry] = {}

  def register(self, entry: Entry) -> Entry:
    """Adds an entry; a name registered twice (differently) is a
    programming error."""
    if entry.name in self.entries and self.entries[entry.name] != entry:
      raise ValueError(f'{self.setting}: {entry.name!r} is already '
                       'registered')
    self.entries[entry.name] = entry
    return entry

  def names(self) -> Tuple[str, ...]:
    return tuple(self.entries)

  def get(self, name: str) -> Entry:
    """The entry `name`.

    Raises:
      ConfigError: naming the value, the registered names and how to add
        one (with a non-string value too).
    """
    try:
      validators.check_choice(self.setting, name, self.entries)
    except ConfigError as e:
      raise ConfigError(f'{e} ({self._how_to_add})') from None
    return self.entries[name]
