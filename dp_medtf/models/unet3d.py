"""U-Net (Ronneberger et al., 2015; Cicek et al., 2016), the paper's model
for MSD Liver, with GroupNorm and Mish so that it suits DP training.

Four levels with width, 2, 4 and 8 x width channels (16/32/64/128 at the
paper's width 16), each a block of two (3x3x3 conv -> GroupNorm -> Mish),
joined by 2x max-pooling; a bottleneck block with 16 x width channels (256);
an up path of 2x transposed convs, each followed by concatenation with the
level's skip and a block; a 1x1x1 conv to the class logits. Pooling rounds
odd sizes up and the up path crops back to the skip's size, so any input size
works (the recipe's depth of 50 halves to 25, 13, 7, 4). A 3D input
(D, H, W, C) builds the 3D network; a 2D input (H, W, C) builds the same
network in 2D, for the slice mode of the MSD reader.

Example:

  >>> model = build((8, 16, 16, 1), num_classes=3, width=4)
  >>> model(tf.zeros([1, 8, 16, 16, 1])).shape
  TensorShape([1, 8, 16, 16, 3])
"""

from __future__ import annotations

import tensorflow as tf

from dp_medtf.models import layers

LEVELS = 4


def _ops(rank: int):
  """(Conv, ConvTranspose, MaxPool, Cropping) classes for 2 or 3 dims."""
  k = tf.keras.layers
  if rank == 3:
    return k.Conv3D, k.Conv3DTranspose, k.MaxPool3D, k.Cropping3D
  return k.Conv2D, k.Conv2DTranspose, k.MaxPool2D, k.Cropping2D


def _block(x: tf.Tensor, channels: int, rank: int, name: str) -> tf.Tensor:
  conv = _ops(rank)[0]
  for i in (1, 2):
    x = conv(channels, 3, padding='same', use_bias=False,
             name=f'{name}_conv{i}')(x)
    x = tf.keras.layers.GroupNormalization(layers.num_groups(channels),
                                           name=f'{name}_norm{i}')(x)
    x = tf.keras.layers.Activation('mish', name=f'{name}_mish{i}')(x)
  return x


def _up(x: tf.Tensor, skip: tf.Tensor, channels: int, rank: int,
        name: str) -> tf.Tensor:
  """Transposed conv, crop to the skip's size, concatenate, block."""
  _, transpose, _, cropping = _ops(rank)
  x = transpose(channels, 2, strides=2, name=f'{name}_upconv')(x)
  excess = [int(a) - int(b) for a, b in zip(x.shape[1:-1], skip.shape[1:-1])]
  if any(excess):
    x = cropping(tuple((0, e) for e in excess), name=f'{name}_crop')(x)
  x = tf.keras.layers.Concatenate(name=f'{name}_concat')([x, skip])
  return _block(x, channels, rank, name)


def build(input_shape: tuple[int, ...], num_classes: int,
          width: int = 16) -> tf.keras.Model:
  """Builds the U-Net.

  Args:
    input_shape: (D, H, W, C) for 3D or (H, W, C) for 2D.
    num_classes: logits per voxel (3 for background, liver, tumour).
    width: channels of the first level (16 in the paper).

  Returns:
    A functional Keras model mapping volumes [B, *spatial, C] to logits
    [B, *spatial, num_classes].

  Raises:
    ValueError: for an input that is neither 2D nor 3D.
  """
  rank = len(input_shape) - 1
  if rank not in (2, 3):
    raise ValueError('input_shape must be (D, H, W, C) or (H, W, C), got '
                     f'{input_shape}.')
  conv, _, pool, _ = _ops(rank)
  inputs = tf.keras.Input(shape=input_shape)
  x = inputs
  skips = []
  for level in range(LEVELS):
    x = _block(x, width * 2**level, rank, f'down{level + 1}')
    skips.append(x)
    x = pool(2, padding='same', name=f'down{level + 1}_pool')(x)
  x = _block(x, width * 2**LEVELS, rank, 'bottleneck')
  for level in reversed(range(LEVELS)):
    x = _up(x, skips[level], width * 2**level, rank, f'up{level + 1}')
  outputs = conv(num_classes, 1, name='head')(x)
  return tf.keras.Model(inputs, outputs,
                        name='unet3d' if rank == 3 else 'unet2d')
