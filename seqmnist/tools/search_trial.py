r"""One trial of a search: a `seqmnist.main` run that reports to its study.

Started by `seqmnist.tools.search` (search_study.Worker), not by hand:

  python -m seqmnist.tools.search_trial --storage=URL --study_name=NAME \
      --trial_number=N --pruner=median --startup_trials=5 --eval_every=860 \
      --steps=8600 <seqmnist.main's flags: --gin_file, --gin_param, ...>

It trains exactly as `python -m seqmnist.main` with the same flags would
(the run dir is an ordinary one: rerunning it by hand resumes it), and after
each validation reports the accuracy to trial N (the ReportToTrial action,
loop/actions/report_to_trial.py). When the study's pruner stops the trial,
the run saves and exits 4 (errors.EXIT_PRUNED).
"""

from absl import flags

from seqmnist import main as main_lib  # defines seqmnist.main's flags
from seqmnist import cli
from seqmnist.errors import exit_on_error
from seqmnist.tools import search_study

_STORAGE = flags.DEFINE_string('storage', None, 'The study\'s storage URL.')
_STUDY_NAME = flags.DEFINE_string('study_name', None, 'The study.')
_TRIAL_NUMBER = flags.DEFINE_integer('trial_number', None, 'The trial.')
_PRUNER = flags.DEFINE_string('pruner', 'median', 'As the search\'s.')
_STARTUP_TRIALS = flags.DEFINE_integer('startup_trials', 5,
                                       'As the search\'s.')
_EVAL_EVERY = flags.DEFINE_integer('eval_every', 1, 'The pruner\'s step.')
_STEPS = flags.DEFINE_integer('steps', 1, 'The pruner\'s last step.')
_PRUNE_FROM = flags.DEFINE_integer('prune_from', 2, 'As the search\'s.')


def _run():
  pruner = search_study.make_pruner(_PRUNER.value, _STARTUP_TRIALS.value,
                                    _EVAL_EVERY.value, _STEPS.value,
                                    _PRUNE_FROM.value)
  link = search_study.TrialLink(_STORAGE.value, _STUDY_NAME.value,
                                _TRIAL_NUMBER.value, pruner)
  return main_lib.train(trial=link)


def main(argv):
  cli.no_positional_arguments('seqmnist.tools.search_trial', argv)
  main_lib.print_results(exit_on_error('seqmnist', _run))


if __name__ == '__main__':
  cli.run('seqmnist.tools.search_trial', main)
