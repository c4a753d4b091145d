"""One full pass over a split (validation or test): loss, accuracy and the
confusion matrix, exact over every image whatever the replica count."""

import numpy as np
import tensorflow as tf

from seqmnist.data import pipeline
from seqmnist.loop import steps as steps_lib


class Evaluator:

  def __init__(self, strategy: tf.distribute.Strategy, model,
               data_config: pipeline.DataConfig):
    self._strategy = strategy
    self._data_config = data_config
    self._loop = steps_lib.make_eval_loop(strategy, model)

  def evaluate(self, split: pipeline.Split) -> dict:
    """{'loss', 'accuracy', 'confusion' [true, predicted] counts}."""
    dataset = self._strategy.distribute_datasets_from_function(
        lambda ctx: pipeline.eval_dataset(split, self._data_config, ctx))
    sums = self._loop(iter(dataset),
                      tf.constant(pipeline.eval_steps(split, self._data_config)))
    confusion = sums.pop('confusion').numpy()
    sums = {k: float(v.numpy()) for k, v in sums.items()}
    return {'loss': sums['loss_sum'] / sums['examples'],
            'accuracy': sums['correct'] / sums['examples'],
            'confusion': np.asarray(confusion)}
