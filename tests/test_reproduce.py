"""launch/reproduce.sh: the article configs run for real (shortened with
flags after `--`), and the table it prints comes from each run's files."""

import json
import os
import re
import signal
import subprocess
import time

from conftest import REPO, gin_params

SCRIPT = os.path.join(REPO, 'launch', 'reproduce.sh')
SHORT = ('Model.units=16', 'Trainer.steps=20', 'Trainer.eval_every=20',
         'Trainer.checkpoint_every=20', 'Trainer.steps_per_loop=10',
         'Data.eval_batch_size=1000')


def _env(runs, data_dir):
  env = dict(os.environ, RUNS_DIR=str(runs), TF_CPP_MIN_LOG_LEVEL='2')
  if data_dir:
    env['DATA_DIR'] = data_dir
  return env


def _reproduce(runs, *args, data_dir=None):
  return subprocess.run(['bash', SCRIPT, *args], capture_output=True,
                        text=True, timeout=600, env=_env(runs, data_dir),
                        check=False)


def test_runs_article_configs_and_tables_them(tmp_path, mnist_dir):
  runs = tmp_path / 'articles'
  result = _reproduce(runs, 'day25_rnn', 'day25_lstm', '--',
                      *gin_params(*SHORT), data_dir=mnist_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  table = result.stdout.splitlines()
  assert '| config | steps | best validation | test accuracy |' in table
  for name, cell in (('day25_rnn', 'simple'), ('day25_lstm', 'lstm')):
    run = runs / name
    assert f"Model.cell = '{cell}'" in (run / 'operative_config.gin'
                                         ).read_text()
    results = json.loads((run / 'results.json').read_text())
    assert results['global_step'] == 20
    assert (f"| {name} | 20 | {100 * results['best_val_accuracy']:.2f}% "
            f"(step 20) | {100 * results['test_accuracy']:.2f}% |") in table


def test_sigterm_stops_the_run_and_the_table_says_where(tmp_path, mnist_dir):
  runs, log = tmp_path / 'articles', tmp_path / 'stderr.log'
  with open(log, 'w') as stderr:
    script = subprocess.Popen(
        ['bash', SCRIPT, 'day25_rnn', 'day25_lstm', '--',
         *gin_params(*SHORT, 'Trainer.steps=100000')],
        stdout=subprocess.PIPE, stderr=stderr, text=True,
        env=_env(runs, mnist_dir))
    deadline = time.time() + 300
    while 'Saved checkpoint' not in log.read_text():
      assert time.time() < deadline and script.poll() is None, (
          log.read_text()[-3000:])
      time.sleep(0.2)
    script.send_signal(signal.SIGTERM)  # to the script alone, as `kill` does
    out, _ = script.communicate(timeout=300)
  assert script.returncode == 143, log.read_text()[-3000:]
  saved = re.search(r'preempted: checkpoint saved at step (\d+)',
                    log.read_text())
  assert saved, log.read_text()[-3000:]
  assert f'| day25_rnn | {saved.group(1)} (unfinished) |' in out
  assert '| day25_lstm | not run | | |' in out  # never started
  assert not (runs / 'day25_lstm').exists()


def test_unknown_config_is_refused_before_anything_runs(tmp_path):
  runs = tmp_path / 'articles'
  result = _reproduce(runs, 'day25_rnn', 'day99')
  assert result.returncode == 2
  assert "unknown article config 'day99'" in result.stderr
  assert 'day25_lstm' in result.stderr  # the valid names are listed
  assert not runs.exists()
