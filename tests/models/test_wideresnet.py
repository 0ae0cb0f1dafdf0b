"""WideResNet-40-4 as the paper uses it, with a DP-compatible norm."""

import pytest
import tensorflow as tf

from dp_medtf import models


def test_wrn_40_4_structure():
  model = models.build({'name': 'wideresnet'}, (32, 32, 3), 10)
  convs = [l for l in model.layers if isinstance(l, tf.keras.layers.Conv2D)]
  shortcuts = [c for c in convs if c.kernel_size == (1, 1)]
  assert len(convs) - len(shortcuts) == 37  # Stem + 3 groups x 6 blocks x 2.
  assert [c.filters for c in shortcuts] == [64, 128, 256]
  assert not any(c.use_bias for c in convs)
  norms = [l for l in model.layers
           if isinstance(l, tf.keras.layers.GroupNormalization)]
  assert len(norms) == 37
  assert all(n.groups == min(32, n.input_shape[-1]) for n in norms)
  assert not any(isinstance(l, tf.keras.layers.BatchNormalization)
                 for l in model.layers)
  # Zagoruyko & Komodakis report 8.9 M parameters for WRN-40-4 on CIFAR.
  assert 8.8e6 < model.count_params() < 9.0e6
  assert model.output_shape == (None, 10)


def test_outputs_are_per_example():
  model = models.build({'name': 'wideresnet', 'depth': 10, 'widen_factor': 1},
                       (16, 16, 1), 3)
  x = tf.random.normal([3, 16, 16, 1])
  together = model(x, training=True)
  alone = tf.concat([model(x[i:i + 1], training=True) for i in range(3)], 0)
  tf.debugging.assert_near(together, alone, atol=1e-5)


@pytest.mark.parametrize('norm,layer', [
    ('layer', tf.keras.layers.GroupNormalization),
    ('batch', tf.keras.layers.BatchNormalization)])
def test_norm_is_configurable(norm, layer):
  model = models.build({'name': 'wideresnet', 'depth': 10, 'widen_factor': 1,
                        'norm': norm, 'stem_stride': 2}, (32, 32, 1), 4)
  assert any(type(l) is layer for l in model.layers)
  assert model(tf.zeros([2, 32, 32, 1])).shape == (2, 4)
  assert model.get_layer('group3_block1_add').output_shape == (None, 4, 4, 64)


def test_bad_depth_and_norm():
  with pytest.raises(ValueError, match='6n \\+ 4'):
    models.build({'name': 'wideresnet', 'depth': 12}, (8, 8, 1), 2)
  with pytest.raises(ValueError, match='norm'):
    models.build({'name': 'wideresnet', 'norm': 'instance'}, (8, 8, 1), 2)
