"""The layout by role: the old module names are gone (no import hook keeps
them), and every console script setup.cfg declares runs its module as
`python -m` does."""
import configparser
import importlib
import os
import subprocess
import sys

import pytest

from conftest import REPO
from seqmnist import scripts as entry_points

# Module names of earlier layouts, each now at another place (CHANGELOG).
RETIRED = ('bench', 'bench_variants', 'curves', 'prepare_tfds', 'release',
           'report', 'sweep', 'sweeps', 'sweep_arrays', 'export', 'predict',
           'moved', 'train_eval', 'controller', 'actions',
           'models', 'gin_values', 'files', 'averaging', 'steps', 'trainer')


@pytest.mark.parametrize('old', RETIRED)
def test_an_old_module_name_no_longer_imports(old):
  assert not os.path.exists(os.path.join(REPO, 'seqmnist', old + '.py')), old
  with pytest.raises(ModuleNotFoundError):
    importlib.import_module(f'seqmnist.{old}')


def test_importing_the_package_installs_no_import_hook():
  result = subprocess.run(
      [sys.executable, '-c', 'import sys; before = list(sys.meta_path); '
       'import seqmnist; print(sys.meta_path == before, '
       'sorted(m for m in sys.modules if m.startswith("seqmnist")))'],
      capture_output=True, text=True, timeout=120, check=True, cwd=REPO)
  assert result.stdout.split(None, 1) == ['True', "['seqmnist']\n"], (
      result.stdout)


def _run(*args):
  return subprocess.run(list(args), cwd=REPO, capture_output=True, text=True,
                        timeout=300, check=False)


def test_python_m_of_an_old_tool_path_says_no_such_module():
  result = _run(sys.executable, '-m', 'seqmnist.sweep', '--helpshort')
  assert result.returncode == 1
  assert 'No module named seqmnist.sweep' in result.stderr


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
  # Started by another command, not by a person: no console script.
  internal = {'seqmnist.tools.search_trial'}  # a trial of seqmnist.tools.search
  assert internal <= set(commands), commands
  commands = [c for c in commands if c not in internal]
  assert len(commands) == 10, commands
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
