"""The checks every configurable runs on its values, each raising one
`ConfigError` that names the binding, the bad value and what would be valid.

    check_int('Trainer.steps', 0, minimum=1)
    -> Trainer.steps=0 must be an integer >= 1
"""

import dataclasses
import numbers
from typing import Any, Dict, Iterable, Optional

from seqmnist.errors import ConfigError


# A setting added after run dirs already existed declares, next to its
# default, the value runs made before it existed ran with:
#
#     gate_init: str = validators.added_later('default', before='default')
#
# drift.py reads these to let such runs resume (tests/test_rundir.py fails
# for a setting without one).
BEFORE = 'seqmnist.before'


def added_later(default, *, before) -> Any:
  """A dataclass field with `default`, and `before`: the value runs made
  before the setting existed ran with."""
  return dataclasses.field(default=default, metadata={BEFORE: before})


def earlier_values(config_class, scope: str) -> Dict[str, Any]:
  """{'Scope.name': before} of the fields declared with `added_later`."""
  return {f'{scope}.{f.name}': f.metadata[BEFORE]
          for f in dataclasses.fields(config_class) if BEFORE in f.metadata}


def check_int(name: str, value, minimum: int,
              maximum: Optional[int] = None, *, why: str = '') -> None:
  """An int (not a bool) in [minimum, maximum]; `why`, if given, is
  appended to the message in parentheses (as check_number does)."""
  if (isinstance(value, bool) or not isinstance(value, int) or
      value < minimum or (maximum is not None and value > maximum)):
    bounds = (f'>= {minimum}' if maximum is None
              else f'from {minimum} to {maximum:,}')
    raise ConfigError(f'{name}={value!r} must be an integer {bounds}'
                      + (f' ({why})' if why else ''))


def check_number(name: str, value, minimum: float = float('-inf'),
                 maximum: float = float('inf'), *,
                 positive: bool = False, why: str = '') -> None:
  """A finite real number (not a bool) in [minimum, maximum]; with
  `positive`, also > 0. `why` is appended to the message."""
  ok = (not isinstance(value, bool) and isinstance(value, numbers.Real) and
        minimum <= value <= maximum and abs(value) != float('inf') and
        value == value and (not positive or value > 0))
  if not ok:
    if positive:
      bounds = 'a number > 0'
    elif maximum == float('inf'):
      bounds = f'a finite number >= {minimum:g}'
    else:
      bounds = f'a number from {minimum:g} to {maximum:g}'
    raise ConfigError(f'{name}={value!r} must be {bounds}'
                      + (f' ({why})' if why else ''))


def check_bool(name: str, value) -> None:
  if not isinstance(value, bool):
    raise ConfigError(f'{name}={value!r} must be True or False')


def check_choice(name: str, value, choices: Iterable) -> None:
  choices = tuple(choices)
  if value not in choices:
    raise ConfigError(f'{name}={value!r} is not one of '
                      f'{", ".join(repr(c) for c in choices)}')
