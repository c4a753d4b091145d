"""What every command-line entry point shares: flag errors as one line, and
TensorFlow's start-up records kept off the terminal.

TensorFlow 2.21 writes a few records to stderr when it is imported and when
it first probes for GPUs (oneDNN, "Could not find cuda drivers", a cuInit
"ERROR" on machines without one), before its logging is initialised, so
TF_CPP_MIN_LOG_LEVEL does not silence them. `quiet_stderr` captures file
descriptor 2 around those two moments and passes what was written to absl's
DEBUG log (`--verbosity=1` shows it), so a normal run prints no ERROR line
that is not an error, and a bad config prints its one line and nothing else.
"""

import contextlib
import logging as py_logging
import os
import sys
import tempfile

from absl import app
from absl import flags
from absl import logging

from seqmnist.errors import EXIT_BAD_INPUT


# What quiet_stderr captured before the flags were parsed (at import time
# absl's --verbosity is not known yet): logged at DEBUG once it is (`run`).
_CAPTURED = []


@contextlib.contextmanager
def quiet_stderr(what: str):
  """Captures everything written to fd 2 (C++ included) inside the block,
  then logs it at DEBUG (`--verbosity=1` shows it), saying `what` wrote
  it."""
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      text = captured.read().decode('utf-8', errors='replace').strip()
      if text:
        _CAPTURED.append((what, text))
        _log_captured()


def _log_captured() -> None:
  if not flags.FLAGS.is_parsed():
    return  # `run` logs it once --verbosity is known
  while _CAPTURED:
    what, text = _CAPTURED.pop(0)
    logging.debug('%s wrote to stderr:\n%s', what, text)


# Packages Keras imports with itself, if installed, only for helpers no
# command here calls (notebook display in keras.saving's file editor, image
# galleries in keras.visualization), each behind `except ImportError`.
# Hidden while Keras imports, they are not loaded: a command starts ~0.9 s
# of CPU sooner (BUILD.md, "Tests"). Imported later, they load as usual
# (seqmnist.tools.curves draws with matplotlib); Keras' own helpers that
# need them stay without them in that process.
KERAS_EXTRAS_NOT_USED = ('IPython', 'matplotlib')


@contextlib.contextmanager
def _hidden(names):
  """`import name` fails inside the block for each name not yet imported."""
  hidden = [n for n in names if n not in sys.modules]
  for name in hidden:
    sys.modules[name] = None  # an ImportError for `import name`
  try:
    yield
  finally:
    for name in hidden:
      if sys.modules.get(name, 0) is None:
        del sys.modules[name]


def _verbose(args) -> bool:
  """Whether the command line asks for absl's DEBUG records (--verbosity=1
  or more, -v 1): then TensorFlow's own records are shown too."""
  for i, arg in enumerate(args):
    name, equals, value = arg.lstrip('-').partition('=')
    if name in ('verbosity', 'v'):
      if not equals and i + 1 < len(args):
        value = args[i + 1]
      try:
        return int(value) >= 1
      except ValueError:
        return False
  return False


def import_tensorflow_quietly() -> None:
  """Imports TensorFlow (and Keras) and lets it probe for GPUs, with the
  start-up records of both captured; call before importing any module that
  imports TensorFlow. (Physical devices only: listing them does not start
  the runtime, which MultiWorkerMirroredStrategy must configure first.)

  TensorFlow's records of routine work (a save's "Sharding callback
  duration", tf.data's "Memory patch applied" and "will not be optimized",
  an export's "Assets written to") are kept off the terminal as well: its
  C++ logging at errors only (TF_CPP_MIN_LOG_LEVEL=2, unless the
  environment sets it) and its Python logger at warnings, unless
  --verbosity is 1 or more."""
  verbose = _verbose(sys.argv[1:])
  if not verbose:
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  with quiet_stderr('TensorFlow start-up'), _hidden(KERAS_EXTRAS_NOT_USED):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import keras  # pylint: disable=g-import-not-at-top,unused-import
    tf.config.list_physical_devices('GPU')
  if not verbose:
    py_logging.getLogger('tensorflow').setLevel(py_logging.WARNING)
    # TensorFlow's modules that log through absl (its checkpoint saver).
    _TENSORFLOW_DIRS.extend(os.path.dirname(m.__file__) + os.sep
                            for m in (tf, keras))
    py_logging.getLogger('absl').addFilter(_tensorflow_info_filter)


# The folders of TensorFlow's and Keras' own code (import_tensorflow_quietly).
_TENSORFLOW_DIRS = []


def _tensorflow_info_filter(record) -> bool:
  """False for an INFO or DEBUG record logged from TensorFlow's or Keras'
  own code."""
  return record.levelno >= py_logging.WARNING or not any(
      record.pathname.startswith(d) for d in _TENSORFLOW_DIRS)


def run(program: str, main) -> None:
  """absl's app.run, with a bad flag or a stray argument answered in one
  line and exit 2 instead of a usage page and exit 1."""

  def parse(argv):
    try:
      argv = flags.FLAGS(argv)
    except flags.Error as e:
      print(f'{program}: error: {e} (see --helpshort)', file=sys.stderr)
      sys.exit(EXIT_BAD_INPUT)
    except SystemExit as e:
      # absl's help flags print the help and exit 1; asking for help
      # succeeds.
      if e.code == 1 and _asks_for_help(argv[1:]):
        sys.exit(0)
      raise
    return argv

  def main_with_captured_records(argv):
    _log_captured()
    return main(argv)

  app.run(main_with_captured_records, flags_parser=parse)


# absl's flags that print help and exit.
HELP_FLAGS = ('help', 'helpshort', 'helpfull', 'helpxml', '?', 'h')


def _asks_for_help(args) -> bool:
  for arg in args:
    if arg == '--':
      return False
    name = arg.lstrip('-').split('=', 1)[0]
    if arg.startswith('-') and name in HELP_FLAGS:
      return True
  return False


def no_positional_arguments(program: str, argv) -> None:
  if len(argv) > 1:
    print(f'{program}: error: unexpected argument(s) {" ".join(argv[1:])}; '
          'every input is a --flag (see --helpshort)', file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)
