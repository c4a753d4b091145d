"""The repository's promises about itself: CI runs the README's test command."""

import os
import re
import subprocess
import sys

from conftest import REPO


def _read(*path):
  with open(os.path.join(REPO, *path)) as f:
    return f.read()


def test_ci_runs_exactly_the_readme_test_command():
  readme_commands = re.findall(r'```bash\n(.*?)\n```', _read('README.md'),
                               re.S)
  test_command = [c for c in readme_commands if 'pytest' in c]
  assert len(test_command) == 1
  ci = re.search(r"TEST_COMMAND='(.*)'", _read('.ci', 'run')).group(1)
  assert ci == test_command[0].strip()


def test_launchers_are_executable():
  for path in ('single_gpu.sh', 'multi_gpu.sh', 'local_cluster.sh',
               'bench_replicas.sh', 'bench_nodes.sh', 'slurm/train.sbatch', 'k8s/entrypoint.sh'):
    assert os.access(os.path.join(REPO, 'launch', path), os.X_OK), path


_SKIPPING = '''
import pytest

@pytest.mark.ci_provides('a test component')
def test_needs_the_component():
  pytest.skip('the component is not here')

def test_plain_skip():
  pytest.skip('not a CI component')
'''


def test_under_ci_a_skipped_ci_component_fails_the_run(tmp_path):
  """A test of something .ci/run sets up may not skip when CI is set; a
  developer's plain run still skips it, saying why."""
  (tmp_path / 'test_component.py').write_text(_SKIPPING)
  runs = {}
  for ci in ('', 'true'):
    env = {k: v for k, v in os.environ.items() if k != 'CI'}
    if ci:
      env['CI'] = ci
    env['PYTHONPATH'] = os.path.join(REPO, 'tests')
    runs[ci] = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-rs', '-p', 'conftest',
         '-p', 'no:cacheprovider', '--rootdir', str(tmp_path),
         str(tmp_path / 'test_component.py')], capture_output=True,
        text=True, env=env, cwd=tmp_path, timeout=300, check=False)
  assert runs[''].returncode == 0, runs[''].stdout[-2000:]
  assert '2 skipped' in runs[''].stdout
  assert runs['true'].returncode == 1, runs['true'].stdout[-2000:]
  assert '1 failed, 1 skipped' in runs['true'].stdout
  assert ('CI=true and a test component, which .ci/run sets up, is missing'
          in runs['true'].stdout)


def test_ci_sets_ci_so_missing_components_fail():
  assert re.search(r'^export CI=', _read('.ci', 'run'), re.M)
