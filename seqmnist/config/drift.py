"""Config drift: may this config resume that run directory?

A run directory's checkpoints belong to the config in its saved
`operative_config.gin`. Resuming with another config would at best fail deep
inside TensorFlow (a shape error) and at worst train a different experiment
under the old name. `check` reads both operative configs with gin's own
parser, resolves macros, compares the values binding by binding, and names
the first difference that matters.

Allowed to change on resume: the run length and cadences (`RESUMABLE`), the
evaluation batch, the divergence bound, XLA on or off, the recurrence's
implementation (the same variables either way), what the dashboard
shows (`Dashboard.*`), how replicas are laid out (`Distribute.*`: the global
batch and so the updates do not depend on it), and any binding that follows the
run length through the same macro as `Trainer.steps` (in base.gin the cosine
schedule's `decay_steps = %STEPS`).
"""

from typing import Any, Dict, List, Optional, Tuple

from gin import config_parser

from seqmnist.config import gin_text
from seqmnist.errors import ConfigError, first_line

RESUMABLE = frozenset({
    'Trainer.steps', 'Trainer.steps_per_loop', 'Trainer.eval_every',
    'Trainer.checkpoint_every', 'Trainer.summary_every',
    'Trainer.histogram_every', 'Trainer.checkpoints_to_keep',
    'Trainer.max_loss', 'Trainer.jit_compile', 'Data.eval_batch_size',
    'Model.implementation',
})
RESUMABLE_PREFIXES = ('Distribute.', 'Dashboard.')
# `added_later` below: {'Scope.param': value} of the parameters added after
# run dirs already existed, with the value a saved config without them ran
# with. Each is declared next to its field (`validators.added_later`), and
# experiment.ADDED_LATER gathers them. Where that value differs from
# today's default (Data.split_scheme, Data.normalization), resuming a run binds its own value
# unless the user's config sets one (`earlier_defaults`), so the run
# continues as it started.
UNSET = '<unset>'


def parse_operative(text: str, where: str = 'operative config'
                    ) -> Dict[str, Any]:
  """{'Scope.param' or 'MACRO': value} from an operative config's text.

  Raises:
    ConfigError: the text is not gin.
  """
  bindings = {}
  try:
    for statement in gin_text.statements(text):
      if isinstance(statement, config_parser.BindingStatement):
        bindings[gin_text.binding_key(statement)] = statement.value
  except SyntaxError as e:
    raise ConfigError(f'{where} is not a gin config: {first_line(e)}') from e
  return bindings


def earlier_defaults(saved_text: str, added_later: Dict[str, Any],
                     where: str = 'operative config') -> List[str]:
  """Gin bindings that resume a run with the value it ran with of each
  parameter added later (but those that may change on resume anyway): the
  saved one, or for a run saved before the parameter existed, the value it
  had then. Applied where the user's config does not set the parameter
  (gin_files.parse's run_defaults)."""
  saved = parse_operative(saved_text, where)
  return [f'{key} = {text(_resolve(saved.get(key, value), saved))}'
          for key, value in added_later.items() if not resumable(key)]


def resumable(key: str) -> bool:
  """Whether a binding may change when a run resumes."""
  return key in RESUMABLE or key.startswith(RESUMABLE_PREFIXES)


def saved_bindings(run_dir) -> Optional[Dict[str, Any]]:
  """A run dir's saved operative config as resolved bindings (macros
  dropped); None if it has none."""
  text = run_dir.read_operative_config()
  if text is None:
    return None
  return resolved(parse_operative(text, run_dir.operative_config))


def _macro(value) -> Optional[str]:
  return value.macro_name if isinstance(value, gin_text.GinText) else None


def _resolve(value, bindings: Dict[str, Any], depth: int = 0):
  name = _macro(value)
  if name in bindings and depth < 10:
    return _resolve(bindings[name], bindings, depth + 1)
  return value


def _is_macro(key: str) -> bool:
  return '.' not in key.split('/')[-1]


def resolved(bindings: Dict[str, Any]) -> Dict[str, Any]:
  """The bindings of configurables (macros dropped), macros resolved."""
  return {k: _resolve(v, bindings) for k, v in bindings.items()
          if not _is_macro(k)}


def differences(saved_text: str, current_text: str,
                added_later: Dict[str, Any],
                where: str = 'the saved operative config'
                ) -> List[Tuple[str, Any, Any]]:
  """[(key, saved value, current value)] for every binding resume forbids."""
  saved = parse_operative(saved_text, where)
  current = parse_operative(current_text)
  run_length = {saved.get('Trainer.steps'), current.get('Trainer.steps')}
  out = []
  for key in sorted(set(saved) | set(current)):
    if _is_macro(key) or resumable(key):
      continue
    old = saved.get(key, added_later.get(key, UNSET))
    new = current.get(key, UNSET)
    if _macro(old) and old == new and old in run_length:
      continue  # follows Trainer.steps through the same macro
    old_value, new_value = _resolve(old, saved), _resolve(new, current)
    if not _same_value(old_value, new_value):
      out.append((key, old_value, new_value))
  return out


def _same_value(a, b) -> bool:
  """Whether two settings have the same value: a tuple and a list of the
  same values are (every validator takes either), as are 1 and 1.0; True
  and 1, or a reference and a string of its text, are not."""
  sequences = (list, tuple)
  if isinstance(a, sequences) and isinstance(b, sequences):
    return len(a) == len(b) and all(map(_same_value, a, b))
  if isinstance(a, dict) and isinstance(b, dict):
    return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)
  if type(a) == type(b):  # pylint: disable=unidiomatic-typecheck
    return a == b
  return _same_number(a, b)


def _same_number(a, b) -> bool:
  """1 and 1.0 are the same learning rate; True and 1 are not the same."""
  numbers = (int, float)
  return (isinstance(a, numbers) and isinstance(b, numbers) and
          not isinstance(a, bool) and not isinstance(b, bool) and a == b)


def text(value) -> str:
  """A parsed value as gin writes it."""
  return UNSET if value is UNSET else gin_text.text(value)


def check(saved_text: str, current_text: str, saved_path: str,
          added_later: Dict[str, Any]) -> None:
  """Raises ConfigError naming the first forbidden difference, if any."""
  diffs = differences(saved_text, current_text, added_later, saved_path)
  if diffs:
    key, old, new = diffs[0]
    more = f' (and {len(diffs) - 1} more)' if len(diffs) > 1 else ''
    raise ConfigError(
        f'cannot resume: {key} is {text(old)} in {saved_path} but '
        f'{text(new)} now{more}; only the run length and cadences '
        '(Trainer.steps, eval_every, checkpoint_every, ...) may change, so '
        'use a new --model_dir or the saved config')
