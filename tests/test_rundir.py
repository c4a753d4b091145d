"""The run directory, the controller's cadences, drift and the progress line.

The run dir through the CLI on real MNIST (an old-layout run resumes exactly,
a foreign folder is refused, a second process is locked out); the controller,
drift and the progress line as units.
"""

import ast
import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest
import tensorflow as tf

from conftest import REPO, gin_params, run_cli, start_cli, wait_for_line
from seqmnist import rundir
from seqmnist.config import drift
from seqmnist.errors import ConfigError, UserError
from seqmnist.loop import experiment
from seqmnist.loop import job
from seqmnist.loop import outer_loop
from seqmnist.loop import progress
from seqmnist.loop import trainer

FIXTURE = os.path.join(REPO, 'tests', 'fixtures', 'run_v1_row')
# The command that made the fixture (tests/fixtures/README.md), minus STEPS.
FIXTURE_RUN = ('UNITS=8', 'Trainer.learning_rate=0.01',
               'Trainer.steps_per_loop=5', 'Trainer.eval_every=10',
               'Trainer.checkpoint_every=10', 'Trainer.summary_every=5',
               'Data.batch_size=32', 'Dashboard.probe_examples=16',
               'Dashboard.images=2')


def _fixture_args(model_dir, mnist_dir, steps):
  return ('--gin_file=row.gin', f'--model_dir={model_dir}',
          f'--data_dir={mnist_dir}',
          *gin_params(*FIXTURE_RUN, f'STEPS={steps}'))


@pytest.mark.e2e
def test_a_run_dir_of_the_old_layout_resumes_exactly(tmp_path, mnist_dir):
  # Made by commit 6434777; that code resumed it to 0.3008 / 0.3025 and got
  # the same from scratch (tests/fixtures/README.md), on another CPU: oneDNN
  # picks kernels by instruction set, so those figures are compared with a
  # tolerance, and bit-exactness is checked between two resumes made here.
  results, fingerprints = [], []
  for copy in ('old', 'old_again'):
    model_dir = tmp_path / copy
    shutil.copytree(FIXTURE, model_dir)
    finished = run_cli(*_fixture_args(model_dir, mnist_dir, 20))
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert 'Run already finished at step 20' in finished.stderr

    result = run_cli(*_fixture_args(model_dir, mnist_dir, 40))
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Resumed from' in result.stderr and 'ckpt-20' in result.stderr
    results.append(json.loads((model_dir / 'results.json').read_text()))
  for r in results:
    assert r['global_step'] == 40
    assert r['best_step'] == 40
    assert abs(r['best_val_accuracy'] - 0.3008) <= 0.003  # 15 of 5,000
    assert abs(r['test_accuracy'] - 0.3025) <= 0.003      # 30 of 10,000
  assert results[0]['weights_fingerprint'] == results[1]['weights_fingerprint']
  assert results[0]['test_accuracy'] == results[1]['test_accuracy']


@pytest.mark.e2e
def test_a_foreign_folder_is_refused_untouched(tmp_path, mnist_dir):
  folder = tmp_path / 'mine'
  folder.mkdir()
  (folder / 'results.json').write_text('{"my": "own results"}')
  (folder / 'notes.txt').write_text('do not lose me')
  result = run_cli('--gin_file=row.gin', f'--model_dir={folder}',
                   f'--data_dir={mnist_dir}', *gin_params('Trainer.steps=2'))
  assert result.returncode == 2
  last = result.stderr.strip().splitlines()[-1]
  assert last == (f'seqmnist: error: --model_dir={folder} is a non-empty '
                  'folder that is not a seqmnist run directory (it holds '
                  'notes.txt, results.json); give a new or empty folder, or an existing run '
                  'directory to resume')
  assert sorted(os.listdir(folder)) == ['notes.txt', 'results.json']
  assert (folder / 'results.json').read_text() == '{"my": "own results"}'


@pytest.mark.e2e
def test_an_empty_folder_is_used(tmp_path, mnist_dir):
  folder = tmp_path / 'empty'
  folder.mkdir()
  result = run_cli('--gin_file=row.gin', f'--model_dir={folder}',
                   f'--data_dir={mnist_dir}',
                   *gin_params('UNITS=8', 'STEPS=5', 'Trainer.eval_every=5',
                               'Trainer.checkpoint_every=5',
                               'Trainer.steps_per_loop=5'))
  assert result.returncode == 0, result.stderr[-3000:]
  assert (folder / 'results.json').exists()


@pytest.mark.e2e
def test_a_second_process_on_the_same_run_dir_is_locked_out(tmp_path,
                                                            mnist_dir):
  model_dir = tmp_path / 'run'
  args = ('--gin_file=row.gin', f'--model_dir={model_dir}',
          f'--data_dir={mnist_dir}',
          *gin_params('UNITS=8', 'STEPS=100000', 'Trainer.eval_every=100000',
                      'Trainer.checkpoint_every=100000',
                      'Trainer.steps_per_loop=10'))
  log = tmp_path / 'first.log'
  first = start_cli(*args, log=log)
  try:
    wait_for_line(log, 'Training from step 0', [first])
    second = run_cli(*args)
    assert second.returncode == 2
    last = second.stderr.strip().splitlines()[-1]
    assert last.startswith(f'seqmnist: error: --model_dir={model_dir} is in '
                           f'use by seqmnist pid {first.pid} on ')
    assert last.endswith('; wait for it to end, or give another folder')
  finally:
    first.kill()  # SIGKILL: the OS releases the lock
    first.wait()
  # No stale lock: the next process takes it (and resumes nothing: no
  # checkpoint was saved).
  third = run_cli(*args[:-1], *gin_params('STEPS=5', 'Trainer.eval_every=5'))
  assert third.returncode == 0, third.stderr[-3000:]


def test_run_dir_layout_and_atomic_results(tmp_path):
  run = rundir.RunDir(str(tmp_path / 'run'))
  assert not run.exists() and not run.is_run_dir()
  run.check_usable()
  run.create()
  assert run.checkpoints == str(tmp_path / 'run' / 'checkpoints')
  assert run.best == str(tmp_path / 'run' / 'best')
  assert run.events('validation') == str(tmp_path / 'run' / 'validation')
  assert run.events() == str(tmp_path / 'run')
  assert run.read_results() is None
  run.write_results({'test_accuracy': 0.5})
  assert run.read_results() == {'test_accuracy': 0.5}
  assert not run.is_run_dir()  # a results.json alone is a common name
  run.write_operative_config('Model.units = 8\n')
  assert run.is_run_dir() and run.read_operative_config() == 'Model.units = 8\n'
  (tmp_path / 'run' / 'results.json').write_text('{trunc')
  assert run.read_results() is None  # damaged: treated as absent
  (tmp_path / 'run' / 'results.json').write_text('')
  assert run.read_results() is None
  with pytest.raises(ValueError, match='no event folder'):
    run.events('checkpoints')
  with pytest.raises(UserError, match='--model_dir is required'):
    rundir.RunDir('')


def test_results_and_operative_config_are_never_seen_half_written(tmp_path):
  """A reader polling results.json while it is rewritten sees a whole old
  or a whole new file, never part of one."""
  run = rundir.RunDir(str(tmp_path / 'run'))
  run.create()
  big = {k: 'x' * 200_000 for k in ('a', 'b')}  # ~400 KB of JSON each
  versions = [dict(big, version=i) for i in range(2)]
  run.write_results(versions[0])
  seen, stop = [], threading.Event()

  def watch():
    while not stop.is_set():
      with open(run.results) as f:
        text = f.read()
      try:
        seen.append(json.loads(text)['version'])
      except ValueError:
        seen.append(f'partial ({len(text)} bytes)')

  watcher = threading.Thread(target=watch)
  watcher.start()
  try:
    for i in range(30):
      run.write_results(versions[i % 2])
  finally:
    stop.set()
    watcher.join()
  assert seen and set(seen) <= {0, 1}, [v for v in seen if v not in (0, 1)]


@pytest.mark.parametrize('which', ['results', 'operative_config'])
def test_a_write_cut_short_leaves_the_previous_file(tmp_path, monkeypatch,
                                                    which):
  run = rundir.RunDir(str(tmp_path / 'run'))
  run.create()
  write = {'results': lambda v: run.write_results({'v': v}),
           'operative_config': lambda v: run.write_operative_config(
               f'Model.units = {v}\n')}[which]
  path = getattr(run, which)
  write(1)
  before = open(path).read()

  def killed(fd):  # the process dies after writing, before the rename
    raise KeyboardInterrupt()
  monkeypatch.setattr(os, 'fsync', killed)
  with pytest.raises(KeyboardInterrupt):
    write(2)
  assert open(path).read() == before
  assert os.listdir(run.path) == [os.path.basename(path)]  # no temp left


def test_written_files_follow_the_umask(tmp_path):
  old = os.umask(0o022)
  try:
    rundir.write_json(str(tmp_path / 'x.json'), {})
  finally:
    os.umask(old)
  assert oct(os.stat(tmp_path / 'x.json').st_mode & 0o777) == '0o644'


@pytest.mark.parametrize('path, step', [
    ('/a/checkpoints/ckpt-430', 430), ('ckpt-0', 0), ('x/best/ckpt-21500', 21500)
])
def test_checkpoint_step(path, step):
  assert rundir.checkpoint_step(path) == step


def test_checkpoint_step_of_a_bad_path():
  with pytest.raises(ValueError, match='not a checkpoint path'):
    rundir.checkpoint_step('/a/checkpoints/checkpoint')


def test_a_file_as_model_dir_is_refused(tmp_path):
  path = tmp_path / 'file'
  path.write_text('x')
  with pytest.raises(UserError, match='is a file, not a folder'):
    rundir.RunDir(str(path)).check_usable()


# The controller ---------------------------------------------------------------


class _Recorder(outer_loop.Action):

  def __init__(self, name, every, log, at_end=True):
    self.name, self.every, self.log, self.at_end = name, every, log, at_end

  def __call__(self, boundary):
    self.log.append((self.name, boundary.step, boundary.final))


def test_the_controller_stops_where_actions_are_due_and_calls_them_in_order():
  log, calls = [], []

  def train(step, num):
    calls.append((step, num))
    return step + num, None

  actions = [_Recorder('eval', 25, log), _Recorder('ckpt', 40, log),
             _Recorder('every', 0, log),
             _Recorder('stop', 0, log, at_end=False)]
  end = outer_loop.Controller(train=train, target=60, steps_per_loop=30,
                              actions=actions).run(10)
  assert end.step == 60 and end.final
  # Loops end at 25 (eval), 40 (ckpt), 50 (eval), 60 (the target).
  assert calls == [(10, 15), (25, 15), (40, 10), (50, 10)]
  assert log == [
      ('eval', 25, False), ('every', 25, False), ('stop', 25, False),
      ('ckpt', 40, False), ('every', 40, False), ('stop', 40, False),
      ('eval', 50, False), ('every', 50, False), ('stop', 50, False),
      ('eval', 60, True), ('ckpt', 60, True), ('every', 60, True),
  ]


def test_the_controller_counts_only_training_time_as_overhead():
  overheads = []

  class Slow(outer_loop.Action):
    every = 1
    seconds = 0.05

    def __call__(self, boundary):
      time.sleep(self.seconds)

  class SlowValidation(Slow):
    training_time = False
    seconds = 1.0

  outer_loop.Controller(train=lambda s, n: (s + n, None), target=2,
                        steps_per_loop=1,
                        actions=[Slow(), SlowValidation()],
                        on_overhead=overheads.append).run(0)
  assert len(overheads) == 2
  # The training-time action's 0.05 s counts (a sleep lasts at least that);
  # the validation's 1 s does not (no loaded machine adds 0.95 s to 0.05).
  assert all(0.05 <= o < 1.0 for o in overheads), overheads


def test_actions_are_fed_by_the_loop_and_what_they_produce_carries_on():
  """Each action sees the call's output and what the actions before it
  produced, at this boundary and later ones; nothing else."""
  seen = []

  class Produce(outer_loop.Action):
    every = 20

    def __call__(self, boundary):
      return {'validation': {'accuracy': boundary.step / 100}}

  class Read(outer_loop.Action):
    after = ('Produce',)

    def __call__(self, boundary):
      seen.append((boundary.step, boundary.output, boundary.validation))

  end = outer_loop.Controller(
      train=lambda s, n: (s + n, f'output of {s}..{s + n}'), target=30,
      steps_per_loop=10, actions=[Produce(), Read()]).run(0)
  assert seen == [(10, 'output of 0..10', None),
                  (20, 'output of 10..20', {'accuracy': 0.2}),
                  (30, 'output of 20..30', {'accuracy': 0.3})]
  assert end.validation == {'accuracy': 0.3}

  class Rogue(outer_loop.Action):
    def __call__(self, boundary):
      return {'anything': 1}

  with pytest.raises(ValueError, match="Rogue produced 'anything'"):
    outer_loop.Controller(train=lambda s, n: (s + n, None), target=1,
                          steps_per_loop=1, actions=[Rogue()]).run(0)


def test_an_action_before_one_it_needs_is_refused():
  class First(outer_loop.Action):
    pass

  class Second(outer_loop.Action):
    after = ('First',)

  outer_loop.check_order([First(), Second()])
  outer_loop.check_order([Second()])  # what is absent constrains nothing
  with pytest.raises(ValueError, match='Second must run after First'):
    outer_loop.Controller(train=lambda s, n: (s + n, None), target=1,
                          steps_per_loop=1, actions=[Second(), First()])


@pytest.mark.parametrize('histogram_every, in_a_search', [(0, False),
                                                        (10, False),
                                                        (0, True)])
def test_the_jobs_actions_come_in_the_order_their_needs_require(
    histogram_every, in_a_search):
  config = trainer.TrainerConfig(histogram_every=histogram_every)
  parts = job.Parts(
      trainer_config=config, evaluator=None, validation_split=None,
      summaries=None, checkpoints=None, dashboard=None, average=None,
      progress=None, window=None, optimizer=None, variables=[], signals=None,
      strategy=tf.distribute.get_strategy(),
      trial=object() if in_a_search else None)
  built = outer_loop.build(job.ACTIONS, parts)
  names = [type(a).__name__ for a in built]
  # Every module of loop/actions/ gives one action, in the order their
  # `after`s fix (ties by name);
  # histograms only when asked for, a search's report only in a trial.
  expected = ['Validate', 'ReportToTrial', 'SaveCheckpoint', 'ShowProgress',
              'WriteTrainSummaries', 'WriteGradientHistograms',
              'StopOnSignal']
  assert names == [n for n in expected
                   if (histogram_every or n != 'WriteGradientHistograms') and
                   (in_a_search or n != 'ReportToTrial')]
  modules = sorted(f[:-3] for f in os.listdir(os.path.join(
      REPO, 'seqmnist', 'loop', 'actions')) if f.endswith('.py') and
                   f != '__init__.py')
  assert len(outer_loop.discover(job.ACTIONS)) == len(modules) == 7
  outer_loop.check_order(built)
  # The cadences are the config's.
  every = {type(a).__name__: a.every for a in built}
  assert every['Validate'] == config.eval_every
  assert every['SaveCheckpoint'] == config.checkpoint_every
  assert every['WriteTrainSummaries'] == config.summary_every


def test_actions_are_arranged_by_their_needs_alone():
  def action(name, after=()):
    return type(name, (outer_loop.Action,), {'after': after})()

  last = action('Last', ('*',))
  c = action('C', ('B',))
  b = action('B', ('A',))
  a = action('A')
  z = action('Z')
  arranged = outer_loop.arrange([last, c, z, b, a])
  assert [type(x).__name__ for x in arranged] == ['A', 'B', 'C', 'Z', 'Last']
  outer_loop.check_order(arranged)
  with pytest.raises(ValueError, match='Last must run after'):
    outer_loop.check_order([last, a])
  with pytest.raises(ValueError, match='cannot all be met: P, Q'):
    outer_loop.arrange([action('P', ('Q',)), action('Q', ('P',))])


# Drift (the saved operative config read with gin's own parser) ----------------

SAVED = """
STEPS = 20
UNITS = 16

Model.cell = 'gru'
Model.units = %UNITS
Trainer.learning_rate = @schedules.CosineDecay()
Trainer.steps = %STEPS
Trainer.eval_every = 10
schedules.CosineDecay.decay_steps = %STEPS
schedules.CosineDecay.initial_learning_rate = 0.001
Trainer.clip_exclude = ['(^|/)head/',
    'other/']
"""


LATER = experiment.ADDED_LATER


def test_every_setting_added_since_the_first_run_dirs_declares_its_old_value():
  """A setting a run dir of the first layout's code did not have (the
  fixture's operative config lists every one it had) must say, beside its
  default, what such runs ran with (validators.added_later), or they could
  not resume."""
  saved = drift.parse_operative(
      open(os.path.join(FIXTURE, 'operative_config.gin')).read())
  configs = {'Data': experiment.pipeline.DataConfig,
             'Model': experiment.network.ModelConfig,
             'Trainer': experiment.trainer.TrainerConfig,
             'Distribute': experiment.distribute.DistributeConfig,
             'Dashboard': experiment.dashboard.DashboardConfig}
  missing = []
  for scope, cls in configs.items():
    for field in dataclasses.fields(cls):
      key = f'{scope}.{field.name}'
      if key not in saved and key not in LATER and not drift.resumable(key):
        missing.append(key)
  assert not missing, (f'{missing}: declare the value runs made before them '
                       'used: validators.added_later(default, before=...)')
  assert LATER['Data.split_scheme'] == 'file'
  assert LATER['Data.normalization'] == 'mnist'
  assert LATER['Model.gate_init'] == 'default'


def test_drift_allows_length_cadence_and_equal_values_spelled_differently():
  current = SAVED.replace('STEPS = 20', 'STEPS = 40').replace(
      'eval_every = 10', 'eval_every = 5').replace('0.001', '1e-3').replace(
          "Model.units = %UNITS", 'Model.units = 16')
  assert drift.differences(SAVED, current, LATER) == []


def test_drift_names_every_forbidden_difference():
  current = SAVED.replace('UNITS = 16', 'UNITS = 32').replace(
      "'other/']", "'x/']").replace("'gru'", "'lstm'")
  diffs = drift.differences(SAVED, current, LATER)
  assert [d[0] for d in diffs] == ['Model.cell', 'Model.units',
                                   'Trainer.clip_exclude']
  assert diffs[1][1:] == (16, 32)
  with pytest.raises(ConfigError, match=r"cannot resume: Model.cell is 'gru' "
                     r"in saved.gin but 'lstm' now \(and 2 more\)"):
    drift.check(SAVED, current, 'saved.gin', LATER)


def test_drift_a_parameter_added_later_takes_its_default():
  current = SAVED + "Model.gate_init = 'default'\n"
  assert drift.differences(SAVED, current, LATER) == []
  chrono = SAVED + "Model.gate_init = 'chrono'\n"
  assert drift.differences(SAVED, chrono, LATER) == [
      ('Model.gate_init', 'default', 'chrono')]


def test_drift_a_bool_is_not_a_number():
  assert drift.differences('Model.batch_norm = True',
                           'Model.batch_norm = 1', LATER) != []


def test_drift_refuses_a_saved_config_that_is_not_gin():
  with pytest.raises(ConfigError, match='saved.gin is not a gin config'):
    drift.check('Model.units = = 3', SAVED, 'saved.gin', LATER)


# The progress line --------------------------------------------------------------


def test_progress_line_eta_counts_only_this_process_steps():
  now = [0.0]
  out = io.StringIO()
  line = progress.ProgressLine(1000, initial=600, stream=out, log_every=0,
                               clock=lambda: now[0])
  now[0] = 40.0
  line.update(700, {'loss': 0.5, 'ex/s': 12345.6})
  # 100 steps in 40 s -> 300 steps left take 120 s.
  assert out.getvalue() == ('step 700/1000 [==============>     ] 70% '
                            'loss 0.5000 ex/s 12,346 ETA 2:00\n')


def test_progress_line_in_a_log_file_prints_at_most_every_log_every_seconds():
  now = [0.0]
  out = io.StringIO()
  line = progress.ProgressLine(100, initial=0, stream=out, log_every=30,
                               clock=lambda: now[0])
  for step in range(1, 101):
    now[0] = step  # one second a step
    line.update(step, {})
  printed = [l.split()[1] for l in out.getvalue().splitlines()]
  assert printed == ['1/100', '31/100', '61/100', '91/100', '100/100']


def _modules():
  """Every module of the package, as the layer map names them."""
  found = []
  for folder, _, names in os.walk(os.path.join(REPO, 'seqmnist')):
    package = os.path.relpath(folder, os.path.join(REPO, 'seqmnist')).replace(
        os.sep, '.')
    for f in sorted(names):
      if not f.endswith('.py') or (f == '__init__.py' and package != '.'):
        continue
      found.append(f[:-3] if package == '.' else f'{package}.{f[:-3]}')
  return sorted(found)


def test_the_module_map_in_build_md_names_every_module():
  text = open(os.path.join(REPO, 'BUILD.md')).read()
  missing = [m for m in _modules()
             if f"seqmnist/{m.replace('.', '/')}.py" not in text]
  assert not missing, f'BUILD.md does not place {missing}'


def _packages():
  root = os.path.join(REPO, 'seqmnist')
  return sorted(os.path.relpath(folder, root).replace(os.sep, '.')
                for folder, _, names in os.walk(root)
                if folder != root and '__init__.py' in names)


def test_subpackage_inits_hold_only_a_docstring():
  packages = _packages()
  assert {'config', 'data', 'model', 'optim', 'cluster', 'loop',
          'loop.actions', 'serving', 'tools'} <= set(packages), packages
  for package in packages:
    tree = ast.parse(open(os.path.join(REPO, 'seqmnist', *package.split('.'),
                                       '__init__.py')).read())
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr), package


def test_at_most_ten_modules_sit_directly_in_the_package():
  direct = [m for m in _modules() if '.' not in m]
  assert len(direct) <= 10, direct


def _imported(m):
  """The seqmnist modules `m` imports (dotted, without 'seqmnist.'), and
  its relative imports."""
  tree = ast.parse(open(os.path.join(
      REPO, 'seqmnist', m.replace('.', '/') + '.py')).read())
  names, relative = [], []
  packages = set(_packages()) | {''}
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.level:
      relative.append(m)
    elif isinstance(node, ast.ImportFrom) and (
        node.module or '').startswith('seqmnist'):
      inside = node.module[len('seqmnist.'):]
      names += ([f'{inside}.{a.name}'.lstrip('.') for a in node.names]
                if inside in packages else [inside])
    elif isinstance(node, ast.Import):
      names += [a.name[len('seqmnist.'):] for a in node.names
                if a.name.startswith('seqmnist.')]
  return names, relative


def test_imports_only_run_downward():
  """No module imports one of a higher layer, nor a folder its own may not
  (tests/layers.py; the map in BUILD.md)."""
  sys.path.insert(0, os.path.join(REPO, 'tests'))
  from layers import FOUNDATIONS, LAYERS, PACKAGES  # pylint: disable=g-import-not-at-top
  where = {m: i for i, layer in enumerate(LAYERS) for m in layer}
  modules = _modules()
  unplaced = [m for m in modules if m not in where]
  assert not unplaced, f'tests/layers.py does not place {unplaced}'
  bad = []
  for m in modules:
    names, relative = _imported(m)
    bad += [f'{r} imports relatively (use `from seqmnist...`)'
            for r in relative]
    folder = m.split('.')[0] if '.' in m else None
    for name in names:
      if name == '_fused_rnn':  # the op's library, loaded by model/fused.py
        continue
      if name not in where:
        bad.append(f'{m} imports {name}, which no layer places')
        continue
      if where[name] > where[m]:
        bad.append(f'{m} (layer {where[m]}) imports {name} (layer '
                   f'{where[name]})')
      target = name.split('.')[0] if '.' in name else (
          '' if name in FOUNDATIONS else name)
      if folder is not None and target not in PACKAGES[folder]:
        bad.append(f'{m} (in {folder}/) imports {name}, which {folder}/ '
                   'may not import')
  assert not bad, bad


def test_write_dirs_of_dead_workers_are_removed_on_the_next_start(
    tmp_path, monkeypatch):
  """A non-chief worker's private run dir lives in the system's temporary
  folder; one SIGKILLed leaves it behind, and the next worker to start on
  that machine removes it (not a live worker's, nor anything else)."""
  monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path))
  dead = subprocess.Popen([sys.executable, '-c', 'pass'])
  dead.wait()
  names = [f'{job.WRITE_DIR_PREFIX}{dead.pid}-1-abc',
           f'{job.WRITE_DIR_PREFIX}{os.getpid()}-2-def',
           'seqmnist-worker-notapid-x', 'something-else']
  for name in names:
    (tmp_path / name / 'checkpoints').mkdir(parents=True)
  job._remove_abandoned_write_dirs()  # pylint: disable=protected-access
  assert sorted(os.listdir(tmp_path)) == sorted(names[1:])


def test_points_run_side_by_side_share_the_cpus_out():
  from seqmnist.tools import sweep_grid  # pylint: disable=g-import-not-at-top
  env = sweep_grid.point_environment(2, environ={}, cpus=2)
  assert (env['TF_NUM_INTRAOP_THREADS'], env['TF_NUM_INTEROP_THREADS']) == (
      '1', '1')
  assert sweep_grid.point_environment(3, environ={}, cpus=8)[
      'TF_NUM_INTRAOP_THREADS'] == '2'
  assert sweep_grid.point_environment(4, environ={}, cpus=2)[
      'TF_NUM_INTRAOP_THREADS'] == '1'
  # One at a time: TensorFlow's own choice; the user's setting always wins.
  assert 'TF_NUM_INTRAOP_THREADS' not in sweep_grid.point_environment(
      1, environ={}, cpus=2)
  assert sweep_grid.point_environment(
      2, environ={'TF_NUM_INTRAOP_THREADS': '4'}, cpus=2)[
          'TF_NUM_INTRAOP_THREADS'] == '4'
