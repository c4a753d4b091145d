"""Cluster discovery from TF_CONFIG, Slurm step variables and Kubernetes."""

import json
import shutil
import subprocess

import pytest

from seqmnist.cluster import discover
from seqmnist.errors import ConfigError


def test_nothing_described_means_no_cluster():
  assert discover.discover({}) == (None, 'no cluster is described')


def test_tf_config_is_used_as_is():
  tf_config = {'cluster': {'worker': ['a:1', 'b:2']},
               'task': {'type': 'worker', 'index': 1}}
  found, why = discover.discover({'TF_CONFIG': json.dumps(tf_config)})
  assert found == tf_config and why == 'TF_CONFIG is set'


def test_bad_tf_config():
  with pytest.raises(ConfigError, match='TF_CONFIG is not valid JSON'):
    discover.discover({'TF_CONFIG': '{cluster'})


def _slurm(procid, nodelist, tasks_per_node, num_tasks, **extra):
  return dict(SLURM_PROCID=str(procid), SLURM_STEP_NODELIST=nodelist,
              SLURM_STEP_TASKS_PER_NODE=tasks_per_node,
              SLURM_STEP_NUM_TASKS=str(num_tasks), **extra)


def test_slurm_keeps_slurms_node_order_not_string_order():
  # TF's SlurmClusterResolver sorts hosts as strings (node10 < node9).
  found, why = discover.discover(_slurm(3, 'node[9-10]', '2(x2)', 4))
  assert found['cluster']['worker'] == [
      'node9:8888', 'node9:8889', 'node10:8888', 'node10:8889']
  assert found['task'] == {'type': 'worker', 'index': 3}
  assert why == 'a Slurm job step of 4 tasks'


def test_slurm_uneven_tasks_and_port():
  found, _ = discover.discover(_slurm(0, 'gpu[01-02],cpu7', '2,1(x2)', 4,
                                     SEQMNIST_PORT='9000'))
  assert found['cluster']['worker'] == [
      'gpu01:9000', 'gpu01:9001', 'gpu02:9000', 'cpu7:9000']


def test_slurm_single_task_is_not_a_cluster():
  assert discover.discover(_slurm(0, 'vm', '1', 1))[0] is None


def test_slurm_inconsistent_variables():
  with pytest.raises(ConfigError, match='Slurm step variables disagree'):
    discover.discover(_slurm(0, 'node[1-2]', '2', 2))


def test_kubernetes_indexed_job():
  env = dict(JOB_COMPLETION_INDEX='1', SEQMNIST_WORKERS='3',
             SEQMNIST_JOB='seqmnist', SEQMNIST_SERVICE='seqmnist-workers')
  found, why = discover.discover(env)
  assert found['cluster']['worker'] == [
      f'seqmnist-{i}.seqmnist-workers:8888' for i in range(3)]
  assert found['task'] == {'type': 'worker', 'index': 1}
  assert why == 'a Kubernetes Indexed Job of 3 pods'


@pytest.mark.parametrize('env, message', [
    (dict(JOB_COMPLETION_INDEX='3', SEQMNIST_WORKERS='3', SEQMNIST_JOB='j',
          SEQMNIST_SERVICE='s'), 'JOB_COMPLETION_INDEX=3 is outside 0..2'),
    (dict(JOB_COMPLETION_INDEX='0', SEQMNIST_WORKERS='2'),
     'needs SEQMNIST_JOB and SEQMNIST_SERVICE'),
    (dict(JOB_COMPLETION_INDEX='0', SEQMNIST_WORKERS='2', SEQMNIST_JOB='j',
          SEQMNIST_SERVICE='s', SEQMNIST_PORT='http'), "SEQMNIST_PORT='http'"),
])
def test_kubernetes_errors(env, message):
  with pytest.raises(ConfigError, match=message):
    discover.discover(env)


@pytest.mark.parametrize('hostlist', [
    'node[09-10],gpu3', 'a[1-2]-ib[3,5]', 'n1', 'node[1,3-4]', 'x[008-010]',
    'rack[1-2]-node[01-02]', 'c1,c2,c[3-4]'])
def test_hostlist_matches_slurms_own_expansion(hostlist):
  """Our parser against `scontrol show hostnames` where Slurm is installed,
  else against the expansions written out by hand."""
  by_hand = {
      'node[09-10],gpu3': ['node09', 'node10', 'gpu3'],
      'a[1-2]-ib[3,5]': ['a1-ib3', 'a1-ib5', 'a2-ib3', 'a2-ib5'],
      'n1': ['n1'],
      'node[1,3-4]': ['node1', 'node3', 'node4'],
      'x[008-010]': ['x008', 'x009', 'x010'],
      'rack[1-2]-node[01-02]': ['rack1-node01', 'rack1-node02',
                                'rack2-node01', 'rack2-node02'],
      'c1,c2,c[3-4]': ['c1', 'c2', 'c3', 'c4'],
  }[hostlist]
  assert discover.expand_hostlist(hostlist) == by_hand
  if shutil.which('scontrol'):
    slurm = subprocess.run(['scontrol', 'show', 'hostnames', hostlist],
                           capture_output=True, text=True, timeout=30,
                           check=True).stdout.split()
    assert discover.expand_hostlist(hostlist) == slurm


def test_a_bad_hostlist_is_one_clear_error():
  with pytest.raises(ConfigError, match=r"Slurm host list 'node\[1-2' has "
                     'unbalanced brackets'):
    discover.expand_hostlist('node[1-2')
