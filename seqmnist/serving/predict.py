r"""Classifies digits with an exported SavedModel (see export.py).

  python -m seqmnist.serving.predict --export_dir=DIR FILE [FILE...]

FILE: a PNG (grayscale or colour, any size: converted to gray and resized to
the size the model was exported for, 28x28 for the shipped datasets; MNIST
convention, a light digit on a dark ground, or pass --invert)
or an IDX image file such as t10k-images-idx3-ubyte[.gz] (every image in it).
Prints one line per image: `NAME: DIGIT (p=PROBABILITY)`, where NAME is the
file, or `file[index]` inside an IDX file. With `--labels=LABELS_IDX` (one
IDX image file and its label file, e.g. MNIST's t10k pair), prints instead
one line: the accuracy against those labels (how zoo/README.md checks a
released model).
"""

import os

from absl import flags

from seqmnist import cli
from seqmnist.model import implementations

implementations.prepare_tensorflow()  # TensorFlow's switches, before it imports
cli.import_tensorflow_quietly()  # before the modules below import it

# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
import tensorflow as tf

from seqmnist import user_files
from seqmnist.data import idx
from seqmnist.errors import DataError, UserError, exit_on_error

_EXPORT_DIR = flags.DEFINE_string('export_dir', None,
                                  'A SavedModel written by '
                                  'seqmnist.serving.export.')
_INVERT = flags.DEFINE_boolean('invert', False, 'PNGs are dark digits on a '
                               'light ground: invert them first.')
_BATCH = flags.DEFINE_integer('batch_size', 1000, 'Images per call.')
_LABELS = flags.DEFINE_string(
    'labels', None, 'An IDX label file for the one IDX image file given: '
    'print the accuracy against it instead of one line per image.')


# Bounds checked before anything is decoded: a small PNG can announce a
# huge image (a 140 KB file of 12000 x 12000 pixels decodes to 3 GiB).
MAX_PNG_BYTES = 64 << 20
MAX_PNG_PIXELS = 4096 * 4096
# Images classified by one call (MNIST's test set is 10,000).
MAX_IMAGES = 1_000_000


def _png_size(path: str):
  """(width, height) from a PNG's IHDR chunk, read without decoding."""
  with open(path, 'rb') as f:
    head = f.read(24)
  if len(head) < 24 or head[12:16] != b'IHDR':
    raise DataError(f'{path} is not a readable PNG (no image header)')
  return int.from_bytes(head[16:20], 'big'), int.from_bytes(head[20:24],
                                                             'big')


def _ink(path: str) -> tf.Tensor:
  """A PNG as float32 [h, w, 1] ink intensities in 0..255.

  Gray or colour PNGs: their gray level. PNGs with transparency (what drawing
  apps export: strokes on a transparent ground): the alpha channel is the
  ink, whatever colour the strokes are, as a viewer composites them.
  """
  width, height = _png_size(path)
  if width * height > MAX_PNG_PIXELS or not width or not height:
    raise DataError(f'{path} is a PNG of {width}x{height} pixels; predict '
                    'reads PNGs of up to 4096x4096 pixels (a digit is '
                    'resized to 28x28)')
  try:
    rgba = tf.io.decode_png(tf.io.read_file(path), channels=4)
  except tf.errors.OpError as e:
    raise DataError(f'{path} is not a readable PNG (its image data is '
                    'damaged or truncated)') from e
  alpha = rgba[..., 3:]
  if int(tf.reduce_min(alpha)) < 255:  # transparency: the alpha is the ink
    return tf.cast(alpha, tf.float32)
  return tf.cast(tf.image.rgb_to_grayscale(rgba[..., :3]), tf.float32)


def load_images(path: str, invert: bool = False, size: int = 28):
  """[(name, uint8 [n, size, size])] from a PNG or IDX file (told apart by
  their content, not their names); a PNG of another size is resized."""
  user_files.check_regular(path, 'a PNG or IDX file')
  with open(path, 'rb') as f:
    kind = idx.image_format(f.read(8))
  if kind not in (None, 'PNG'):
    raise UserError(f'{path} is a {kind} image; predict reads PNG and IDX '
                    'files (convert it to PNG)')
  if kind == 'PNG':
    user_files.check_regular(path, 'a PNG', MAX_PNG_BYTES)
    image = _ink(path)
    if image.shape[:2] != (size, size):
      image = tf.image.resize(image, [size, size], method='area')
    image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    pixels = image.numpy()[None, :, :, 0]
    if invert:
      pixels = 255 - pixels
    return [os.path.basename(path)], pixels
  pixels = idx.read(path, expected_ndim=3)
  if pixels.shape[1:] != (size, size):
    raise DataError(f'IDX file {path} holds {pixels.shape[1]}x'
                    f'{pixels.shape[2]} images; {size}x{size} expected')
  name = os.path.basename(path)
  return [f'{name}[{i}]' for i in range(len(pixels))], pixels


def predict(export_dir: str, paths, invert=False, batch_size=1000):
  """[(name, digit, probability, blank)] for every image of every file;
  `blank`: the image has no ink at all (its answer means nothing)."""
  if not export_dir or not os.path.isfile(
      os.path.join(export_dir, 'saved_model.pb')):
    hint = (' (it is a run directory: export it first with python -m '
            'seqmnist.serving.export)' if export_dir and os.path.isfile(
                os.path.join(export_dir, 'operative_config.gin')) else
            ' (write one with python -m seqmnist.serving.export)')
    raise UserError(f'--export_dir={export_dir} is not a SavedModel folder'
                    + hint)
  if not paths:
    raise UserError('give at least one PNG or IDX file to classify')
  if batch_size < 1:
    raise UserError(f'--batch_size={batch_size} must be >= 1')
  for path in paths:  # what is wrong with a path shows before the model loads
    user_files.check_regular(path, 'a PNG or IDX file')
  serve = tf.saved_model.load(export_dir).signatures['serving_default']
  # The image size the model was exported for (its dataset's).
  size = int(serve.structured_input_signature[1]['images'].shape[1])
  inputs, count = [], 0
  for path in paths:  # all checked before any is classified
    inputs.append(load_images(path, invert, size))
    count += len(inputs[-1][1])
    if count > MAX_IMAGES:
      raise UserError(f'these files hold more than {MAX_IMAGES:,} images; '
                      'classify them in several calls')
  out = []
  for names, pixels in inputs:
    for start in range(0, len(pixels), batch_size):
      probs = serve(images=tf.constant(
          pixels[start:start + batch_size]))['probabilities'].numpy()
      batch = pixels[start:start + batch_size]
      for name, p, image in zip(names[start:start + batch_size], probs, batch):
        digit = int(np.argmax(p))
        out.append((name, digit, float(p[digit]), not image.any()))
  return out


def accuracy(predictions, labels_path: str) -> float:
  """The fraction of `predictions` (of one IDX image file) whose digit is
  the label at the same index of the IDX label file."""
  user_files.check_regular(labels_path, 'an IDX label file')
  labels = idx.read(labels_path, expected_ndim=1)
  if len(labels) != len(predictions):
    raise DataError(f'--labels={labels_path} holds {len(labels)} labels for '
                    f'{len(predictions)} images')
  digits = np.array([digit for _, digit, _, _ in predictions])
  return float(np.mean(digits == labels))


def _predict_and_score(paths):
  if _LABELS.value is not None:  # before the images: a FIFO would block
    user_files.check_regular(_LABELS.value, 'an IDX label file')
  lines = predict(_EXPORT_DIR.value, paths, _INVERT.value, _BATCH.value)
  if _LABELS.value is None:
    return lines, None
  if len(paths) != 1 or paths[0].lower().endswith('.png'):
    raise UserError('--labels needs exactly one IDX image file')
  return lines, accuracy(lines, _LABELS.value)


def main(argv):
  lines, score = exit_on_error('seqmnist.serving.predict', _predict_and_score,
                               argv[1:])
  if score is not None:
    right = round(score * len(lines))
    print(f'accuracy {score:.4f} ({right} of {len(lines)} images right, '
          f'{len(lines) - right} wrong) against {_LABELS.value}')
    return
  for name, digit, p, blank in lines:
    print(f'{name}: {digit} (p={p:.3f})' + (
        '  [blank image: no ink, the answer means nothing]' if blank else ''))


if __name__ == '__main__':
  cli.run('seqmnist.serving.predict', main)
