"""One experiment builder: gin-configured pieces -> the objects a run needs.

    configs = experiment.Configs.from_gin()       # validated, nothing built
    strategy = distribute.make_strategy(configs.distribute)
    configs.check_with(strategy)
    exp = experiment.build(configs, strategy, splits)

Every tool that trains or rebuilds a model (the trainer, the bench, export)
goes through here, so they cannot disagree on how a config becomes a model,
an optimizer or a step.
"""

import dataclasses
from typing import Optional

import keras
import tensorflow as tf

from seqmnist import validators
from seqmnist.cluster import distribute
from seqmnist.data import pipeline
from seqmnist.errors import ConfigError
from seqmnist.loop import dashboard
from seqmnist.loop import steps as steps_lib
from seqmnist.loop import trainer
from seqmnist.model import cells
from seqmnist.model import network
from seqmnist.optim import averaging
from seqmnist.optim import clipping
from seqmnist.optim import optimizers


@dataclasses.dataclass(frozen=True)
class Configs:
  """Every gin configurable of a run, built (so validated) once."""
  data: pipeline.DataConfig
  model: network.ModelConfig
  trainer: trainer.TrainerConfig
  distribute: distribute.DistributeConfig
  dashboard: dashboard.DashboardConfig

  @classmethod
  def from_gin(cls) -> 'Configs':
    """Builds each configurable from the parsed gin config; raises
    ConfigError naming the first bad value."""
    configs = cls(data=pipeline.DataConfig(), model=network.ModelConfig(),
                  trainer=trainer.TrainerConfig(),
                  distribute=distribute.DistributeConfig(),
                  dashboard=dashboard.DashboardConfig())
    configs.check_dilations()
    if configs.trainer.jit_compile and configs.model.implementation == 'fused':
      raise ConfigError("Trainer.jit_compile=True cannot compile "
                        "Model.implementation='fused' (a custom op XLA does "
                        "not know); use 'auto' or 'keras'")
    return configs

  def check_dilations(self) -> None:
    """A layer at dilation d runs ceil(T / d) steps of its own on T-step
    sequences; at d >= T that is one step, no recurrence at all (and
    T - 1 padding steps per subsequence, all computed)."""
    steps = self.data.sequence_shape[0]
    dilations = tuple(self.model.dilations)
    if any(d >= steps for d in dilations):
      own = ', '.join(str(-(-steps // d)) for d in dilations)
      raise ConfigError(
          f'Model.dilations={dilations!r} on {steps}-step sequences '
          f'(Data.order={self.data.order!r}): its layers run {own} steps '
          'of their own, and one step is no recurrence; give each dilation '
          f'below {steps}')

  def check_with(self, strategy: tf.distribute.Strategy) -> None:
    """The checks that need the replica count."""
    replicas = strategy.num_replicas_in_sync
    if self.trainer.jit_compile and self.model.batch_norm and replicas > 1:
      raise ConfigError(
          'Trainer.jit_compile=True cannot compile Model.batch_norm=True\'s '
          f'all-reduce over {replicas} replicas; turn one of them off')
    pipeline.check_batches(self.data, replicas)

  @property
  def loss_scale(self) -> bool:
    return network.needs_loss_scaling(self.model)

  def memory_bytes(self, workers: int = 1) -> int:
    """A rough upper estimate of one process's peak memory while training.

    TensorFlow and the data (~1 GB), the weights with their gradient and
    two optimizer slots, and what backpropagation through time keeps for
    each step: about three tensors of gates x units per example and layer.
    Measured against it (pixel task, peak RSS by /usr/bin/time, 2 steps and
    a validation): GRU 128 at batch 128 peaked at 1.7 GB (estimate 1.7), GRU
    256 at 1.8 GB (estimate 2.3). It exists to refuse a config that cannot
    fit, before anything is written.
    """
    steps, features = self.data.sequence_shape
    gates = cells.get(self.model.cell).gates
    units, layers = self.model.units, self.model.layers
    params = layers * gates * (max(features, units) * units + units * units
                               + 2 * units)
    batch = -(-self.data.batch_size // workers)
    activations = 3 * batch * steps * gates * units * layers * 4
    eval_inputs = (-(-self.data.eval_batch_size // workers)) * steps * (
        features + units) * 4
    return int(1e9 + 16 * params + activations + eval_inputs)



# Every setting added after run dirs already existed, with the value runs
# made before it ran with (declared beside each field: validators.
# added_later), for drift.py.
ADDED_LATER = {
    **validators.earlier_values(pipeline.DataConfig, 'Data'),
    **validators.earlier_values(network.ModelConfig, 'Model'),
    **validators.earlier_values(trainer.TrainerConfig, 'Trainer'),
    **validators.earlier_values(distribute.DistributeConfig, 'Distribute'),
    **validators.earlier_values(dashboard.DashboardConfig, 'Dashboard'),
}


@dataclasses.dataclass(frozen=True)
class Experiment:
  """What a run trains: built under its strategy, not yet trained."""
  configs: Configs
  strategy: tf.distribute.Strategy
  splits: pipeline.Splits
  model: keras.Model
  optimizer: keras.optimizers.Optimizer
  step_options: steps_lib.StepOptions
  average: Optional[averaging.WeightAverage] = None


def seed_everything(configs: Configs) -> None:
  """Seeds Python, numpy and TensorFlow, and turns op determinism on if
  asked: before any model is built."""
  keras.utils.set_random_seed(configs.trainer.seed)
  if configs.trainer.deterministic:
    tf.config.experimental.enable_op_determinism()


def build_model(configs: Configs) -> keras.Model:
  """The configured model, seeded by Trainer.seed (call under the strategy's
  scope when training). Under XLA (Trainer.jit_compile), Keras' layers."""
  model_config = configs.model
  if configs.trainer.jit_compile:
    model_config = dataclasses.replace(model_config, implementation='keras')
  return network.build(model_config, configs.data.sequence_shape,
                      configs.data.spec.num_classes, seed=configs.trainer.seed)


def build(configs: Configs, strategy: tf.distribute.Strategy,
          splits: pipeline.Splits) -> Experiment:
  """Seeds, then builds the model and optimizer under the strategy."""
  seed_everything(configs)
  trainer_config = configs.trainer
  with strategy.scope():
    model = build_model(configs)
    optimizer = optimizers.build(
        trainer_config.optimizer, trainer_config.learning_rate,
        loss_scale=configs.loss_scale,
        weight_decay=trainer_config.weight_decay,
        decay_exempt=matching(model.trainable_variables,
                              trainer_config.weight_decay_exclude))
    optimizer.build(model.trainable_variables)
    average = averaging.make(model.trainable_variables,
                             trainer_config.ema_decay)
  return Experiment(
      configs=configs, strategy=strategy, splits=splits, model=model,
      optimizer=optimizer,
      step_options=trainer_config.step_options(configs.data.batch_size,
                                               configs.loss_scale),
      average=average)


def matching(variables, patterns):
  """The variables whose path matches one of the regexes."""
  return [v for v in variables if clipping.excluded(v.path, patterns)]
