"""What TensorBoard shows beyond the train/validation scalars.

  start          the operative gin config (Text) and the run's hyperparameters
                 (HParams, so a sweep's runs compare config -> final metrics);
  each validation  the misclassified validation digits, each with its
                 predicted (red) and true (green) label (Images), and the
                 hidden-state saturation of every recurrent layer: the
                 fraction of |h| > 0.99 (Scalars) and the distribution of h
                 (Histograms) -- the source article's diagnosis of why the
                 plain tanh RNN fails: a saturated tanh passes no gradient;
  end            the test set's confusion matrix (an image and a table), and
                 test accuracy/loss, of the best checkpoint.

Only the chief builds a Dashboard. Images are drawn with numpy alone (a 3x5
digit font below), so no plotting library is needed.
"""

import dataclasses
import os
from typing import Mapping, Optional, Sequence

import gin
import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from seqmnist import validators
from seqmnist.config import drift
from seqmnist.config import gin_text
from seqmnist.data import pipeline
from seqmnist.model import network

SATURATION = 0.99  # |h| above this counts as saturated (tanh'(h) < 0.02)
# TensorFlow's histogram summary one-hot encodes its input into its buckets:
# on the pixel task's 256 x 784 x 128 hidden states that took 7.6 GB (RSS
# 1.5 -> 8.9 GB, measured). An evenly strided sample of this many values
# draws the same distribution for a bounded cost.
HISTOGRAM_VALUES = 100_000

_FONT = {  # 3x5 bitmaps of the digits, row by row
    0: '111101101101111', 1: '010110010010111', 2: '111001111100111',
    3: '111001111001111', 4: '101101111001001', 5: '111100111001111',
    6: '111100111101111', 7: '111001001001001', 8: '111101111101111',
    9: '111101111001111',
}
RED, GREEN = (230, 60, 60), (60, 200, 80)


@gin.configurable('Dashboard')
@dataclasses.dataclass(frozen=True)
class DashboardConfig:
  """What the TensorBoard dashboard gets at each validation.

  Attributes:
    images: misclassified validation digits shown per evaluation; 0 = none.
    probe_examples: validation examples (the first ones) searched for
      misclassified digits and probed for hidden-state saturation.
  """
  images: int = 12
  probe_examples: int = 256

  def __post_init__(self):
    validators.check_int('Dashboard.images', self.images, minimum=0,
                         maximum=1000)
    validators.check_int('Dashboard.probe_examples', self.probe_examples,
                         minimum=1, maximum=10_000)


def config_markdown(operative_config: str) -> str:
  """Gin text as a Markdown code block (TensorBoard's Text renders it)."""
  return '\n'.join('    ' + line for line in operative_config.splitlines())


# The configurables whose settings are a run's hyperparameters (and the
# learning-rate schedule `Trainer.learning_rate` refers to, if any).
HPARAM_SCOPES = ('Data', 'Model', 'Trainer')


def hparams(operative_config: str, replicas: int) -> dict:
  """The run's hyperparameters for TensorBoard's HParams dashboard: every
  Data, Model and Trainer setting of the operative config, and its
  learning-rate schedule's, once, under its gin name with macros resolved,
  as HParams values (str/num/bool); and the replica count."""
  settings = drift.resolved(drift.parse_operative(operative_config))
  scopes = list(HPARAM_SCOPES)
  schedule = settings.get('Trainer.learning_rate')
  if isinstance(schedule, gin_text.GinText) and not schedule.macro_name:
    scopes.append(schedule.strip('@()').rsplit('.', 1)[-1])
  values = {}
  for key, value in sorted(settings.items()):
    scope, _, name = key.rpartition('.')
    if scope in scopes and not (scope not in HPARAM_SCOPES and
                                name == 'name'):
      values[key] = (value if isinstance(value, (bool, int, float, str))
                     else gin_text.text(value))
  values['replicas'] = replicas
  return values


def _glyph(digit: int, scale: int = 2) -> np.ndarray:
  bits = np.array([int(b) for b in _FONT[digit]], bool).reshape(5, 3)
  return np.kron(bits, np.ones((scale, scale), bool))


def _stamp(canvas, top, left, digit, color, scale=2):
  mask = _glyph(digit, scale)
  region = canvas[top:top + mask.shape[0], left:left + mask.shape[1]]
  region[mask] = color


def misclassified_grid(images: np.ndarray, predicted, true,
                       columns: int = 6) -> np.ndarray:
  """uint8 RGB [1, H, W, 3]: each image [n, size, size] (x2) over its labels,
  predicted in red on the left, true in green on the right."""
  scale, band, gap = 2, 14, 2
  side = np.shape(images)[1] * scale  # the dataset's image size, doubled
  tile_h, tile_w = side + band, max(side, 28)
  rows = max(1, -(-len(images) // columns))
  canvas = np.full((rows * (tile_h + gap), columns * (tile_w + gap), 3), 40,
                   np.uint8)
  for i, (image, p, t) in enumerate(zip(images, predicted, true)):
    top, left = (i // columns) * (tile_h + gap), (i % columns) * (tile_w + gap)
    digit = np.kron(image, np.ones((scale, scale), np.uint8))
    canvas[top:top + side, left:left + side] = digit[..., None]
    canvas[top + side:top + tile_h, left:left + tile_w] = 0
    _stamp(canvas, top + side + 2, left + 8, int(p), RED)
    _stamp(canvas, top + side + 2, left + tile_w - 14, int(t), GREEN)
  return canvas[None]


def confusion_image(matrix: np.ndarray, cell: int = 24) -> np.ndarray:
  """uint8 RGB [1, H, W, 3]: rows = true class, columns = predicted; each
  cell's blue is its share of the true class; digits label both axes."""
  n = matrix.shape[0]
  margin = 16
  size = margin + n * cell
  canvas = np.full((size, size, 3), 255, np.uint8)
  shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
  for t in range(n):
    _stamp(canvas, margin + t * cell + 7, 3, t, (0, 0, 0))
    _stamp(canvas, 3, margin + t * cell + 9, t, (0, 0, 0))
    for p in range(n):
      shade = np.array([255, 255, 255]) - shares[t, p] * np.array(
          [235, 175, 40])
      y, x = margin + t * cell, margin + p * cell
      canvas[y + 1:y + cell, x + 1:x + cell] = shade.astype(np.uint8)
  return canvas[None]


def confusion_markdown(matrix: np.ndarray) -> str:
  n = matrix.shape[0]
  lines = ['| true \\ predicted | ' + ' | '.join(map(str, range(n))) + ' |',
           '|---' * (n + 1) + '|']
  for t in range(n):
    lines.append(f'| **{t}** | ' + ' | '.join(
        str(int(round(v))) for v in matrix[t]) + ' |')
  return '\n'.join(lines)


def saturation(hidden: np.ndarray) -> float:
  """The fraction of hidden-state values with |h| > 0.99."""
  return float(np.mean(np.abs(hidden) > SATURATION))


class Dashboard:
  """Writes the summaries above; build it on the chief only."""

  def __init__(self, config: DashboardConfig, model, validation: pipeline.Split,
               data_config: pipeline.DataConfig, summaries):
    self._config = config
    self._summaries = summaries
    n = min(config.probe_examples, len(validation))
    self._images = validation.images[:n]
    self._labels = validation.labels[:n]
    self._sequences = pipeline.to_sequences(tf.constant(self._images), data_config)
    self._model = model
    self._predict = tf.function(lambda x: tf.argmax(
        model(x, training=False), axis=-1, output_type=tf.int32))
    # Each recurrent layer again, returning its whole sequence of states,
    # fed what the layer itself is fed in the model (a dilated layer's
    # interleaved subsequences included); its weights are copied from the
    # model's layer before each probe.
    self._layers = network.recurrent_layers(model)
    self._clones = []
    for layer in self._layers:
      clone = type(layer).from_config(dict(
          layer.get_config(), return_sequences=True,
          name=f'{layer.name}_probe'))
      self._clones.append(clone)
    self._probe = tf.function(keras.Model(
        model.inputs, [clone(layer.input) for layer, clone
                       in zip(self._layers, self._clones)]))

  def start(self, step: int, operative_config: str, values: Mapping,
            name: str) -> None:
    """The config text and the HParams session, named `name` (the run
    dir's)."""
    with self._summaries.train.as_default(step=step):
      tf.summary.text('operative_config', config_markdown(operative_config))
    with self._summaries.root.as_default(step=step):
      hp.hparams(dict(values), trial_id=name)
    self._summaries.flush()

  def on_validation(self, step: int) -> None:
    writer = self._summaries.validation
    with writer.as_default(step=step):
      if self._config.images:
        predicted = self._predict(self._sequences).numpy()
        wrong = np.flatnonzero(predicted != self._labels)[:self._config.images]
        if len(wrong):
          tf.summary.image(
              'misclassified',
              misclassified_grid(self._images[wrong], predicted[wrong],
                                 self._labels[wrong]),
              description=(
                  f'The first {len(wrong)} misclassified of the first '
                  f'{len(self._labels)} validation digits: predicted label '
                  'in red (left), true label in green (right).'))
      for layer, clone in zip(self._layers, self._clones):
        clone.set_weights(layer.get_weights())
      for layer, states in zip(self._layers, self._probe(self._sequences)):
        states = states.numpy().astype(np.float32)
        tf.summary.scalar(f'saturation/{layer.name}', saturation(states),
                          description='fraction of |h| > 0.99 over the probe '
                          'examples, time steps and units')
        flat = states.reshape(-1)
        stride = -(-flat.size // HISTOGRAM_VALUES)
        tf.summary.histogram(f'hidden_state/{layer.name}', flat[::stride],
                             description='every hidden-state value of the '
                             'probe examples (an even sample of at most '
                             f'{HISTOGRAM_VALUES:,})')
    writer.flush()

  def on_test(self, step: int, metrics: Mapping, confusion: np.ndarray,
              checkpoint: Optional[str]) -> None:
    with self._summaries.test.as_default(step=step):
      tf.summary.scalar('accuracy', metrics['accuracy'])
      tf.summary.scalar('loss', metrics['loss'])
      tf.summary.image(
          'confusion_matrix', confusion_image(confusion),
          description=('Test set, best checkpoint '
                       f'({os.path.basename(checkpoint or "final weights")}).'
                       ' Rows: true class; columns: predicted; blue: the '
                       "share of the row's examples."))
      tf.summary.text('confusion_matrix_counts', confusion_markdown(confusion))
    self._summaries.flush()
