"""ResNet-9 with GroupNorm and ScaleNorm, the paper's private classifier.

Conv blocks are 3x3 conv without bias -> GroupNorm (min(32, C) groups) ->
Mish [-> 2x2 max-pool]. Channels (at width 64): 64, 128 + pool,
residual(128, 128) + ScaleNorm, 256 + pool, 256 + pool, residual(256, 256) +
ScaleNorm, then average pooling to 2x2 (the authors' adaptive pooling: stride
S // 2, window S - S // 2 on a side of S) and a dense head. The convs are
weight-centred (layers.CentredConv2D), as in the paper authors' recipes
(conv 'convws_nw'), unless centre_weights is False. No BatchNorm: every
example's output depends on that example alone, as per-example clipping needs.

Example:

  >>> model = build((32, 32, 3), num_classes=2, width=16)
  >>> model(tf.zeros([1, 32, 32, 3])).shape
  TensorShape([1, 2])
"""

from __future__ import annotations

import tensorflow as tf

from dp_medtf.models import layers


def _conv_block(x: tf.Tensor, channels: int, pool: bool, centred: bool,
                name: str):
  conv = layers.conv_class(2, centred)
  x = conv(channels, 3, padding='same', use_bias=False, name=f'{name}_conv')(x)
  x = tf.keras.layers.GroupNormalization(layers.num_groups(channels),
                                         name=f'{name}_norm')(x)
  x = tf.keras.layers.Activation('mish', name=f'{name}_mish')(x)
  if pool:
    x = tf.keras.layers.MaxPool2D(2, name=f'{name}_pool')(x)
  return x


def _residual(x: tf.Tensor, channels: int, centred: bool, name: str):
  y = _conv_block(x, channels, False, centred, f'{name}a')
  y = _conv_block(y, channels, False, centred, f'{name}b')
  x = tf.keras.layers.Add(name=f'{name}_add')([x, y])
  return layers.ScaleNorm(name=f'{name}_scalenorm')(x)


def build(input_shape: tuple[int, ...], num_classes: int,
          width: int = 64, centre_weights: bool = True) -> tf.keras.Model:
  """Builds ResNet-9.

  Args:
    input_shape: (H, W, C); H and W divisible by 16.
    num_classes: number of output logits.
    width: channels of the first block (64 in the paper); the others scale.
    centre_weights: weight-centred convolutions (the authors' choice);
      False: plain ones.

  Returns:
    A functional Keras model mapping images to logits.
  """
  c1, c2, c3 = width, 2 * width, 4 * width
  inputs = tf.keras.Input(shape=input_shape)
  x = _conv_block(inputs, c1, False, centre_weights, 'block1')
  x = _conv_block(x, c2, True, centre_weights, 'block2')
  x = _residual(x, c2, centre_weights, 'res1')
  x = _conv_block(x, c3, True, centre_weights, 'block3')
  x = _conv_block(x, c3, True, centre_weights, 'block4')
  x = _residual(x, c3, centre_weights, 'res2')
  strides = [max(s // 2, 1) for s in x.shape[1:3]]
  x = tf.keras.layers.AveragePooling2D(
      [s - t if s > 1 else 1 for s, t in zip(x.shape[1:3], strides)],
      strides, name='avgpool')(x)
  x = tf.keras.layers.Flatten(name='flatten')(x)
  outputs = tf.keras.layers.Dense(num_classes, name='head')(x)
  return tf.keras.Model(inputs, outputs, name='resnet9')
