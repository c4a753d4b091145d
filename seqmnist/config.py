"""Gin: finding the shipped configs and parsing strictly.

`--gin_file` takes a path, or a bare name such as `pixel.gin` that is looked
up in the package's gin folder (the repository's `gin/`, installed as
`seqmnist/gin/`). Includes inside gin files resolve the same way, through
gin's public search path. Unknown names fail at once (`skip_unknown=False`)
and the config is finalized, so nothing rebinds it after parsing.
"""

import logging
import os
import tokenize
from typing import List, Sequence

import gin

# Importing these registers every configurable a gin file may name.
from seqmnist import dashboard  # pylint: disable=unused-import
from seqmnist import data  # pylint: disable=unused-import
from seqmnist import distribute  # pylint: disable=unused-import
from seqmnist import models  # pylint: disable=unused-import
from seqmnist import optimizers  # pylint: disable=unused-import
from seqmnist import trainer  # pylint: disable=unused-import
from seqmnist.errors import ConfigError, first_line


def gin_dir() -> str:
  """The folder of the shipped gin files (installed or source checkout)."""
  here = os.path.dirname(os.path.abspath(__file__))
  installed = os.path.join(here, 'gin')
  if os.path.isdir(installed):
    return installed
  return os.path.join(os.path.dirname(here), 'gin')


def resolve(name: str) -> str:
  """A gin file's absolute path: as given if it exists, else in the
  package's folder."""
  if os.path.isfile(name):
    return os.path.abspath(name)
  shipped = os.path.join(gin_dir(), name)
  if os.path.isfile(shipped):
    return shipped
  available = sorted(f for f in os.listdir(gin_dir()) if f.endswith('.gin'))
  raise ConfigError(f'--gin_file={name} not found as a path nor in '
                    f'{gin_dir()} (shipped: {", ".join(available)})')


class _SearchPathMisses(logging.Filter):
  """Drops the records of gin's package-resource reader while parsing.

  Gin tries each search-path prefix in turn, the working directory first,
  and its resource reader logs every probe (INFO) and an ERROR 'Path not
  found' for every prefix that does not hold the file -- so `include
  'base.gin'` found in the shipped folder would print a false error on every
  run. A file found nowhere still fails, with gin's own IOError naming every
  place searched.
  """

  def filter(self, record):
    return not record.pathname.endswith(
        os.path.join('gin', 'resource_reader.py'))


_FILTER = _SearchPathMisses()
_search_path_added = False


def _add_search_path():
  global _search_path_added
  if not _search_path_added:  # gin appends, even a prefix it already has
    gin.add_config_file_search_path(gin_dir())
    _search_path_added = True


def parse(gin_files: Sequence[str], gin_params: Sequence[str]) -> List[str]:
  """Parses gin files then bindings, strictly, and finalizes the config.

  Returns:
    The resolved paths of the gin files.
  Raises:
    ConfigError: a file is missing, or a name or value does not parse.
  """
  paths = [resolve(f) for f in gin_files]
  gin.clear_config()
  _add_search_path()
  root = logging.getLogger()
  root.addFilter(_FILTER)
  try:
    gin.parse_config_files_and_bindings(
        paths, gin_params, skip_unknown=False, finalize_config=True)
  except tokenize.TokenError as e:  # e.g. an unclosed bracket in a binding
    raise ConfigError(f'bad gin config: {e.args[0]} (an unclosed bracket or '
                      f'quote?) in {", ".join(gin_params) or "the files"}'
                      ) from e
  except (ValueError, KeyError, TypeError, ImportError, SyntaxError,
          IOError) as e:
    raise ConfigError(f'bad gin config: {first_line(e)}') from e
  finally:
    root.removeFilter(_FILTER)
  return paths
