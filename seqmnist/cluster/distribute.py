"""Which `tf.distribute.Strategy` runs the job, and who is the chief.

Everything else receives a strategy and never asks how it was chosen. The
cluster itself (TF_CONFIG, Slurm, Kubernetes) is read in `discover.py`.
"""

import dataclasses
import os
import re
from typing import Mapping, Optional
import weakref

from absl import logging
import gin
import tensorflow as tf

from seqmnist import cli
from seqmnist import validators
from seqmnist.cluster import discover
from seqmnist.errors import ConfigError, WorkerLost

# strategy -> the all-reduce implementations it accepts ('auto' = TF's choice)
ALL_REDUCE = {
    'auto': ('auto',),
    'default': ('auto',),
    'one_device': ('auto',),
    'mirrored': ('auto', 'nccl', 'hierarchical_copy'),
    'multi_worker_mirrored': ('auto', 'ring', 'nccl'),
}


@gin.configurable('Distribute')
@dataclasses.dataclass(frozen=True)
class DistributeConfig:
  """How replicas are laid out.

  Attributes:
    strategy: 'auto' picks 'multi_worker_mirrored' when a cluster is described
      (TF_CONFIG, a Slurm job step, a Kubernetes Indexed Job), 'mirrored'
      when more than one GPU is visible, and 'one_device' otherwise; or name
      'default', 'one_device', 'mirrored' or 'multi_worker_mirrored'.
    all_reduce: 'auto' (TensorFlow's choice); for 'mirrored' 'nccl' or
      'hierarchical_copy'; for 'multi_worker_mirrored' 'ring' or 'nccl'.
    logical_cpus: split the CPU into this many logical devices, each a
      replica of 'mirrored' when no GPU is visible (0 = don't split). For
      trying and testing multi-replica behaviour on a CPU machine.
  """
  strategy: str = 'auto'
  all_reduce: str = 'auto'
  logical_cpus: int = 0

  def __post_init__(self):
    validators.check_choice('Distribute.strategy', self.strategy, ALL_REDUCE)
    known = sorted({a for values in ALL_REDUCE.values() for a in values})
    validators.check_choice('Distribute.all_reduce', self.all_reduce, known)
    validators.check_int('Distribute.logical_cpus', self.logical_cpus,
                         minimum=0, maximum=1024)


def make_strategy(config: DistributeConfig,
                  environ: Mapping[str, str] = os.environ
                  ) -> tf.distribute.Strategy:
  """Builds the strategy; call before any other TensorFlow op runs."""
  tf_config, cluster_why = discover.discover(environ)
  if config.logical_cpus:
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * config.logical_cpus)
  # Physical, not logical: listing logical devices starts the TF runtime, and
  # MultiWorkerMirroredStrategy must configure it first. (Its start-up
  # records, a cuInit "error" on machines without a GPU among them, go to
  # the DEBUG log: see cli.py.)
  with cli.quiet_stderr('probing for GPUs'):
    gpus = tf.config.list_physical_devices('GPU')
  name, why = config.strategy, 'set by Distribute.strategy'
  if name == 'auto':
    if tf_config:
      name, why = 'multi_worker_mirrored', cluster_why
    elif len(gpus) > 1:
      name, why = 'mirrored', f'{len(gpus)} GPUs are visible'
    else:
      name, why = 'one_device', f'{len(gpus)} GPU(s) visible, {cluster_why}'
  if config.all_reduce not in ALL_REDUCE[name]:
    raise ConfigError(
        f'Distribute.all_reduce={config.all_reduce!r} does not apply to the '
        f'{name!r} strategy; use one of '
        f'{", ".join(repr(a) for a in ALL_REDUCE[name])}')
  strategy = _BUILDERS[name](config, tf_config, bool(gpus))
  logging.info('Strategy: %s (%s), %d replica(s), all-reduce %s.', name, why,
               strategy.num_replicas_in_sync, config.all_reduce)
  if tf_config:
    task = tf_config.get('task', {})
    logging.info('Cluster: %s; this task: %s %s.', tf_config.get('cluster'),
                 task.get('type'), task.get('index'))
  return strategy


def _default(config, tf_config, has_gpu):
  del config, tf_config, has_gpu
  return tf.distribute.get_strategy()


def _one_device(config, tf_config, has_gpu):
  del config, tf_config
  return tf.distribute.OneDeviceStrategy('/gpu:0' if has_gpu else '/cpu:0')


def _mirrored(config, tf_config, has_gpu):
  del tf_config
  kind = 'GPU' if has_gpu else 'CPU'
  devices = [d.name for d in tf.config.list_logical_devices(kind)]
  cross_device_ops = {
      'auto': None,
      'nccl': tf.distribute.NcclAllReduce,
      'hierarchical_copy': tf.distribute.HierarchicalCopyAllReduce,
  }[config.all_reduce]
  if cross_device_ops is None and not has_gpu:
    # TF's default for CPU replicas, said explicitly: NCCL needs GPUs.
    cross_device_ops = tf.distribute.ReductionToOneDevice
  return tf.distribute.MirroredStrategy(
      devices=devices,
      cross_device_ops=cross_device_ops() if cross_device_ops else None)


def _multi_worker(config, tf_config, has_gpu):
  del has_gpu
  implementation = {
      'auto': tf.distribute.experimental.CommunicationImplementation.AUTO,
      'ring': tf.distribute.experimental.CommunicationImplementation.RING,
      'nccl': tf.distribute.experimental.CommunicationImplementation.NCCL,
  }[config.all_reduce]
  resolver = None
  if tf_config:
    task = tf_config.get('task', {})
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(tf_config['cluster']),
        task_type=task.get('type', 'worker'), task_id=task.get('index', 0),
        rpc_layer='grpc')
  try:
    return tf.distribute.MultiWorkerMirroredStrategy(
        cluster_resolver=resolver,
        communication_options=tf.distribute.experimental.CommunicationOptions(
            implementation=implementation))
  except tf.errors.UnknownError as e:
    if 'Could not start gRPC server' not in str(e) or not tf_config:
      raise
    task = tf_config.get('task', {})
    kind, index = task.get('type', 'worker'), task.get('index', 0)
    address = tf_config['cluster'][kind][index]
    raise ConfigError(
        f'{kind} {index} cannot listen on its address {address}: the port is '
        'taken (another job on this host?); give each job on a host its own '
        'ports (Slurm, Kubernetes: SEQMNIST_PORT; else the TF_CONFIG '
        'addresses)') from e


_BUILDERS = {
    'default': _default,
    'one_device': _one_device,
    'mirrored': _mirrored,
    'multi_worker_mirrored': _multi_worker,
}


def _cluster_resolver(strategy):
  """The strategy's cluster resolver if it describes a cluster, else None."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return None
  return resolver


def worker_id(strategy: tf.distribute.Strategy) -> str:
  """'worker-<i>' (or 'chief-0') in a cluster, 'local' otherwise."""
  resolver = _cluster_resolver(strategy)
  if resolver is None:
    return 'local'
  return f'{resolver.task_type}-{resolver.task_id}'


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True unless this process is a non-chief worker of a cluster.

  The chief is the task of type 'chief', or worker 0 when there is none.
  """
  resolver = _cluster_resolver(strategy)
  if resolver is None:
    return True
  jobs = resolver.cluster_spec().jobs
  if 'chief' in jobs:
    return resolver.task_type == 'chief'
  return resolver.task_type == 'worker' and resolver.task_id == 0


def num_workers(strategy: tf.distribute.Strategy) -> int:
  """How many processes (workers, chief included) take part in the strategy."""
  resolver = _cluster_resolver(strategy)
  if resolver is None:
    return 1
  spec = resolver.cluster_spec()
  return sum(spec.num_tasks(job) for job in spec.jobs
             if job in ('chief', 'worker'))


# A collective's failure that names the peer which stopped answering:
# "/job:worker/replica:0/task:1" (gRPC) or "/job:worker/task:1" (heartbeats).
_PEER = re.compile(r'/job:(worker|chief)/(?:replica:\d+/)?task:(\d+)')
# How TensorFlow reports a peer that died (its process killed, its node
# down): UnavailableError ("Connection reset by peer", "tasks are unhealthy
# (stopped sending heartbeats)") or, past a collective's timeout,
# DeadlineExceededError. In a one-process run they are not about workers.
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError)


def worker_lost(strategy: tf.distribute.Strategy, error: Exception,
                newest_checkpoint: Optional[int]) -> Optional[WorkerLost]:
  """The WorkerLost a multi-worker job raises for `error` (one of
  PEER_ERRORS), naming the peers the error names, or None outside a cluster.
  """
  if num_workers(strategy) < 2 or not isinstance(error, PEER_ERRORS):
    return None
  spec = _cluster_resolver(strategy).cluster_spec()
  me = (strategy.cluster_resolver.task_type, strategy.cluster_resolver.task_id)
  peers = []
  for job, task in _PEER.findall(str(error)):
    addresses = spec.as_dict().get(job, [])
    if (job, int(task)) != me and int(task) < len(addresses):
      peer = f'{job} {task} ({addresses[int(task)]})'
      if peer not in peers:
        peers.append(peer)
  who = ', '.join(peers) or 'another worker'
  resume = (f'the newest checkpoint is step {newest_checkpoint}'
            if newest_checkpoint is not None else 'no checkpoint was saved yet')
  cause = _cause(str(error))
  return WorkerLost(
      f'{who} stopped answering, so the job cannot go on ({cause}); {resume}: '
      'rerun the same command once every worker is back to resume (under '
      'Slurm, launch/slurm/train.sbatch requeues the job)')


def _cause(message: str) -> str:
  """The line of a collective's error that says what happened."""
  for line in message.splitlines():
    if 'aborted by:' in line:
      return line.split('aborted by:', 1)[1].strip()[:200]
  lines = [line.strip() for line in message.splitlines()
           if line.strip() and 'Graph execution error' not in line]
  return lines[0][:200] if lines else 'no detail'


def make_any_worker(strategy: tf.distribute.Strategy):
  """Returns `any_worker(flag: bool) -> bool`: True if any worker's is True.

  A collective: every worker must call it the same number of times.
  """
  @tf.function
  def count(flag):
    per_replica = strategy.run(lambda: tf.cast(flag, tf.float32))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

  return lambda flag: bool(count(tf.constant(flag)).numpy() > 0)


# One traced barrier per strategy (a tf.function built per call would be
# retraced every time).
_BARRIERS = weakref.WeakKeyDictionary()


def barrier(strategy: tf.distribute.Strategy) -> None:
  """Returns once every replica of every worker has called it.

  A tiny all-reduce: used so that no worker reads what the chief writes
  (e.g. the best checkpoint) before the chief has written it.
  """
  all_reduce_one = _BARRIERS.get(strategy)
  if all_reduce_one is None:
    @tf.function
    def all_reduce_one():
      return strategy.reduce(tf.distribute.ReduceOp.SUM,
                             strategy.run(lambda: tf.constant(1.0)), axis=None)
    _BARRIERS[strategy] = all_reduce_one
  all_reduce_one()
