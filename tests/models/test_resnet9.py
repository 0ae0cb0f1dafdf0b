"""ResNet-9 as the paper describes it; the registry; ScaleNorm's harness."""

import numpy as np
import pytest
import tensorflow as tf

from dp_medtf import losses
from dp_medtf import models
from dp_medtf.models import layers
from tests import layer_harness


def _authors_parameters(in_channels, outputs, width=64):
  """The authors' ResNet9 (dptraining/models/resnet9.py) with scale_norm:
  8 bias-free 3x3 convs, 8 GroupNorms, 2 ScaleNorms, a dense head on the
  2 x 2 pooled 4 width channels."""
  c1, c2, c3 = width, 2 * width, 4 * width
  convs = 9 * (in_channels * c1 + c1 * c2 + 2 * c2 * c2 + c2 * c3 + c3 * c3 +
               2 * c3 * c3)
  norms = 2 * (c1 + 3 * c2 + 4 * c3) + 2 * (c2 + c3)
  return convs + norms + 4 * c3 * outputs + outputs


def test_resnet9_structure():
  model = models.build({'name': 'resnet9'}, (64, 64, 3), 10)
  convs = [l for l in model.layers if isinstance(l, tf.keras.layers.Conv2D)]
  assert all(type(c) is layers.CentredConv2D for c in convs)
  assert [c.filters for c in convs] == [64, 128, 128, 128, 256, 256, 256, 256]
  assert not any(c.use_bias for c in convs)
  assert all(c.kernel_size == (3, 3) for c in convs)
  norms = [l for l in model.layers
           if isinstance(l, tf.keras.layers.GroupNormalization)]
  assert [type(n) for n in norms].count(layers.ScaleNorm) == 2
  assert all(n.groups == min(32, n.input_shape[-1]) for n in norms)
  assert not any(isinstance(l, tf.keras.layers.BatchNormalization)
                 for l in model.layers)
  assert sum(isinstance(l, tf.keras.layers.MaxPool2D)
             for l in model.layers) == 3
  assert model.output_shape == (None, 10)


@pytest.mark.parametrize('fields,shape,classes,want', [
    # HAM10000: 3 channels, the authors' single logit (num_classes 1).
    ({'single_logit': True}, (224, 224, 3), 2, _authors_parameters(3, 1)),
    # RadImageNet: 1 channel, 165 classes.
    ({}, (224, 224, 1), 165, _authors_parameters(1, 165)),
    ({'centre_weights': False}, (32, 32, 1), 165, _authors_parameters(1, 165)),
])
def test_resnet9_size_is_the_authors(fields, shape, classes, want):
  model = models.build({'name': 'resnet9', 'width': 64, **fields}, shape,
                       classes)
  assert model.count_params() == want
  conv = layers.CentredConv2D if fields.get('centre_weights', True) else (
      tf.keras.layers.Conv2D)
  assert sum(type(l) is conv for l in model.layers) == 8


def test_resnet9_pools_adaptively_to_2x2():
  """The authors' adaptive pooling: stride S // 2, window S - S // 2."""
  model = models.build({'name': 'resnet9', 'width': 2}, (232, 232, 1), 3)
  pool = model.get_layer('avgpool')
  assert pool.input_shape[1:3] == (29, 29)
  assert pool.pool_size == (15, 15) and pool.strides == (14, 14)
  assert pool.output_shape[1:3] == (2, 2)


def test_single_logit_head():
  model = models.build({'name': 'resnet9', 'width': 4, 'single_logit': True},
                       (16, 16, 3), 2)
  assert model.get_layer('head').units == 1
  assert model.output_shape == (None, 2)
  x = tf.random.stateless_normal([4, 16, 16, 3], seed=(0, 0))
  z = tf.keras.Model(model.inputs, model.get_layer('head').output)(x)[:, 0]
  logits = model(x)
  np.testing.assert_array_equal(logits[:, 0], 0.0)
  np.testing.assert_allclose(logits[:, 1], z)
  labels = tf.constant([0, 1, 1, 0])
  np.testing.assert_allclose(
      losses.classification_loss(labels, logits),
      tf.nn.sigmoid_cross_entropy_with_logits(tf.cast(labels, tf.float32), z),
      rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match='single_logit needs num_classes = 2'):
    models.build({'name': 'resnet9', 'single_logit': True}, (16, 16, 3), 3)


def test_unknown_field_is_named():
  with pytest.raises(ValueError, match='model.widen_factor: not a field'):
    models.build({'name': 'resnet9', 'widen_factor': 4}, (16, 16, 3), 3)


@pytest.mark.parametrize('shape', [(32, 32, 3), (224, 224, 1)])
def test_resnet9_accepts_input_sizes(shape):
  model = models.build({'name': 'resnet9', 'width': 8}, shape, 3)
  assert model(tf.zeros((1,) + shape)).shape == (1, 3)


def test_outputs_are_per_example():
  model = models.build({'name': 'resnet9', 'width': 8}, (32, 32, 3), 2)
  x = tf.random.normal([3, 32, 32, 3])
  together = model(x, training=True)
  alone = tf.concat([model(x[i:i + 1], training=True) for i in range(3)], 0)
  tf.debugging.assert_near(together, alone, atol=1e-5)


def test_unknown_model():
  with pytest.raises(ValueError, match='resnet9'):
    models.build({'name': 'nope'}, (8, 8, 1), 2)


@pytest.mark.parametrize('shape', [(4, 4, 64), (4, 4, 6)])
def test_scalenorm_layer(shape):
  layer_harness.check_layer(layers.ScaleNorm, shape)
