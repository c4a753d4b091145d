"""Kubernetes launchers, without a cluster.

  * every manifest in launch/k8s/ is a valid Kubernetes object, checked
    offline against the Kubernetes 1.37 schemas by `kubernetes-validate`
    (strict: unknown fields fail); TFJob is a CRD those schemas lack, so its
    pod templates are checked as PodTemplates;
  * the container entrypoint derives TF_CONFIG from the Indexed Job's
    variables in 2 local processes posing as pods 0 and 1, which then train
    together;
  * a sweep renders as a ConfigMap and an Indexed Job that validate, and a
    local process posing as pod 2 of it runs grid point 2. Only the DNS names are replaced (SEQMNIST_ADDRESS_TEMPLATE),
    because no Service gives these processes `seqmnist-<i>.<service>` names.
"""

import json
import os
import re
import subprocess
import sys

import jsonschema
import kubernetes_validate
import pytest
import yaml

from seqmnist import errors

from conftest import (FAST, REPO, assert_indexed_job_pod, gin_params,
                      two_free_ports)
from test_main import _results

K8S = os.path.join(REPO, 'launch', 'k8s')
# Every minor version the manifests support, as the README states it: 1.29
# (backoffLimitPerIndex and FailIndex, which sweeps use, are beta and on by
# default from 1.29) to 1.37, the newest the pinned kubernetes-validate
# (setup.cfg's test extra) has schemas for.
VERSIONS = [f'1.{m}' for m in range(29, 38)]
TFJOB_CRD = os.environ.get(
    'SEQMNIST_TFJOB_CRD', os.path.join(os.path.dirname(REPO), 'shared', 'k8s',
                                       'kubeflow.org_tfjobs.yaml'))


def _documents(name):
  with open(os.path.join(K8S, name)) as f:
    return [d for d in yaml.safe_load_all(f) if d]


@pytest.mark.parametrize('version', VERSIONS)
@pytest.mark.parametrize('name', ['job.yaml', 'service.yaml',
                                  'networkpolicy.yaml'])
def test_manifests_are_valid_on_every_supported_kubernetes(name, version):
  for document in _documents(name):
    kubernetes_validate.validate(document, version, strict=True)


def test_the_validator_has_a_schema_for_every_supported_version():
  known = {'.'.join(v.split('.')[:2])
           for v in kubernetes_validate.utils.all_versions()}
  assert set(VERSIONS) <= known, sorted(set(VERSIONS) - known)
  with open(os.path.join(REPO, 'README.md')) as f:
    readme = f.read()
  assert f'Kubernetes {VERSIONS[0]} to {VERSIONS[-1]}' in readme


def _strict(schema):
  """A CRD schema as the API server's strict field validation reads it:
  unknown fields rejected wherever the schema lists the known ones."""
  if isinstance(schema, dict):
    schema = {k: _strict(v) for k, v in schema.items()}
    if ('properties' in schema and
        not schema.get('x-kubernetes-preserve-unknown-fields')):
      schema.setdefault('additionalProperties', False)
    return schema
  if isinstance(schema, list):
    return [_strict(v) for v in schema]
  return schema


def _tfjob_schema():
  if not os.path.exists(TFJOB_CRD):
    pytest.fail(f'the TFJob CRD is not at {TFJOB_CRD} (../shared/k8s, or '
                '$SEQMNIST_TFJOB_CRD)')
  with open(TFJOB_CRD) as f:
    crd = yaml.safe_load(f)
  version = next(v for v in crd['spec']['versions'] if v['name'] == 'v1')
  return _strict(version['schema']['openAPIV3Schema'])


def test_tfjob_validates_strictly_against_the_kubeflow_crd():
  schema = _tfjob_schema()
  tfjob = _documents('tfjob.yaml')[0]
  jsonschema.validate(tfjob, schema)
  broken = json.loads(json.dumps(tfjob))
  broken['spec']['tfReplicaSpecs']['Worker']['replicaz'] = 2  # a typo
  with pytest.raises(jsonschema.ValidationError, match='replicaz'):
    jsonschema.validate(broken, schema)


def _env_names_read():
  """The variables the entrypoint and cluster discovery read."""
  with open(os.path.join(K8S, 'entrypoint.sh')) as f:
    text = f.read()
  with open(os.path.join(REPO, 'seqmnist', 'cluster', 'discover.py')) as f:
    text += f.read()
  return set(re.findall(r'\b(?:SEQMNIST|TF|JOB|SLURM)_[A-Z_]+\b', text))


@pytest.mark.e2e
def test_every_variable_and_flag_the_manifests_pass_is_read():
  # The flags of `seqmnist.main`, from its own help (importing it here would
  # clash with the bench's flags that test_bench.py imports).
  helped = subprocess.run([sys.executable, '-m', 'seqmnist.main',
                           '--helpshort'], cwd=REPO, capture_output=True,
                          text=True, timeout=300, check=False).stdout
  flags_defined = set(re.findall(r'^\s+--(?:\[no\])?(\w+):', helped, re.M))
  assert {'gin_file', 'model_dir', 'data_dir'} <= flags_defined, helped
  read = _env_names_read()
  containers = [_documents('job.yaml')[0]['spec']['template']['spec'][
      'containers'][0]]
  containers += [r['template']['spec']['containers'][0] for r in _documents(
      'tfjob.yaml')[0]['spec']['tfReplicaSpecs'].values()]
  for container in containers:
    for env in container.get('env', []):
      # HOME is read by Keras (its cache folder), the rest by seqmnist.
      assert env['name'] == 'HOME' or env['name'] in read, env['name']
    for arg in container.get('args', []):
      assert arg.startswith('--'), arg
      assert arg[2:].split('=', 1)[0] in flags_defined, arg


def test_a_broken_manifest_is_rejected():
  job = _documents('job.yaml')[0]
  job['spec']['completions'] = 'two'
  with pytest.raises(kubernetes_validate.ValidationError):
    kubernetes_validate.validate(job, VERSIONS[-1], strict=True)


def test_indexed_job_matches_its_service():
  job = _documents('job.yaml')[0]
  service = _documents('service.yaml')[0]
  spec = job['spec']
  assert spec['completionMode'] == 'Indexed'
  assert spec['template']['spec']['subdomain'] == service['metadata']['name']
  assert service['spec']['clusterIP'] == 'None'
  env = {e['name']: e['value']
         for e in spec['template']['spec']['containers'][0]['env']}
  assert int(env['SEQMNIST_WORKERS']) == spec['completions'] == spec[
      'parallelism']
  assert env['SEQMNIST_JOB'] == job['metadata']['name']
  assert env['SEQMNIST_SERVICE'] == service['metadata']['name']
  container = spec['template']['spec']['containers'][0]
  assert 'nvidia.com/gpu' in container['resources']['limits']


def test_restart_policies_follow_the_exit_codes():
  """143 (preempted, checkpoint saved) is retried; 2 and 3 are final."""
  job = _documents('job.yaml')[0]['spec']
  assert job['template']['spec']['restartPolicy'] == 'Never'
  container = job['template']['spec']['containers'][0]['name']
  actions = {}
  for rule in job['podFailurePolicy']['rules']:
    codes = rule.get('onExitCodes')
    if codes:
      assert codes['containerName'] == container
      assert codes['operator'] == 'In'
      actions.update(dict.fromkeys(codes['values'], rule['action']))
  assert actions == {143: 'Ignore', 2: 'FailJob', 3: 'FailJob'}
  for replica in _documents('tfjob.yaml')[0]['spec'][
      'tfReplicaSpecs'].values():
    # Kubeflow's ExitCode policy retries 128-255 only.
    assert replica['restartPolicy'] == 'ExitCode'
  assert errors.EXIT_PREEMPTED >= 128
  assert errors.EXIT_BAD_INPUT < 128 and errors.EXIT_DIVERGED < 128


def test_tfjob_pod_templates_are_valid():
  tfjob = _documents('tfjob.yaml')[0]
  assert (tfjob['apiVersion'], tfjob['kind']) == ('kubeflow.org/v1', 'TFJob')
  for replica in tfjob['spec']['tfReplicaSpecs'].values():
    kubernetes_validate.validate(
        {'apiVersion': 'v1', 'kind': 'PodTemplate',
         'metadata': {'name': 'seqmnist'}, 'template': replica['template']},
        VERSIONS[-1], strict=True)


@pytest.mark.e2e
def test_entrypoint_derives_tf_config_for_two_pods(tmp_path, mnist_dir):
  model_dir = tmp_path / 'run'
  port = two_free_ports()
  pods = []
  for index in (0, 1):
    env = dict(os.environ, PYTHON=sys.executable, TF_CPP_MIN_LOG_LEVEL='2',
               JOB_COMPLETION_INDEX=str(index), SEQMNIST_WORKERS='2',
               SEQMNIST_JOB='seqmnist', SEQMNIST_SERVICE='seqmnist-workers',
               SEQMNIST_PORT=str(port),
               SEQMNIST_ADDRESS_TEMPLATE='127.0.0.1:{local_port}')
    env.pop('TF_CONFIG', None)
    pods.append(subprocess.Popen(
        ['bash', os.path.join(K8S, 'entrypoint.sh'), '--gin_file=row.gin',
         f'--model_dir={model_dir}', f'--data_dir={mnist_dir}',
         *gin_params(*FAST, 'Trainer.steps=20', 'Trainer.eval_every=20')],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True))
  outputs = [pod.communicate(timeout=600)[0] for pod in pods]
  for index, (pod, output) in enumerate(zip(pods, outputs)):
    assert pod.returncode == 0, output[-3000:]
    assert_indexed_job_pod(output, index, port)
  results = _results(model_dir)
  assert results['replicas'] == 2 and results['global_step'] == 20


def _pod_specs():
  job = _documents('job.yaml')[0]['spec']['template']['spec']
  tfjob = [r['template']['spec'] for r in
           _documents('tfjob.yaml')[0]['spec']['tfReplicaSpecs'].values()]
  return [job, *tfjob]


def test_pods_run_as_non_root_with_nothing_to_escalate():
  for pod in _pod_specs():
    assert pod['securityContext']['runAsNonRoot'] is True
    assert pod['securityContext']['runAsUser'] != 0
    mounts_tmp = any(v['name'] == 'tmp' and 'emptyDir' in v
                     for v in pod['volumes'])
    for container in pod['containers']:
      security = container['securityContext']
      assert security['allowPrivilegeEscalation'] is False
      assert security['capabilities']['drop'] == ['ALL']
      # A read-only root needs a writable /tmp (non-chief saves) and HOME.
      assert security['readOnlyRootFilesystem'] is True and mounts_tmp
      assert {'name': 'HOME', 'value': '/tmp'} in container['env']
      for kind in ('requests', 'limits'):
        assert {'cpu', 'memory'} <= set(container['resources'][kind]), kind


def test_the_image_runs_as_the_manifests_user():
  with open(os.path.join(K8S, 'Dockerfile')) as f:
    text = f.read()
  assert 'useradd --uid 1000' in text and '\nUSER 1000:1000\n' in text
  uids = {pod['securityContext']['runAsUser'] for pod in _pod_specs()}
  assert uids == {1000}


def test_network_policies_admit_only_the_jobs_own_pods_on_its_port():
  policies = _documents('networkpolicy.yaml')
  for policy in policies:
    kubernetes_validate.validate(policy, VERSIONS[-1], strict=True)
  job, workers = policies
  job_pods = _documents('job.yaml')[0]['spec']['template']['metadata'][
      'labels']
  job_env = {e['name']: e['value'] for e in _documents('job.yaml')[0][
      'spec']['template']['spec']['containers'][0]['env']}
  assert job['spec']['podSelector']['matchLabels'].items() <= job_pods.items()
  (rule,) = job['spec']['ingress']
  assert rule['from'] == [{'podSelector': job['spec']['podSelector']}]
  assert rule['ports'] == [{'protocol': 'TCP',
                            'port': int(job_env['SEQMNIST_PORT'])}]
  tfjob = _documents('tfjob.yaml')[0]
  (rule,) = workers['spec']['ingress']
  assert workers['spec']['podSelector']['matchLabels'] == {
      'training.kubeflow.org/job-name': tfjob['metadata']['name']}
  assert rule['ports'] == [{'protocol': 'TCP', 'port': 2222}]


def _sweep_manifest(runs_dir, data_dir, *extra):
  result = subprocess.run(
      [sys.executable, '-m', 'seqmnist.tools.sweep', '--backend=kubernetes',
       '--gin_file=row.gin', *gin_params(*FAST, 'Trainer.steps=10',
                                          'Trainer.eval_every=10'),
       '--sweep=Trainer.seed=0,1', '--sweep=Model.cell="gru","lstm"',
       f'--runs_dir={runs_dir}', f'--data_dir={data_dir}', *extra],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  return result


@pytest.mark.e2e
def test_a_sweep_renders_as_a_valid_indexed_job(tmp_path):
  result = _sweep_manifest(tmp_path / 'sweep', '/data/mnist', '--parallel=3')
  assert result.returncode == 0, result.stderr[-3000:]
  config_map, job = [d for d in yaml.safe_load_all(result.stdout) if d]
  for document in (config_map, job):
    for version in VERSIONS:
      kubernetes_validate.validate(document, version, strict=True)
  assert sorted(config_map['data']) == [f'point-{i}' for i in range(4)]
  assert config_map['data']['point-3'].splitlines()[-3:] == [
      "--gin_param=Model.cell='lstm'",
      f'--model_dir={tmp_path}/sweep/Trainer.seed=1,Model.cell=lstm',
      '--data_dir=/data/mnist']
  spec = job['spec']
  assert (spec['completionMode'], spec['completions'],
          spec['parallelism']) == ('Indexed', 4, 3)
  actions = {r['action'] for r in spec['podFailurePolicy']['rules']}
  assert 'FailJob' not in actions and 'FailIndex' in actions  # one bad point
  pod = spec['template']['spec']
  env = {e['name']: e.get('value') for e in pod['containers'][0]['env']}
  assert env['SEQMNIST_POINTS_DIR'] == '/sweep' and 'SEQMNIST_WORKERS' not in env
  assert pod['securityContext']['runAsNonRoot'] is True  # job.yaml's hardening
  assert pod['containers'][0]['securityContext'][
      'allowPrivilegeEscalation'] is False
  assert not (tmp_path / 'sweep').exists()  # paths are the pods': no writes


@pytest.mark.e2e
def test_a_sweep_pod_runs_the_point_of_its_completion_index(tmp_path,
                                                            mnist_dir):
  runs = tmp_path / 'runs'
  result = _sweep_manifest(runs, mnist_dir)
  assert result.returncode == 0, result.stderr[-3000:]
  config_map = [d for d in yaml.safe_load_all(result.stdout) if d][0]
  points = tmp_path / 'points'  # what the ConfigMap volume mounts
  points.mkdir()
  for key, text in config_map['data'].items():
    (points / key).write_text(text)
  env = dict(os.environ, PYTHON=sys.executable, TF_CPP_MIN_LOG_LEVEL='2',
             JOB_COMPLETION_INDEX='2', SEQMNIST_POINTS_DIR=str(points))
  env.pop('TF_CONFIG', None)
  pod = subprocess.run(['bash', os.path.join(K8S, 'entrypoint.sh')], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=600,
                       check=False)
  assert pod.returncode == 0, pod.stderr[-3000:]
  assert os.listdir(runs) == ['Trainer.seed=1,Model.cell=gru']  # index 2
  run = runs / 'Trainer.seed=1,Model.cell=gru'
  saved = (run / 'operative_config.gin').read_text()
  assert 'Trainer.seed = 1' in saved and "Model.cell = 'gru'" in saved
  assert _results(run)['global_step'] == 10


def test_a_search_renders_as_a_valid_indexed_job_of_workers(tmp_path):
  """`seqmnist-search --backend=kubernetes --workers=3`: an Indexed Job of
  three pods, each `python -m seqmnist.tools.search` of one study on the
  given storage; paths are the pods', so nothing is written here."""
  result = subprocess.run(
      [sys.executable, '-m', 'seqmnist.tools.search', '--backend=kubernetes',
       '--workers=3', '--gin_file=row.gin',
       '--space=LEARNING_RATE=loguniform(1e-4, 3e-3)', '--trials=12',
       '--storage=postgresql://seqmnist@postgres/studies',
       f'--runs_dir={tmp_path}/search', '--data_dir=/data/mnist'],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
  assert result.returncode == 0, result.stderr[-3000:]
  (job,) = [d for d in yaml.safe_load_all(result.stdout) if d]
  for version in VERSIONS:
    kubernetes_validate.validate(job, version, strict=True)
  spec = job['spec']
  assert (spec['completionMode'], spec['completions'],
          spec['parallelism']) == ('Indexed', 3, 3)
  container = spec['template']['spec']['containers'][0]
  assert container['command'] == ['python', '-m', 'seqmnist.tools.search']
  args = container['args']
  assert {'--backend=local', '--trials=12', '--gin_file=row.gin',
          '--storage=postgresql://seqmnist@postgres/studies',
          '--space=LEARNING_RATE=loguniform(1e-4, 3e-3)',
          f'--runs_dir={tmp_path}/search', '--study_name=search'} <= set(args)
  env = {e['name'] for e in container['env']}
  assert 'SEQMNIST_WORKERS' not in env  # workers of a study, not a cluster
  assert not (tmp_path / 'search').exists()
