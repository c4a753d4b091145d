"""The container image of launch/k8s/ (seqmnist:0.1.0), run for real.

.ci/run builds it before the tests (.ci/container_up.sh ->
launch/k8s/build_image.sh: podman on a Debian base where no registry can be
pulled from, so TensorFlow is the CPU build from PyPI). The containers run as
the manifests run them: as uid 1000, root filesystem read-only, a tmpfs /tmp
and HOME=/tmp, MNIST mounted read-only at /data/mnist, the run dir at /runs.

  * one container trains bit for bit as the same command outside it does
    (the same weights fingerprint);
  * two containers form a 2-worker MultiWorkerMirrored job from the Indexed
    Job's variables alone (host networking, so only the addresses are
    replaced, as in test_kubernetes.py), and agree on the weights;
  * `podman stop` (SIGTERM, as Kubernetes sends it) during training: exit
    143 with a checkpoint saved, and the rerun resumes and finishes.

Where podman is missing or the image is not built (or was built from other
sources than this work tree's), the tests skip and say why, loudly.
"""

import hashlib
import os
import re
import shutil
import subprocess
import uuid

import pytest

from conftest import (FAST, REPO, assert_indexed_job_pod, gin_params,
                      run_cli, two_free_ports, wait_for_line)
from test_main import _results

pytestmark = pytest.mark.ci_provides('the container image')

IMAGE = 'seqmnist:0.1.0'
BUILD = 'launch/k8s/build_image.sh'
# What Debian bookworm's podman 4.3 needs on this kind of machine: runc
# (crun fails with cgroups v1/hybrid) and explicit ulimits (else "setting
# rlimit type 7: operation not permitted"); build_image.sh uses the same.
PODMAN = ['podman'] + (['--runtime', 'runc'] if shutil.which('runc') else [])
ULIMITS = ['--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024']
# The pod's restrictions of launch/k8s/job.yaml.
HARDENED = ['--read-only', '--tmpfs', '/tmp', '--env', 'HOME=/tmp',
            '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges']
PREEMPTED = 143


def _source_digest():
  """The digest build_image.sh labels the image with: every file the
  Dockerfile copies but README.md (as `find | sort | xargs sha256sum |
  sha256sum` does), not the op `pip install -e .` built (.dockerignore)."""
  paths = []
  for top in ('pyproject.toml', 'setup.py', 'setup.cfg', 'seqmnist', 'gin',
              'launch'):
    if not os.path.isdir(os.path.join(REPO, top)):
      paths.append(top)
      continue
    for folder, _, names in os.walk(os.path.join(REPO, top)):
      rel = os.path.relpath(folder, REPO)
      if '__pycache__' in rel.split(os.sep):
        continue
      paths += [os.path.join(rel, n) for n in names
                if not n.endswith(('.pyc', '.so'))
                and os.path.isfile(os.path.join(folder, n))
                and not os.path.islink(os.path.join(folder, n))]
  listing = ''
  for path in sorted(paths, key=lambda p: p.encode()):
    with open(os.path.join(REPO, path), 'rb') as f:
      listing += f'{hashlib.sha256(f.read()).hexdigest()}  {path}\n'
  return hashlib.sha256(listing.encode()).hexdigest()


def _unavailable():
  """Why the image cannot be run here, or None."""
  if not shutil.which('podman'):
    return 'podman is not installed (.ci/container_up.sh installs it)'
  inspect = subprocess.run(
      [*PODMAN, 'image', 'inspect', '--format',
       '{{index .Config.Labels "org.seqmnist.source"}}', IMAGE],
      capture_output=True, text=True, timeout=120, check=False)
  if inspect.returncode != 0:
    return (f'image {IMAGE} is not built ({inspect.stderr.strip()[-300:]}); '
            f'build it with {BUILD}')
  if inspect.stdout.strip() != _source_digest():
    return (f'image {IMAGE} was built from other sources than this work '
            f'tree (label {inspect.stdout.strip()[:12] or "missing"}); '
            f'rebuild it with {BUILD}')
  return None


@pytest.fixture(scope='module')
def image():
  reason = _unavailable()
  if reason:
    pytest.skip(f'CONTAINER NOT AVAILABLE, container tests not run: {reason}')
  return IMAGE


def _run_dir(path):
  """A run dir the image's user (uid 1000, as the manifests' fsGroup makes
  the volume) can write."""
  path.mkdir()
  if os.geteuid() == 0:
    os.chown(path, 1000, 1000)
  else:
    path.chmod(0o777)
  return path


def _podman_run(name, runs, mnist_dir, args, env=(), network='none'):
  """The `podman run` command of one pod: its run dir at /runs, MNIST at
  /data/mnist read-only, the image's entrypoint, ARGS."""
  command = [*PODMAN, 'run', '--rm', '--name', name, *ULIMITS, *HARDENED,
             '--network', network, '--env', 'TF_CPP_MIN_LOG_LEVEL=2',
             '--volume', f'{os.path.abspath(mnist_dir)}:/data/mnist:ro',
             '--volume', f'{runs}:/runs']
  for item in env:
    command += ['--env', item]
  return command + [IMAGE, '--data_dir=/data/mnist', *args]


def _name():
  return f'seqmnist-test-{uuid.uuid4().hex[:8]}'


def _remove(*names):
  for name in names:  # only ours, by name; gone already when they ended
    subprocess.run([*PODMAN, 'rm', '--force', '--ignore', name],
                   capture_output=True, timeout=120, check=False)


TINY = (*FAST, 'Trainer.steps=20', 'Trainer.eval_every=10')


def test_a_container_trains_as_the_same_command_outside_it(image, tmp_path,
                                                          mnist_dir):
  runs, name = _run_dir(tmp_path / 'runs'), _name()
  try:
    pod = subprocess.run(
        _podman_run(name, runs, mnist_dir,
                    ['--gin_file=row.gin', '--model_dir=/runs/run',
                     *gin_params(*TINY)]),
        capture_output=True, text=True, timeout=600, check=False)
  finally:
    _remove(name)
  assert pod.returncode == 0, pod.stdout[-2000:] + pod.stderr[-3000:]
  assert 'Traceback' not in pod.stderr
  inside = _results(runs / 'run')
  assert inside['global_step'] == 20
  if os.geteuid() == 0:  # rootful podman: the image's user is host uid 1000
    assert (runs / 'run' / 'results.json').stat().st_uid == 1000

  outside = run_cli('--gin_file=row.gin', f'--model_dir={tmp_path / "host"}',
                    f'--data_dir={mnist_dir}', *gin_params(*TINY))
  assert outside.returncode == 0, outside.stderr[-3000:]
  assert inside['weights_fingerprint'] == _results(
      tmp_path / 'host')['weights_fingerprint']
  # The volume holds the run dir and nothing else.
  assert [p.name for p in runs.iterdir()] == ['run']


def test_two_containers_form_the_indexed_jobs_cluster(image, tmp_path,
                                                      mnist_dir):
  runs, port = _run_dir(tmp_path / 'runs'), two_free_ports()
  names = [_name(), _name()]
  pods, logs = [], []
  try:
    for index in (0, 1):
      # What job.yaml's pod spec and the Indexed Job controller set; with
      # host networking, pod i listens on port + i of 127.0.0.1 instead of
      # seqmnist-<i>.seqmnist-workers:port.
      env = [f'JOB_COMPLETION_INDEX={index}', 'SEQMNIST_WORKERS=2',
             'SEQMNIST_JOB=seqmnist', 'SEQMNIST_SERVICE=seqmnist-workers',
             f'SEQMNIST_PORT={port}',
             'SEQMNIST_ADDRESS_TEMPLATE=127.0.0.1:{local_port}']
      logs.append(tmp_path / f'pod-{index}.log')
      with open(logs[-1], 'w') as log:
        pods.append(subprocess.Popen(
            _podman_run(names[index], runs, mnist_dir,
                        ['--gin_file=row.gin', '--model_dir=/runs/run',
                         *gin_params(*TINY)], env=env, network='host'),
            stdout=log, stderr=subprocess.STDOUT))
    codes = [pod.wait(timeout=600) for pod in pods]
  finally:
    for pod in pods:
      if pod.poll() is None:
        pod.kill()
    _remove(*names)
  outputs = [log.read_text() for log in logs]
  fingerprints = []
  for index, (code, output) in enumerate(zip(codes, outputs)):
    assert code == 0, output[-3000:]
    assert_indexed_job_pod(output, index, port)
    assert ('Strategy: multi_worker_mirrored (a Kubernetes Indexed Job of 2 '
            'pods), 2 replica(s)') in output, output[-3000:]
    fingerprints += re.findall(
        r'Weights fingerprint \(the same on every worker\): (\w+)', output)
  results = _results(runs / 'run')
  assert results['replicas'] == 2 and results['global_step'] == 20
  assert fingerprints == [results['weights_fingerprint']] * 2


def test_podman_stop_saves_exits_143_and_the_rerun_resumes(image, tmp_path,
                                                          mnist_dir):
  runs, log = _run_dir(tmp_path / 'runs'), tmp_path / 'pod.log'
  steps = 2000
  args = ['--gin_file=row.gin', '--model_dir=/runs/run',
          *gin_params(*FAST, f'Trainer.steps={steps}', 'Trainer.eval_every=500',
                      'Trainer.checkpoint_every=10')]
  name, pod = _name(), None
  try:
    with open(log, 'w') as out:
      pod = subprocess.Popen(_podman_run(name, runs, mnist_dir, args),
                             stdout=out, stderr=subprocess.STDOUT)
    wait_for_line(log, f'/{steps} [', [pod])  # a progress line: training
    stop = subprocess.run([*PODMAN, 'stop', '-t', '60', name],
                          capture_output=True, text=True, timeout=120,
                          check=False)
    assert stop.returncode == 0, stop.stderr
    code = pod.wait(timeout=120)
  finally:
    if pod is not None and pod.poll() is None:
      pod.kill()
    _remove(name)
  text = log.read_text()
  assert code == PREEMPTED, text[-3000:]
  saved = re.search(r'checkpoint saved at step (\d+) of', text)
  assert saved, text[-3000:]
  step = int(saved.group(1))
  assert 0 < step < steps
  state = (runs / 'run' / 'checkpoints' / 'checkpoint').read_text()
  assert f'model_checkpoint_path: "ckpt-{step}"' in state, state
  assert not (runs / 'run' / 'results.json').exists()

  name = _name()
  try:
    rerun = subprocess.run(_podman_run(name, runs, mnist_dir, args),
                           capture_output=True, text=True, timeout=600,
                           check=False)
  finally:
    _remove(name)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f'Resumed from /runs/run/checkpoints/ckpt-{step}' in rerun.stderr
  results = _results(runs / 'run')
  assert results['global_step'] == steps
  assert results['steps_this_run'] == steps - step
