"""Cluster discovery: the one place that reads TF_CONFIG, Slurm and Kubernetes.

`discover(environ)` returns the TF_CONFIG dict describing this process's
cluster, or None on a single machine, and says where it came from:

  * TF_CONFIG already set (by `launch/local_cluster.sh`, Kubeflow's TFJob, or
    the user): used as is.
  * A Slurm job *step* (the program runs under `srun`): built from
    SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_STEP_NODELIST and
    SLURM_STEP_TASKS_PER_NODE, one port per task on a node (SEQMNIST_PORT,
    default 8888, + the task's rank on its node). We do not use TF's SlurmClusterResolver:
    on CPU-only nodes it calls `nvidia-smi` or fails on `gpus_per_node=0`,
    it rewrites CUDA_VISIBLE_DEVICES (Slurm's own GPU binding already did
    that right), and it sorts hosts as strings (node10 before node9), which
    can pair a task with another task's address. Here tasks are mapped to
    hosts in Slurm's own order, as srun assigns them.
  * A Kubernetes Indexed Job: JOB_COMPLETION_INDEX plus SEQMNIST_WORKERS
    (= completions), SEQMNIST_JOB and SEQMNIST_SERVICE (the headless Service):
    worker i is `<job>-<i>.<service>:<port>`, the DNS name the Service gives
    pod `<job>-<i>` (SEQMNIST_ADDRESS_TEMPLATE overrides that pattern; it
    may use {job}, {service}, {index}, {port} and {local_port} = port+index).
"""

import json
import os
import re
from typing import Mapping, Optional, Tuple

from seqmnist.errors import ConfigError

DEFAULT_PORT = 8888
K8S_ADDRESS_TEMPLATE = '{job}-{index}.{service}:{port}'


def discover(environ: Mapping[str, str] = os.environ
             ) -> Tuple[Optional[dict], str]:
  """Returns (TF_CONFIG dict or None, a sentence saying where it came from)."""
  if environ.get('TF_CONFIG'):
    try:
      tf_config = json.loads(environ['TF_CONFIG'])
    except json.JSONDecodeError as e:
      raise ConfigError(f'TF_CONFIG is not valid JSON: {e}') from e
    if tf_config.get('cluster'):
      return tf_config, 'TF_CONFIG is set'
  if 'SLURM_STEP_NUM_TASKS' in environ and 'SLURM_PROCID' in environ:
    tf_config = slurm_tf_config(environ)
    if tf_config:
      return tf_config, (f'a Slurm job step of '
                         f'{environ["SLURM_STEP_NUM_TASKS"]} tasks')
  if 'JOB_COMPLETION_INDEX' in environ and 'SEQMNIST_WORKERS' in environ:
    return kubernetes_tf_config(environ), (
        f'a Kubernetes Indexed Job of {environ["SEQMNIST_WORKERS"]} pods')
  return None, 'no cluster is described'


def _port(environ) -> int:
  value = environ.get('SEQMNIST_PORT', str(DEFAULT_PORT))
  if not value.isdigit() or not 0 < int(value) < 65536:
    raise ConfigError(f'SEQMNIST_PORT={value!r} must be a port number')
  return int(value)


def expand_hostlist(hostlist: str):
  """'node[09-10],gpu3' -> ['node09', 'node10', 'gpu3'], in Slurm's order.

  Slurm's hostlist syntax (`scontrol show hostnames` prints the same):
  comma-separated names, each with any number of bracketed ranges and
  values, `a[1-2]-ib[3,5]`; zero-padding of a range is kept.
  """
  hosts = []
  for name in _split_top_level(hostlist):
    expanded = ['']
    for literal, brackets in re.findall(r'([^\[]*)(?:\[([^\]]*)\])?', name):
      values = _expand_brackets(brackets, hostlist) if brackets else ['']
      expanded = [h + literal + v for h in expanded for v in values]
    hosts.extend(expanded)
  return hosts


def _split_top_level(hostlist: str):
  """Splits on commas outside brackets."""
  parts, depth, current = [], 0, ''
  for char in hostlist:
    if char == '[':
      depth += 1
    elif char == ']':
      depth -= 1
    if char == ',' and depth == 0:
      parts.append(current)
      current = ''
    else:
      current += char
  if depth != 0:
    raise ConfigError(f'Slurm host list {hostlist!r} has unbalanced brackets')
  parts.append(current)
  return [p for p in parts if p]


def _expand_brackets(spec: str, hostlist: str):
  values = []
  for part in spec.split(','):
    match = re.fullmatch(r'(\d+)(?:-(\d+))?', part.strip())
    if not match:
      raise ConfigError(f'Slurm host list {hostlist!r}: cannot read [{spec}]')
    low, high = match.group(1), match.group(2) or match.group(1)
    width = len(low)
    values.extend(str(i).zfill(width) for i in range(int(low), int(high) + 1))
  return values


def expand_tasks_per_node(spec: str):
  """'2(x3),1' -> [2, 2, 2, 1]."""
  counts = []
  for part in spec.split(','):
    if '(x' in part:
      count, repeat = part.rstrip(')').split('(x')
      counts.extend([int(count)] * int(repeat))
    else:
      counts.append(int(part))
  return counts


def slurm_tf_config(environ: Mapping[str, str]) -> Optional[dict]:
  """TF_CONFIG of this `srun` task, or None for a one-task step."""
  num_tasks = int(environ['SLURM_STEP_NUM_TASKS'])
  if num_tasks < 2:
    return None
  hosts = expand_hostlist(environ['SLURM_STEP_NODELIST'])
  per_node = expand_tasks_per_node(environ['SLURM_STEP_TASKS_PER_NODE'])
  if len(hosts) != len(per_node) or sum(per_node) != num_tasks:
    raise ConfigError(
        f'Slurm step variables disagree: SLURM_STEP_NODELIST gives '
        f'{len(hosts)} nodes, SLURM_STEP_TASKS_PER_NODE '
        f'{environ["SLURM_STEP_TASKS_PER_NODE"]!r}, SLURM_STEP_NUM_TASKS '
        f'{num_tasks}')
  port = _port(environ)
  workers = [f'{host}:{port + local}'
             for host, count in zip(hosts, per_node) for local in range(count)]
  return {'cluster': {'worker': workers},
          'task': {'type': 'worker', 'index': int(environ['SLURM_PROCID'])}}


def kubernetes_tf_config(environ: Mapping[str, str]) -> dict:
  """TF_CONFIG of this pod of an Indexed Job behind a headless Service."""
  try:
    workers = int(environ['SEQMNIST_WORKERS'])
    index = int(environ['JOB_COMPLETION_INDEX'])
  except ValueError as e:
    raise ConfigError(
        f'SEQMNIST_WORKERS={environ["SEQMNIST_WORKERS"]!r} and '
        f'JOB_COMPLETION_INDEX={environ["JOB_COMPLETION_INDEX"]!r} must be '
        'integers') from e
  if not 0 <= index < workers:
    raise ConfigError(f'JOB_COMPLETION_INDEX={index} is outside 0..'
                      f'{workers - 1} (SEQMNIST_WORKERS={workers})')
  template = environ.get('SEQMNIST_ADDRESS_TEMPLATE', K8S_ADDRESS_TEMPLATE)
  fields = dict(job=environ.get('SEQMNIST_JOB', ''),
                service=environ.get('SEQMNIST_SERVICE', ''),
                port=_port(environ))
  if '{job}' in template and not (fields['job'] and fields['service']):
    raise ConfigError('a Kubernetes Indexed Job needs SEQMNIST_JOB and '
                      'SEQMNIST_SERVICE (the headless Service) to be set')
  # {local_port} = port + index: for pods that share one address (a local
  # test posing as pods), where each needs a port of its own.
  addresses = [template.format(index=i, local_port=fields['port'] + i,
                               **fields) for i in range(workers)]
  return {'cluster': {'worker': addresses},
          'task': {'type': 'worker', 'index': index}}


def main():
  """`python -m seqmnist.cluster.discover`: prints the TF_CONFIG this process gets."""
  tf_config, why = discover()
  print(json.dumps({'tf_config': tf_config, 'source': why}))


if __name__ == '__main__':
  main()
