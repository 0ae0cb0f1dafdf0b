"""Building blocks shared by the project's models.

Every layer here is registered serializable under the 'dp_medtf' package.

Weight-centred convolutions (the paper authors' "convws_nw" convolutions)
subtract from each kernel, before convolving, its mean over every axis but
the last: for a convolution the mean over the spatial and input-channel axes
of each output channel's filter; for a transposed convolution (kernel
[*k, filters, in]) the mean over the spatial and filter axes of each input
channel's slice, as in the authors' transposed convolutions. The kernel
variable keeps its raw value; gradients reach it through the centring (a
projection), and DP clipping sees that projected gradient
(dp_medtf.privacy.layer_rules).

Example:

  >>> norm = ScaleNorm()
  >>> norm(tf.ones([2, 4, 4, 64])).shape
  TensorShape([2, 4, 4, 64])
  >>> conv = CentredConv2D(8, 3, padding='same')
  >>> conv(tf.ones([1, 5, 5, 3])).shape
  TensorShape([1, 5, 5, 8])
"""

from __future__ import annotations

import math

from keras.src.utils import conv_utils
import tensorflow as tf


def num_groups(channels: int, limit: int = 32) -> int:
  """GroupNorm groups for `channels`: min(limit, C), reduced until it divides
  C."""
  groups = min(limit, channels)
  while channels % groups:
    groups -= 1
  return groups


def centre_kernel(kernel: tf.Tensor) -> tf.Tensor:
  """The kernel minus its mean over every axis but the last."""
  axes = list(range(kernel.shape.rank - 1))
  return kernel - tf.reduce_mean(kernel, axis=axes, keepdims=True)


class _Centred:
  """Mixin: the convolution runs on centre_kernel(kernel).

  Raises (on build) when each centred slice has a single entry: it would be
  identically zero, as the authors' code also refuses.
  """

  def build(self, input_shape):
    super().build(input_shape)  # pytype: disable=attribute-error
    if math.prod(self.kernel.shape[:-1]) < 2:
      raise ValueError(
          f'Layer {self.name} ({type(self).__name__}): a centred kernel needs '
          'more than one entry per slice (kernel size 1 on one channel would '
          'be zero); use a plain convolution.')


@tf.keras.utils.register_keras_serializable(package='dp_medtf')
class CentredConv2D(_Centred, tf.keras.layers.Conv2D):
  """Conv2D on its kernel centred per output channel (see module doc)."""

  def convolution_op(self, inputs, kernel):
    return super().convolution_op(inputs, centre_kernel(kernel))


@tf.keras.utils.register_keras_serializable(package='dp_medtf')
class CentredConv3D(_Centred, tf.keras.layers.Conv3D):
  """Conv3D on its kernel centred per output channel (see module doc)."""

  def convolution_op(self, inputs, kernel):
    return super().convolution_op(inputs, centre_kernel(kernel))


class _CentredTranspose(_Centred):
  """Mixin for Keras' transposed convolutions, whose call() reads self.kernel
  directly (there is no convolution_op to override): the same computation,
  channels_last and undilated, on the centred kernel."""

  def build(self, input_shape):
    if self.data_format != 'channels_last' or any(
        d != 1 for d in self.dilation_rate):
      raise ValueError(f'Layer {self.name} ({type(self).__name__}): only '
                       'channels_last and dilation_rate 1 are supported.')
    super().build(input_shape)

  def call(self, inputs):
    shape = tf.shape(inputs)
    rank = len(self.kernel_size)
    output_padding = self.output_padding or (None,) * rank
    spatial = [conv_utils.deconv_output_length(
        inputs.shape[i + 1] if inputs.shape[i + 1] is not None else
        shape[i + 1], self.kernel_size[i], padding=self.padding,
        output_padding=output_padding[i], stride=self.strides[i])
               for i in range(rank)]
    outputs = tf.nn.conv_transpose(
        inputs, centre_kernel(self.kernel),
        tf.stack([shape[0], *spatial, self.filters]), self.strides,
        padding=self.padding.upper())
    outputs.set_shape(self.compute_output_shape(inputs.shape))
    if self.use_bias:
      outputs = tf.nn.bias_add(outputs, self.bias)
    return self.activation(outputs) if self.activation is not None else (
        outputs)


@tf.keras.utils.register_keras_serializable(package='dp_medtf')
class CentredConv2DTranspose(_CentredTranspose,
                             tf.keras.layers.Conv2DTranspose):
  """Conv2DTranspose on its kernel centred per input channel."""


@tf.keras.utils.register_keras_serializable(package='dp_medtf')
class CentredConv3DTranspose(_CentredTranspose,
                             tf.keras.layers.Conv3DTranspose):
  """Conv3DTranspose on its kernel centred per input channel."""


@tf.keras.utils.register_keras_serializable(package='dp_medtf')
class ReflectionPadding(tf.keras.layers.Layer):
  """Reflect-pads the spatial axes of channels-last inputs.

  As numpy's 'reflect' mode (the edge is not repeated), built from slices
  and reversals so that tf.vectorized_map batches it (MirrorPad has no
  vectorized form).

  Args:
    padding: one (before, after) pair per spatial axis, each at most the
      axis' size - 1.
    **kwargs: passed to Layer.

  Example:

    >>> ReflectionPadding([(0, 1)])(tf.constant([[[1.], [2.], [3.]]]))[0, :, 0]
    <tf.Tensor: shape=(4,), dtype=float32, numpy=array([1., 2., 3., 2.], ...)>
  """

  def __init__(self, padding, **kwargs):
    super().__init__(**kwargs)
    self.padding = tuple(tuple(int(p) for p in pair) for pair in padding)

  def call(self, inputs):
    x = inputs
    for axis, (before, after) in enumerate(self.padding, start=1):
      size = x.shape[axis]
      if max(before, after) >= size:
        raise ValueError(f'Layer {self.name}: padding {(before, after)} '
                         f'needs an axis longer than {max(before, after)}, '
                         f'got {size}.')
      parts = [x]
      if before:
        parts.insert(0, tf.reverse(_axis_slice(x, axis, 1, before + 1),
                                   [axis]))
      if after:
        parts.append(tf.reverse(
            _axis_slice(x, axis, size - 1 - after, size - 1), [axis]))
      x = tf.concat(parts, axis) if len(parts) > 1 else x
    return x

  def compute_output_shape(self, input_shape):
    shape = list(tf.TensorShape(input_shape))
    for axis, (before, after) in enumerate(self.padding, start=1):
      if shape[axis] is not None:
        shape[axis] += before + after
    return tf.TensorShape(shape)

  def get_config(self):
    return {**super().get_config(), 'padding': self.padding}


def _axis_slice(x: tf.Tensor, axis: int, start: int, stop: int) -> tf.Tensor:
  index = [slice(None)] * x.shape.rank
  index[axis] = slice(start, stop)
  return x[tuple(index)]


@tf.keras.utils.register_keras_serializable(package='dp_medtf')
class BinaryLogits(tf.keras.layers.Layer):
  """Maps one logit z [..., 1] (the log-odds of class 1) to [0, z] [..., 2].

  softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)], so the softmax
  cross-entropy of these logits is the sigmoid cross-entropy of z, and
  argmax predicts class 1 exactly when z > 0: a single-logit head trains and
  evaluates through the two-class loss and metrics unchanged.

  Example:

    >>> BinaryLogits()(tf.constant([[-1.5]]))
    <tf.Tensor: shape=(1, 2), dtype=float32, numpy=array([[ 0. , -1.5]], ...)>
  """

  def call(self, inputs):
    if inputs.shape[-1] != 1:
      raise ValueError(f'Layer {self.name}: needs one logit, got '
                       f'{inputs.shape[-1]}.')
    return tf.concat([tf.zeros_like(inputs), inputs], axis=-1)

  def compute_output_shape(self, input_shape):
    return tf.TensorShape(input_shape)[:-1].concatenate([2])


CENTRED_CONVS = (CentredConv2D, CentredConv3D, CentredConv2DTranspose,
                 CentredConv3DTranspose)


def conv_class(rank: int, centred: bool, transpose: bool = False) -> type:
  """The (transposed) convolution class for 2 or 3 spatial dims.

  Args:
    rank: 2 or 3.
    centred: a weight-centred convolution, else Keras' plain one.
    transpose: the transposed convolution.

  Example:

    >>> conv_class(3, True, transpose=True).__name__
    'CentredConv3DTranspose'
  """
  k = tf.keras.layers
  table = {(2, False): (k.Conv2D, k.Conv2DTranspose),
           (3, False): (k.Conv3D, k.Conv3DTranspose),
           (2, True): (CentredConv2D, CentredConv2DTranspose),
           (3, True): (CentredConv3D, CentredConv3DTranspose)}
  return table[(rank, centred)][int(transpose)]


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
