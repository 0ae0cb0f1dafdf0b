"""U-Net (Ronneberger et al., 2015; Cicek et al., 2016), the paper's model
for MSD Liver, with GroupNorm and Mish so that it suits DP training.

The layout follows the paper authors' U-Net (dptraining/models/unet.py of
their code): `levels` (4) levels with width, 2, 4 and 8 x width channels
(16/32/64/128 at the paper's width 16), each a block of two 3x3x3 convs with
bias, the first followed by GroupNorm with min(16, C) groups and the second
by GroupNorm with one group per channel, each then Mish; 2x max-pooling
without padding (odd sizes round down) between levels; a bottleneck block
with 16 x width channels (256); an up path where each level is a 2x2x2
stride-2 transposed conv with bias -> GroupNorm (min(16, C) groups) -> Mish,
reflect-padded at the end of any axis where it falls one short of the
level's skip (the volume's depth of 50 halves to 25, 12, 6, 3 and comes back
as 6, 12, 24 -> 25, 50), concatenated with the skip and followed by a block;
then a 1x1x1 conv with bias to the class logits. At width 16, one input
channel and 3 classes it has 5,648,371 parameters, as the authors' model.

Every convolution, transposed ones and the head included, is weight-centred
when centre_weights is True (layers.CentredConv3D etc.), as the authors'
configuration asks (conv and upconv 'convws_nw'). Their 3D centred conv
(ConvCentering3D in dptraining/models/layers.py) computes the centred kernel
but convolves with the raw one, so their 3D convs ran uncentred and only
their transposed convs centred; here the convs are centred as intended (as
in their 2D ConvCentering2D).

A 3D input (D, H, W, C) builds the 3D network; a 2D input (H, W, C) builds
the same network in 2D, for the slice mode of the MSD reader.

Example:

  >>> model = build((16, 16, 16, 1), num_classes=3, width=4)
  >>> model(tf.zeros([1, 16, 16, 16, 1])).shape
  TensorShape([1, 16, 16, 16, 3])
"""

from __future__ import annotations

import tensorflow as tf

from dp_medtf.models import layers

# Most groups of the GroupNorms after the first conv of a block and after a
# transposed conv (the authors' groups=16).
GROUPS = 16


def _norm_act(x: tf.Tensor, groups: int, name: str) -> tf.Tensor:
  x = tf.keras.layers.GroupNormalization(groups, name=f'{name}_norm')(x)
  return tf.keras.layers.Activation('mish', name=f'{name}_mish')(x)


def _block(x: tf.Tensor, channels: int, rank: int, centred: bool,
           name: str) -> tf.Tensor:
  """conv -> GroupNorm(min(16, C)) -> Mish -> conv -> GroupNorm(C) -> Mish."""
  conv = layers.conv_class(rank, centred)
  for i, groups in ((1, layers.num_groups(channels, GROUPS)), (2, channels)):
    x = conv(channels, 3, padding='same', name=f'{name}_conv{i}')(x)
    x = _norm_act(x, groups, f'{name}_{i}')
  return x


def _up(x: tf.Tensor, skip: tf.Tensor, channels: int, rank: int,
        centred: bool, name: str) -> tf.Tensor:
  """Transposed conv -> norm -> Mish, padded to the skip, concat, block."""
  transpose = layers.conv_class(rank, centred, transpose=True)
  x = transpose(channels, 2, strides=2, name=f'{name}_upconv')(x)
  x = _norm_act(x, layers.num_groups(channels, GROUPS), f'{name}_up')
  short = [int(s) - int(u) for u, s in zip(x.shape[1:-1], skip.shape[1:-1])]
  if any(short):
    x = layers.ReflectionPadding([(d // 2, d - d // 2) for d in short],
                                 name=f'{name}_pad')(x)
  x = tf.keras.layers.Concatenate(name=f'{name}_concat')([x, skip])
  return _block(x, channels, rank, centred, name)


def build(input_shape: tuple[int, ...], num_classes: int, width: int = 16,
          levels: int = 4, centre_weights: bool = True) -> tf.keras.Model:
  """Builds the U-Net.

  Args:
    input_shape: (D, H, W, C) for 3D or (H, W, C) for 2D; every spatial size
      at least 2**levels.
    num_classes: logits per voxel (3 for background, liver, tumour).
    width: channels of the first level (16 in the paper).
    levels: pooling steps (4, the authors' num_pool_layers).
    centre_weights: weight-centred convolutions (the authors' choice);
      False: plain ones.

  Returns:
    A functional Keras model mapping volumes [B, *spatial, C] to logits
    [B, *spatial, num_classes].

  Raises:
    ValueError: for an input that is neither 2D nor 3D, or too small.
  """
  rank = len(input_shape) - 1
  if rank not in (2, 3):
    raise ValueError('input_shape must be (D, H, W, C) or (H, W, C), got '
                     f'{input_shape}.')
  if min(input_shape[:-1]) < 2**levels:
    raise ValueError(f'input_shape {tuple(input_shape)}: every spatial size '
                     f'must be at least 2**levels = {2**levels}.')
  pool = tf.keras.layers.MaxPool3D if rank == 3 else tf.keras.layers.MaxPool2D
  inputs = tf.keras.Input(shape=input_shape)
  x = inputs
  skips = []
  for level in range(levels):
    x = _block(x, width * 2**level, rank, centre_weights, f'down{level + 1}')
    skips.append(x)
    x = pool(2, name=f'down{level + 1}_pool')(x)
  x = _block(x, width * 2**levels, rank, centre_weights, 'bottleneck')
  for level in reversed(range(levels)):
    x = _up(x, skips[level], width * 2**level, rank, centre_weights,
            f'up{level + 1}')
  head = layers.conv_class(rank, centre_weights)
  outputs = head(num_classes, 1, name='head')(x)
  return tf.keras.Model(inputs, outputs,
                        name='unet3d' if rank == 3 else 'unet2d')
