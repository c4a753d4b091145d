"""ReportToTrial: in a search's trial, each validation is reported to a real
Optuna trial (SQLite storage); behind the median, the run saves its step and
stops with Pruned; never at the final step; absent outside a search."""
import dataclasses

import optuna
import pytest

from seqmnist.errors import Pruned
from seqmnist.loop.actions.report_to_trial import ReportToTrial
from seqmnist.tools import search_study

import job_parts


def _link(tmp_path, earlier=(0.9, 0.8)):
  """A trial of a study whose finished trials had `earlier` at step 10."""
  url = f'sqlite:///{tmp_path}/study.db'
  study = optuna.create_study(storage=url, study_name='s',
                              direction='maximize')
  for value in earlier:
    trial = study.ask()
    trial.report(value, 10)
    study.tell(trial, value)
  number = study.ask().number
  pruner = search_study.make_pruner('median', startup=len(earlier),
                                    eval_every=5, steps=20)
  return search_study.TrialLink(url, 's', number, pruner), study, number


def _validated(step, accuracy, final=False):
  return dataclasses.replace(job_parts.boundary(step), final=final,
                             validation={'accuracy': accuracy, 'loss': 1.0})


def test_outside_a_search_there_is_no_such_action(tmp_path, mnist_dir):
  parts, _, _, _ = job_parts.make(tmp_path, mnist_dir)
  assert ReportToTrial.build(parts) is None


def test_a_trial_ahead_reports_and_goes_on(tmp_path, mnist_dir):
  parts, _, _, _ = job_parts.make(tmp_path, mnist_dir)
  link, study, number = _link(tmp_path)
  action = ReportToTrial.build(dataclasses.replace(parts, trial=link))
  assert action.after == ('Validate',) and action.every == 10
  assert action(_validated(10, 0.95)) is None
  assert study.trials[number].intermediate_values == {10: 0.95}
  assert parts.checkpoints.latest_step() is None


def test_a_trial_behind_the_median_saves_its_step_and_stops(tmp_path,
                                                            mnist_dir):
  parts, _, _, _ = job_parts.make(tmp_path, mnist_dir)
  link, study, number = _link(tmp_path)
  action = ReportToTrial.build(dataclasses.replace(parts, trial=link))
  with pytest.raises(Pruned, match=r'pruned this trial at step 10 '
                     r'\(validation accuracy 0\.1000\); checkpoint saved'):
    action(_validated(10, 0.1))
  assert parts.checkpoints.latest_step() == 10
  assert study.trials[number].intermediate_values == {10: 0.1}


def test_the_final_step_is_reported_but_never_pruned(tmp_path, mnist_dir):
  parts, _, _, _ = job_parts.make(tmp_path, mnist_dir)
  link, study, number = _link(tmp_path)
  action = ReportToTrial.build(dataclasses.replace(parts, trial=link))
  assert action(_validated(10, 0.1, final=True)) is None
  assert study.trials[number].intermediate_values == {10: 0.1}
