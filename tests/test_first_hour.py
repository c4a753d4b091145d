"""What a person meets in the first hour, through the CLI: a bad binding
named with its fix, settings refused that would run but make no sense,
equal values compared by value on resume, --help that succeeds, a run's
output without TensorFlow's routine records, and a rerun that trained
nothing saying so."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from seqmnist import scripts

from conftest import FAST, REPO, gin_params, run_cli

STEPS = 20
RUN = (*FAST, 'Trainer.steps_per_loop=10', f'Trainer.steps={STEPS}',
       'Trainer.eval_every=10', 'Trainer.checkpoint_every=10')


def _as_a_user(*args, module='seqmnist.main'):
  """As a user runs it: TF_CPP_MIN_LOG_LEVEL not set."""
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  return subprocess.run([sys.executable, '-m', module, *args], env=env,
                        capture_output=True, text=True, timeout=600,
                        cwd=REPO, check=False)


@pytest.mark.parametrize('binding, message', [
    ('Model.cell=lstm',
     '--gin_param="Model.cell=lstm": lstm is not a gin value; a string '
     'needs quotes: --gin_param="Model.cell=\'lstm\'"'),
    ('Trainer.ema_decay=nan',
     '--gin_param="Trainer.ema_decay=nan": nan is not a gin value; gin has '
     'no literal for it; give a finite number'),
    ('Model.output_dropout=0.5.5',
     '--gin_param="Model.output_dropout=0.5.5": 0.5.5 is not a gin value; a '
     'value is a number, a quoted string'),
    ('Model.dilations=(1,',
     '--gin_param="Model.dilations=(1,": (1, is not a gin value; an '
     'unclosed bracket or quote?'),
    ('Model.cell', "--gin_param='Model.cell' is not a binding: give "
     'NAME=VALUE'),
], ids=['unquoted-string', 'nan', 'two-points', 'unclosed', 'no-value'])
def test_a_bad_binding_among_many_is_named_with_its_fix(tmp_path, mnist_dir,
                                                        binding, message):
  model_dir = tmp_path / 'run'
  result = _as_a_user(
      '--gin_file=row.gin', f'--model_dir={model_dir}',
      f'--data_dir={mnist_dir}',
      *gin_params('Trainer.steps=10', 'Model.units=8', binding,
                  'Trainer.seed=3'))
  assert result.returncode == 2
  (line,) = result.stderr.strip().splitlines()
  assert line.startswith('seqmnist: error: ' + message), line
  assert not model_dir.exists()


@pytest.mark.parametrize('params, message', [
    (('Model.layers=2', 'Model.dilations=(1, 1000)'),
     "Model.dilations=(1, 1000) on 28-step sequences (Data.order='row'): "
     'its layers run 28, 1 steps of their own, and one step is no '
     'recurrence; give each dilation below 28'),
    (("Model.cell='simple'", "Model.implementation='fused'"),
     "Model.implementation='fused' but the fused op has no recurrence for "
     "Model.cell='simple' (it covers 'gru', 'lstm'); use 'auto' or 'keras'"),
    (('Data.batch_size=60000',),
     'Data.batch_size=60000 is larger than the training split (55000 '
     'images)'),
], ids=['dilation-as-long-as-the-sequence', 'fused-simple', 'batch'])
def test_settings_that_would_run_without_sense_are_refused(
    tmp_path, mnist_dir, params, message):
  model_dir = tmp_path / 'run'
  result = run_cli('--gin_file=row.gin', f'--model_dir={model_dir}',
                   f'--data_dir={mnist_dir}', *gin_params(*params))
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr.strip().splitlines()[-1] == (
      'seqmnist: error: ' + message)
  assert not model_dir.exists()


def test_a_list_resumes_a_run_saved_with_the_equal_tuple(tmp_path,
                                                         mnist_dir):
  model_dir = tmp_path / 'run'
  dilated = ('Model.layers=2', 'Model.units=8')
  first = run_cli('--gin_file=row.gin', f'--model_dir={model_dir}',
                  f'--data_dir={mnist_dir}', *gin_params(
                      *RUN, *dilated, 'Model.dilations=(1, 4)',
                      'Trainer.steps=10'))
  assert first.returncode == 0, first.stderr[-3000:]
  resumed = run_cli('--gin_file=row.gin', f'--model_dir={model_dir}',
                    f'--data_dir={mnist_dir}', *gin_params(
                        *RUN, *dilated, 'Model.dilations=[1, 4]'))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'Resumed from' in resumed.stderr
  results = json.loads((model_dir / 'results.json').read_text())
  assert results['global_step'] == STEPS
  # A different value is still refused.
  refused = run_cli('--gin_file=row.gin', f'--model_dir={model_dir}',
                    f'--data_dir={mnist_dir}', *gin_params(
                        *RUN, *dilated, 'Model.dilations=[1, 2]'))
  assert refused.returncode == 2
  # (The resumed command, which trained, saved its own spelling.)
  assert re.match(r'seqmnist: error: cannot resume: Model\.dilations is '
                  r'\[1, 4\] in \S+ but \[1, 2\] now',
                  refused.stderr.strip().splitlines()[-1]), refused.stderr


# Every command: the modules setup.cfg's console scripts run.
COMMANDS = tuple(sorted(entry.module for entry in vars(scripts).values()
                        if hasattr(entry, 'module')))
assert len(COMMANDS) >= 10, COMMANDS


@pytest.mark.parametrize('module', COMMANDS)
def test_help_succeeds(module):
  # --helpshort on the training command too (the README points to it).
  flags = ('--help', '--helpshort') if module == 'seqmnist.main' else (
      '--help',)
  for flag in flags:
    result = _as_a_user(flag, module=module)
    assert result.returncode == 0, (flag, result.stderr[-2000:])
    assert '--' in result.stdout, result.stdout[-2000:]


@pytest.fixture(scope='module')
def user_run(tmp_path_factory, mnist_dir):
  """A short run as a user starts it, and its export."""
  model_dir = tmp_path_factory.mktemp('user') / 'run'
  trained = _as_a_user('--gin_file=row.gin', f'--model_dir={model_dir}',
                       f'--data_dir={mnist_dir}', *gin_params(*RUN))
  assert trained.returncode == 0, trained.stderr[-3000:]
  exported = _as_a_user(f'--model_dir={model_dir}',
                        f'--export_dir={model_dir.parent / "export"}',
                        module='seqmnist.serving.export')
  assert exported.returncode == 0, exported.stderr[-3000:]
  return model_dir, trained, exported


def _our_modules():
  return {f for _, _, names in os.walk(os.path.join(REPO, 'seqmnist'))
          for f in names if f.endswith('.py')}


def test_a_normal_run_prints_only_our_records(user_run):
  """Every log record a run or an export prints is seqmnist's own: none of
  TensorFlow's routine ones (a save's 'Sharding callback duration',
  tf.data's 'Memory patch applied' and 'will not be optimized', an export's
  'Assets written to')."""
  _, trained, exported = user_run
  ours = _our_modules()
  for result in (trained, exported):
    text = result.stdout + result.stderr
    for noise in ('Sharding callback', 'Memory patch', 'will not be '
                  'optimized', 'Assets written to', 'INFO:tensorflow'):
      assert noise not in text, text[-3000:]
    for line in result.stderr.splitlines():
      record = re.match(r'[IWEF]\d{4} [\d:.]+ +\d+ ([\w.]+):\d+\] ', line)
      assert record and record.group(1) in ours, line
  assert 'Training from step 0' in trained.stderr  # our records stay


def test_rerunning_with_fewer_steps_says_nothing_was_trained(tmp_path,
                                                             user_run,
                                                             mnist_dir):
  model_dir = tmp_path / 'run'
  shutil.copytree(user_run[0], model_dir)
  fewer = run_cli('--gin_file=row.gin', f'--model_dir={model_dir}',
                  f'--data_dir={mnist_dir}',
                  *gin_params(*RUN, 'Trainer.steps=10'))
  assert fewer.returncode == 0, fewer.stderr[-3000:]
  assert fewer.stdout.strip().splitlines()[-1].startswith(
      f'nothing trained (the run finished at step {STEPS}, past '
      'Trainer.steps=10, and a run never goes back); recorded: test '
      'accuracy '), fewer.stdout
  same = run_cli('--gin_file=row.gin', f'--model_dir={model_dir}',
                 f'--data_dir={mnist_dir}', *gin_params(*RUN))
  assert same.stdout.strip().splitlines()[-1].startswith(
      f'nothing trained (the run finished at step {STEPS}); recorded: ')
