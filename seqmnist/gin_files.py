"""Gin: finding the shipped configs and parsing strictly.

`--gin_file` takes a path, or a bare name such as `pixel.gin` that is looked
up in the package's gin folder (the repository's `gin/`, installed as
`seqmnist/gin/`). Includes inside gin files resolve the same way, through
gin's public search path. Unknown names fail at once (`skip_unknown=False`)
and the config is finalized, so nothing rebinds it after parsing.
"""

import logging
import os
import re
import tokenize
from typing import List, Sequence

import gin
from gin import config_parser

# Importing these registers every configurable a gin file may name.
from seqmnist.cluster import distribute  # pylint: disable=unused-import
from seqmnist.config import gin_text
from seqmnist.data import pipeline  # pylint: disable=unused-import
from seqmnist.errors import ConfigError, first_line
from seqmnist.loop import dashboard  # pylint: disable=unused-import
from seqmnist.loop import trainer  # pylint: disable=unused-import
from seqmnist.model import network  # pylint: disable=unused-import
from seqmnist.optim import optimizers  # pylint: disable=unused-import


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


def _imports(text: str, where: str, seen: set) -> List[str]:
  """'WHERE line N: import MODULE' for every import statement in a gin text
  and the files it includes (resolved as gin resolves them)."""
  found = []
  try:
    statements = list(gin_text.statements(text))
  except (SyntaxError, tokenize.TokenError):
    return found  # gin's own parse reports it, with its location
  for statement in statements:
    if isinstance(statement, config_parser.ImportStatement):
      found.append(f'{where} line {statement.location.line_num}: '
                   f'{statement.format()}')
    elif isinstance(statement, config_parser.IncludeStatement):
      for prefix in ('', gin_dir()):
        path = os.path.join(prefix, statement.filename)
        if os.path.isfile(path) and os.path.abspath(path) not in seen:
          seen.add(os.path.abspath(path))
          with open(path) as f:
            found += _imports(f.read(), path, seen)
          break
  return found


def check_bindings(gin_params: Sequence[str]) -> None:
  """Raises ConfigError naming the first --gin_param that is not gin, with
  the likely fix: gin itself reads them as one text and names only a line
  of it, or a Python AST node."""
  for param in gin_params:
    try:
      for _ in gin_text.statements(param):
        pass
    except (SyntaxError, tokenize.TokenError) as e:
      name, equals, value = (p.strip() for p in param.partition('='))
      if not equals:
        raise ConfigError(
            f'--gin_param={param!r} is not a binding: give NAME=VALUE, e.g. '
            '--gin_param=Model.units=64') from e
      if re.fullmatch(r'[+-]?(nan|inf|infinity)', value, re.IGNORECASE):
        hint = 'gin has no literal for it; give a finite number'
      elif re.fullmatch(r'[A-Za-z_][\w.]*', value):
        hint = (f'a string needs quotes: --gin_param="{name}=\'{value}\'" '
                '(the shell removes quotes that are not inside others)')
      elif isinstance(e, tokenize.TokenError):
        hint = 'an unclosed bracket or quote?'
      else:
        hint = ('a value is a number, a quoted string, True, False, None, a '
                'tuple or list of values, @name(), or %MACRO')
      raise ConfigError(f'--gin_param="{param}": {value} is not a gin value; '
                        f'{hint}') from e


def check_no_imports(paths: Sequence[str], gin_params: Sequence[str]) -> None:
  """Raises ConfigError if a gin file (or an include, or a binding) has an
  `import` statement: gin runs the imported module's code, so a config from
  elsewhere could run anything. `--allow_gin_imports` permits them."""
  seen = {os.path.abspath(p) for p in paths}
  found = []
  for path in paths:
    with open(path) as f:
      found += _imports(f.read(), path, seen)
  found += _imports('\n'.join(gin_params), '--gin_param', seen)
  if found:
    more = f' (and {len(found) - 1} more)' if len(found) > 1 else ''
    raise ConfigError(
        f'{found[0]}{more}: gin imports run the module\'s code, so seqmnist '
        'refuses them; pass --allow_gin_imports if you trust this config')


def _check_macro_cycles() -> None:
  """Raises ConfigError naming a macro defined in terms of itself (directly
  or through other macros): gin would recurse until Python gives up."""
  refers = {}
  for (scope, selector), params in gin.config._CONFIG.items():  # pylint: disable=protected-access
    value = params.get('value')
    if selector == 'gin.macro' and hasattr(value, 'scoped_selector'):
      target = str(value.scoped_selector)
      if target.endswith('/gin.macro'):
        refers[scope] = target[:-len('/gin.macro')]
  for start in sorted(refers):
    chain, name = [start], refers[start]
    while name in refers and name not in chain:
      chain.append(name)
      name = refers[name]
    if name == start:
      cycle = ' -> '.join(f'%{n}' for n in chain + [start])
      raise ConfigError(f'gin macro {start} is defined in terms of itself '
                        f'({cycle}), so it has no value; give it one')


def parse(gin_files: Sequence[str], gin_params: Sequence[str],
          allow_imports: bool = False,
          run_defaults: Sequence[str] = ()) -> List[str]:
  """Parses gin files then bindings, strictly, and finalizes the config.

  Args:
    gin_files: paths or names of shipped files.
    gin_params: bindings applied after the files.
    allow_imports: permit gin `import` statements (see check_no_imports).
    run_defaults: 'Scope.param = value' bindings applied only where neither
      the files nor the bindings set the parameter: what a run being resumed
      ran with where today's default differs (drift.earlier_defaults).

  Returns:
    The resolved paths of the gin files.
  Raises:
    ConfigError: a file is missing, a name or value does not parse, or an
      import is not allowed.
  """
  paths = [resolve(f) for f in gin_files]
  check_bindings(gin_params)
  if not allow_imports:
    check_no_imports(paths, gin_params)
  gin.clear_config()
  _add_search_path()
  root = logging.getLogger()
  root.addFilter(_FILTER)
  try:
    gin.parse_config_files_and_bindings(
        paths, gin_params, skip_unknown=False, finalize_config=False)
    for binding in run_defaults:
      name = binding.split('=', 1)[0].strip()
      try:
        gin.query_parameter(name)
      except ValueError:  # not set by the user: the run's own value
        gin.parse_config(binding)
    gin.finalize()
    _check_macro_cycles()
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
