"""Wide ResNet (Zagoruyko & Komodakis, 2016), the paper's non-private
RadImageNet model (WRN-40-4), with a configurable, DP-compatible norm.

Pre-activation basic blocks: norm -> activation -> 3x3 conv -> norm ->
activation -> [dropout] -> 3x3 conv, plus the identity (or a 1x1 conv of the
pre-activated input where the shape changes). Depth d = 6n + 4 gives three
groups of n blocks with width, 2 width and 4 width channels (width = 16 k for
WRN-d-k: the recipes' width 64 gives WRN-40-4), strides 1, 2, 2, after a 3x3
stem conv with 16 channels; then norm -> activation -> global average pooling
-> dense. As in the paper authors' model (dptraining/models/wide_resnet.py)
and their RadImageNet recipe: convs without bias, weight-centred
(layers.CentredConv2D, their 'convws_nw') unless centre_weights is False,
initialised from N(0, 2 / (k^2 C_out)); Mish. The norm defaults to GroupNorm
(min(32, C) groups), so that every example's output depends on that example
alone, as per-example clipping needs; 'batch' (the authors' non-private
choice) is there for non-private baselines only (the DP step refuses it:
layer_checks).

Example:

  >>> model = build((32, 32, 3), num_classes=10, depth=16, width=16)
  >>> model(tf.zeros([2, 32, 32, 3])).shape
  TensorShape([2, 10])
"""

from __future__ import annotations

import tensorflow as tf

from dp_medtf.models import layers

NORMS = ('group', 'layer', 'batch')


def _norm(kind: str, channels: int, name: str) -> tf.keras.layers.Layer:
  if kind == 'group':
    return tf.keras.layers.GroupNormalization(layers.num_groups(channels),
                                              name=name)
  if kind == 'layer':
    return tf.keras.layers.GroupNormalization(1, name=name)
  return tf.keras.layers.BatchNormalization(name=name)


def _conv(channels: int, kernel: int, stride: int, centred: bool, name: str):
  # The authors' N(0, 2 / (k^2 C_out)) initialisation.
  init = tf.keras.initializers.VarianceScaling(2.0, 'fan_out',
                                               'untruncated_normal')
  return layers.conv_class(2, centred)(
      channels, kernel, strides=stride, padding='same', use_bias=False,
      kernel_initializer=init, name=name)


def _block(x: tf.Tensor, channels: int, stride: int, norm: str,
           activation: str, dropout: float, centred: bool,
           name: str) -> tf.Tensor:
  """A pre-activation basic block."""
  pre = _norm(norm, x.shape[-1], f'{name}_norm1')(x)
  pre = tf.keras.layers.Activation(activation, name=f'{name}_act1')(pre)
  y = _conv(channels, 3, stride, centred, f'{name}_conv1')(pre)
  y = _norm(norm, channels, f'{name}_norm2')(y)
  y = tf.keras.layers.Activation(activation, name=f'{name}_act2')(y)
  if dropout:
    y = tf.keras.layers.Dropout(dropout, name=f'{name}_dropout')(y)
  y = _conv(channels, 3, 1, centred, f'{name}_conv2')(y)
  if stride != 1 or x.shape[-1] != channels:
    x = _conv(channels, 1, stride, centred, f'{name}_shortcut')(pre)
  return tf.keras.layers.Add(name=f'{name}_add')([x, y])


def build(input_shape: tuple[int, ...], num_classes: int, depth: int = 40,
          width: int = 64, norm: str = 'group', activation: str = 'mish',
          dropout: float = 0.0, stem_stride: int = 1,
          centre_weights: bool = True) -> tf.keras.Model:
  """Builds WRN-depth-(width / 16).

  Args:
    input_shape: (H, W, C).
    num_classes: number of output logits.
    depth: 6n + 4 (40 in the paper).
    width: channels of the first group, 16 k for the widen factor k (64 in
      the paper: WRN-40-4); the others are 2 and 4 times as wide.
    norm: one of NORMS; 'group' (default) and 'layer' suit DP training;
      'batch' (BatchNormalization) trains only without privacy: DPStep
      refuses it, naming the first BatchNormalization layer.
    activation: a Keras activation name ('mish' as the authors; 'relu' as
      the original WRN).
    dropout: dropout rate inside blocks.
    stem_stride: stride of the stem conv; 2 or 4 cut the cost of large
      inputs such as 224 x 224 (1 keeps the original CIFAR design).
    centre_weights: weight-centred convolutions (the authors' choice);
      False: plain ones.

  Returns:
    A functional Keras model mapping images to logits.

  Raises:
    ValueError: for a depth not of the form 6n + 4, a width below 1 or an
      unknown norm.
  """
  if depth < 10 or (depth - 4) % 6:
    raise ValueError(f'depth must be 6n + 4 with n >= 1, got {depth}.')
  if width < 1:
    raise ValueError(f'width must be a positive integer, got {width}.')
  if norm not in NORMS:
    raise ValueError(f'Unknown norm {norm!r}; choose one of {NORMS}.')
  blocks = (depth - 4) // 6
  inputs = tf.keras.Input(shape=input_shape)
  x = _conv(16, 3, stem_stride, centre_weights, 'stem_conv')(inputs)
  for group, (channels, stride) in enumerate(
      ((width, 1), (2 * width, 2), (4 * width, 2))):
    for b in range(blocks):
      x = _block(x, channels, stride if b == 0 else 1, norm, activation,
                 dropout, centre_weights, f'group{group + 1}_block{b + 1}')
  x = _norm(norm, x.shape[-1], 'final_norm')(x)
  x = tf.keras.layers.Activation(activation, name='final_act')(x)
  x = tf.keras.layers.GlobalAveragePooling2D(name='avgpool')(x)
  outputs = tf.keras.layers.Dense(num_classes, name='head')(x)
  return tf.keras.Model(inputs, outputs, name=f'wideresnet{depth}_w{width}')
