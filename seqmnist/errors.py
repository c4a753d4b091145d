"""The one exception type a user is meant to read.

Anything raised as `UserError` is a problem with the user's input (a gin value,
a data file, a directory), not a bug: `main` prints its message as one line and
exits non-zero, without a traceback.
"""


class UserError(Exception):
  """Bad input; the message names the bad value and what would be valid."""


class ConfigError(UserError):
  """A gin binding or flag holds a value that cannot be used."""


class DataError(UserError):
  """A data file is missing, truncated, corrupt or of the wrong shape."""


def check_int(name: str, value, minimum: int) -> None:
  """Raises ConfigError unless value is an int (not a bool) >= minimum."""
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ConfigError(f'{name}={value!r} must be an integer >= {minimum}')
