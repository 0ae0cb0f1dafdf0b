"""Building blocks shared by the project's models.

Every layer here is registered serializable under the 'dp_medtf' package.

Example:

  >>> norm = ScaleNorm()
  >>> norm(tf.ones([2, 4, 4, 64])).shape
  TensorShape([2, 4, 4, 64])
"""

from __future__ import annotations

import tensorflow as tf


def num_groups(channels: int) -> int:
  """GroupNorm groups for `channels`: min(32, C), reduced until it divides C."""
  groups = min(32, channels)
  while channels % groups:
    groups -= 1
  return groups


@tf.keras.utils.register_keras_serializable(package='dp_medtf')
class ScaleNorm(tf.keras.layers.GroupNormalization):
  """An affine GroupNorm placed after a residual addition.

  The ResNet-9 of Klause et al. (2022), used by the paper, re-normalises the
  sum of a residual block; the number of groups follows the input channels
  (min(32, C)) unless given.

  Args:
    groups: number of groups; None picks min(32, C) on build.
    **kwargs: passed to GroupNormalization.
  """

  def __init__(self, groups: int | None = None, **kwargs):
    self._auto_groups = groups is None
    super().__init__(groups=groups or 1, **kwargs)

  def build(self, input_shape):
    if self._auto_groups:
      self.groups = num_groups(int(input_shape[self.axis]))
    super().build(input_shape)

  def get_config(self):
    config = super().get_config()
    if self._auto_groups and not self.built:
      config['groups'] = None
    return config
