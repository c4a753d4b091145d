"""The layout by role: moved modules answer at their old names, and every
console script setup.cfg declares runs its module as `python -m` does."""
import configparser
import importlib
import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import REPO
from seqmnist import moved
from seqmnist import scripts as entry_points

# Written out here, not read from moved.py, so a wrong or dropped entry there
# fails this test.
OLD_TO_NEW = {
    'bench': 'seqmnist.tools.bench',
    'bench_variants': 'seqmnist.tools.bench_measurements',
    'curves': 'seqmnist.tools.curves',
    'prepare_tfds': 'seqmnist.tools.prepare_tfds',
    'release': 'seqmnist.tools.release',
    'report': 'seqmnist.tools.report',
    'sweep': 'seqmnist.tools.sweep',
    'sweeps': 'seqmnist.tools.sweep_grid',
    'sweep_arrays': 'seqmnist.tools.sweep_cluster',
    'export': 'seqmnist.serving.export',
    'predict': 'seqmnist.serving.predict',
    'config': 'seqmnist.gin_files',
}
# Modules without flags, so importable side by side in one process (the
# tools' entry points each define theirs: two in one process would clash).
LIBRARIES = ('sweeps', 'sweep_arrays', 'bench_variants', 'config')


def test_each_old_name_imports_the_module_at_its_new_place():
  assert moved.MOVED == OLD_TO_NEW
  for old, new in OLD_TO_NEW.items():
    assert not os.path.exists(os.path.join(REPO, 'seqmnist', old + '.py')), (
        f'seqmnist/{old}.py is back beside its new place {new}')
    assert importlib.util.find_spec(new).origin.endswith(
        new.replace('.', '/') + '.py'), new
  for old in LIBRARIES:
    new = importlib.import_module(OLD_TO_NEW[old])
    assert importlib.import_module(f'seqmnist.{old}') is new, old
    # The real module is used as it is: its identity is not the old name's.
    assert (new.__name__, new.__spec__.name) == (OLD_TO_NEW[old],) * 2
    assert importlib.util.find_spec(OLD_TO_NEW[old]).origin == new.__file__


def test_a_name_that_never_existed_still_fails_to_import():
  with pytest.raises(ModuleNotFoundError):
    importlib.import_module('seqmnist.no_such_module')


def _run(*args):
  return subprocess.run(list(args), cwd=REPO, capture_output=True, text=True,
                        timeout=300, check=False)


@pytest.mark.parametrize('old', ['report', 'sweep'])
def test_python_m_old_path_runs_the_new_tool(old):
  """The same error, exit code and help text by the old path as the new."""
  bad = ['/nonexistent_runs_dir'] if old == 'report' else [
      '--runs_dir=/nonexistent_runs_dir']
  by_old = _run(sys.executable, '-m', f'seqmnist.{old}', *bad)
  by_new = _run(sys.executable, '-m', OLD_TO_NEW[old], *bad)
  assert by_new.returncode == 2, by_new.stderr
  assert (by_old.returncode, by_old.stdout) == (by_new.returncode,
                                                by_new.stdout)
  last = by_new.stderr.strip().splitlines()[-1]
  assert last.startswith(f'{OLD_TO_NEW[old]}: error: ')
  assert by_old.stderr.strip().splitlines()[-1] == last
  help_old = _run(sys.executable, '-m', f'seqmnist.{old}', '--helpshort')
  assert '--runs_dir' in help_old.stdout or '--json' in help_old.stdout, (
      help_old.stdout)


def _console_scripts():
  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(REPO, 'setup.cfg'))
  lines = cfg['options.entry_points']['console_scripts'].strip().splitlines()
  return dict(line.split(' = ') for line in lines if not line.startswith('#'))


def test_every_command_has_a_console_script_running_it_as_main():
  scripts = _console_scripts()
  commands = ['seqmnist.main'] + [
      f'seqmnist.{package}.{f[:-3]}' for package in ('tools', 'serving')
      for f in sorted(os.listdir(os.path.join(REPO, 'seqmnist', package)))
      if "if __name__ == '__main__':" in open(
          os.path.join(REPO, 'seqmnist', package, f)).read()]
  assert len(commands) == 9, commands
  ran = {}
  for name, target in scripts.items():
    module, function = target.split(':')
    assert module == 'seqmnist.scripts', name
    ran[name] = getattr(entry_points, function).module
  assert sorted(ran.values()) == sorted(commands)
  for name, module in ran.items():
    expected = 'seqmnist' if module == 'seqmnist.main' else (
        'seqmnist-' + module.rsplit('.', 1)[1].replace('_', '-'))
    assert name == expected, (name, module)


@pytest.mark.ci_provides('console scripts')
def test_an_installed_console_script_runs_its_tool():
  bin_dir = os.path.dirname(sys.executable)
  script = os.path.join(bin_dir, 'seqmnist-report')
  if not os.path.exists(script):
    pytest.skip(f'seqmnist-report is not installed in {bin_dir} (pip install '
                '-e . puts it there)')
  result = _run(script, '/nonexistent_runs_dir')
  assert result.returncode == 2, result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      'seqmnist.tools.report: error: /nonexistent_runs_dir is not a folder')
  helped = _run(script, '--helpshort')
  assert 'Tables (and a plot) of finished runs' in helped.stdout
  assert '--json' in helped.stdout and '--plot' in helped.stdout
