"""ResNet-9 as the paper describes it; the registry; ScaleNorm's harness."""

import pytest
import tensorflow as tf

from dp_medtf import models
from dp_medtf.models import layers
from tests import layer_harness


def test_resnet9_structure():
  model = models.build({'name': 'resnet9'}, (64, 64, 3), 10)
  convs = [l for l in model.layers if isinstance(l, tf.keras.layers.Conv2D)]
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
