"""How GRU/LSTM layers run: `Model.implementation`, and what 'auto' picks.

- 'keras': Keras' layer: its step loop on a CPU, cuDNN's kernel on a GPU;
- 'fused': the whole layer as one oneDNN op (fused.py), CPU only;
- 'unroll': Keras' layer trained with its recurrence unrolled into the graph
  (Keras' `unroll=True` while training): copies of the step instead of a
  while loop, for short sequences on a CPU; GRU/LSTM layers infer with
  Keras' loop (as an export serves them); not cuDNN's kernel, so 'auto'
  never picks it on a GPU;
- 'auto': `choose` picks one from the machine at hand: a GPU -> 'keras'
  (cuDNN); else by what was measured on CPUs of each kind
  (docs/benchmarks.md), from the CPU's own features (read from
  /proc/cpuinfo, not assumed), the threads the process may use and the
  sequence length. Its choice and why go in the run's start-up line.

TensorFlow's own oneDNN ops are a switch of the process, read when
TensorFlow imports: `prepare_tensorflow` (called by the entry points that
train, serve or benchmark, before that) turns them on where they measured
faster and TensorFlow leaves them off.

Every implementation builds the same variables under the same names, so a
run may switch on resume and ends where it would have ended.
"""

import dataclasses
import functools
import os
from typing import FrozenSet, Optional

IMPLEMENTATIONS = ('auto', 'keras', 'fused', 'unroll')

# Longest sequence (steps a layer runs) 'unroll' builds: every step is a copy
# of the cell in the graph, so the graph and its build time grow with it.
MAX_UNROLL_STEPS = 128


@functools.lru_cache(maxsize=None)
def cpu_flags() -> FrozenSet[str]:
  """The CPU's feature flags as the kernel reports them (/proc/cpuinfo);
  empty where there is no such file."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('flags'):
          return frozenset(line.split(':', 1)[1].split())
  except OSError:
    pass
  return frozenset()


def vector_extensions(flags: Optional[FrozenSet[str]] = None) -> dict:
  """{'AVX2': bool, 'AVX-512': bool, 'AMX': bool} for these flags (default:
  this CPU's)."""
  flags = cpu_flags() if flags is None else flags
  return {'AVX2': 'avx2' in flags, 'AVX-512': 'avx512f' in flags,
          'AMX': any(f.startswith('amx') for f in flags)}


def cpu_kind(flags: Optional[FrozenSet[str]] = None) -> str:
  """'AVX-512' (with or without AMX) or 'AVX2' or 'other': the kinds
  docs/benchmarks.md keeps a table for."""
  ext = vector_extensions(flags)
  if ext['AVX-512']:
    return 'AVX-512'
  return 'AVX2' if ext['AVX2'] else 'other'


def cpu_model() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  import platform  # pylint: disable=g-import-not-at-top
  return platform.processor() or platform.machine()


# TensorFlow's switch for its own oneDNN ops, read when it imports.
ONEDNN_SWITCH = 'TF_ENABLE_ONEDNN_OPTS'

# The CPU kinds where TensorFlow leaves its oneDNN ops off and our steps
# measured faster with them on (docs/benchmarks.md, "On the CPU at hand"):
# prepare_tensorflow turns them on there. (Where the CPU has AVX-512-class
# features TensorFlow turns them on itself.)
ONEDNN_MEASURED_FASTER_ON = ('AVX2',)

_prepared = {}  # 'why': the reason prepare_tensorflow turned oneDNN on


def prepare_tensorflow(environ=None,
                       flags: Optional[FrozenSet[str]] = None) -> bool:
  """Call before TensorFlow imports (it reads its switches once): sets
  TF_ENABLE_ONEDNN_OPTS=1 on a CPU kind in ONEDNN_MEASURED_FASTER_ON unless
  the environment sets the switch already (the user's setting wins). Returns
  whether it set it; processes started from here inherit the setting."""
  environ = os.environ if environ is None else environ
  kind = cpu_kind(flags)
  if ONEDNN_SWITCH in environ or kind not in ONEDNN_MEASURED_FASTER_ON:
    return False
  environ[ONEDNN_SWITCH] = '1'
  if environ is os.environ:
    _prepared['why'] = f'{kind} CPU, where they measured faster'
  return True


def onednn_state() -> str:
  """TensorFlow's oneDNN ops in this process and who decided (the run's
  start-up line)."""
  state = 'on' if onednn_ops_on() else 'off'
  if 'why' in _prepared:
    return f'{state} ({ONEDNN_SWITCH}=1 set by seqmnist: {_prepared["why"]})'
  if ONEDNN_SWITCH in os.environ:
    return f'{state} ({ONEDNN_SWITCH}={os.environ[ONEDNN_SWITCH]})'
  return f"{state} (TensorFlow's default on this CPU)"


def onednn_ops_on() -> bool:
  """Whether TensorFlow runs its own oneDNN ops in this process (it decides
  from TF_ENABLE_ONEDNN_OPTS and the CPU: on by default only where the CPU
  has AVX-512-class features)."""
  from tensorflow.python.util import _pywrap_util_port  # pylint: disable=g-import-not-at-top
  return bool(_pywrap_util_port.IsMklEnabled())


@dataclasses.dataclass(frozen=True)
class Choice:
  """What runs the recurrent layers, and why (the start-up line)."""
  implementation: str  # 'keras', 'fused' or 'unroll'
  why: str


# The CPU kinds where the unrolled layer was measured ahead of Keras' step
# loop on short sequences (docs/benchmarks.md, "On the CPU at hand"); on the
# others 'auto' keeps Keras' loop until a measurement says otherwise.
UNROLL_MEASURED_FASTER_ON = ('AVX2',)


def choose(requested: str, *, cell_fused: bool, float32: bool,
           sequence_length: int, threads: int, gpu: bool,
           fused_available: bool,
           flags: Optional[FrozenSet[str]] = None) -> Choice:
  """The implementation 'auto' picks (or `requested`, when not 'auto').

  The rule, from docs/benchmarks.md's tables:
  - a GPU: 'keras' (cuDNN's kernel);
  - else one thread: 'fused' where the op covers the cell and float32 (it
    measured ahead of Keras' layer at one thread);
  - else GRU/LSTM layers (the cells the op covers: their layers train
    unrolled and infer with Keras' loop, as an export serves them) over at
    most MAX_UNROLL_STEPS steps, on a CPU kind in UNROLL_MEASURED_FASTER_ON:
    'unroll';
  - else 'keras'.
  """
  if requested != 'auto':
    return Choice(requested, 'Model.implementation')
  kind = cpu_kind(flags)
  where = f'{threads} threads, {kind} CPU'
  if gpu:
    return Choice('keras', 'auto: a GPU is visible (cuDNN)')
  if threads <= 1 and cell_fused and float32 and fused_available:
    return Choice('fused', f'auto: 1 thread, {kind} CPU, where the fused op '
                  "measured ahead of Keras' layer")
  if (cell_fused and sequence_length <= MAX_UNROLL_STEPS and
      kind in UNROLL_MEASURED_FASTER_ON):
    return Choice('unroll', f'auto: {where}, {sequence_length}-step '
                  "sequences, where the unrolled layer measured ahead of "
                  "Keras' loop")
  return Choice('keras', f'auto: {where}, {sequence_length}-step sequences')


def thread_budget() -> int:
  """The threads a run may use: TF_NUM_INTRAOP_THREADS, else its CPUs."""
  try:
    return max(1, int(os.environ.get('TF_NUM_INTRAOP_THREADS', '')))
  except ValueError:
    return max(1, len(os.sched_getaffinity(0)))
