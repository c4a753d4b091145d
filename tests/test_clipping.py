"""Per-variable clipping: the head is never clipped, the rest is, exactly."""

import numpy as np
import pytest
import tensorflow as tf

from seqmnist.optim import clipping


class _Var:
  """Stands for a variable: clipping reads only its Keras `.path`."""

  def __init__(self, path):
    self.path = path


VARIABLES = [_Var('gru_0/gru_cell/kernel'),
             _Var('gru_0/gru_cell/bias'),
             _Var('head/kernel'),
             _Var('head/bias')]
HEAD = [r'(^|/)head/']


def _grads():
  # Norms by hand: sqrt(3^2+4^2)=5; sqrt(0.3^2+0.4^2)=0.5; sqrt(6^2+8^2)=10;
  # sqrt(12^2+0+5^2)=13.
  return [tf.constant([[3.0, 4.0]]), tf.constant([0.3, 0.4]),
          tf.constant([[6.0], [8.0]]), tf.constant([12.0, 0.0, 5.0])]


def test_clips_each_variable_except_the_head():
  clipped, stats = clipping.clip_gradients(_grads(), VARIABLES, 2.0, HEAD)
  # 5 > 2: scaled to norm 2 keeping direction; 0.5 <= 2: untouched.
  np.testing.assert_allclose(clipped[0].numpy(), [[1.2, 1.6]], rtol=1e-6)
  np.testing.assert_allclose(clipped[1].numpy(), [0.3, 0.4], rtol=1e-6)
  # The head's norms (10 and 13) are far above 2 and stay as they are.
  np.testing.assert_allclose(clipped[2].numpy(), [[6.0], [8.0]])
  np.testing.assert_allclose(clipped[3].numpy(), [12.0, 0.0, 5.0])
  np.testing.assert_allclose(stats['grad_norm'].numpy(),
                             np.sqrt(25 + 0.25 + 100 + 169), rtol=1e-6)
  np.testing.assert_allclose(stats['clipped_grad_norm'].numpy(),
                             np.sqrt(4 + 0.25 + 100 + 169), rtol=1e-6)
  # One of four variables was scaled.
  assert stats['clipped_fraction'].numpy() == pytest.approx(0.25)


def test_without_exclusion_the_head_is_clipped_too():
  clipped, stats = clipping.clip_gradients(_grads(), VARIABLES, 2.0, [])
  for g in clipped:
    assert np.linalg.norm(g.numpy()) <= 2.0 + 1e-6
  assert stats['clipped_fraction'].numpy() == pytest.approx(0.75)


def test_clip_norm_zero_is_off():
  grads = _grads()
  clipped, stats = clipping.clip_gradients(grads, VARIABLES, 0.0, HEAD)
  for g, c in zip(grads, clipped):
    np.testing.assert_array_equal(g.numpy(), c.numpy())
  assert stats['clipped_fraction'].numpy() == 0.0


def test_exclusion_matches_real_model_paths():
  from seqmnist.model import network  # pylint: disable=g-import-not-at-top
  model = network.build(network.ModelConfig(units=8, batch_norm=True), (28, 28),
                       10, seed=0)
  excluded = [v.path for v in model.trainable_variables
              if clipping.excluded(v.path, HEAD)]
  assert excluded == ['head/kernel', 'head/bias']
