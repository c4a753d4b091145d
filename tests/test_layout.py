"""The layout by role: moved modules answer at their old names, and every
console script setup.cfg declares runs its tool."""
import configparser
import importlib
import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import REPO
from seqmnist import moved


# Modules without flags, so importable side by side in one process (the
# tools' entry points each define theirs: two in one process would clash).
LIBRARIES = ('sweeps', 'sweep_arrays', 'bench_variants', 'config')


def test_each_old_name_imports_the_module_at_its_new_place():
  for old, new in moved.MOVED.items():
    assert not os.path.exists(os.path.join(REPO, 'seqmnist', old + '.py')), (
        f'seqmnist/{old}.py is back beside its new place {new}')
    assert importlib.util.find_spec(new) is not None, new
    assert importlib.util.find_spec(f'seqmnist.{old}').loader.new == new
  for old in LIBRARIES:
    assert importlib.import_module(f'seqmnist.{old}') is (
        importlib.import_module(moved.MOVED[old])), old


def test_a_name_that_never_existed_still_fails_to_import():
  with pytest.raises(ModuleNotFoundError):
    importlib.import_module('seqmnist.no_such_module')


def _run(*args):
  return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300, check=False)


def test_python_m_old_path_runs_the_new_tool_with_its_exit_code():
  old = _run('-m', 'seqmnist.report', '/nonexistent_runs_dir')
  new = _run('-m', 'seqmnist.tools.report', '/nonexistent_runs_dir')
  assert new.returncode == 2, new.stderr
  assert (old.returncode, old.stdout) == (new.returncode, new.stdout)
  assert old.stderr.strip().splitlines()[-1] == (
      'seqmnist.tools.report: error: /nonexistent_runs_dir is not a folder')


def _console_scripts():
  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(REPO, 'setup.cfg'))
  lines = cfg['options.entry_points']['console_scripts'].strip().splitlines()
  return dict(line.split(' = ') for line in lines)


def test_every_tool_has_a_console_script_pointing_at_its_run():
  scripts = _console_scripts()
  tools = sorted(f[:-3] for f in os.listdir(os.path.join(REPO, 'seqmnist',
                                                          'tools'))
                 if f.endswith('.py') and f != '__init__.py')
  entry_points = {m for m in tools
                  if '\ndef run():' in open(os.path.join(
                      REPO, 'seqmnist', 'tools', m + '.py')).read()}
  assert entry_points, 'no tool defines run()'
  for m in entry_points:
    name = 'seqmnist-' + m.replace('_', '-')
    assert scripts.get(name) == f'seqmnist.tools.{m}:run', name
  for name, target in scripts.items():
    module, function = target.split(':')
    source = open(importlib.util.find_spec(module).origin).read()
    assert f'\ndef {function}():' in source, name


def test_an_installed_console_script_runs_its_tool():
  bin_dir = os.path.dirname(sys.executable)
  script = os.path.join(bin_dir, 'seqmnist-report')
  if not os.path.exists(script):
    pytest.skip(f'seqmnist-report is not installed in {bin_dir} (pip install '
                '-e . puts it there)')
  result = subprocess.run([script, '/nonexistent_runs_dir'], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode == 2, result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      'seqmnist.tools.report: error: /nonexistent_runs_dir is not a folder')
