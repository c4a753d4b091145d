"""Gin: finding the shipped configs and parsing strictly.

`--gin_file` takes a path, or a bare name such as `pixel.gin` that is looked
up in the package's gin folder (the repository's `gin/`, installed as
`seqmnist/gin/`). Includes inside gin files resolve the same way. Unknown
names fail at once (`skip_unknown=False`) and the config is finalized, so
nothing rebinds it after parsing.
"""

import os
from typing import List, Sequence

import gin

# Importing these registers every configurable a gin file may name.
from seqmnist import dashboard  # pylint: disable=unused-import
from seqmnist import data  # pylint: disable=unused-import
from seqmnist import distribute  # pylint: disable=unused-import
from seqmnist import models  # pylint: disable=unused-import
from seqmnist import optimizers  # pylint: disable=unused-import
from seqmnist import trainer  # pylint: disable=unused-import
from seqmnist.errors import ConfigError


def gin_dir() -> str:
  """The folder of the shipped gin files (installed or source checkout)."""
  here = os.path.dirname(os.path.abspath(__file__))
  installed = os.path.join(here, 'gin')
  if os.path.isdir(installed):
    return installed
  return os.path.join(os.path.dirname(here), 'gin')


def resolve(name: str) -> str:
  """A gin file's path: as given if it exists, else in the package's folder."""
  if os.path.isfile(name):
    return name
  shipped = os.path.join(gin_dir(), name)
  if os.path.isfile(shipped):
    return shipped
  available = sorted(f for f in os.listdir(gin_dir()) if f.endswith('.gin'))
  raise ConfigError(f'--gin_file={name} not found as a path nor in '
                    f'{gin_dir()} (shipped: {", ".join(available)})')


def parse(gin_files: Sequence[str], gin_params: Sequence[str]) -> List[str]:
  """Parses gin files then bindings, strictly, and finalizes the config.

  Returns:
    The resolved paths of the gin files.
  Raises:
    ConfigError: a file is missing, or a name or value does not parse.
  """
  paths = [resolve(f) for f in gin_files]
  gin.clear_config()
  # The shipped folder goes *before* gin's default '' (the working directory):
  # gin tries prefixes in order and logs an ERROR line for each miss, so with
  # the public `add_config_file_search_path` (which appends) every run would
  # print a false "Path not found: base.gin".
  prefixes = gin.config._LOCATION_PREFIXES  # pylint: disable=protected-access
  if gin_dir() not in prefixes:
    prefixes.insert(0, gin_dir())
  try:
    gin.parse_config_files_and_bindings(
        paths, gin_params, skip_unknown=False, finalize_config=True)
  except (ValueError, KeyError, TypeError, ImportError, SyntaxError,
          IOError) as e:
    raise ConfigError(f'bad gin config: {_first_line(e)}') from e
  return paths


def _first_line(error: Exception) -> str:
  text = str(error.args[0]) if error.args else str(error)
  return text.strip().splitlines()[0] if text.strip() else repr(error)
