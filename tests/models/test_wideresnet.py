"""WideResNet-40-4 as the paper uses it, with a DP-compatible norm."""

import pytest
import tensorflow as tf

from dp_medtf import models
from dp_medtf.models import layers


def _authors_parameters(in_channels, classes, depth=40, k=4):
  """Trainable parameters of the authors' WideResNet
  (dptraining/models/wide_resnet.py): bias-free convs, two norms per block,
  a 1x1 projection where the shape changes, a final norm, a dense head."""
  total, c = 9 * in_channels * 16, 16
  for group, w in enumerate((16 * k, 32 * k, 64 * k)):
    for b in range((depth - 4) // 6):
      cin = c if b == 0 else w
      projection = cin * w if cin != w or (b == 0 and group) else 0
      total += 2 * cin + 9 * cin * w + 2 * w + 9 * w * w + projection
    c = w
  return total + 2 * c + c * classes + classes


def test_wrn_40_4_structure():
  model = models.build({'name': 'wideresnet'}, (32, 32, 3), 10)
  convs = [l for l in model.layers if isinstance(l, tf.keras.layers.Conv2D)]
  assert all(type(c) is layers.CentredConv2D for c in convs)
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
  assert model.get_layer('final_act').activation is tf.keras.activations.mish


@pytest.mark.parametrize('norm', ['group', 'batch'])
def test_size_at_the_authors_radimagenet_settings(norm):
  """Their RadImageNet baseline: WRN-40-4, one channel, 165 classes (BatchNorm
  there; GroupNorm has the same trainable parameters)."""
  model = models.build({'name': 'wideresnet', 'width': 64, 'norm': norm},
                       (32, 32, 1), 165)
  trainable = sum(int(tf.size(v)) for v in model.trainable_variables)
  assert trainable == _authors_parameters(1, 165) == 8_988_757


@pytest.mark.parametrize('width', [32, 48])
def test_width_sets_the_groups(width):
  model = models.build({'name': 'wideresnet', 'depth': 10, 'width': width,
                        'centre_weights': False}, (8, 8, 1), 3)
  convs = [l for l in model.layers if type(l) is tf.keras.layers.Conv2D]
  assert [c.filters for c in convs if c.kernel_size == (1, 1)] == [
      width, 2 * width, 4 * width]
  assert model.count_params() == _authors_parameters(1, 3, 10, width // 16)


def test_outputs_are_per_example():
  model = models.build({'name': 'wideresnet', 'depth': 10, 'width': 16},
                       (16, 16, 1), 3)
  x = tf.random.normal([3, 16, 16, 1])
  together = model(x, training=True)
  alone = tf.concat([model(x[i:i + 1], training=True) for i in range(3)], 0)
  tf.debugging.assert_near(together, alone, atol=1e-5)


@pytest.mark.parametrize('norm,layer', [
    ('layer', tf.keras.layers.GroupNormalization),
    ('batch', tf.keras.layers.BatchNormalization)])
def test_norm_is_configurable(norm, layer):
  model = models.build({'name': 'wideresnet', 'depth': 10, 'width': 16,
                        'norm': norm, 'stem_stride': 2}, (32, 32, 1), 4)
  assert any(type(l) is layer for l in model.layers)
  assert model(tf.zeros([2, 32, 32, 1])).shape == (2, 4)
  assert model.get_layer('group3_block1_add').output_shape == (None, 4, 4, 64)


def test_bad_depth_and_norm():
  with pytest.raises(ValueError, match='6n \\+ 4'):
    models.build({'name': 'wideresnet', 'depth': 12}, (8, 8, 1), 2)
  with pytest.raises(ValueError, match='norm'):
    models.build({'name': 'wideresnet', 'norm': 'instance'}, (8, 8, 1), 2)
