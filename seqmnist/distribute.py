"""Which `tf.distribute.Strategy` runs the job, and who is the chief.

Everything else receives a strategy and never asks how it was chosen.
"""

import dataclasses

from absl import logging
import gin
import tensorflow as tf

from seqmnist.errors import ConfigError

STRATEGIES = ('auto', 'default', 'one_device', 'mirrored')


@gin.configurable('Distribute')
@dataclasses.dataclass(frozen=True)
class DistributeConfig:
  """How replicas are laid out.

  Attributes:
    strategy: 'auto' picks 'mirrored' when more than one GPU is visible and
      'one_device' otherwise; or name one of the others explicitly.
  """
  strategy: str = 'auto'

  def __post_init__(self):
    if self.strategy not in STRATEGIES:
      raise ConfigError(f'Distribute.strategy={self.strategy!r} is not one of '
                        f'{", ".join(repr(s) for s in STRATEGIES)}')


def make_strategy(config: DistributeConfig) -> tf.distribute.Strategy:
  """Builds the strategy; call before any other TensorFlow op runs."""
  name, why = config.strategy, 'set by Distribute.strategy'
  gpus = tf.config.list_logical_devices('GPU')
  if name == 'auto':
    if len(gpus) > 1:
      name, why = 'mirrored', f'{len(gpus)} GPUs are visible'
    else:
      name, why = 'one_device', f'{len(gpus)} GPU(s) visible, no cluster'
  if name == 'default':
    strategy = tf.distribute.get_strategy()
  elif name == 'one_device':
    device = gpus[0].name if gpus else '/cpu:0'
    strategy = tf.distribute.OneDeviceStrategy(device)
  else:
    strategy = tf.distribute.MirroredStrategy()
  logging.info('Strategy: %s (%s), %d replica(s).', name, why,
               strategy.num_replicas_in_sync)
  return strategy


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True unless this process is a non-chief worker of a cluster."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  return task_type == 'chief' or (task_type == 'worker' and task_id == 0 and
                                  'chief' not in resolver.cluster_spec().jobs)
