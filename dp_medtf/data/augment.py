"""Augmentation with multiplicity: K randomly flipped views of each example.

The K views of one example stay together ([B, K, ...]) so that their losses
are averaged before per-example clipping and one example stays one privacy
unit (De et al., 2022).

Example:

  >>> x = tf.zeros([4, 8, 8, 1])
  >>> views(x, multiplicity=3, flip_probs={1: 0.5}, seed=(0, 1)).shape
  TensorShape([4, 3, 8, 8, 1])
"""

from __future__ import annotations

from typing import Mapping

import tensorflow as tf


def views(x: tf.Tensor, multiplicity: int, flip_probs: Mapping[int, float],
          seed: tf.Tensor | tuple[int, int]) -> tf.Tensor:
  """Makes `multiplicity` augmented views of each example.

  Args:
    x: a batch [B, *spatial, C].
    multiplicity: K >= 1.
    flip_probs: spatial axis of one example (1 = first axis after the batch,
      so for images 1 flips vertically and 2 horizontally) -> probability
      that a view is flipped along it.
    seed: a stateless seed (two integers).

  Returns:
    [B, K, *spatial, C]; with K = 1 and no flips the input, unchanged.
  """
  out = tf.repeat(x[:, None], multiplicity, axis=1)
  batch_views = tf.shape(x)[0] * multiplicity
  rank = len(x.shape) + 1
  for i, (axis, prob) in enumerate(sorted(flip_probs.items())):
    if prob <= 0:
      continue
    draw = tf.random.stateless_uniform(
        [batch_views], seed=tf.stack([tf.cast(seed[0], tf.int32),
                                      tf.cast(seed[1], tf.int32) + i]))
    flip = tf.reshape(draw < prob, [-1, multiplicity] + [1] * (rank - 2))
    out = tf.where(flip, tf.reverse(out, axis=[axis + 1]), out)
  return out
