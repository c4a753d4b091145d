"""The repository's promises about itself: CI runs the README's test command."""

import os
import re

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
