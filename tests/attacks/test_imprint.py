"""Tests of the ImprintBlock layer and imprint_model."""

import os
import tempfile

import numpy as np
import pytest
import tensorflow as tf

from dp_medtf.attacks import imprint
from tests import layer_harness


@pytest.mark.parametrize('input_shape', [(12, 12, 3), (4, 8, 8, 1)],
                         ids=['2d', '3d'])
def test_layer_harness(input_shape):
  layer_harness.check_layer(lambda: imprint.ImprintBlock(num_bins=4),
                            input_shape)


def test_forward_adds_mean_bin_activation_to_every_pixel():
  thresholds = [-1.0, 0.3, 0.5]
  block = imprint.ImprintBlock(num_bins=3, thresholds=thresholds)
  x = tf.constant([[[[0.2], [0.6]]]])  # [1, 1, 2, 1], brightness 0.4.
  # Bins: ReLU(0.4 + 1) = 1.4, ReLU(0.4 - 0.3) = 0.1, ReLU(0.4 - 0.5) = 0,
  # whose mean 0.5 is added to both pixels.
  np.testing.assert_allclose(block(x).numpy(), x.numpy() + 0.5, atol=1e-6)
  np.testing.assert_allclose(block.bins(x).numpy(), [[1.4, 0.1, 0.0]],
                             atol=1e-6)


def test_gaussian_thresholds_are_quantiles():
  t = imprint.gaussian_thresholds(4, mean=0.5, stddev=0.1)
  assert len(t) == 4
  assert t[0] < 0.5 - 5 * 0.1  # Always active for realistic images.
  np.testing.assert_allclose(t[1:], [0.5 - 0.0674490, 0.5, 0.5 + 0.0674490],
                             atol=1e-6)
  block = imprint.ImprintBlock(num_bins=4, brightness_mean=0.5,
                               brightness_stddev=0.1)
  block.build((None, 4, 4, 1))
  np.testing.assert_allclose(block.bias.numpy(), -np.array(t), atol=1e-6)
  np.testing.assert_allclose(block.kernel.numpy(), np.full((16, 4), 1 / 16))


def test_data_thresholds_split_brightness_evenly():
  rng = np.random.default_rng(0)
  images = rng.random((200, 4, 4, 1)) * rng.random((200, 1, 1, 1))
  t = imprint.data_thresholds(images, 5)
  brightness = images.mean(axis=(1, 2, 3))
  assert t[0] < brightness.min()
  assert all(a <= b for a, b in zip(t, t[1:]))
  counts = np.histogram(brightness, bins=list(t) + [np.inf])[0]
  np.testing.assert_array_equal(counts, [40] * 5)


def test_config_round_trip_keeps_custom_thresholds():
  block = imprint.ImprintBlock(num_bins=3, thresholds=[-2.0, 0.25, 0.75],
                               name='custom')
  clone = tf.keras.layers.deserialize(tf.keras.layers.serialize(block))
  assert isinstance(clone, imprint.ImprintBlock)
  assert clone.thresholds == [-2.0, 0.25, 0.75]
  assert clone.num_bins == 3 and clone.name == 'custom'


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_bins=3, thresholds=[0.0, 1.0]), 'entries'),
    (dict(num_bins=2, thresholds=[0.5, 0.1]), 'decrease'),
    (dict(num_bins=2, thresholds=[0.0, np.inf]), 'finite'),
    (dict(num_bins=0), 'num_bins'),
])
def test_rejects_bad_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    imprint.ImprintBlock(**kwargs)


def _small_model(input_shape):
  inputs = tf.keras.Input(input_shape)
  conv = (tf.keras.layers.Conv3D if len(input_shape) == 4
          else tf.keras.layers.Conv2D)
  x = conv(2, 3, activation='relu')(inputs)
  x = tf.keras.layers.Flatten()(x)
  return tf.keras.Model(inputs, tf.keras.layers.Dense(2)(x), name='small')


@pytest.mark.parametrize('input_shape', [(8, 8, 3), (4, 8, 8, 1)],
                         ids=['2d', '3d'])
def test_imprint_model_feeds_shifted_input_to_model(input_shape):
  model = _small_model(input_shape)
  attacked = imprint.imprint_model(model, num_bins=5)
  block = imprint.find_imprint_block(attacked)
  assert attacked.name == 'imprinted_small'
  assert block.num_bins == 5
  assert len(attacked.trainable_variables) == (
      len(model.trainable_variables) + 2)
  x = tf.random.stateless_uniform((2,) + input_shape, seed=(3, 4))
  np.testing.assert_allclose(attacked(x).numpy(), model(block(x)).numpy(),
                             atol=1e-6)


def test_imprinted_model_saved_model_round_trip():
  attacked = imprint.imprint_model(_small_model((8, 8, 3)), num_bins=3)
  x = tf.random.stateless_uniform((2, 8, 8, 3), seed=(5, 6))
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'attacked')
    attacked.save(path)  # A SavedModel folder.
    reloaded = tf.keras.models.load_model(path)
  assert isinstance(reloaded.get_layer('imprint'), imprint.ImprintBlock)
  np.testing.assert_allclose(reloaded(x).numpy(), attacked(x).numpy(),
                             atol=1e-6)


def test_find_imprint_block_needs_exactly_one():
  with pytest.raises(ValueError, match='found 0'):
    imprint.find_imprint_block(_small_model((8, 8, 3)))
