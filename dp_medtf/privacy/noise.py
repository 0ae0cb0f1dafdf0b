"""The Gaussian mechanism on a summed gradient.

Example:

  >>> gen = tf.random.Generator.from_seed(0)
  >>> noisy = add_gaussian_noise([tf.zeros([3])], stddev=0.0, generator=gen)
  >>> noisy[0].numpy().tolist()
  [0.0, 0.0, 0.0]
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf


def add_gaussian_noise(grads: Sequence[tf.Tensor], stddev: float | tf.Tensor,
                       generator: tf.random.Generator) -> list[tf.Tensor]:
  """Adds independent N(0, stddev^2) noise to every coordinate.

  Args:
    grads: the summed clipped gradient, one tensor per variable.
    stddev: the noise standard deviation, z * C for DP-SGD.
    generator: the random generator (its state belongs in the checkpoint).

  Returns:
    The noised gradient.
  """
  return [g + generator.normal(tf.shape(g), stddev=stddev, dtype=g.dtype)
          for g in grads]
