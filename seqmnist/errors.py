"""The exceptions a user is meant to read, and the exit code of each.

`main` prints any of them as one line (no traceback) and exits with its
`exit_code`; the launchers act on these codes (README, "Reliability"):

  2    bad input (UserError): a gin value, a data file, a directory, or a
       resume whose config does not match the run's checkpoints;
  3    training diverged (Diverged): fix the config; the last good
       checkpoint is kept;
  143  preempted (Preempted): SIGTERM received, a checkpoint was saved at a
       step boundary; rerunning the same command resumes. 143 is also what a
       process killed by SIGTERM reports (128 + 15), and what schedulers
       already treat as retryable.
"""

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_PREEMPTED = 143


class UserError(Exception):
  """Bad input; the message names the bad value and what would be valid."""
  exit_code = EXIT_BAD_INPUT
  label = 'error'


class ConfigError(UserError):
  """A gin binding or flag holds a value that cannot be used."""


class DataError(UserError):
  """A data file is missing, truncated, corrupt or of the wrong shape."""


class Diverged(UserError):
  """The loss or a gradient became NaN or Inf; nothing bad was saved."""
  exit_code = EXIT_DIVERGED


class Preempted(Exception):
  """SIGTERM: every worker saved the same step and stops; rerun to resume."""
  exit_code = EXIT_PREEMPTED
  label = 'preempted'


def exit_on_error(program: str, fn, *args):
  """Runs fn(*args); a UserError or Preempted becomes one stderr line and
  its exit code (the contract every command-line entry point keeps)."""
  import sys  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  try:
    return fn(*args)
  except (UserError, Preempted) as e:
    message = str(e).strip().splitlines()[0]
    logging.error('%s', message)
    print(f'{program}: {e.label}: {message}', file=sys.stderr)
    sys.exit(e.exit_code)


def check_int(name: str, value, minimum: int) -> None:
  """Raises ConfigError unless value is an int (not a bool) >= minimum."""
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ConfigError(f'{name}={value!r} must be an integer >= {minimum}')
