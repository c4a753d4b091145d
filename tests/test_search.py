"""seqmnist-search end to end: real Optuna studies of real (tiny) row runs,
their run dirs, pruning, SIGTERM and SIGKILL of a worker, two workers on one
storage, the report, TensorBoard's HParams, and bad input."""

import glob
import json
import os
import pathlib
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import REPO, free_ports

# Tiny row runs: 40 steps, a validation every 10 (the pruner's steps).
BASE = ('--gin_file=row.gin', '--gin_param=STEPS=40',
        '--gin_param=Trainer.eval_every=10',
        '--gin_param=Trainer.checkpoint_every=10',
        '--gin_param=Trainer.steps_per_loop=5',
        '--gin_param=Model.units=16', '--gin_param=Model.batch_norm=False',
        '--gin_param=Data.eval_batch_size=1000')
SPACE = ('--space=LEARNING_RATE=loguniform(1e-4, 3e-2)',
         "--space=Model.cell=choice('gru', 'lstm')")
EXACT = ('weights_fingerprint', 'test_accuracy', 'best_val_accuracy',
         'global_step')


def _command(runs_dir, mnist_dir, *extra):
  return [sys.executable, '-m', 'seqmnist.tools.search', *BASE, *SPACE,
          f'--runs_dir={runs_dir}', f'--data_dir={mnist_dir}', *extra]


def _env():
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')


def _search(runs_dir, mnist_dir, *extra, timeout=900):
  return subprocess.run(_command(runs_dir, mnist_dir, *extra), cwd=REPO,
                        env=_env(), capture_output=True, text=True,
                        timeout=timeout, check=False)


def _start(runs_dir, mnist_dir, *extra, log):
  with open(log, 'w') as f:
    return subprocess.Popen(_command(runs_dir, mnist_dir, *extra), cwd=REPO,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=f)


def _trials(runs_dir):
  """{number: (state, params, user attrs)} read straight from study.db."""
  with sqlite3.connect(runs_dir / 'study.db') as db:
    rows = db.execute('SELECT trial_id, number, state FROM trials').fetchall()
    out = {}
    for trial_id, number, state in rows:
      params = dict(db.execute(
          'SELECT param_name, param_value FROM trial_params WHERE trial_id=?',
          (trial_id,)).fetchall())
      attrs = {k: json.loads(v) for k, v in db.execute(
          'SELECT key, value_json FROM trial_user_attributes WHERE '
          'trial_id=?', (trial_id,)).fetchall()}
      out[number] = (state, params, attrs)
  return out


def _results(run):
  return json.loads((run / 'results.json').read_text())


@pytest.fixture(scope='module')
def study(tmp_path_factory, mnist_dir):
  """A finished study of 5 trials, 2 at a time; the median pruner may stop
  a trial from the second validation once 2 trials have finished."""
  runs_dir = tmp_path_factory.mktemp('search') / 'study'
  result = _search(runs_dir, mnist_dir, '--trials=5', '--startup_trials=2',
                   '--parallel=2', '--seed=3')
  assert result.returncode == 0, result.stderr[-3000:]
  return runs_dir, result.stderr


def test_a_study_runs_its_trials_as_ordinary_run_dirs(study):
  runs_dir, stderr = study
  trials = _trials(runs_dir)
  assert sorted(trials) == [0, 1, 2, 3, 4]
  assert sorted(os.listdir(runs_dir)) == [
      'logs', 'search.json', 'study.db', 'trial-0000', 'trial-0001',
      'trial-0002', 'trial-0003', 'trial-0004']
  for number, (state, params, attrs) in trials.items():
    run = runs_dir / f'trial-{number:04d}'
    assert state in ('COMPLETE', 'PRUNED'), (number, state)
    # An ordinary run dir, trained with the sampled bindings.
    config = (run / 'operative_config.gin').read_text()
    assert 'Data.order = \'row\'' in config
    cell = 'gru' if params['Model.cell'] == 0 else 'lstm'
    assert f"Model.cell = '{cell}'" in config
    assert attrs['run_dir'] == run.name and attrs['core_seconds'] > 0
    if state == 'COMPLETE':
      results = _results(run)
      assert results['global_step'] == 40
      assert attrs['test_accuracy'] == results['test_accuracy']
  assert re.search(r'search: 5 complete, 0 pruned|search: \d complete, '
                   r'\d pruned, 0 failed, 0 running, 0 waiting, of 5 '
                   r'trial\(s\); best: trial \d', stderr), stderr[-2000:]


def test_a_pruned_trial_stops_at_a_validation_with_its_checkpoint(
    tmp_path, mnist_dir):
  """A learning rate far too small falls behind the median at step 20 and
  is stopped there: exit 4 in its log, its checkpoint at that step saved,
  PRUNED in the study."""
  runs_dir = tmp_path / 'pruned'
  # The grid's order is the sampler's (seed 3: 1e-7 last, after the two
  # trials the median pruner waits for).
  result = subprocess.run(
      [sys.executable, '-m', 'seqmnist.tools.search', *BASE,
       '--space=LEARNING_RATE=choice(0.01, 0.02, 1e-7)', '--sampler=grid',
       '--trials=3', '--startup_trials=2', '--parallel=1', '--seed=3',
       f'--runs_dir={runs_dir}', f'--data_dir={mnist_dir}'],
      cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900,
      check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  trials = _trials(runs_dir)
  slow = [n for n, (_, params, _) in trials.items()
          if params['LEARNING_RATE'] == 2]  # the index of 1e-7
  states = {n: s for n, (s, _, _) in trials.items()}
  assert len(slow) == 1 and states[slow[0]] == 'PRUNED', (trials,
                                                           result.stderr)
  run = runs_dir / f'trial-{slow[0]:04d}'
  assert not (run / 'results.json').exists()
  assert (run / 'checkpoints' / 'ckpt-20.index').exists()
  log = (runs_dir / 'logs' / f'{run.name}.log').read_text()
  assert log.strip().splitlines()[-1].startswith(
      'seqmnist: pruned: the search pruned this trial at step 20')
  assert f'trial {slow[0]} pruned at step 20' in result.stderr
  report = subprocess.run(
      [sys.executable, '-m', 'seqmnist.tools.report', str(runs_dir)],
      cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300,
      check=False)
  assert report.returncode == 0, report.stderr
  assert f'| {slow[0]} | {run.name} | pruned | 1e-07 |' in report.stdout
  assert 'pruned by its search (step 20 of 40)' in report.stdout


def test_the_report_lists_the_trials_the_best_and_importances(study):
  runs_dir, _ = study
  result = subprocess.run(
      [sys.executable, '-m', 'seqmnist.tools.report', str(runs_dir)],
      cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300,
      check=False)
  assert result.returncode == 0, result.stderr
  out = result.stdout
  assert ('| trial | run dir | state | LEARNING_RATE | Model.cell | best '
          'validation | test | steps reached | core-seconds |') in out
  for number in range(5):
    assert f'| {number} | trial-{number:04d} |' in out
  best = max(((n, _results(runs_dir / f'trial-{n:04d}')['best_val_accuracy'])
              for n, (s, _, _) in _trials(runs_dir).items()
              if s == 'COMPLETE'), key=lambda item: item[1])
  assert f'Best: trial {best[0]} (trial-{best[0]:04d}), validation ' \
         f'{best[1]:.4f}' in out
  assert re.search(r'Importances \(fANOVA over the finished trials\): '
                   r'(LEARNING_RATE|Model\.cell) \d\.\d\d', out), out


def test_a_sigtermed_worker_leaves_its_trial_to_resume_bit_for_bit(
    tmp_path, mnist_dir):
  """SIGTERM: the trial saves and waits; rerunning the same command
  resumes that trial (same number, same run dir), which ends exactly where
  the same trial of an uninterrupted study ends."""
  extra = ('--trials=1', '--gin_param=Trainer.steps_per_loop=1')
  reference = tmp_path / 'reference'
  result = _search(reference, mnist_dir, *extra)
  assert result.returncode == 0, result.stderr[-3000:]

  runs_dir = tmp_path / 'stopped'
  proc = _start(runs_dir, mnist_dir, *extra, log=tmp_path / 'first.log')
  deadline = time.time() + 300
  while not (runs_dir / 'trial-0000' / 'checkpoints' /
             'ckpt-10.index').exists():
    assert proc.poll() is None and time.time() < deadline, (
        tmp_path / 'first.log').read_text()
    time.sleep(0.1)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=300) == 143, (tmp_path / 'first.log').read_text()
  first = (tmp_path / 'first.log').read_text()
  assert 'trial 0 stopped (exit 143), saved' in first
  assert _trials(runs_dir)[0][0] == 'WAITING'
  assert not (runs_dir / 'trial-0000' / 'results.json').exists()

  result = _search(runs_dir, mnist_dir, *extra)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'trial 0 resumed' in result.stderr
  assert sorted(_trials(runs_dir)) == [0]  # not a fresh trial
  assert _trials(runs_dir)[0][0] == 'COMPLETE'
  log = (runs_dir / 'logs' / 'trial-0000.log').read_text()
  assert re.search(r'Resumed from .*ckpt-\d+ at step \d+', log)
  resumed = _results(runs_dir / 'trial-0000')
  expected = _results(reference / 'trial-0000')
  for key in EXACT:
    assert resumed[key] == expected[key], key


def test_a_killed_workers_trial_is_resumed_once_by_the_next_worker(
    tmp_path, mnist_dir):
  """SIGKILL of the worker: its trial's child saves (it gets SIGTERM when
  its parent dies); the trial's heartbeat stops; a worker started next takes
  the silent trial back and resumes it; the study counts it once."""
  extra = ('--trials=2', '--heartbeat=1',
           '--gin_param=Trainer.steps_per_loop=1')
  runs_dir = tmp_path / 'killed'
  proc = _start(runs_dir, mnist_dir, *extra, log=tmp_path / 'first.log')
  deadline = time.time() + 300
  while not (runs_dir / 'trial-0000' / 'checkpoints' /
             'ckpt-10.index').exists():
    assert proc.poll() is None and time.time() < deadline
    time.sleep(0.1)
  proc.kill()
  proc.wait(timeout=60)
  # The orphaned child saves at its next boundary and exits.
  log = runs_dir / 'logs' / 'trial-0000.log'
  deadline = time.time() + 120
  while 'seqmnist: preempted: checkpoint saved' not in log.read_text():
    assert time.time() < deadline, log.read_text()[-2000:]
    time.sleep(0.2)
  assert _trials(runs_dir)[0][0] == 'RUNNING'  # nobody told the study

  result = _search(runs_dir, mnist_dir, *extra)
  assert result.returncode == 0, result.stderr[-3000:]
  assert re.search(r'trial 0: its worker \(\S+:\d+\) went silent \d+ s ago; '
                   r'back in the queue', result.stderr), result.stderr
  assert 'trial 0 resumed' in result.stderr
  trials = _trials(runs_dir)
  assert sorted(trials) == [0, 1]
  assert [trials[n][0] for n in (0, 1)] == ['COMPLETE', 'COMPLETE']
  assert re.search(r'Resumed from .*ckpt-\d+ at step \d+', log.read_text())


def test_two_workers_on_one_storage_never_run_the_same_trial(
    tmp_path, mnist_dir):
  runs_dir = tmp_path / 'shared'
  first = _search(runs_dir, mnist_dir, '--trials=1')  # makes the study
  assert first.returncode == 0, first.stderr[-3000:]
  # Two workers asking at once: each takes one of trials 1 and 2.
  procs = [_start(runs_dir, mnist_dir, '--trials=3',
                  log=tmp_path / f'worker-{i}.log') for i in range(2)]
  for proc in procs:
    assert proc.wait(timeout=900) == 0
  trials = _trials(runs_dir)
  assert sorted(trials) == [0, 1, 2]
  assert all(s in ('COMPLETE', 'PRUNED') for s, _, _ in trials.values())
  started = [re.findall(r'trial (\d+) started',
                        (tmp_path / f'worker-{i}.log').read_text())
             for i in range(2)]
  assert all(started), started  # both workers took trials
  assert sorted(started[0] + started[1]) == ['1', '2']
  for number in range(3):  # each run dir trained once, from step 0
    log = (runs_dir / 'logs' / f'trial-{number:04d}.log').read_text()
    assert log.count('Training from step 0 ') == 1, number


def test_tensorboard_lists_the_trials_by_their_run_names(study):
  import urllib.request  # pylint: disable=import-outside-toplevel
  runs_dir, _ = study
  port = free_ports(1)[0]
  server = subprocess.Popen(
      ['bash', 'launch/tensorboard.sh', str(runs_dir), str(port)], cwd=REPO,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    deadline, names = time.time() + 120, []
    while time.time() < deadline and len(names) < 5:
      assert server.poll() is None, server.stdout.read()
      try:
        request = urllib.request.Request(
            f'http://localhost:{port}/data/plugin/hparams/session_groups',
            data=json.dumps({
                'experimentName': '', 'allowedStatuses': [
                    'STATUS_UNKNOWN', 'STATUS_SUCCESS'],
                'colParams': [{'hparam': 'Model.cell'}],
                'startIndex': 0, 'sliceSize': 100}).encode(),
            headers={'Content-Type': 'application/json'})
        with urllib.request.urlopen(request, timeout=10) as response:
          groups = json.loads(response.read())['sessionGroups']
        names = sorted(g['name'] for g in groups)
      except OSError:
        pass
      time.sleep(0.5)
    assert names == [f'trial-{n:04d}' for n in range(5)]
  finally:
    server.terminate()
    server.wait(timeout=30)


@pytest.mark.parametrize('extra, message', [
    (('--space=LEARNING_RATE=loguniform(1e-4)',),
     "--space='LEARNING_RATE=loguniform(1e-4)': loguniform() takes two "
     'bounds, (low, high); got 1'),
    (('--space=Model.unitz=int(8, 32)',),
     "--space='Model.unitz=int(8, 32)': bad gin config: Configurable 'Model' "
     "doesn't have a parameter named 'unitz'"),
    (('--space=Model.output_dropout=uniform(0.5, 0.1)',),
     "--space='Model.output_dropout=uniform(0.5, 0.1)': the range is "
     'inverted (low 0.5 > high 0.1); give (low, high)'),
    (('--space=Model.output_dropout=uniform(0.3, 0.3)',),
     'the range is empty (low = high = 0.3)'),
    (('--space=Model.units=uniform(8, 32)',),
     "--space='Model.units=uniform(8, 32)': Model.units=8.0 must be an "
     'integer from 1 to 8,192; an integer setting takes int(low, high) or '
     'choice(...)'),
    (('--space=Model.output_dropout=uniform(0, 2)',),
     'Model.output_dropout=2.0 must be a number from 0 to 0.95'),
    (('--space=Model.cell=choice(gru, lstm)',),
     'a string needs quotes'),
    (('--space=UNITS=int(8, 16)',
      '--storage=postgresql://seqmnist@127.0.0.1:1/nowhere'),
     '--storage=postgresql://seqmnist@127.0.0.1:1/nowhere cannot be reached'),
    (('--space=UNITS=int(8, 16)', '--storage=journal:/nonexistent/j.log'),
     "the journal file's folder /nonexistent does not exist"),
    (('--space=UNITS=int(8, 16)', '--backend=slurm', '--workers=2'),
     '--backend=slurm needs a --storage every worker reaches at once'),
    (('--space=LEARNING_RATE=loguniform(1e-4, 1e-2)', '--sampler=grid'),
     "--sampler=grid takes choice(...) dimensions only; "
     "--space='LEARNING_RATE=loguniform(1e-4, 1e-2)' is a range"),
], ids=['malformed', 'unknown-setting', 'inverted', 'empty', 'int-setting',
        'out-of-range', 'unquoted', 'unreachable-db', 'journal-folder',
        'slurm-sqlite', 'grid-range'])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(
    tmp_path, mnist_dir, extra, message):
  runs_dir = tmp_path / 'runs'
  result = subprocess.run(
      [sys.executable, '-m', 'seqmnist.tools.search', *BASE, *extra,
       f'--runs_dir={runs_dir}', f'--data_dir={mnist_dir}'],
      cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300,
      check=False)
  assert result.returncode == 2, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith('seqmnist.tools.search: error: '), lines
  assert message in lines[-1], lines[-1]
  assert not runs_dir.exists()


# --- services: a real PostgreSQL server, optuna-dashboard in Chromium -----


def _postgres_bin():
  found = sorted(glob.glob('/usr/lib/postgresql/*/bin/initdb'))
  return os.path.dirname(found[-1]) if found else None


@pytest.fixture
def postgres(tmp_path):
  """A throwaway PostgreSQL server on a free loopback port (Debian's
  postgresql: .ci/run installs it); yields its URL for database
  `seqmnist`."""
  bin_dir = _postgres_bin()
  if bin_dir is None:
    pytest.skip('POSTGRESQL NOT AVAILABLE: no /usr/lib/postgresql/*/bin/'
                'initdb (Debian: apt-get install postgresql; .ci/run does)')
  # Its own folder outside pytest's (which only root may enter): the
  # server refuses to run as root, so as root it runs as `postgres`.
  home = pathlib.Path(tempfile.mkdtemp(prefix='seqmnist-postgres-'))
  data = home / 'pgdata'
  as_user = []
  if os.geteuid() == 0:
    shutil.chown(home, 'postgres')
    as_user = ['runuser', '-u', 'postgres', '--']
  port = free_ports(1)[0]

  def pg(*args):
    return subprocess.run([*as_user, *args], capture_output=True, text=True,
                          timeout=120, check=False, cwd=home)
  init = pg(f'{bin_dir}/initdb', '-D', str(data), '-U', 'postgres',
            '--auth=trust')
  assert init.returncode == 0, init.stderr
  start = pg(f'{bin_dir}/pg_ctl', '-D', str(data), '-l',
             str(home / 'server.log'), '-w', '-o',
             f'-p {port} -k {home} -c listen_addresses=127.0.0.1', 'start')
  assert start.returncode == 0, start.stderr
  try:
    made = pg(f'{bin_dir}/createdb', '-h', '127.0.0.1', '-p', str(port),
              '-U', 'postgres', 'seqmnist')
    assert made.returncode == 0, made.stderr
    yield f'postgresql://postgres@127.0.0.1:{port}/seqmnist'
  finally:
    pg(f'{bin_dir}/pg_ctl', '-D', str(data), '-m', 'immediate', 'stop')
    shutil.rmtree(home, ignore_errors=True)


@pytest.mark.ci_provides('PostgreSQL')
def test_a_study_on_a_postgresql_server(postgres, tmp_path, mnist_dir):
  """Two workers on a real PostgreSQL server: 3 trials between them, each
  once; the study is in the database, the runs in the runs dir."""
  import optuna  # pylint: disable=import-outside-toplevel
  runs_dir = tmp_path / 'runs'
  extra = ('--trials=3', f'--storage={postgres}', '--study_name=pg')
  first = _search(runs_dir, mnist_dir, '--trials=1', f'--storage={postgres}',
                  '--study_name=pg')
  assert first.returncode == 0, first.stderr[-3000:]
  assert 'storage postgresql://postgres@127.0.0.1:' in first.stderr
  assert not (runs_dir / 'study.db').exists()
  procs = [_start(runs_dir, mnist_dir, *extra,
                  log=tmp_path / f'worker-{i}.log') for i in range(2)]
  for i, proc in enumerate(procs):
    assert proc.wait(timeout=900) == 0, (
        tmp_path / f'worker-{i}.log').read_text()[-3000:]
  study = optuna.load_study(study_name='pg', storage=postgres)
  assert sorted(t.number for t in study.trials) == [0, 1, 2]
  assert all(t.state.name in ('COMPLETE', 'PRUNED') for t in study.trials)
  for number in range(3):
    log = (runs_dir / 'logs' / f'trial-{number:04d}.log').read_text()
    assert log.count('Training from step 0 ') == 1, number


@pytest.mark.ci_provides('Chromium')
def test_optuna_dashboard_shows_the_trials_in_a_browser(study, tmp_path):
  """`optuna-dashboard` (as README says) on the finished study, its trial
  list read from the page headless Chromium renders."""
  chromium = shutil.which('chromium') or shutil.which('chromium-browser')
  if chromium is None:
    pytest.skip('CHROMIUM NOT AVAILABLE: Debian\'s chromium is not '
                'installed (.ci/run installs it)')
  runs_dir, _ = study
  port = free_ports(1)[0]
  server = subprocess.Popen(
      [os.path.join(os.path.dirname(sys.executable), 'optuna-dashboard'),
       f'sqlite:///{runs_dir}/study.db', '--host', '127.0.0.1', '--port',
       str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)
  try:
    import urllib.request  # pylint: disable=import-outside-toplevel
    deadline = time.time() + 60
    while True:
      assert server.poll() is None, server.stdout.read()
      try:
        with urllib.request.urlopen(f'http://127.0.0.1:{port}/api/studies',
                                    timeout=5) as response:
          studies = json.loads(response.read())['study_summaries']
        break
      except OSError:
        assert time.time() < deadline
        time.sleep(0.5)
    assert [s['study_name'] for s in studies] == ['study']
    page = subprocess.run(
        [chromium, '--headless', '--no-sandbox', '--disable-gpu',
         '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync',
         f'--user-data-dir={tmp_path / "chromium"}',
         '--virtual-time-budget=20000', '--dump-dom',
         f'http://127.0.0.1:{port}/dashboard/studies/'
         f'{studies[0]["study_id"]}/trials'],
        capture_output=True, text=True, timeout=180, check=False)
    assert page.returncode == 0, page.stderr[-2000:]
    shown = sorted(set(int(n) for n in re.findall(r'Trial (\d+)',
                                                  page.stdout)))
    assert shown == [0, 1, 2, 3, 4], page.stdout[-3000:]
    assert 'LEARNING_RATE' in page.stdout
  finally:
    server.terminate()
    server.wait(timeout=30)
