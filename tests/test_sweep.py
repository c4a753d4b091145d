"""`python -m seqmnist.tools.sweep`, local backend: real processes on real MNIST.

A 2 x 2 grid of tiny row runs end to end; a rerun skips what is finished; a
sweep stopped by SIGTERM and rerun ends with the results of an uninterrupted
one; every bad input is refused before anything runs or is written.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
from seqmnist.config import gin_text
from seqmnist.tools import sweep_grid as sweep

BASE = ('--gin_file=row.gin', '--gin_param=STEPS=30',
        '--gin_param=Trainer.eval_every=10',
        '--gin_param=Trainer.checkpoint_every=10',
        '--gin_param=Trainer.steps_per_loop=5',
        '--gin_param=Model.batch_norm=False')
AXES = ('--sweep=Trainer.seed=0,1', '--sweep=UNITS=8,16')
POINTS = ['Trainer.seed=0,UNITS=8', 'Trainer.seed=0,UNITS=16',
          'Trainer.seed=1,UNITS=8', 'Trainer.seed=1,UNITS=16']
EXACT = ('test_accuracy', 'best_val_accuracy', 'best_step', 'global_step',
         'weights_fingerprint')


def _command(runs_dir, mnist_dir, *extra):
  return [sys.executable, '-m', 'seqmnist.tools.sweep', *BASE, *AXES,
          f'--runs_dir={runs_dir}', f'--data_dir={mnist_dir}', *extra]


def _sweep(runs_dir, mnist_dir, *extra, timeout=900):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run(_command(runs_dir, mnist_dir, *extra), cwd=REPO,
                        env=env, capture_output=True, text=True,
                        timeout=timeout, check=False)


def _results(runs_dir):
  out = {}
  for name in POINTS:
    with open(os.path.join(runs_dir, name, 'results.json')) as f:
      out[name] = json.load(f)
  return out


@pytest.fixture(scope='module')
def finished(tmp_path_factory, mnist_dir):
  runs_dir = tmp_path_factory.mktemp('sweep') / 'runs'
  result = _sweep(runs_dir, mnist_dir, '--parallel=2')
  assert result.returncode == 0, result.stderr[-3000:]
  return runs_dir, result


def test_a_2x2_grid_runs_every_point_in_its_own_run_dir(finished):
  runs_dir, result = finished
  # .lock: the sweep's, held while it runs (a second sweep is refused).
  assert sorted(os.listdir(runs_dir)) == sorted(POINTS + ['.lock', 'logs',
                                                         'sweep.json'])
  results = _results(runs_dir)
  for name, r in results.items():
    assert r['global_step'] == 30, name
    config = open(os.path.join(runs_dir, name, 'operative_config.gin')).read()
    seed, units = name.split(',')
    assert f'Trainer.seed = {seed.split("=")[1]}' in config
    assert f'UNITS = {units.split("=")[1]}' in config
  # Seeds and widths give different runs.
  assert len({r['weights_fingerprint'] for r in results.values()}) == 4
  lines = result.stderr.splitlines()
  assert 'sweep: 4 point(s) in' in lines[0]
  assert lines[-1] == 'sweep: 4 done, 0 running, 0 failed, 0 left'
  assert 'Traceback' not in result.stderr


def test_a_rerun_skips_the_finished_points(finished, mnist_dir):
  runs_dir, _ = finished
  before = {n: os.path.getmtime(os.path.join(runs_dir, n, 'results.json'))
            for n in POINTS}
  result = _sweep(runs_dir, mnist_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stderr.splitlines()[-1] == (
      'sweep: 4 done, 0 running, 0 failed, 0 left')
  assert {n: os.path.getmtime(os.path.join(runs_dir, n, 'results.json'))
          for n in POINTS} == before


def test_sigterm_stops_gracefully_and_a_rerun_ends_as_uninterrupted(
    tmp_path, mnist_dir, finished):
  runs_dir = tmp_path / 'runs'
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.Popen(
      _command(runs_dir, mnist_dir, '--parallel=2',
               '--gin_param=Trainer.steps_per_loop=1'),
      cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
  # Stop once the first point has saved a checkpoint.
  deadline = time.time() + 300
  while not list(runs_dir.glob('*/checkpoints/ckpt-10.index')):
    assert proc.poll() is None and time.time() < deadline
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 143, stderr[-3000:]
  assert 'SIGTERM: stopping the 2 running point(s) gracefully' in stderr
  logs = ''.join(p.read_text() for p in (runs_dir / 'logs').iterdir())
  assert 'seqmnist: preempted: checkpoint saved at step' in logs
  assert not all((runs_dir / n / 'results.json').exists() for n in POINTS)

  result = _sweep(runs_dir, mnist_dir, '--parallel=2',
                  '--gin_param=Trainer.steps_per_loop=1')
  assert result.returncode == 0, result.stderr[-3000:]
  resumed, reference = _results(runs_dir), _results(finished[0])
  for name in POINTS:
    for key in EXACT:
      assert resumed[name][key] == reference[name][key], (name, key)


@pytest.mark.parametrize('axes, message', [
    (('--sweep=UNITS=8,-1',),
     'grid point 1 (UNITS=-1): Model.units=-1 must be an integer from 1 to'),
    (('--sweep=Model.unitz=8,16',),
     "grid point 0 (Model.unitz=8): bad gin config: Configurable 'Model' "
     "doesn't have a parameter named 'unitz'"),
    ((), 'give at least one --sweep="NAME=VALUE,..." axis'),
    (('--sweep=UNITS=8', '--sweep=UNITS=16'),
     '--sweep axis UNITS is given more than once; give each binding one '
     '--sweep with all its values'),
    (('--sweep=UNITS=',), "--sweep='UNITS=' has no values"),
    (('--sweep=UNITS=[8',), "--sweep='UNITS=[8': the values do not parse"),
    (('--sweep=UNITS=8', '--backend=slurm', '--parallel=-1'),
     '--parallel=-1 must be >= 0 (0: no limit)'),
    (('--sweep=UNITS=8', '--backend=kubernetes', '--k8s_name=My_Sweep'),
     "--k8s_name='My_Sweep' must be a DNS-1123 label"),
    (('--sweep=UNITS=8', '--backend=slurm',
      '--sbatch_script=/nonexistent/train.sbatch'),
     'the Slurm script /nonexistent/train.sbatch is missing'),
    (('--sweep=UNITS=8', '--backend=mesos'),
     "--backend='mesos' is not one of 'local', 'slurm', 'kubernetes' (a "
     'backend is registered by sweep_backends.register'),
], ids=['bad-value', 'unknown-name', 'empty', 'repeated', 'no-values',
        'syntax', 'slurm-parallel', 'k8s-name', 'slurm-script',
        'unknown-backend'])
def test_bad_sweeps_are_refused_before_anything_is_written(
    tmp_path, mnist_dir, axes, message):
  runs_dir = tmp_path / 'runs'
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run(
      [sys.executable, '-m', 'seqmnist.tools.sweep', *BASE, *axes,
       f'--runs_dir={runs_dir}', f'--data_dir={mnist_dir}'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
      check=False)
  assert result.returncode == 2, result.stderr[-3000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('seqmnist.tools.sweep: error: ' + message), last
  assert not runs_dir.exists()


def test_a_runs_dir_of_another_sweep_is_refused_untouched(finished,
                                                           mnist_dir):
  runs_dir, _ = finished
  before = sorted(os.listdir(runs_dir))
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run(
      [sys.executable, '-m', 'seqmnist.tools.sweep', *BASE,
       '--sweep=Trainer.seed=0,1,2', f'--runs_dir={runs_dir}',
       f'--data_dir={mnist_dir}'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
      check=False)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(
      f'seqmnist.tools.sweep: error: --runs_dir={runs_dir} holds another sweep')
  assert sorted(os.listdir(runs_dir)) == before


@pytest.mark.unit
def test_axis_values_are_gin_values():
  axis = sweep.parse_axis("Model.cell='gru','lstm'")
  assert axis == sweep.Axis('Model.cell', ('gru', 'lstm'))
  axis = sweep.parse_axis('Trainer.clip_exclude=["a/", "b,c"],[]')
  assert axis.values == (['a/', 'b,c'], [])
  axis = sweep.parse_axis('Trainer.learning_rate=1e-3,@schedules.CosineDecay()')
  assert [gin_text.text(v) for v in axis.values] == [
      '0.001', '@schedules.CosineDecay()']


@pytest.mark.unit
def test_point_names_are_readable_stable_and_safe():
  points = sweep.grid([sweep.parse_axis("Model.cell='gru','lstm'"),
                       sweep.parse_axis('Trainer.clip_exclude=["a/b"],["a_b"]')])
  names = [p.name for p in points]
  assert names[0].startswith("Model.cell=gru,Trainer.clip_exclude=")
  assert all('/' not in n and "'" not in n for n in names)
  assert len(set(names)) == 4  # "a/b" and "a_b" would clash: hashed apart
  assert names == [p.name for p in sweep.grid(
      [sweep.parse_axis("Model.cell='gru','lstm'"),
       sweep.parse_axis('Trainer.clip_exclude=["a/b"],["a_b"]')])]
  assert points[0].bindings == ("Model.cell='gru'",
                                "Trainer.clip_exclude=['a/b']")


# seqmnist.tools.report ---------------------------------------------------------------


def _report(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  return subprocess.run([sys.executable, '-m', 'seqmnist.tools.report', *args],
                        cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=300, check=False)


def test_report_groups_seeds_with_the_statistics_of_the_results(
    finished, tmp_path):
  import shutil  # pylint: disable=import-outside-toplevel
  import statistics  # pylint: disable=import-outside-toplevel
  runs_dir = tmp_path / 'runs'
  shutil.copytree(finished[0], runs_dir)
  results = _results(runs_dir)
  # One run unfinished (its results lost, its last checkpoint at step 10),
  # one failed (a sweep log ending in an error): neither is averaged in.
  unfinished = runs_dir / 'Trainer.seed=1,UNITS=16'
  os.remove(unfinished / 'results.json')
  for name in os.listdir(unfinished / 'checkpoints'):
    if name.startswith(('ckpt-20', 'ckpt-30')):
      os.remove(unfinished / 'checkpoints' / name)
  failed = runs_dir / 'Trainer.seed=1,UNITS=8'
  os.remove(failed / 'results.json')
  with open(runs_dir / 'logs' / 'Trainer.seed=1,UNITS=8.log', 'a') as f:
    f.write('seqmnist: error: training diverged at step 12: ...\n')
  plot = tmp_path / 'curves.png'
  result = _report(str(runs_dir), '--json', f'--plot={plot}')
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout)
  status = {os.path.basename(r['run']): r['status'] for r in report['runs']}
  assert status == {
      'Trainer.seed=0,UNITS=8': 'finished',
      'Trainer.seed=0,UNITS=16': 'finished',
      'Trainer.seed=1,UNITS=16': 'unfinished (step 10 of 30)',
      'Trainer.seed=1,UNITS=8': 'failed: training diverged at step 12: ...'}
  groups = {g['label']: g for g in report['groups']}
  assert set(groups) == {'Model.units=8', 'Model.units=16'}
  for units in (8, 16):
    g = groups[f'Model.units={units}']
    assert (g['n'], g['runs']) == (1, 2)
    only = results[f'Trainer.seed=0,UNITS={units}']['test_accuracy']
    assert g['test_accuracy_mean'] == only and g['test_accuracy_std'] is None

  # With every run finished: mean and sample std by hand.
  full = _report(str(finished[0]), '--json')
  groups = {g['label']: g for g in json.loads(full.stdout)['groups']}
  for units in (8, 16):
    values = [results[f'Trainer.seed={s},UNITS={units}']['test_accuracy']
              for s in (0, 1)]
    g = groups[f'Model.units={units}']
    assert g['n'] == 2 and g['seeds'] == [0, 1]
    assert g['test_accuracy_mean'] == pytest.approx(sum(values) / 2)
    assert g['test_accuracy_std'] == pytest.approx(
        abs(values[0] - values[1]) / 2 ** 0.5)  # sample std of two values
    assert g['test_accuracy_std'] == pytest.approx(statistics.stdev(values))
    assert (g['test_accuracy_min'], g['test_accuracy_max']) == (
        min(values), max(values))
  table = _report(str(finished[0])).stdout
  mean = groups['Model.units=16']['test_accuracy_mean']
  std = groups['Model.units=16']['test_accuracy_std']
  assert f'| Model.units=16 | 2 | {100 * mean:.2f} ± {100 * std:.2f}% |' in (
      table)
  assert plot.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_report_groups_a_run_made_before_a_setting_with_its_earlier_value(
    finished, tmp_path):
  """A run whose operative config predates Data.normalization ran with
  'mnist' (validators.added_later): it groups with a run that sets 'mnist',
  as it would resume, not apart from it."""
  import shutil  # pylint: disable=import-outside-toplevel
  runs_dir = tmp_path / 'runs'
  shutil.copytree(finished[0], runs_dir)
  for name in os.listdir(runs_dir):
    config = runs_dir / name / 'operative_config.gin'
    if not config.exists():
      continue
    text = config.read_text()
    assert "Data.normalization = 'dataset'" in text
    if name.startswith('Trainer.seed=0'):  # set explicitly
      text = text.replace("Data.normalization = 'dataset'",
                          "Data.normalization = 'mnist'")
    else:  # made before the setting existed
      text = text.replace("Data.normalization = 'dataset'\n", '')
    config.write_text(text)
  result = _report(str(runs_dir), '--json')
  assert result.returncode == 0, result.stderr[-3000:]
  groups = {g['label']: g['n'] for g in json.loads(result.stdout)['groups']}
  assert groups == {'Model.units=8': 2, 'Model.units=16': 2}


def test_report_of_a_folder_without_runs_is_one_line(tmp_path):
  result = _report(str(tmp_path))
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      f'seqmnist.tools.report: error: no seqmnist run directory in {tmp_path}')


def test_tensorboard_compares_the_sweep_by_its_swept_bindings(finished):
  """A real TensorBoard over the runs dir: every run, and HParams keyed by
  the swept bindings, one session per point."""
  import urllib.request  # pylint: disable=import-outside-toplevel
  from conftest import free_ports  # pylint: disable=import-outside-toplevel
  runs_dir, _ = finished
  port = free_ports(1)[0]
  server = subprocess.Popen(
      ['bash', 'launch/tensorboard.sh', str(runs_dir), str(port)], cwd=REPO,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  base = f'http://localhost:{port}'

  def get(path, data=None):
    request = urllib.request.Request(
        base + path, data=data,
        headers={'Content-Type': 'application/json'} if data else {})
    with urllib.request.urlopen(request, timeout=10) as response:
      return json.loads(response.read())

  try:
    deadline, runs = time.time() + 120, []
    while time.time() < deadline and len(runs) < 4 * 4:
      assert server.poll() is None, server.stdout.read()
      try:
        runs = get('/data/runs')
      except OSError:
        pass
      time.sleep(0.5)
    for name in POINTS:
      assert {name, f'{name}/train', f'{name}/validation',
              f'{name}/test'} <= set(runs), runs
    experiment = get('/data/plugin/hparams/experiment',
                     data=b'{"experimentName": ""}')
    infos = {h['name']: h for h in experiment['hparamInfos']}
    # Every setting once, under its gin name (UNITS resolved into
    # Model.units), set in a gin file or on the command line alike.
    assert {'Trainer.seed', 'Model.units', 'Model.cell', 'Data.order',
            'Trainer.steps', 'replicas'} <= set(infos), sorted(infos)
    assert 'UNITS' not in infos and 'units' not in infos
    groups = get('/data/plugin/hparams/session_groups', data=json.dumps({
        'experimentName': '', 'allowedStatuses': ['STATUS_UNKNOWN',
                                                  'STATUS_SUCCESS'],
        'colParams': [{'hparam': 'Trainer.seed'}, {'hparam': 'Model.units'}],
        'startIndex': 0, 'sliceSize': 100}).encode())
    swept = sorted((g['hparams']['Trainer.seed'], g['hparams']['Model.units'])
                   for g in groups['sessionGroups'])
    assert swept == [(0, 8), (0, 16), (1, 8), (1, 16)]
    # Each session is named after its run dir (the point's name).
    assert sorted(g['name'] for g in groups['sessionGroups']) == sorted(
        POINTS)
    assert all(g['hparams']['Model.cell'] == 'gru'
               for g in groups['sessionGroups'])
  finally:
    server.terminate()
    server.wait(timeout=30)
