"""ResNet-9 with GroupNorm and ScaleNorm, the paper's private classifier.

Conv blocks are 3x3 conv without bias -> GroupNorm (min(32, C) groups) ->
Mish [-> 2x2 max-pool]. Channels (at width 64): 64, 128 + pool,
residual(128, 128) + ScaleNorm, 256 + pool, 256 + pool, residual(256, 256) +
ScaleNorm, then average pooling to 2x2 and a dense head. No BatchNorm: every
example's output depends on that example alone, as per-example clipping needs.

Example:

  >>> model = build((32, 32, 3), num_classes=2, width=16)
  >>> model(tf.zeros([1, 32, 32, 3])).shape
  TensorShape([1, 2])
"""

from __future__ import annotations

import tensorflow as tf

from dp_medtf.models import layers


def _conv_block(x: tf.Tensor, channels: int, pool: bool, name: str):
  x = tf.keras.layers.Conv2D(channels, 3, padding='same', use_bias=False,
                             name=f'{name}_conv')(x)
  x = tf.keras.layers.GroupNormalization(layers.num_groups(channels),
                                         name=f'{name}_norm')(x)
  x = tf.keras.layers.Activation('mish', name=f'{name}_mish')(x)
  if pool:
    x = tf.keras.layers.MaxPool2D(2, name=f'{name}_pool')(x)
  return x


def _residual(x: tf.Tensor, channels: int, name: str):
  y = _conv_block(x, channels, False, f'{name}a')
  y = _conv_block(y, channels, False, f'{name}b')
  x = tf.keras.layers.Add(name=f'{name}_add')([x, y])
  return layers.ScaleNorm(name=f'{name}_scalenorm')(x)


def build(input_shape: tuple[int, ...], num_classes: int,
          width: int = 64) -> tf.keras.Model:
  """Builds ResNet-9.

  Args:
    input_shape: (H, W, C); H and W divisible by 16.
    num_classes: number of output logits.
    width: channels of the first block (64 in the paper); the others scale.

  Returns:
    A functional Keras model mapping images to logits.
  """
  c1, c2, c3 = width, 2 * width, 4 * width
  inputs = tf.keras.Input(shape=input_shape)
  x = _conv_block(inputs, c1, False, 'block1')
  x = _conv_block(x, c2, True, 'block2')
  x = _residual(x, c2, 'res1')
  x = _conv_block(x, c3, True, 'block3')
  x = _conv_block(x, c3, True, 'block4')
  x = _residual(x, c3, 'res2')
  h, w = x.shape[1], x.shape[2]
  x = tf.keras.layers.AveragePooling2D((max(h // 2, 1), max(w // 2, 1)),
                                       name='avgpool')(x)
  x = tf.keras.layers.Flatten(name='flatten')(x)
  outputs = tf.keras.layers.Dense(num_classes, name='head')(x)
  return tf.keras.Model(inputs, outputs, name='resnet9')
