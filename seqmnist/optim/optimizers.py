"""Optimizers by name, and the learning-rate schedules gin may reference.

`Trainer.learning_rate` is a number or a Keras schedule bound in gin, e.g.

    Trainer.learning_rate = @CosineDecay()
    CosineDecay.initial_learning_rate = 1e-3
    CosineDecay.decay_steps = 8000

Gradient clipping is not the optimizer's job here: Keras 3 optimizers clip
per replica before their own all-reduce, which is not replica-invariant; see
`clipping.py` and `steps.py`.
"""

from typing import Sequence

import gin
import keras

from seqmnist import validators

OPTIMIZERS = {
    'rmsprop': keras.optimizers.RMSprop,
    'adam': keras.optimizers.Adam,
    'sgd': keras.optimizers.SGD,
}

for _schedule in (keras.optimizers.schedules.CosineDecay,
                  keras.optimizers.schedules.ExponentialDecay,
                  keras.optimizers.schedules.PiecewiseConstantDecay,
                  keras.optimizers.schedules.PolynomialDecay):
  gin.external_configurable(_schedule, module='schedules')


def check(name, learning_rate) -> None:
  """Raises ConfigError unless (name, learning_rate) can build an optimizer."""
  validators.check_choice('Trainer.optimizer', name, OPTIMIZERS)
  if isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
    return
  validators.check_number('Trainer.learning_rate', learning_rate,
                          positive=True,
                          why='or a schedule such as @CosineDecay()')


def build(name: str, learning_rate, loss_scale: bool = False,
          weight_decay: float = 0.0,
          decay_exempt: Sequence = ()) -> keras.optimizers.Optimizer:
  """A fresh optimizer; call it under `strategy.scope()`, then build it.

  With `loss_scale` (float16 compute) it is wrapped in Keras'
  LossScaleOptimizer: dynamic scaling, halved and the step skipped when a
  gradient overflows, doubled after 2000 clean steps. `weight_decay` is
  Keras' decoupled decay (each step, before the update, w -= lr * wd * w),
  on every variable but those in `decay_exempt`; it adds no variable, so
  checkpoints keep their layout.
  """
  check(name, learning_rate)
  if not isinstance(learning_rate,
                    keras.optimizers.schedules.LearningRateSchedule):
    learning_rate = float(learning_rate)
  kwargs = {'weight_decay': float(weight_decay)} if weight_decay else {}
  optimizer = OPTIMIZERS[name](learning_rate=learning_rate, **kwargs)
  if weight_decay and decay_exempt:
    optimizer.exclude_from_weight_decay(var_list=list(decay_exempt))
  if loss_scale:
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer
