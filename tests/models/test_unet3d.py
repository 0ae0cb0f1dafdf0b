"""The 3D U-Net of the MSD Liver recipe."""

import pytest
import tensorflow as tf

from dp_medtf import models
from dp_medtf import recipes


def test_structure_at_the_recipe_shape():
  config = recipes.load('msd_liver')
  model = models.build(config.model, tuple(config.input_shape),
                       config.num_classes)
  assert model.output_shape == (None, 50, 128, 128, 3)
  convs = [l for l in model.layers if type(l) is tf.keras.layers.Conv3D]
  # Two convs per level down, bottleneck and level up, then the 1x1x1 head.
  assert [c.filters for c in convs] == (
      [16, 16, 32, 32, 64, 64, 128, 128, 256, 256, 128, 128, 64, 64, 32, 32,
       16, 16, 3])
  assert all(c.kernel_size == (3, 3, 3) for c in convs[:-1])
  assert convs[-1].kernel_size == (1, 1, 1)
  ups = [l for l in model.layers
         if isinstance(l, tf.keras.layers.Conv3DTranspose)]
  assert [u.filters for u in ups] == [128, 64, 32, 16]
  norms = [l for l in model.layers
           if isinstance(l, tf.keras.layers.GroupNormalization)]
  assert len(norms) == 18
  mish = [l for l in model.layers if isinstance(l, tf.keras.layers.Activation)]
  assert len(mish) == 18 and all(
      l.activation is tf.keras.activations.mish for l in mish)
  assert not any(isinstance(l, tf.keras.layers.BatchNormalization)
                 for l in model.layers)


@pytest.mark.parametrize('shape', [(5, 12, 12, 1), (16, 16, 1)])
def test_any_size_and_2d(shape):
  model = models.build({'name': 'unet3d', 'width': 2}, shape, 3)
  out = model(tf.random.normal((2,) + shape))
  assert out.shape == (2,) + shape[:-1] + (3,)


def test_outputs_are_per_example_and_trainable():
  model = models.build({'name': 'unet3d', 'width': 2}, (6, 8, 8, 1), 3)
  x = tf.random.normal([2, 6, 8, 8, 1])
  with tf.GradientTape() as tape:
    together = model(x, training=True)
    loss = tf.reduce_mean(tf.square(together))
  grads = tape.gradient(loss, model.trainable_variables)
  assert all(g is not None for g in grads)
  alone = tf.concat([model(x[i:i + 1], training=True) for i in range(2)], 0)
  tf.debugging.assert_near(together, alone, atol=1e-5)


def test_bad_rank():
  with pytest.raises(ValueError, match='input_shape'):
    models.build({'name': 'unet3d'}, (8, 1), 3)
