"""The imprint block of a malicious server (Fowl et al. 2022), as a Keras layer.

The block measures an image's mean brightness m with N linear "bins" that
share one weight vector (1/P for each of the P pixels) and differ in their
bias, -t_i, with thresholds t_0 < t_1 < ... < t_{N-1} at quantiles of the
brightness distribution. After a ReLU, bin i is active exactly when m > t_i.
The mean of the bin activations is added to every pixel of the input, so the
model behind the block still computes on the image (shifted in brightness),
and every active bin receives the same non-zero upstream gradient. At batch
size 1, each active bin's weight gradient is then the image times its bias
gradient, which is what `dp_medtf.attacks.recovery` divides out.

Example:

  >>> block = ImprintBlock(num_bins=4)
  >>> block(tf.zeros([2, 8, 8, 3])).shape
  TensorShape([2, 8, 8, 3])
  >>> attacked = imprint_model(tf.keras.Sequential(
  ...     [tf.keras.Input((8, 8, 3)), tf.keras.layers.Flatten(),
  ...      tf.keras.layers.Dense(2)]))
  >>> attacked.layers[1].name
  'imprint'
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence

import numpy as np
import tensorflow as tf

# The lowest threshold sits this many standard deviations below the mean, so
# that the first bin is active for every image and each image leaves an
# imprint.
_LOWEST_THRESHOLD_SIGMAS = 10.0


def gaussian_thresholds(num_bins: int, mean: float = 0.5,
                        stddev: float = 0.25) -> list[float]:
  """Bin thresholds at the quantiles i / N of N(mean, stddev^2).

  Args:
    num_bins: number of bins N >= 1.
    mean: assumed mean of the image brightness.
    stddev: assumed standard deviation of the image brightness (> 0).

  Returns:
    N increasing thresholds; the first is far below the mean (always active).
  """
  if num_bins < 1:
    raise ValueError(f'num_bins must be at least 1, got {num_bins}.')
  if not stddev > 0:
    raise ValueError(f'stddev must be positive, got {stddev}.')
  normal = statistics.NormalDist(mean, stddev)
  return [mean - _LOWEST_THRESHOLD_SIGMAS * stddev] + [
      normal.inv_cdf(i / num_bins) for i in range(1, num_bins)]


def data_thresholds(images: np.ndarray, num_bins: int) -> list[float]:
  """Bin thresholds at the empirical quantiles i / N of images' brightness.

  Args:
    images: [M, ...] images whose mean brightness defines the distribution.
    num_bins: number of bins N >= 1.

  Returns:
    N non-decreasing thresholds; the first lies below every image.
  """
  if num_bins < 1:
    raise ValueError(f'num_bins must be at least 1, got {num_bins}.')
  images = np.asarray(images, np.float64)
  brightness = images.reshape(len(images), -1).mean(axis=1)
  spread = float(brightness.std()) or 1.0
  lowest = float(brightness.min()) - _LOWEST_THRESHOLD_SIGMAS * spread
  quantiles = np.quantile(brightness, np.arange(1, num_bins) / num_bins)
  return [lowest] + [float(t) for t in quantiles]


@tf.keras.utils.register_keras_serializable(package='dp_medtf')
class ImprintBlock(tf.keras.layers.Layer):
  """Brightness bins whose gradients imprint the input, for 2D and 3D inputs.

  Input and output are [B, H, W, C] or [B, D, H, W, C] (any rank >= 2).
  output = x + mean_i ReLU(mean(x) - t_i), broadcast over all pixels; the
  kernel [P, N] holds 1/P and the bias [N] holds -t_i, both trainable.

  Args:
    num_bins: number of bins N.
    thresholds: the N non-decreasing thresholds t_i; None uses
      gaussian_thresholds(num_bins, brightness_mean, brightness_stddev).
      data_thresholds() gives thresholds taken from data.
    brightness_mean: mean of the assumed Gaussian brightness distribution.
    brightness_stddev: its standard deviation.
    **kwargs: passed to tf.keras.layers.Layer.
  """

  def __init__(self, num_bins: int = 10,
               thresholds: Sequence[float] | None = None,
               brightness_mean: float = 0.5, brightness_stddev: float = 0.25,
               **kwargs):
    kwargs.setdefault('name', 'imprint')
    super().__init__(**kwargs)
    if thresholds is None:
      thresholds = gaussian_thresholds(num_bins, brightness_mean,
                                       brightness_stddev)
    thresholds = [float(t) for t in thresholds]
    if len(thresholds) != num_bins:
      raise ValueError(f'thresholds has {len(thresholds)} entries for '
                       f'num_bins={num_bins}.')
    if any(not math.isfinite(t) for t in thresholds):
      raise ValueError(f'thresholds must be finite, got {thresholds}.')
    if any(b < a for a, b in zip(thresholds, thresholds[1:])):
      raise ValueError(f'thresholds must not decrease, got {thresholds}.')
    self.num_bins = int(num_bins)
    self.thresholds = thresholds
    self.brightness_mean = float(brightness_mean)
    self.brightness_stddev = float(brightness_stddev)

  def build(self, input_shape):
    input_shape = tf.TensorShape(input_shape)
    if input_shape.rank is None or input_shape.rank < 2:
      raise ValueError(
          f'ImprintBlock needs [B, ...] inputs, got {input_shape}.')
    if not input_shape[1:].is_fully_defined():
      raise ValueError(
          f'ImprintBlock needs a fully defined image shape, got {input_shape}.')
    num_pixels = int(np.prod(input_shape[1:]))
    self.kernel = self.add_weight(
        name='kernel', shape=(num_pixels, self.num_bins),
        initializer=tf.keras.initializers.Constant(1.0 / num_pixels),
        trainable=True)
    self.bias = self.add_weight(
        name='bias', shape=(self.num_bins,),
        initializer=tf.keras.initializers.Constant(
            [-t for t in self.thresholds]),
        trainable=True)
    super().build(input_shape)

  def bins(self, inputs: tf.Tensor) -> tf.Tensor:
    """The bin activations ReLU(W^T x + b), [B, N]."""
    flat = tf.reshape(inputs, [tf.shape(inputs)[0], -1])
    return tf.nn.relu(tf.matmul(flat, self.kernel) + self.bias)

  def call(self, inputs: tf.Tensor) -> tf.Tensor:
    back = tf.reduce_mean(self.bins(inputs), axis=-1)
    back = tf.reshape(back, [-1] + [1] * (inputs.shape.rank - 1))
    return inputs + back

  def compute_output_shape(self, input_shape):
    return tf.TensorShape(input_shape)

  def get_config(self):
    config = super().get_config()
    config.update(num_bins=self.num_bins, thresholds=list(self.thresholds),
                  brightness_mean=self.brightness_mean,
                  brightness_stddev=self.brightness_stddev)
    return config


def imprint_model(model: tf.keras.Model, num_bins: int = 10,
                  thresholds: Sequence[float] | None = None,
                  name: str | None = None) -> tf.keras.Model:
  """Prepends an ImprintBlock to a Keras model.

  Args:
    model: any built Keras model with one input of fully defined shape.
    num_bins: number of bins of the block.
    thresholds: bin thresholds (see ImprintBlock); None for Gaussian ones.
    name: name of the new model; defaults to 'imprinted_<model.name>'.

  Returns:
    A functional model: input -> ImprintBlock (named 'imprint') -> model.
  """
  inputs = tf.keras.Input(shape=model.input_shape[1:])
  block = ImprintBlock(num_bins=num_bins, thresholds=thresholds,
                       name='imprint')
  outputs = model(block(inputs))
  return tf.keras.Model(inputs, outputs,
                        name=name or f'imprinted_{model.name}')


def find_imprint_block(model: tf.keras.Model) -> ImprintBlock:
  """The ImprintBlock among a model's top-level layers.

  Raises:
    ValueError: if the model has none or several.
  """
  blocks = [l for l in model.layers if isinstance(l, ImprintBlock)]
  if len(blocks) != 1:
    raise ValueError(
        f'Expected one ImprintBlock in {model.name}, found {len(blocks)}.')
  return blocks[0]
