"""Training-image augmentation: random whole-pixel translations.

`Data.max_shift=s` moves every training image by (dy, dx), each drawn
uniformly from [-s, s], filling the uncovered border with zeros (MNIST's
background). Validation, test and export never see it.

Like the training order (data.py), the shifts keep the framework's promises:
an example's shift is a pure function of (Trainer.seed, epoch, its index in
the training split), drawn once per epoch for the whole split with a
stateless op. The replica count and an interruption therefore change
nothing: a resumed run, or one on N replicas, sees the same shifted images.

Not part of the classic protocol of the sequential MNIST tasks (the
published anchors trained on the images as they are): results trained with
it say so.
"""

import tensorflow as tf

# Folded into (seed, epoch) so the shifts are not the shuffle's stream.
_SALT = 0x5EED5


def epoch_shifts(num_examples: int, max_shift: int, seed: tf.Tensor,
                 epoch: tf.Tensor) -> tf.Tensor:
  """int32 [num_examples, 2]: (dy, dx) of each example of the split in
  this epoch, each in [-max_shift, max_shift]."""
  key = tf.random.experimental.stateless_fold_in(
      tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)]), _SALT)
  return tf.random.stateless_uniform(
      [num_examples, 2], seed=key, minval=-max_shift, maxval=max_shift + 1,
      dtype=tf.int32)


def translate(images: tf.Tensor, shifts: tf.Tensor, max_shift: int
              ) -> tf.Tensor:
  """Images [b, h, w] moved by shifts [b, 2] = (dy, dx) with |dy|, |dx| <=
  max_shift: out[i, j] = images[i - dy, j - dx], zero outside. Exact for
  any dtype (a gather, no arithmetic on pixel values)."""
  if not max_shift:
    return images
  size_h, size_w = images.shape[1], images.shape[2]
  padded = tf.pad(images, [[0, 0], [max_shift, max_shift],
                           [max_shift, max_shift]])
  rows = max_shift - shifts[:, :1] + tf.range(size_h)[tf.newaxis]  # [b, h]
  cols = max_shift - shifts[:, 1:] + tf.range(size_w)[tf.newaxis]  # [b, w]
  padded = tf.gather(padded, rows, axis=1, batch_dims=1)  # [b, h, w + 2s]
  return tf.gather(padded, cols, axis=2, batch_dims=1)    # [b, h, w]
