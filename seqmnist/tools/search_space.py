r"""A search's space: gin bindings with distributions (`--space`, `--space_file`).

  NAME=uniform(LOW, HIGH)       a float, uniform in [LOW, HIGH]
  NAME=loguniform(LOW, HIGH)    a float, uniform in log space (LOW > 0)
  NAME=int(LOW, HIGH)           an integer in [LOW, HIGH]
  NAME=logint(LOW, HIGH)        an integer, log-uniform (LOW >= 1)
  NAME=choice(V1, V2, ...)      one of the gin values, e.g. choice('gru', 'lstm')

NAME is any gin binding key a run takes (`Model.output_dropout`, a macro such
as `LEARNING_RATE`). A space file holds one such line per binding (`#` starts
a comment). Every range is checked before anything runs: well formed, not
empty or inverted, and each end (each choice) accepted by the validators a
plain run uses, with the base gin files and bindings (`check`).
"""

import dataclasses
import math
import re
import tokenize
from typing import Any, Dict, List, Sequence, Tuple

from seqmnist import user_files
from seqmnist.config import gin_text
from seqmnist.errors import UserError, first_line

KINDS = ('uniform', 'loguniform', 'int', 'logint', 'choice')
_FORM = ('NAME=DIST(...), DIST one of uniform(low, high), loguniform(low, '
         'high), int(low, high), logint(low, high), choice(v1, v2, ...)')
_SPEC = re.compile(r'\s*([A-Za-z_][\w./]*)\s*=\s*([a-z]+)\s*\((.*)\)\s*',
                   re.DOTALL)
# Values Optuna stores as they are; any other choice (a tuple, a list) is
# stored as its gin text.
_PLAIN = (bool, int, float, str, type(None))


@dataclasses.dataclass(frozen=True)
class Dimension:
  """One binding's distribution: `values` are (low, high) for a range, the
  choices as Optuna stores them for `choice` (plain values as they are, a
  tuple or list as its gin text), and `texts` each choice's gin text."""
  name: str
  kind: str
  values: Tuple[Any, ...]
  text: str  # the spec as the user wrote it, for messages and search.json
  texts: Tuple[str, ...] = ()

  def distribution(self):
    """The Optuna distribution."""
    import optuna  # pylint: disable=g-import-not-at-top
    d = optuna.distributions
    if self.kind in ('uniform', 'loguniform'):
      return d.FloatDistribution(*self.values, log=self.kind == 'loguniform')
    if self.kind in ('int', 'logint'):
      return d.IntDistribution(*self.values, log=self.kind == 'logint')
    return d.CategoricalDistribution(self.values)

  def binding(self, value) -> str:
    """The gin binding of a sampled value."""
    if self.kind == 'choice':
      return f'{self.name}={self.texts[self.values.index(value)]}'
    if self.kind in ('uniform', 'loguniform'):
      value = float(value)
    return f'{self.name}={gin_text.text(value)}'

  def ends(self) -> List[str]:
    """Bindings of the values a check tries: both ends, or every choice."""
    return [self.binding(v) for v in self.values]


def _bad(text: str, why: str) -> UserError:
  return UserError(f'--space={text!r}: {why}')


def parse(text: str) -> Dimension:
  """'Model.output_dropout=uniform(0, 0.5)' -> a Dimension.

  Raises:
    UserError: naming the spec, for a malformed one, an unknown kind, a value
      gin cannot parse, bounds that are not numbers, or a range that is
      empty, inverted or (log) not positive.
  """
  match = _SPEC.fullmatch(text)
  if not match:
    raise UserError(f'--space={text!r} must be {_FORM}')
  name, kind, inside = match.groups()
  if kind not in KINDS:
    raise _bad(text, f'{kind!r} is not a distribution; use one of '
               f'{", ".join(KINDS)}')
  try:
    values = list(gin_text.statements(f'_space = [{inside}]'))[0].value
  except (SyntaxError, tokenize.TokenError, IndexError) as e:
    why = e.args[0] if isinstance(e, tokenize.TokenError) else first_line(e)
    if 'malformed node' in why:
      why = "a string needs quotes, e.g. choice('gru', 'lstm')"
    raise _bad(text, f'the values do not parse as gin values: {why}') from e
  if kind == 'choice':
    if not values:
      raise _bad(text, 'choice() needs at least one value')
    texts = [gin_text.text(v) for v in values]
    if len(set(texts)) != len(texts):
      raise _bad(text, 'a choice is given twice')
    stored = tuple(v if isinstance(v, _PLAIN) else t
                   for v, t in zip(values, texts))
    return Dimension(name, kind, stored, text, tuple(texts))
  if len(values) != 2:
    raise _bad(text, f'{kind}() takes two bounds, (low, high); got '
               f'{len(values)}')
  low, high = values
  integer = kind in ('int', 'logint')
  for bound in values:
    if isinstance(bound, bool) or not isinstance(bound, (int, float)) or (
        not math.isfinite(bound)):
      raise _bad(text, f'the bound {bound!r} is not a finite number')
    if integer and not isinstance(bound, int):
      raise _bad(text, f'{kind}() takes integer bounds; {bound!r} is not one '
                 '(a float setting takes uniform or loguniform)')
  if low == high:
    raise _bad(text, f'the range is empty (low = high = {low!r}); give low < '
               'high, or bind the value with --gin_param')
  if low > high:
    raise _bad(text, f'the range is inverted (low {low!r} > high {high!r}); '
               'give (low, high)')
  if kind.startswith('log') and low <= 0:
    raise _bad(text, f'{kind}() needs low > 0 (log scale); got {low!r}')
  if not integer:
    low, high = float(low), float(high)
  return Dimension(name, kind, (low, high), text)


def read_file(path: str) -> List[str]:
  """The space specs of a space file: one per line, `#` comments."""
  user_files.check_regular(path, 'a space file', max_bytes=1 << 20)
  try:
    with open(path) as f:
      content = f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise UserError(f'--space_file={path} cannot be read: {first_line(e)}'
                    ) from e
  specs = []
  for line in content.splitlines():
    line = line.split('#', 1)[0].strip() if not _quoted_hash(line) else (
        line.strip())
    if line:
      specs.append(line)
  if not specs:
    raise UserError(f'--space_file={path} holds no NAME=DIST(...) line')
  return specs


def _quoted_hash(line: str) -> bool:
  """Whether the line's first '#' is inside quotes (a value, not a
  comment)."""
  hash_at = line.find('#')
  return hash_at >= 0 and (line[:hash_at].count("'") % 2 == 1 or
                           line[:hash_at].count('"') % 2 == 1)


def parse_all(specs: Sequence[str]) -> Tuple[Dimension, ...]:
  """Every spec parsed; a binding given twice is refused."""
  if not specs:
    raise UserError('give the space: at least one --space="NAME=DIST(...)" '
                    '(or --space_file), e.g. --space="LEARNING_RATE='
                    'loguniform(1e-4, 3e-3)"')
  dims = tuple(parse(s) for s in specs)
  names = [d.name for d in dims]
  for name in names:
    if names.count(name) > 1:
      raise UserError(f'--space gives {name} more than once; give each '
                      'binding one distribution')
  return dims


def check(dims: Sequence[Dimension], gin_files_: Sequence[str],
          gin_params: Sequence[str], allow_imports: bool = False
          ) -> Dict[str, int]:
  """Builds the config at every dimension's ends (every choice), the others
  at their low end, with the validators of a plain run; returns the base
  config's {'steps': Trainer.steps, 'eval_every': Trainer.eval_every}.

  Raises:
    UserError: naming the spec and the value a validator refused.
  """
  # pylint: disable=g-import-not-at-top
  from seqmnist import gin_files
  from seqmnist.loop import experiment
  lows = [d.ends()[0] for d in dims]
  trainer = None
  for i, dim in enumerate(dims):
    for end in dim.ends():
      bindings = [*lows[:i], end, *lows[i + 1:]]
      try:
        gin_files.parse(gin_files_, [*gin_params, *bindings],
                        allow_imports=allow_imports)
        trainer = experiment.Configs.from_gin().trainer
      except UserError as e:
        why = first_line(e)
        hint = ''
        if dim.kind in ('uniform', 'loguniform') and 'integer' in why:
          hint = '; an integer setting takes int(low, high) or choice(...)'
        raise _bad(dim.text, f'{why}{hint}') from e
  return {'steps': trainer.steps, 'eval_every': trainer.eval_every}
