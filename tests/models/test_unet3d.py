"""The 3D U-Net of the MSD Liver recipe, laid out as the authors' U-Net."""

import numpy as np
import pytest
import tensorflow as tf

from dp_medtf import models
from dp_medtf import recipes
from dp_medtf.models import layers

# The authors' U-Net (dptraining/models/unet.py) at channels 16, one input
# channel and 3 classes: per block of (in, out) channels two 3x3x3 convs with
# bias and two GroupNorms; per up level a 2x2x2 transposed conv with bias and
# a GroupNorm; a 1x1x1 head with bias.


def _block(cin, cout):
  return 27 * cin * cout + cout + 2 * cout + 27 * cout * cout + cout + 2 * cout


def _up(cin, cout):
  return 8 * cin * cout + cout + 2 * cout


AUTHORS_PARAMETERS = 5_648_371
assert AUTHORS_PARAMETERS == (
    _block(1, 16) + _block(16, 32) + _block(32, 64) + _block(64, 128) +
    _block(128, 256) + sum(_up(2 * c, c) + _block(2 * c, c)
                           for c in (128, 64, 32, 16)) + 16 * 3 + 3)


def _recipe_model(**fields):
  config = recipes.load('msd_liver')
  return models.build({**config.model, **fields}, tuple(config.input_shape),
                      config.num_classes)


@pytest.mark.parametrize('centre_weights', [True, False])
def test_structure_and_size_at_the_recipe_shape(centre_weights):
  model = _recipe_model(centre_weights=centre_weights)
  assert model.count_params() == AUTHORS_PARAMETERS
  assert model.output_shape == (None, 50, 128, 128, 3)
  conv, transpose = (layers.conv_class(3, centre_weights),
                     layers.conv_class(3, centre_weights, transpose=True))
  convs = [l for l in model.layers if type(l) is conv]
  # Two convs per level down, bottleneck and level up, then the 1x1x1 head.
  assert [c.filters for c in convs] == (
      [16, 16, 32, 32, 64, 64, 128, 128, 256, 256, 128, 128, 64, 64, 32, 32,
       16, 16, 3])
  assert all(c.kernel_size == (3, 3, 3) for c in convs[:-1])
  assert convs[-1].kernel_size == (1, 1, 1)
  assert all(c.use_bias for c in convs)
  ups = [l for l in model.layers if type(l) is transpose]
  assert [u.filters for u in ups] == [128, 64, 32, 16]
  assert all(u.use_bias and u.kernel_size == (2, 2, 2) for u in ups)
  # The layer after each conv: GroupNorm with min(16, C) groups after the
  # first conv of a block and a transposed conv, one group per channel after
  # the second conv.
  for c in convs[:-1] + ups:
    # Layer names: <block>_conv<i> -> <block>_<i>_norm; <up>_upconv ->
    # <up>_up_norm.
    norm = model.get_layer(c.name.replace('_upconv', '_up').replace(
        '_conv', '_') + '_norm')
    assert type(norm) is tf.keras.layers.GroupNormalization
    second = c.name.endswith('conv2')
    assert norm.groups == (c.filters if second else min(16, c.filters))
  norms = [l for l in model.layers
           if isinstance(l, tf.keras.layers.GroupNormalization)]
  mish = [l for l in model.layers if isinstance(l, tf.keras.layers.Activation)]
  assert len(norms) == len(mish) == 22 and all(
      l.activation is tf.keras.activations.mish for l in mish)
  # Pooling rounds down (50 -> 25 -> 12 -> 6 -> 3); the up path pads 24 to
  # 25 at the end of the depth axis only.
  assert [l.output_shape[1] for l in model.layers
          if isinstance(l, tf.keras.layers.MaxPool3D)] == [25, 12, 6, 3]
  pads = [l for l in model.layers
          if isinstance(l, layers.ReflectionPadding)]
  assert [(p.name, p.padding) for p in pads] == [
      ('up2_pad', ((0, 1), (0, 0), (0, 0)))]
  assert not any(isinstance(l, tf.keras.layers.BatchNormalization)
                 for l in model.layers)


def test_odd_sizes_are_reflect_padded_at_the_end():
  """Where the up path falls short of the skip, it is reflect-padded."""
  model = models.build({'name': 'unet3d', 'width': 2, 'levels': 1},
                       (3, 4, 5, 1), 2)
  pad = model.get_layer('up1_pad')
  assert pad.padding == ((0, 1), (0, 0), (0, 1))
  probe = tf.keras.Model(model.inputs, pad.output)
  up = tf.keras.Model(model.inputs, model.get_layer('up1_up_mish').output)
  x = tf.random.normal([1, 3, 4, 5, 1])
  want = np.pad(up(x).numpy(), [(0, 0), (0, 1), (0, 0), (0, 1), (0, 0)],
                mode='reflect')
  np.testing.assert_allclose(probe(x).numpy(), want, rtol=1e-6)


@pytest.mark.parametrize('shape', [(17, 16, 19, 1), (21, 16, 1)])
def test_any_size_and_2d(shape):
  model = models.build({'name': 'unet3d', 'width': 2}, shape, 3)
  out = model(tf.random.normal((2,) + shape))
  assert out.shape == (2,) + shape[:-1] + (3,)


def test_outputs_are_per_example_and_trainable():
  model = models.build({'name': 'unet3d', 'width': 2, 'levels': 2},
                       (6, 8, 8, 1), 3)
  x = tf.random.normal([2, 6, 8, 8, 1])
  with tf.GradientTape() as tape:
    together = model(x, training=True)
    loss = tf.reduce_mean(tf.square(together))
  grads = tape.gradient(loss, model.trainable_variables)
  assert all(g is not None for g in grads)
  alone = tf.concat([model(x[i:i + 1], training=True) for i in range(2)], 0)
  tf.debugging.assert_near(together, alone, atol=1e-5)


def test_bad_inputs():
  with pytest.raises(ValueError, match='input_shape'):
    models.build({'name': 'unet3d'}, (8, 1), 3)
  with pytest.raises(ValueError, match='at least 2\\*\\*levels = 16'):
    models.build({'name': 'unet3d', 'width': 2}, (8, 16, 16, 1), 3)
