"""Gin text read without resolving it: statements, values, binding keys.

gin's parser asks a delegate what `@name` and `%NAME` stand for, and gin's
own delegate looks them up among the registered configurables. Reading a
saved operative config (drift), a sweep's axis values (tools.sweep_grid), the
command-line bindings shown as HParams (dashboard) and a file's import
statements (gin_files) must not do that: the value is wanted as written. Every
one of them parses through `statements` here.
"""

from typing import Iterator, Optional

from gin import config_parser


class GinText(str):
  """A reference or a macro kept as its gin source: '@name', '@name()' or
  '%NAME'."""

  @property
  def macro_name(self) -> Optional[str]:
    """NAME for '%NAME'; None for a reference."""
    return self[1:] if self.startswith('%') else None


class _KeepText(config_parser.ParserDelegate):

  def configurable_reference(self, scoped_configurable_name, evaluate):
    return GinText('@' + scoped_configurable_name + ('()' if evaluate else ''))

  def macro(self, macro_name):
    return GinText('%' + macro_name)


def statements(text: str) -> Iterator[object]:
  """gin's statements of `text`, references and macros as GinText.

  Raises:
    SyntaxError, tokenize.TokenError: the text is not gin.
  """
  return config_parser.ConfigParser(text, _KeepText())


def binding_key(statement: config_parser.BindingStatement) -> str:
  """'scope/Configurable.param', or 'MACRO' for a macro's binding."""
  key = '.'.join(p for p in (statement.selector, statement.arg_name) if p)
  return f'{statement.scope}/{key}' if statement.scope else key


def text(value) -> str:
  """A parsed value back as gin source."""
  return str(value) if isinstance(value, GinText) else repr(value)
