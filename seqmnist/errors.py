"""The exceptions a user is meant to read, and the exit code of each.

Every command-line entry point prints any `SeqmnistError` as one line (no
traceback) and exits with its `exit_code`; the launchers act on these codes
(README, "Reliability"):

  2    bad input (UserError): a gin value, a data file, a directory, or a
       resume whose config does not match the run's checkpoints;
  3    training diverged (Diverged): fix the config; the last good
       checkpoint is kept;
  4    pruned (Pruned): a trial of `seqmnist-search` that its study stopped
       at a validation, behind the other trials; a checkpoint was saved at
       that step;
  75   a worker was lost (WorkerLost): another worker of a multi-worker job
       stopped answering (its node died, it was killed); the checkpoints on
       disk are intact; rerunning resumes from the newest (Slurm's
       train.sbatch requeues the job). 75 is sysexits' EX_TEMPFAIL: retry.
  130  interrupted (Interrupted): Ctrl-C; a checkpoint was saved at a step
       boundary; rerunning the same command resumes;
  143  preempted (Preempted): SIGTERM received, a checkpoint was saved at a
       step boundary; rerunning the same command resumes. 143 is also what a
       process killed by SIGTERM reports (128 + 15), and what schedulers
       already treat as retryable.
"""

import os
import sys

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_PRUNED = 4
EXIT_WORKER_LOST = 75
EXIT_INTERRUPTED = 130
EXIT_PREEMPTED = 143


class SeqmnistError(Exception):
  """An outcome the user reads as one line; `exit_code` says which."""
  exit_code = 1
  label = 'error'


class UserError(SeqmnistError):
  """Bad input; the message names the bad value and what would be valid."""
  exit_code = EXIT_BAD_INPUT


class ConfigError(UserError):
  """A gin binding or flag holds a value that cannot be used."""


class DataError(UserError):
  """A data file is missing, truncated, corrupt or of the wrong shape."""


class Diverged(SeqmnistError):
  """The loss or a gradient became NaN or Inf, or the loss exceeded its
  bound; nothing after the last good checkpoint was saved. Not bad input:
  the config is valid, training it failed."""
  exit_code = EXIT_DIVERGED


class Pruned(SeqmnistError):
  """A search's trial stopped by its study's pruner at a validation; its
  checkpoint at that step is saved. Not a failure: the trial lost."""
  exit_code = EXIT_PRUNED
  label = 'pruned'


class WorkerLost(SeqmnistError):
  """A collective failed because another worker stopped answering; the run
  dir is intact and rerunning resumes from its newest checkpoint."""
  exit_code = EXIT_WORKER_LOST
  label = 'worker lost'


class Preempted(SeqmnistError):
  """SIGTERM: every worker saved the same step and stops; rerun to resume."""
  exit_code = EXIT_PREEMPTED
  label = 'preempted'


class Interrupted(Preempted):
  """Ctrl-C (SIGINT): saved like a preemption; exit 130 as a shell expects."""
  exit_code = EXIT_INTERRUPTED
  label = 'interrupted'


# An error line quotes what the user gave; a value of megabytes is cut to
# its start and end.
MAX_LINE = 600


def first_line(error: BaseException) -> str:
  """The first non-empty line of an exception's message, or its type name
  when it has none (`str(KeyError())` is empty), cut to MAX_LINE
  characters."""
  for line in str(error).splitlines():
    if line.strip():
      return shorten(line.strip())
  return type(error).__name__


def shorten(text: str, limit: int = MAX_LINE) -> str:
  """`text`, or its start and end around '... [N characters] ...'."""
  if len(text) <= limit:
    return text
  cut = len(text) - (limit - 100)
  return (f'{text[:(limit - 100) * 2 // 3]} ... [{cut:,} characters] ... '
          f'{text[-(limit - 100) // 3:]}')


def exit_on_error(program: str, fn, *args):
  """Runs fn(*args); a SeqmnistError becomes one stderr line and its exit
  code (the contract every command-line entry point keeps)."""
  try:
    return fn(*args)
  except SeqmnistError as e:
    print(f'{program}: {e.label}: {first_line(e)}', file=sys.stderr)
    if isinstance(e, WorkerLost):
      # Nothing is left to save, and TensorFlow's teardown would wait on
      # the lost worker (a stopped process keeps its connections open, and
      # the coordination service's shutdown waits for it): leave now.
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(e.exit_code)  # pylint: disable=protected-access
    sys.exit(e.exit_code)
  except KeyboardInterrupt:  # Ctrl-C outside training's step boundaries
    print(f'{program}: interrupted: stopped by Ctrl-C; the newest checkpoint '
          'on disk, if any, is kept', file=sys.stderr)
    sys.exit(EXIT_INTERRUPTED)
