"""Data safety when the run dir is damaged or the user interrupts: real runs of
the CLI on real MNIST, with real files broken the way disks and users break
them, and real signals. (The foreign folder and the lock: test_rundir.py.)
"""

import contextlib
import gzip
import os
import re
import shutil
import signal
import socket
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


@pytest.fixture(scope='module')
def stopped_at_30_once(tmp_path_factory, mnist_dir):
  """A run stopped after its step-30 checkpoint (ckpt-10, 20, 30 on disk)."""
  model_dir = tmp_path_factory.mktemp('stopped') / 'run'
  result = run_cli(*_args(model_dir, mnist_dir, 'Trainer.steps=30'))
  assert result.returncode == 0, result.stderr[-3000:]
  os.remove(model_dir / 'results.json')
  return model_dir


@pytest.fixture
def stopped_at_30(tmp_path, stopped_at_30_once):
  """This test's own copy of the run stopped at step 30, to damage."""
  return _copy(stopped_at_30_once, tmp_path / 'run')


def _copy(run, model_dir):
  shutil.copytree(run, model_dir, symlinks=True)
  return model_dir


def test_a_garbage_checkpoint_state_file_resumes_from_the_files(
    mnist_dir, finished, stopped_at_30):
  model_dir = stopped_at_30
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
    mnist_dir, finished, stopped_at_30, damage):
  model_dir = stopped_at_30
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
    mnist_dir, stopped_at_30):
  model_dir = stopped_at_30
  for folder in ('checkpoints', 'best'):
    for name in os.listdir(model_dir / folder):
      if name.endswith('.index'):
        (model_dir / folder / name).write_bytes(b'')
  before = sorted(os.listdir(model_dir / 'checkpoints'))
  result = run_cli(*_args(model_dir, mnist_dir))
  assert result.returncode == 2, result.stderr[-3000:]
  line = _one_line(result.stderr, 'error')
  assert line.startswith(f'seqmnist: error: no intact checkpoint in '
                         f'{model_dir}/checkpoints: '
                         'ckpt-30 (')
  assert 'is damaged too' in line
  assert line.endswith('refusing to start over from step 0 (move the run '
                       'directory away to start a new run)')
  assert sorted(os.listdir(model_dir / 'checkpoints')) == before


def test_damaged_rolling_checkpoints_resume_from_the_intact_best_one(
    mnist_dir, finished, stopped_at_30):
  """A disk that filled during a rolling save leaves a 0-byte index: the
  best checkpoint of the same training state carries the run on."""
  model_dir = stopped_at_30
  best = [n for n in os.listdir(model_dir / 'best') if n.endswith('.index')]
  for name in os.listdir(model_dir / 'checkpoints'):
    if name.endswith('.index'):
      (model_dir / 'checkpoints' / name).write_bytes(b'')
  result = run_cli(*_args(model_dir, mnist_dir))
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'resuming from the best checkpoint' in result.stderr
  assert best[0].rsplit('.', 1)[0] in result.stderr
  ref = finished[1][0]
  if best == ['ckpt-30.index']:  # the best was the newest: the same run
    results = _results(model_dir)
    for key in ('test_accuracy', 'best_val_accuracy', 'global_step',
                'weights_fingerprint'):
      assert results[key] == ref[key], key


def test_a_finished_run_without_its_checkpoints_only_reports(
    tmp_path, mnist_dir, finished):
  model_dir = _copy(finished[0], tmp_path / 'run')
  results = (model_dir / 'results.json').read_text()
  best = sorted(os.listdir(model_dir / 'best'))
  for folder in ('checkpoints',):
    for name in os.listdir(model_dir / folder):
      os.remove(model_dir / folder / name)
  os.rmdir(model_dir / 'checkpoints')
  rerun = run_cli(*_args(model_dir, mnist_dir))
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f'Run already finished at step {STEPS}' in rerun.stderr
  assert 'Training from step' not in rerun.stderr
  assert (model_dir / 'results.json').read_text() == results
  assert sorted(os.listdir(model_dir / 'best')) == best


def test_lowering_the_steps_of_a_finished_run_rewrites_nothing(
    tmp_path, mnist_dir, finished):
  model_dir = _copy(finished[0], tmp_path / 'run')
  config = (model_dir / 'operative_config.gin').read_text()
  results = (model_dir / 'results.json').read_text()
  rerun = run_cli(*_args(model_dir, mnist_dir, 'Trainer.steps=20'))
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert 'Run already finished' in rerun.stderr
  assert (model_dir / 'operative_config.gin').read_text() == config
  assert (model_dir / 'results.json').read_text() == results


@pytest.mark.parametrize('entry', ['.lock', 'checkpoints', 'best', 'train',
                                   'results.json', 'operative_config.gin',
                                   'checkpoints/checkpoint'])
@pytest.mark.parametrize('dangling', [False, True])
def test_a_link_inside_a_run_dir_is_refused_and_its_target_untouched(
    tmp_path, mnist_dir, finished, entry, dangling):
  model_dir = _copy(finished[0], tmp_path / 'run')
  outside = tmp_path / 'users_own'
  if not dangling:
    if entry in ('checkpoints', 'best', 'train'):
      shutil.copytree(model_dir / entry, outside)  # another project's
    else:
      outside.write_text('the user\'s own file\n')
  before = _tree(outside)
  target = model_dir / entry
  if target.is_dir():
    shutil.rmtree(target)
  elif target.exists():
    target.unlink()
  target.symlink_to(outside)
  result = run_cli(*_args(model_dir, mnist_dir))
  assert result.returncode == 2, result.stderr[-3000:]
  line = _one_line(result.stderr, 'error')
  assert line == (f'seqmnist: error: --model_dir={model_dir}: {entry} is a '
                  f'symbolic link (to {outside}); seqmnist writes only '
                  'inside the run directory and never through a link: '
                  'replace the link with the file or folder itself')
  assert _tree(outside) == before


def _tree(path):
  """Every file under path (or path itself) with its bytes; None if absent."""
  if not os.path.lexists(path):
    return None
  if os.path.isfile(path):
    return open(path, 'rb').read()
  return {os.path.relpath(os.path.join(d, n), path):
          open(os.path.join(d, n), 'rb').read()
          for d, _, names in os.walk(path) for n in names}


@pytest.mark.parametrize('content', [b'', b'{"test_accuracy": 0.9', b'[1, 2]'])
def test_a_damaged_results_json_is_recomputed_from_the_best_checkpoint(
    tmp_path, mnist_dir, finished, content):
  model_dir = _copy(finished[0], tmp_path / 'run')
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
  assert code == 130 and time.time() - started < 30
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
     '--gin_param="Model.units=(": ( is not a gin value; an unclosed bracket '
     'or quote?'),
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
  from seqmnist.data import pipeline  # pylint: disable=import-outside-toplevel
  from seqmnist.errors import DataError  # pylint: disable=import-outside-toplevel
  with pytest.raises(DataError, match=r'claims dimensions \(4294967295, '
                     r'4294967295, 4294967295\) \(79,228,162,458,924,105,385,'
                     r'300,197,375 bytes\), more than the 1,073,741,824'):
    pipeline.load(pipeline.DataConfig(), str(mnist_copy))


_LOAD_AND_MEASURE = """
import resource, sys
from seqmnist.data import pipeline
from seqmnist.errors import DataError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
  pipeline.load(pipeline.DataConfig(), sys.argv[1])
  print('loaded')
except DataError as e:
  print('refused:', e)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print('peak growth KiB:', after - before)
"""


def test_a_gzip_bomb_is_not_inflated(mnist_copy, mnist_dir):
  # MNIST's real header and body, then 1 GiB of zeros (1 MiB compressed):
  # the reader stops one byte past what the header announces, in time and
  # in memory (the process's peak grows by far less than the 1 GiB).
  from seqmnist.data import idx  # pylint: disable=import-outside-toplevel
  labels = idx.read(os.path.join(mnist_dir, 't10k-labels-idx1-ubyte.gz'),
                    expected_ndim=1)
  path = mnist_copy / 't10k-labels-idx1-ubyte.gz'
  _write_idx_gz(path, (10000,), labels.tobytes(), extra_zeros=1 << 30)
  assert os.path.getsize(path) < 20 << 20
  result = subprocess.run([sys.executable, '-c', _LOAD_AND_MEASURE,
                           str(mnist_copy)], capture_output=True, text=True,
                          timeout=300, cwd=REPO, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert re.search(r'refused: IDX file .* is too long: its header '
                   r'\(10000,\) needs 10008 bytes, and more follow',
                   result.stdout), result.stdout
  growth_kib = int(result.stdout.split('peak growth KiB:')[1])
  # Loading MNIST itself (the 60k training images, their content hashes)
  # takes a few hundred MB; inflating the bomb would add 1 GiB.
  assert growth_kib < 600 * 1024, growth_kib


@pytest.mark.parametrize('kind', ['empty', 'missing', 'loop', 'dangling',
                                  'file'])
def test_a_data_dir_without_data_answers_at_once(tmp_path, kind):
  path = tmp_path / 'data'
  if kind == 'empty':
    path.mkdir()
  elif kind == 'loop':
    os.symlink(path, path)
  elif kind == 'dangling':
    os.symlink(tmp_path / 'moved_away', path)
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
      'dangling': (f'--data_dir={path} is a symbolic link that does not '
                   'resolve (a loop, or its target is missing)'),
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
                               'Data.batch_size=50000'))
  assert result.returncode == 2, result.stderr[-3000:]
  line = result.stderr.strip().splitlines()[-1]
  assert re.fullmatch(
      r'seqmnist: error: this config needs about [\d,.]+ GiB of memory per '
      r'process \(Model.units=8192, Model.layers=64, Data.batch_size=50000, '
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


@pytest.fixture
def small_disk(tmp_path):
  """A 120 KB tmpfs: room for the first checkpoints of a FAST run, not all."""
  mount = tmp_path / 'small'
  mount.mkdir()
  made = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=120k', 'tmpfs',
                         str(mount)], capture_output=True, text=True,
                        check=False)
  if made.returncode:
    pytest.skip(f'cannot mount a small tmpfs (needs root): {made.stderr}')
  try:
    yield mount
  finally:
    subprocess.run(['umount', '-l', str(mount)], check=False)


def _assert_save_failed(result, model_dir, cause, kind='(rolling|best)',
                        step=r'\d+', folder='(checkpoints|best)'):
  """Exit 2 and the one line of a save that could not be written."""
  assert result.returncode == 2, result.stderr[-3000:]
  line = _one_line(result.stderr, 'error')
  assert re.fullmatch(
      rf'seqmnist: error: could not save the {kind} checkpoint of step '
      rf'{step} in {re.escape(str(model_dir))}/{folder}: {cause}; the newest '
      r'intact checkpoint is kept: make room \(or fix the permission\) and '
      r'rerun the same command to resume', line), line


def test_a_full_disk_during_a_save_is_one_line_and_a_rerun_resumes_exactly(
    tmp_path, mnist_dir, finished, small_disk):
  model_dir = small_disk / 'run'
  result = run_cli(*_args(model_dir, mnist_dir))
  _assert_save_failed(result, model_dir, 'no space left on the device')
  # Moved where there is room, the same command resumes to the
  # uninterrupted run's end, bit for bit.
  roomy = tmp_path / 'roomy'
  shutil.copytree(model_dir, roomy, symlinks=True)
  rerun = run_cli(*_args(roomy, mnist_dir))
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert 'Resumed from' in rerun.stderr
  _assert_same_run(roomy, finished[1])


@contextlib.contextmanager
def _read_only(folder):
  """`folder` mounted read-only over itself (a bind mount: root ignores file
  modes, not a read-only mount); skips where mounting is not allowed."""
  made = subprocess.run(f'mount --bind {folder} {folder} && '
                        f'mount -o remount,bind,ro {folder}', shell=True,
                        capture_output=True, text=True, check=False)
  if made.returncode:
    subprocess.run(['umount', str(folder)], check=False)
    pytest.skip(f'cannot make a read-only bind mount (needs root): '
                f'{made.stderr.strip()}')
  try:
    yield folder
  finally:
    subprocess.run(['umount', '-l', str(folder)], check=False)


@pytest.fixture
def read_only_checkpoints(stopped_at_30):
  """A run stopped at step 30 whose checkpoints/ is then read-only."""
  model_dir = stopped_at_30
  with _read_only(model_dir / 'checkpoints'):
    yield model_dir


def test_a_read_only_checkpoint_folder_is_one_line_and_a_rerun_resumes(
    mnist_dir, finished, read_only_checkpoints):
  model_dir = read_only_checkpoints
  result = run_cli(*_args(model_dir, mnist_dir))
  _assert_save_failed(result, model_dir, 'read-only file system',
                      kind='rolling', step='40', folder='checkpoints')
  assert not (model_dir / 'results.json').exists()
  # Writable again, the same command resumes to the uninterrupted run's end.
  subprocess.run(['umount', str(model_dir / 'checkpoints')], check=True)
  rerun = run_cli(*_args(model_dir, mnist_dir))
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert 'Resumed from' in rerun.stderr
  _assert_same_run(model_dir, finished[1])


def test_a_model_dir_in_a_folder_that_denies_writing_is_one_line(
    tmp_path, mnist_dir):
  """A read-only mount (root ignores file modes, not that): refused before
  anything is read or written, naming the folder."""
  parent = tmp_path / 'read_only'
  parent.mkdir()
  with _read_only(parent):
    model_dir = parent / 'runs' / 'run'
    result = run_cli(*_args(model_dir, mnist_dir))
    _fails_in_one_line(result, f'--model_dir={model_dir} is not writable '
                       f'({parent} denies write access)')
    assert os.listdir(parent) == []


def _tool(module, *args):
  return subprocess.run([sys.executable, '-m', module, *args],
                        capture_output=True, text=True, timeout=600,
                        cwd=REPO, check=False,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))


def test_release_into_the_run_itself_is_refused(tmp_path, finished):
  model_dir = _copy(finished[0], tmp_path / 'run')
  before = sorted(os.listdir(model_dir))
  for out in (model_dir / 'release', model_dir):
    result = _tool('seqmnist.tools.release', f'--model_dir={model_dir}',
                   f'--out={out}')
    _fails_in_one_line(
        result, f'--out={out} is inside --model_dir={model_dir}; give a '
        'folder outside the run (TensorBoard would show the run twice)',
        'seqmnist.tools.release')
  assert sorted(os.listdir(model_dir)) == before


def test_an_export_removes_what_killed_exports_left(tmp_path, finished):
  parent = tmp_path / 'exports'
  parent.mkdir()
  abandoned, running = parent / '.export-killed', parent / '.export-running'
  for folder in (abandoned, running):
    folder.mkdir()
    (folder / 'saved_model.pb').write_bytes(b'half')
  two_hours_ago = time.time() - 7200
  os.utime(abandoned, (two_hours_ago, two_hours_ago))
  result = _tool('seqmnist.serving.export', f'--model_dir={finished[0]}',
                 f'--export_dir={parent / "row"}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert sorted(os.listdir(parent)) == ['.export-running', 'row']
  assert f'Removing {abandoned}, left by an export that was cut short' in (
      result.stderr)


def test_a_killed_sweep_stops_its_running_point(tmp_path, mnist_dir):
  """SIGKILL of the sweep (nothing forwarded): its child gets SIGTERM from
  the kernel, saves a checkpoint and exits 143, instead of training on."""
  runs = tmp_path / 'sweep'
  log = tmp_path / 'sweep.log'
  with open(log, 'w') as out:
    sweep = subprocess.Popen(
        [sys.executable, '-m', 'seqmnist.tools.sweep', '--gin_file=row.gin',
         f'--runs_dir={runs}', f'--data_dir={mnist_dir}',
         *gin_params(*FAST, 'Trainer.steps=100000',
                     'Trainer.checkpoint_every=10'),
         '--sweep=Trainer.seed=0'], stdout=out, stderr=subprocess.STDOUT,
        cwd=REPO)
  point_log = runs / 'logs' / 'Trainer.seed=0.log'
  deadline = time.time() + 300
  while time.time() < deadline and not (
      point_log.exists() and 'Saved checkpoint' in point_log.read_text()):
    assert sweep.poll() is None, log.read_text()[-3000:]
    time.sleep(0.2)
  child = [int(p) for p in subprocess.run(
      ['pgrep', '-P', str(sweep.pid)], capture_output=True,
      text=True).stdout.split()]
  assert len(child) == 1
  sweep.kill()
  sweep.wait()
  deadline = time.time() + 120
  while time.time() < deadline and os.path.exists(f'/proc/{child[0]}'):
    status = open(f'/proc/{child[0]}/status').read()
    if '\nState:\tZ' in status:
      break
    time.sleep(0.2)
  assert not os.path.exists(f'/proc/{child[0]}') or '\nState:\tZ' in open(
      f'/proc/{child[0]}/status').read(), 'the point is still training'
  text = point_log.read_text()
  assert 'seqmnist: preempted: checkpoint saved at step' in text, text[-2000:]


def test_a_second_sweep_on_the_same_folder_is_refused_naming_the_first(
    tmp_path, mnist_dir):
  """The sweep folder's lock: the second identical sweep fails at once with
  one line naming the first one's pid, and neither runs nor logs a point."""
  runs = tmp_path / 'sweep'
  command = [sys.executable, '-m', 'seqmnist.tools.sweep', '--gin_file=row.gin',
             f'--runs_dir={runs}', f'--data_dir={mnist_dir}',
             *gin_params(*FAST, 'Trainer.steps=100000',
                         'Trainer.checkpoint_every=10'),
             '--sweep=Trainer.seed=0']
  log = tmp_path / 'first.log'
  with open(log, 'w') as out:
    first = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                             cwd=REPO)
  try:
    point_log = runs / 'logs' / 'Trainer.seed=0.log'
    deadline = time.time() + 300
    while time.time() < deadline and not (
        point_log.exists() and 'Saved checkpoint' in point_log.read_text()):
      assert first.poll() is None, log.read_text()[-3000:]
      time.sleep(0.2)
    logged = point_log.read_text()
    second = subprocess.run(command, capture_output=True, text=True,
                            timeout=300, cwd=REPO, check=False)
    _fails_in_one_line(
        second, f'--runs_dir={runs} is in use by seqmnist pid {first.pid} on '
        f'{socket.gethostname()}; wait for it to end, or give another folder',
        program='seqmnist.tools.sweep')
    assert point_log.read_text().startswith(logged)
    assert first.poll() is None, 'the first sweep was disturbed'
  finally:
    first.send_signal(signal.SIGTERM)
    first.wait(timeout=300)
  assert first.returncode == 143, log.read_text()[-3000:]


def _png(path, width, height):
  """A real grayscale PNG of zeros, streamed (a huge image, a small file)."""
  import struct  # pylint: disable=g-import-not-at-top
  import zlib  # pylint: disable=g-import-not-at-top

  def chunk(kind, body):
    return (struct.pack('>I', len(body)) + kind + body +
            struct.pack('>I', zlib.crc32(kind + body) & 0xffffffff))
  packer = zlib.compressobj(9)
  row = bytes(1 + width)
  idat = b''.join(packer.compress(row) for _ in range(height)) + packer.flush()
  path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(
      b'IHDR', struct.pack('>IIBBBBB', width, height, 8, 0, 0, 0, 0)) +
                   chunk(b'IDAT', idat) + chunk(b'IEND', b''))


@pytest.fixture(scope='module')
def exported(tmp_path_factory, finished):
  export_dir = tmp_path_factory.mktemp('export') / 'model'
  result = _tool('seqmnist.serving.export', f'--model_dir={finished[0]}',
                 f'--export_dir={export_dir}')
  assert result.returncode == 0, result.stderr[-3000:]
  return export_dir


def test_predict_refuses_a_huge_png_before_decoding_it(tmp_path, exported):
  huge = tmp_path / 'huge.png'
  _png(huge, 12000, 12000)
  assert huge.stat().st_size < 1_000_000
  started = time.time()
  result = _tool('seqmnist.serving.predict', f'--export_dir={exported}', str(huge))
  _fails_in_one_line(result, f'{huge} is a PNG of 12000x12000 pixels; '
                     'predict reads PNGs of up to 4096x4096 pixels (a digit '
                     'is resized to 28x28)', 'seqmnist.serving.predict')
  assert time.time() - started < 60  # never decoded (3 GiB, seconds)


def test_predict_reads_only_regular_files_and_names_what_it_got(
    tmp_path, exported, mnist_dir):
  fifo, folder = tmp_path / 'labels.fifo', tmp_path / 'folder'
  os.mkfifo(fifo)
  folder.mkdir()
  jpeg = tmp_path / 'digit.idx'
  jpeg.write_bytes(b'\xff\xd8\xff\xe0' + bytes(100))
  damaged = tmp_path / 'damaged.png'
  _png(damaged, 28, 28)
  damaged.write_bytes(damaged.read_bytes()[:60])
  images = os.path.join(mnist_dir, 't10k-images-idx3-ubyte.gz')
  cases = [
      ((f'--labels={fifo}', images),
       f'{fifo} is a FIFO, not a regular file; give an IDX label file'),
      ((str(folder),), f'{folder} is a folder; give a PNG or IDX file'),
      ((str(jpeg),), f'{jpeg} is a JPEG image; predict reads PNG and IDX '
       'files (convert it to PNG)'),
      ((str(damaged),), f'{damaged} is not a readable PNG (its image data is '
       'damaged or truncated)'),
  ]
  for args, message in cases:
    result = _tool('seqmnist.serving.predict', f'--export_dir={exported}', *args)
    _fails_in_one_line(result, message, 'seqmnist.serving.predict')


def test_a_macro_defined_by_itself_is_one_line(tmp_path, mnist_dir):
  config = tmp_path / 'cycle.gin'
  config.write_text('A = %B\nB = %A\n')
  model_dir = tmp_path / 'run'
  result = run_cli('--gin_file=row.gin', f'--gin_file={config}',
                   '--gin_param=Model.units=%A', f'--model_dir={model_dir}',
                   f'--data_dir={mnist_dir}')
  _fails_in_one_line(result, 'gin macro A is defined in terms of itself '
                     '(%A -> %B -> %A), so it has no value; give it one')
  assert len(result.stderr.splitlines()) < 50
  assert not model_dir.exists()


def test_an_error_line_quotes_a_huge_value_shortened(tmp_path, mnist_dir):
  config = tmp_path / 'huge.gin'
  config.write_text("Model.units = '" + 'x' * 10_000_000 + "'\n")
  model_dir = tmp_path / 'run'
  result = run_cli('--gin_file=row.gin', f'--gin_file={config}',
                   f'--model_dir={model_dir}', f'--data_dir={mnist_dir}')
  assert result.returncode == 2, result.stderr[-3000:]
  line = result.stderr.strip().splitlines()[-1]
  assert line.startswith("seqmnist: error: Model.units='xxx")
  assert '[9,999,' in line and 'characters]' in line
  assert line.endswith('must be an integer from 1 to 8,192')
  assert len(line) < 700
  assert not model_dir.exists()


@pytest.mark.parametrize('via', ['include', 'gin_param', 'export'])
def test_gin_imports_are_refused_through_includes_bindings_and_export(
    tmp_path, mnist_dir, finished, via):
  marker = tmp_path / 'ran'
  (tmp_path / 'sideeffect.py').write_text(
      f'open({str(marker)!r}, "w").close()\n')
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2',
             PYTHONPATH=f'{tmp_path}:{os.environ.get("PYTHONPATH", "")}')
  model_dir = tmp_path / 'run'
  common = (f'--model_dir={model_dir}', f'--data_dir={mnist_dir}',
            *gin_params(*FAST, 'Trainer.steps=2', 'Trainer.eval_every=2'))
  if via == 'include':
    inner = tmp_path / 'inner.gin'
    inner.write_text('import sideeffect\n')
    outer = tmp_path / 'outer.gin'
    outer.write_text(f"include 'row.gin'\ninclude '{inner}'\n")
    command = ['seqmnist.main', f'--gin_file={outer}', *common]
    message = (f"{inner} line 1: import sideeffect: gin imports run the "
               "module's code, so seqmnist refuses them; pass "
               '--allow_gin_imports if you trust this config')
  elif via == 'gin_param':
    command = ['seqmnist.main', '--gin_file=row.gin', *common,
               '--gin_param=import sideeffect']
    # The binding is the 8th --gin_param (after FAST's and two more).
    message = ("--gin_param line 8: import sideeffect: gin imports run the "
               "module's code, so seqmnist refuses them; pass "
               '--allow_gin_imports if you trust this config')
  else:  # a run dir from elsewhere whose operative config imports
    shutil.copytree(finished[0], model_dir, symlinks=True)
    config = model_dir / 'operative_config.gin'
    config.write_text('import sideeffect\n' + config.read_text())
    command = ['seqmnist.serving.export', f'--model_dir={model_dir}',
               f'--export_dir={tmp_path / "export"}']
    message = None
  result = subprocess.run([sys.executable, '-m', *command],
                          capture_output=True, text=True, timeout=600,
                          env=env, cwd=REPO, check=False)
  assert result.returncode == 2, result.stderr[-3000:]
  if message:
    _fails_in_one_line(result, message)
  else:
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith('seqmnist.serving.export: error: ')
    assert 'import sideeffect: gin imports run the module' in line
    assert not (tmp_path / 'export').exists()
  assert not marker.exists()


def test_verbosity_1_shows_the_start_up_records_the_default_hides(tmp_path):
  args = ('--gin_file=row.gin', '--gin_param=Model.units=0',
          f'--model_dir={tmp_path / "run"}')
  default = _quiet_cli(*args)
  shown = _quiet_cli(*args, '--verbosity=1')
  for result in (default, shown):
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        'seqmnist: error: Model.units=0 must be an integer from 1 to 8,192')
  assert default.stderr.strip().count('\n') == 0, default.stderr
  assert 'TensorFlow start-up wrote to stderr:' in shown.stderr
  # What TensorFlow itself writes at start-up depends on the host (its oneDNN
  # record only where it turns oneDNN on, AVX-512 CPUs): whatever a bare
  # import writes here is what --verbosity=1 must pass on.
  bare = subprocess.run(
      [sys.executable, '-c', 'import tensorflow as tf; '
       'tf.config.list_physical_devices("GPU")'],
      capture_output=True, text=True, timeout=300, check=False,
      env={k: v for k, v in os.environ.items()
           if k != 'TF_CPP_MIN_LOG_LEVEL'})
  records = [line.split('] ', 1)[1] for line in bare.stderr.splitlines()
             if re.match(r'[IWE]\d{4} .*\] ', line)]
  assert records, bare.stderr  # TensorFlow writes its records on any CPU
  for record in records:
    assert record in shown.stderr, (record, shown.stderr)
    assert record not in default.stderr


def test_truncated_event_files_are_named_by_report_and_curves(tmp_path,
                                                             finished):
  model_dir = _copy(finished[0], tmp_path / 'run')
  (events,) = (model_dir / 'validation').glob('events.out.tfevents.*')
  events.write_bytes(events.read_bytes()[:-7])  # cut inside the last record
  for module, args in (('seqmnist.tools.report', [str(model_dir)]),
                       ('seqmnist.tools.curves', [f'--model_dir={model_dir}',
                                            f'--out={tmp_path / "c.png"}'])):
    result = _tool(module, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(rf'{re.escape(str(events))} is truncated after \d+ '
                     'whole records', result.stderr), (module, result.stderr)


def test_curves_of_a_run_not_yet_validated_is_one_line(tmp_path, mnist_dir):
  model_dir = tmp_path / 'run'
  result = run_cli(*_args(model_dir, mnist_dir, 'Trainer.steps=10',
                          'Trainer.eval_every=1000'))
  assert result.returncode == 0, result.stderr[-3000:]
  shutil.rmtree(model_dir / 'validation')  # as before its first validation
  out = tmp_path / 'c.png'
  drawn = _tool('seqmnist.tools.curves', f'--model_dir={model_dir}', f'--out={out}')
  _fails_in_one_line(drawn, f'--model_dir={model_dir} has no validation '
                     'accuracy events yet (nothing to draw: rerun once the '
                     'run has validated)', 'seqmnist.tools.curves')
  assert not out.exists()
