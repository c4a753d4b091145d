"""Config drift: may this config resume that run directory?

A run directory's checkpoints belong to the config in its saved
`operative_config.gin`. Resuming with another config would at best fail deep
inside TensorFlow (a shape error) and at worst train a different experiment
under the old name. `check` compares the two operative configs binding by
binding, macros resolved, and names the first difference that matters.

Allowed to change on resume: the run length and cadences (`RESUMABLE`), the
evaluation batch, the divergence bound, XLA on or off, what the dashboard
shows (`Dashboard.*`), how replicas are laid out (`Distribute.*`: the global
batch and so the updates do not depend on it), and any binding that follows the
run length through the same macro as `Trainer.steps` (in base.gin the cosine
schedule's `decay_steps = %STEPS`).
"""

import re
from typing import Dict

from seqmnist.errors import ConfigError

RESUMABLE = frozenset({
    'Trainer.steps', 'Trainer.steps_per_loop', 'Trainer.eval_every',
    'Trainer.checkpoint_every', 'Trainer.summary_every',
    'Trainer.histogram_every', 'Trainer.checkpoints_to_keep',
    'Trainer.max_loss', 'Trainer.jit_compile', 'Data.eval_batch_size',
})
RESUMABLE_PREFIXES = ('Distribute.', 'Dashboard.')
# Parameters added after run dirs already existed: a saved config without one
# ran with the value the parameter now defaults to.
ADDED_LATER = {'Model.gate_init': "'default'"}

_BINDING = re.compile(r'^([A-Za-z_][\w.]*(?:/[\w.]+)*)\s*=\s*(.*)$')
_MACRO = re.compile(r'^%([A-Za-z_][\w.]*)$')
UNSET = '<unset>'


def parse_operative(text: str) -> Dict[str, str]:
  """{'Scope.param' or 'MACRO': value text} from an operative config."""
  bindings, key = {}, None
  for line in text.splitlines():
    if not line.strip() or line.lstrip().startswith('#'):
      key = None
      continue
    match = _BINDING.match(line)
    if match and not line[0].isspace():
      key = match.group(1)
      bindings[key] = match.group(2).rstrip('\\').strip()
    elif key is not None:  # a value continued over several lines
      bindings[key] = (bindings[key] + ' ' + line.strip().rstrip('\\')).strip()
  return bindings


def _resolve(value: str, bindings: Dict[str, str], depth: int = 0) -> str:
  match = _MACRO.match(value)
  if match and match.group(1) in bindings and depth < 10:
    return _resolve(bindings[match.group(1)], bindings, depth + 1)
  return value


def _is_macro(key: str) -> bool:
  return '.' not in key.split('/')[-1]


def differences(saved_text: str, current_text: str):
  """[(key, saved value, current value)] for every binding resume forbids."""
  saved = parse_operative(saved_text)
  current = parse_operative(current_text)
  run_length = {saved.get('Trainer.steps'), current.get('Trainer.steps')}
  out = []
  for key in sorted(set(saved) | set(current)):
    if (_is_macro(key) or key in RESUMABLE or
        key.startswith(RESUMABLE_PREFIXES)):
      continue
    old = saved.get(key, ADDED_LATER.get(key, UNSET))
    new = current.get(key, UNSET)
    if old == new and _MACRO.match(old):
      if old in run_length:
        continue  # follows Trainer.steps through the same macro
    old_value, new_value = _resolve(old, saved), _resolve(new, current)
    if old_value != new_value:
      out.append((key, old_value, new_value))
  return out


def check(saved_text: str, current_text: str, saved_path: str) -> None:
  """Raises ConfigError naming the first forbidden difference, if any."""
  diffs = differences(saved_text, current_text)
  if diffs:
    key, old, new = diffs[0]
    more = f' (and {len(diffs) - 1} more)' if len(diffs) > 1 else ''
    raise ConfigError(
        f'cannot resume: {key} is {old} in {saved_path} but {new} now{more}; '
        'only the run length and cadences (Trainer.steps, eval_every, '
        'checkpoint_every, ...) may change, so use a new --model_dir or '
        'the saved config')
