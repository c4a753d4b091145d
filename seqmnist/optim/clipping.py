"""Per-variable gradient clipping that leaves chosen variables (the head) alone.

"Building RNN Models to Solve Sequential MNIST" clips each recurrent
variable's gradient to an L2 norm of 2.0 and never clips the dense head:

    tf.clip_by_norm(grad, 2.) if not var.name.startswith("dense") else grad

This module does the same on the *aggregated* gradient (the caller all-reduces
first), so the update does not depend on the number of replicas, and reports
what the clipping did for TensorBoard.
"""

import re
from typing import Sequence

import tensorflow as tf


def excluded(variable_path: str, patterns: Sequence[str]) -> bool:
  """Whether a variable (by its Keras path) is exempt from clipping."""
  return any(re.search(p, variable_path) for p in patterns)


def clip_gradients(grads, variables, clip_norm: float,
                   exclude: Sequence[str]):
  """Clips each gradient to `clip_norm` except those of excluded variables.

  Args:
    grads: gradients, one per variable (already aggregated over replicas).
    variables: the variables; their `.path` is matched against `exclude`.
    clip_norm: max L2 norm of each variable's gradient; 0 turns clipping off.
    exclude: regular expressions; a variable whose path matches any of them
      is never clipped.

  Returns:
    (clipped gradients, stats) where stats holds scalar tensors
    `grad_norm` (global norm before), `clipped_grad_norm` (after) and
    `clipped_fraction` (the fraction of variables whose gradient was scaled).
  """
  norms = [tf.norm(g) for g in grads]
  clipped, was_clipped = [], []
  for g, v, norm in zip(grads, variables, norms):
    if clip_norm > 0 and not excluded(v.path, exclude):
      clipped.append(tf.clip_by_norm(g, clip_norm))
      was_clipped.append(tf.cast(norm > clip_norm, tf.float32))
    else:
      clipped.append(g)
      was_clipped.append(tf.constant(0.0))
  stats = {
      'grad_norm': tf.linalg.global_norm(grads),
      'clipped_grad_norm': tf.linalg.global_norm(clipped),
      'clipped_fraction': tf.reduce_mean(tf.stack(was_clipped)),
  }
  return clipped, stats
