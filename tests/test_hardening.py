"""Data safety when the run dir is damaged or the user interrupts: real runs of
the CLI on real MNIST, with real files broken the way disks and users break
them, and real signals. (The foreign folder and the lock: test_rundir.py.)
"""

import gzip
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import (FAST, REPO, gin_params, run_cli, start_cli,
                      wait_for_line)
from test_reliability import _assert_same_run, _final_weights, _one_line
from test_main import _results

STEPS = 40
RUN = (*FAST, 'Trainer.steps_per_loop=5', f'Trainer.steps={STEPS}',
       'Trainer.eval_every=10', 'Trainer.checkpoint_every=10')


def _args(model_dir, mnist_dir, *params):
  return ('--gin_file=row.gin', f'--model_dir={model_dir}',
          f'--data_dir={mnist_dir}', *gin_params(*RUN, *params))


@pytest.fixture(scope='module')
def finished(tmp_path_factory, mnist_dir):
  """An uninterrupted run: what every damaged-then-resumed one must equal."""
  model_dir = tmp_path_factory.mktemp('finished') / 'run'
  result = run_cli(*_args(model_dir, mnist_dir))
  assert result.returncode == 0, result.stderr[-3000:]
  return model_dir, (_results(model_dir), _final_weights(model_dir))


def _stopped_at_30(tmp_path, mnist_dir):
  """A run stopped after its step-30 checkpoint (ckpt-10, 20, 30 on disk)."""
  model_dir = tmp_path / 'run'
  result = run_cli(*_args(model_dir, mnist_dir, 'Trainer.steps=30'))
  assert result.returncode == 0, result.stderr[-3000:]
  os.remove(model_dir / 'results.json')
  return model_dir


def test_a_garbage_checkpoint_state_file_resumes_from_the_files(
    tmp_path, mnist_dir, finished):
  model_dir = _stopped_at_30(tmp_path, mnist_dir)
  (model_dir / 'checkpoints' / 'checkpoint').write_bytes(b'\x00garbage {{\n')
  result = run_cli(*_args(model_dir, mnist_dir))
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'is unreadable; rebuilding it from the 3 checkpoint(s)' in (
      result.stderr)
  assert f'Resumed from {model_dir}/checkpoints/ckpt-30 at step 30' in (
      result.stderr)
  _assert_same_run(model_dir, finished[1])


@pytest.mark.parametrize('damage', ['missing data', 'truncated index'])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(
    tmp_path, mnist_dir, finished, damage):
  model_dir = _stopped_at_30(tmp_path, mnist_dir)
  newest = model_dir / 'checkpoints' / 'ckpt-30'
  if damage == 'missing data':
    os.remove(f'{newest}.data-00000-of-00001')
  else:
    with open(f'{newest}.index', 'r+b') as f:
      f.truncate(20)
  result = run_cli(*_args(model_dir, mnist_dir))
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'Checkpoint {newest} is damaged' in result.stderr
  assert f'Resumed from {model_dir}/checkpoints/ckpt-20 at step 20' in (
      result.stderr)
  _assert_same_run(model_dir, finished[1])


def test_no_intact_checkpoint_stops_with_one_line_and_starts_nothing(
    tmp_path, mnist_dir):
  model_dir = _stopped_at_30(tmp_path, mnist_dir)
  for name in os.listdir(model_dir / 'checkpoints'):
    if name.endswith('.index'):
      (model_dir / 'checkpoints' / name).write_bytes(b'')
  before = sorted(os.listdir(model_dir / 'checkpoints'))
  result = run_cli(*_args(model_dir, mnist_dir))
  assert result.returncode == 2, result.stderr[-3000:]
  line = _one_line(result.stderr, 'error')
  assert line.startswith(f'seqmnist: error: no intact checkpoint in '
                         f'{model_dir}/checkpoints: '
                         'ckpt-30 (')
  assert line.endswith('refusing to start over them from step 0 (move the '
                       'folder away to start a new run)')
  assert sorted(os.listdir(model_dir / 'checkpoints')) == before


@pytest.mark.parametrize('content', [b'', b'{"test_accuracy": 0.9', b'[1, 2]'])
def test_a_damaged_results_json_is_recomputed_from_the_best_checkpoint(
    tmp_path, mnist_dir, finished, content):
  model_dir = tmp_path / 'run'
  result = run_cli(*_args(model_dir, mnist_dir))
  assert result.returncode == 0, result.stderr[-3000:]
  (model_dir / 'results.json').write_bytes(content)
  rerun = run_cli(*_args(model_dir, mnist_dir))
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert 'results.json is missing or unreadable: recomputing it' in (
      rerun.stderr)
  assert 'Traceback' not in rerun.stderr
  results, reference = _results(model_dir), finished[1][0]
  for key in ('test_accuracy', 'test_loss', 'best_val_accuracy', 'best_step',
              'global_step', 'weights_fingerprint'):
    assert results[key] == reference[key], key
  assert results['steps_this_run'] == 0


def test_ctrl_c_saves_at_the_next_boundary_and_exits_130(tmp_path, mnist_dir,
                                                         finished):
  model_dir, log = tmp_path / 'run', tmp_path / 'stderr.log'
  proc = start_cli(*_args(model_dir, mnist_dir, 'Trainer.steps_per_loop=1'),
                   log=log)
  wait_for_line(log, 'Saved checkpoint', [proc])
  proc.send_signal(signal.SIGINT)
  assert proc.wait(timeout=120) == 130, log.read_text()[-3000:]
  text = log.read_text()
  assert 'Traceback' not in text and 'KeyboardInterrupt' not in text
  line = _one_line(text, 'interrupted')
  step = int(re.search(r'checkpoint saved at step (\d+) of 40; rerun the '
                       r'same command to resume', line).group(1))
  assert (model_dir / 'checkpoints' / f'ckpt-{step}.index').exists()
  resumed = run_cli(*_args(model_dir, mnist_dir))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  _assert_same_run(model_dir, finished[1])


def test_a_second_ctrl_c_stops_at_once(tmp_path, mnist_dir):
  # One loop of 100,000 steps: the first Ctrl-C would wait for its end.
  model_dir, log = tmp_path / 'run', tmp_path / 'stderr.log'
  proc = start_cli(*_args(model_dir, mnist_dir, 'Trainer.steps=100000',
                          'Trainer.steps_per_loop=100000',
                          'Trainer.eval_every=100000',
                          'Trainer.checkpoint_every=100000',
                          'Trainer.summary_every=100000'), log=log)
  wait_for_line(log, 'Training from step 0', [proc])
  time.sleep(2)
  proc.send_signal(signal.SIGINT)
  wait_for_line(log, 'Ctrl-C again to stop at once', [proc])
  started = time.time()
  proc.send_signal(signal.SIGINT)
  code = proc.wait(timeout=60)
  assert code != 0 and time.time() - started < 30
  assert not (model_dir / 'checkpoints').exists()  # nothing half-saved


# Bad input: early, one line, exit 2, nothing written -------------------------


def _fails_in_one_line(result, message, program='seqmnist'):
  assert result.returncode == 2, result.stderr[-3000:]
  lines = result.stderr.strip().splitlines()
  assert 'Traceback' not in result.stderr
  assert lines[-1] == f'{program}: error: {message}', lines[-3:]


def _quiet_cli(*args):
  """The CLI as a user runs it: TF_CPP_MIN_LOG_LEVEL not set."""
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  return subprocess.run([sys.executable, '-m', 'seqmnist.main', *args],
                        capture_output=True, text=True, timeout=600, env=env,
                        cwd=REPO, check=False)


def test_a_config_error_prints_its_one_line_and_nothing_else(tmp_path,
                                                             mnist_dir):
  result = _quiet_cli('--gin_file=row.gin', '--gin_param=Model.units=-1',
                      f'--model_dir={tmp_path}/run', f'--data_dir={mnist_dir}')
  assert result.returncode == 2
  assert result.stderr.splitlines() == [
      'seqmnist: error: Model.units=-1 must be an integer from 1 to 8,192']
  assert not (tmp_path / 'run').exists()


def test_a_normal_run_prints_no_error_line(tmp_path, mnist_dir):
  # The README's form of --gin_file (a path), which once printed a false
  # "ERROR ... Path not found: .../gin/gin/row.gin".
  result = _quiet_cli('--gin_file=gin/row.gin', f'--model_dir={tmp_path}/run',
                      f'--data_dir={mnist_dir}',
                      *gin_params(*FAST, 'Trainer.steps=10',
                                  'Trainer.eval_every=10'))
  assert result.returncode == 0, result.stderr[-3000:]
  bad = [line for line in result.stderr.splitlines()
         if re.match(r'^E\d{4}', line) or 'ERROR' in line
         or 'Path not found' in line]
  assert not bad, bad


@pytest.mark.parametrize('args, message', [
    (('--bogus',), "Unknown command line flag 'bogus' (see --helpshort)"),
    (('stray', '--gin_file=row.gin'),
     'unexpected argument(s) stray; every input is a --flag (see --helpshort)'),
    (('--gin_file=row.gin', '--gin_param=Model.units=(', '--model_dir=x'),
     'bad gin config: EOF in multi-line statement (an unclosed bracket or '
     'quote?) in Model.units=('),
], ids=['unknown-flag', 'positional', 'gin-syntax'])
def test_command_line_mistakes_are_one_line_exit_2(args, message):
  _fails_in_one_line(run_cli(*args), message)


def test_mnist_files_under_another_datasets_name_are_refused(tmp_path,
                                                             mnist_dir):
  result = run_cli('--gin_file=row.gin', f'--model_dir={tmp_path}/run',
                   f'--data_dir={mnist_dir}',
                   "--gin_param=Data.dataset='fashion_mnist'")
  _fails_in_one_line(
      result, f"IDX file {mnist_dir}/train-images-idx3-ubyte.gz is 'mnist''s "
      'published train-images-idx3-ubyte (its SHA-256 matches), but '
      "Data.dataset='fashion_mnist'; set Data.dataset='mnist', or point "
      "--data_dir at 'fashion_mnist''s own files")
  assert not (tmp_path / 'run').exists()


def _write_idx_gz(path, dims, body_bytes, extra_zeros=0):
  with gzip.open(path, 'wb', compresslevel=1) as f:
    f.write(bytes([0, 0, 8, len(dims)]))
    for d in dims:
      f.write(d.to_bytes(4, 'big'))
    f.write(body_bytes)
    chunk = bytes(1 << 24)
    for _ in range(extra_zeros // len(chunk)):
      f.write(chunk)


def test_an_idx_header_of_absurd_dimensions_is_refused_unread(mnist_copy):
  path = mnist_copy / 'train-images-idx3-ubyte.gz'
  _write_idx_gz(path, (2**32 - 1, 2**32 - 1, 2**32 - 1), b'')
  from seqmnist import data  # pylint: disable=import-outside-toplevel
  from seqmnist.errors import DataError  # pylint: disable=import-outside-toplevel
  with pytest.raises(DataError, match=r'claims dimensions \(4294967295, '
                     r'4294967295, 4294967295\) \(79,228,162,458,924,105,385,'
                     r'300,197,375 bytes\), more than the 1,073,741,824'):
    data.load(data.DataConfig(), str(mnist_copy))


def test_a_gzip_bomb_is_not_inflated(mnist_copy, mnist_dir):
  # MNIST's real header and body, then 1 GiB of zeros (1 MiB compressed):
  # the reader stops one byte past what the header announces.
  from seqmnist import data, idx  # pylint: disable=import-outside-toplevel
  from seqmnist.errors import DataError  # pylint: disable=import-outside-toplevel
  labels = idx.read(os.path.join(mnist_dir, 't10k-labels-idx1-ubyte.gz'),
                    expected_ndim=1)
  path = mnist_copy / 't10k-labels-idx1-ubyte.gz'
  _write_idx_gz(path, (10000,), labels.tobytes(), extra_zeros=1 << 30)
  assert os.path.getsize(path) < 20 << 20
  started = time.time()
  with pytest.raises(DataError, match=r'is too long: its header \(10000,\) '
                     'needs 10008 bytes, and more follow'):
    data.load(data.DataConfig(), str(mnist_copy))
  assert time.time() - started < 20


@pytest.mark.parametrize('kind', ['empty', 'missing', 'loop', 'file'])
def test_a_data_dir_without_data_answers_at_once(tmp_path, kind):
  path = tmp_path / 'data'
  if kind == 'empty':
    path.mkdir()
  elif kind == 'loop':
    os.symlink(path, path)
  elif kind == 'file':
    path.write_text('x')
  started = time.time()
  result = run_cli('--gin_file=row.gin', f'--model_dir={tmp_path}/run',
                   f'--data_dir={path}')
  message = {
      'empty': (f'--data_dir={path} holds neither the four IDX files '
                '(train-images-idx3-ubyte, train-labels-idx1-ubyte, '
                't10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each '
                f'optionally .gz) nor a TFDS data folder ({path}/mnist/); '
                'point it at one, or leave --data_dir out to download through '
                'TFDS'),
      'missing': f'--data_dir={path} does not exist',
      'loop': (f'--data_dir={path} is a symbolic link that does not resolve '
               '(a loop, or its target is missing)'),
      'file': f'--data_dir={path} is a file, not a folder',
  }[kind]
  _fails_in_one_line(result, message)
  assert time.time() - started < 60
  assert not (tmp_path / 'run').exists()
  if kind == 'empty':
    assert os.listdir(path) == []  # no TFDS litter


def test_gin_imports_are_refused_unless_allowed(tmp_path, mnist_dir):
  # An `import` in a gin file runs that module's code: a config is code.
  marker = tmp_path / 'ran'
  module = tmp_path / 'sideeffect.py'
  module.write_text(f'open({str(marker)!r}, "w").close()\n')
  config = tmp_path / 'imports.gin'
  config.write_text("include 'row.gin'\nimport sideeffect\n")
  env_path = f'{tmp_path}:{os.environ.get("PYTHONPATH", "")}'
  args = ('--gin_file=' + str(config), f'--model_dir={tmp_path}/run',
          f'--data_dir={mnist_dir}', *gin_params(*FAST, 'Trainer.steps=2',
                                                 'Trainer.eval_every=2'))
  env = dict(os.environ, PYTHONPATH=env_path, TF_CPP_MIN_LOG_LEVEL='2')
  refused = subprocess.run([sys.executable, '-m', 'seqmnist.main', *args],
                           capture_output=True, text=True, timeout=600,
                           env=env, cwd=REPO, check=False)
  _fails_in_one_line(
      refused, f'{config} line 2: import sideeffect: gin imports run the '
      "module's code, so seqmnist refuses them; pass --allow_gin_imports if "
      'you trust this config')
  assert not marker.exists() and not (tmp_path / 'run').exists()
  allowed = subprocess.run(
      [sys.executable, '-m', 'seqmnist.main', *args, '--allow_gin_imports'],
      capture_output=True, text=True, timeout=600, env=env, cwd=REPO,
      check=False)
  assert allowed.returncode == 0, allowed.stderr[-3000:]
  assert marker.exists()


def test_a_config_that_cannot_fit_in_memory_is_refused_first(tmp_path,
                                                             mnist_dir):
  # About a petabyte by the estimate: no machine has it. (An allocation of
  # this size once grew the process to 24 GB before the OOM killer.)
  result = run_cli('--gin_file=pixel.gin', f'--model_dir={tmp_path}/run',
                   f'--data_dir={mnist_dir}',
                   *gin_params('UNITS=8192', 'Model.layers=64',
                               'Data.batch_size=70000'))
  assert result.returncode == 2, result.stderr[-3000:]
  line = result.stderr.strip().splitlines()[-1]
  assert re.fullmatch(
      r'seqmnist: error: this config needs about [\d,.]+ GiB of memory per '
      r'process \(Model.units=8192, Model.layers=64, Data.batch_size=70000, '
      r'784 steps\) and this machine has [\d,.]+ GiB available; lower one of '
      r'them', line), line
  assert not (tmp_path / 'run').exists()


def test_sigterm_during_the_final_test_pass_finishes_it_and_says_so(
    tmp_path, mnist_dir):
  # The pixel task's test pass (784 steps per image) lasts long enough to
  # signal inside it.
  model_dir, log = tmp_path / 'run', tmp_path / 'stderr.log'
  proc = start_cli('--gin_file=pixel.gin', f'--model_dir={model_dir}',
                   f'--data_dir={mnist_dir}',
                   *gin_params('UNITS=8', 'STEPS=1', 'Trainer.eval_every=1',
                               'Trainer.steps_per_loop=1',
                               'Data.eval_batch_size=100'), log=log)
  wait_for_line(log, 'Testing the best checkpoint', [proc])
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
  text = log.read_text()
  assert ('Received signal 15 during the final test pass: finishing it, '
          'then exiting with the results.') in text
  assert _results(model_dir)['global_step'] == 1
