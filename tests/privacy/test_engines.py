"""Every clipping engine equals an explicit per-example loop and TF Privacy.

The grid covers each registered layer type (and the project's models, tiny),
one- and several-example batches with augmented views and padding, and clip
norms below, among and above the per-example gradient norms.
"""

import numpy as np
import pytest
import tensorflow as tf

from dp_medtf import models
from dp_medtf.models import layers as dp_layers
from dp_medtf.privacy import optimizers
from dp_medtf.privacy import step as dp_step
from dp_medtf.privacy import tf_privacy

ENGINES = dp_step.ENGINES

# The engines and the loop differ only in the order of float32 operations.
# A sum of n terms carries a relative rounding error of about sqrt(n) eps
# (n <= 1e4 here: 100 eps), and a gradient passes through up to ~10 such
# reductions in a row: 1e3 eps ~ 1.2e-4. Components far below the largest
# one are held to that error relative to the largest (atol), or relative to
# `scale` where given: a gradient that is zero by cancellation (the bias of a
# conv followed by a per-channel norm) carries the rounding error of the
# gradients it is computed from, not of its own size.
RTOL = 1e3 * np.finfo(np.float32).eps


def assert_close(got, want, scale=None):
  got, want = np.asarray(got), np.asarray(want)
  scale = np.abs(want).max() if scale is None else scale
  np.testing.assert_allclose(got, want, rtol=RTOL,
                             atol=RTOL * max(scale, 1e-30))


def _functional(input_shape, *layer_list, flatten=True, num_classes=3):
  inputs = tf.keras.Input(shape=input_shape)
  x = inputs
  for layer in layer_list:
    x = layer(x)
  if flatten and len(x.shape) > 2:
    x = tf.keras.layers.Flatten()(x)
  return tf.keras.Model(inputs, tf.keras.layers.Dense(num_classes)(x))


def _binary_head():
  inputs = tf.keras.Input(shape=(5,))
  z = L.Dense(1)(L.Dense(3, activation='tanh')(inputs))
  return inputs, dp_layers.BinaryLogits()(z)


def _seeded(builder):
  def build():
    tf.keras.utils.set_random_seed(0)
    return builder()
  return build


L = tf.keras.layers
LAYER_MODELS = {
    'dense_sequence': _seeded(lambda: _functional(
        (4, 5), L.Dense(6, activation='tanh'))),
    'conv1d': _seeded(lambda: _functional(
        (9, 2), L.Conv1D(3, 3, strides=2, activation='relu'))),
    'conv2d_strided': _seeded(lambda: _functional(
        (7, 7, 2), L.Conv2D(4, 3, strides=2, padding='same',
                            activation='tanh'))),
    'conv2d_dilated': _seeded(lambda: _functional(
        (7, 7, 2), L.Conv2D(3, 3, dilation_rate=2, use_bias=False))),
    'conv3d': _seeded(lambda: _functional(
        (4, 5, 5, 1), L.Conv3D(3, 3, padding='same'))),
    'conv2d_transpose': _seeded(lambda: _functional(
        (4, 4, 3), L.Conv2DTranspose(2, 3, strides=2, padding='same'))),
    'conv3d_transpose': _seeded(lambda: _functional(
        (2, 3, 3, 2), L.Conv3DTranspose(2, 2, strides=2))),
    'group_norm': _seeded(lambda: _functional(
        (3, 3, 4), L.Conv2D(4, 2), L.GroupNormalization(2),
        L.Activation('mish'))),
    'scale_norm': _seeded(lambda: _functional(
        (3, 3, 4), L.Conv2D(4, 2, use_bias=False), dp_layers.ScaleNorm())),
    'layer_norm': _seeded(lambda: _functional(
        (4, 5), L.LayerNormalization(), L.Dense(3, activation='relu'),
        L.LayerNormalization(axis=[1, 2]))),
    # Weight-centred convolutions, 2D and 3D, plain and transposed, with
    # and without bias.
    'centred_conv2d': _seeded(lambda: _functional(
        (7, 7, 2), dp_layers.CentredConv2D(4, 3, strides=2, padding='same',
                                           activation='tanh'))),
    'centred_conv2d_nobias': _seeded(lambda: _functional(
        (6, 6, 3), dp_layers.CentredConv2D(3, 3, use_bias=False))),
    'centred_conv3d': _seeded(lambda: _functional(
        (4, 5, 5, 2), dp_layers.CentredConv3D(3, 3, padding='same'))),
    'centred_conv3d_nobias': _seeded(lambda: _functional(
        (4, 4, 4, 1), dp_layers.CentredConv3D(3, 2, strides=2,
                                              use_bias=False))),
    'centred_conv2d_transpose': _seeded(lambda: _functional(
        (4, 4, 3), dp_layers.CentredConv2DTranspose(2, 3, strides=2,
                                                    padding='same'))),
    'centred_conv3d_transpose_nobias': _seeded(lambda: _functional(
        (2, 3, 3, 2), dp_layers.CentredConv3DTranspose(2, 2, strides=2,
                                                       use_bias=False))),
    'binary_logits': _seeded(lambda: tf.keras.Model(*_binary_head())),
    'resnet9': _seeded(lambda: models.build(
        {'name': 'resnet9', 'width': 2}, (16, 16, 3), 3)),
    # Odd sizes: the up path reflect-pads (0, 1) and (1, 1).
    'unet3d': _seeded(lambda: models.build(
        {'name': 'unet3d', 'width': 2, 'levels': 2}, (5, 8, 6, 1), 3)),
}


def example_loss(labels, outputs):
  """Mean over an example's views (and voxels) of the cross-entropy."""
  return tf.reduce_mean(dp_step.classification_loss(labels, outputs))


def batch_for(model, batch, views, seed=0):
  rng = np.random.default_rng(seed)
  shape = model.input_shape[1:]
  # Scales spread the gradient norms over about two orders of magnitude.
  scale = rng.uniform(0.05, 3.0, size=(batch, 1) + (1,) * len(shape))
  x = (rng.normal(size=(batch, views) + shape) * scale).astype(np.float32)
  label_shape = (batch,) + tuple(model.output_shape[1:-1])
  y = rng.integers(0, model.output_shape[-1], size=label_shape)
  return tf.constant(x), tf.constant(y.astype(np.int32))


def loop_gradients(model, x, y):
  """Per-example gradients [B] of lists, and their norms, one at a time."""
  grads, norms = [], []
  for i in range(x.shape[0]):
    labels = tf.repeat(y[i:i + 1], x.shape[1], axis=0)
    with tf.GradientTape() as tape:
      loss = example_loss(labels, model(x[i], training=True))
    g = tape.gradient(loss, model.trainable_variables)
    grads.append(g)
    norms.append(float(tf.linalg.global_norm(g)))
  return grads, np.array(norms)


def clipped_sum(grads, norms, mask, clip_norm):
  factors = np.minimum(1.0, clip_norm / norms) * np.asarray(mask)
  return [sum(f * g[j].numpy() for f, g in zip(factors, grads))
          for j in range(len(grads[0]))]


WHOLE_MODELS = ('resnet9', 'unet3d')
# Every engine on every layer type (single examples on the new engines;
# test_clipping has them for the vectorized one); the whole models (slow
# through the vectorized engine's while_loop) on the ghost engines, which
# walk their layer graphs.
GRID = ([(e, m, b, k) for e in ENGINES for m in sorted(LAYER_MODELS)
         if m not in WHOLE_MODELS for b, k in ((1, 1), (4, 2))
         if e != 'vectorized' or b > 1] +
        [(e, m, 3, 2) for e in ENGINES if e != 'vectorized'
         for m in WHOLE_MODELS])


@pytest.mark.parametrize('engine,model_name,batch,views', GRID)
def test_engine_equals_per_example_loop(engine, model_name, batch, views):
  model = LAYER_MODELS[model_name]()
  x, y = batch_for(model, batch, views)
  mask = tf.constant([1.0] * max(batch - 1, 1) + [0.0] * (batch > 1))
  grads, norms = loop_gradients(model, x, y)
  # Below every norm (all clipped), at the median (some clipped, some not)
  # and above every norm (clipping must not act).
  for clip_norm in (0.5 * norms.min(), float(np.median(norms)),
                    2.0 * norms.max()):
    summed, got_norms, losses = dp_step.clipping_engine(engine)(
        model, example_loss, x, y, mask, clip_norm)
    assert_close(got_norms, norms)
    assert losses.shape == [batch]
    assert len(summed) == len(model.trainable_variables)
    wants = clipped_sum(grads, norms, mask, clip_norm)
    scale = max(np.abs(w).max() for w in wants)
    for got, want in zip(summed, wants):
      assert_close(got, want, scale)


# The chunk holds 4 real examples and 2 padding rows; B = 5 lies between:
# TF Privacy's own divisor (the 6 microbatches) or the real count would
# differ from ours by 20%.
_CHUNK_MASK = (1.0, 1.0, 1.0, 1.0, 0.0, 0.0)
_B = 5


@pytest.mark.parametrize('optimizer', ['adam', 'nadam'])
@pytest.mark.parametrize('model_name', ['conv2d_transpose', 'group_norm'])
@pytest.mark.parametrize('engine', ENGINES)
def test_step_equals_tf_privacy_engine_at_noise_zero(engine, model_name,
                                                      optimizer):
  ours_model = LAYER_MODELS[model_name]()
  theirs_model = LAYER_MODELS[model_name]()
  theirs_model.set_weights(ours_model.get_weights())
  mask = tf.constant(_CHUNK_MASK)
  batches = [batch_for(ours_model, len(_CHUNK_MASK), 2, seed=s)
             for s in (1, 2, 3)]
  _, norms = loop_gradients(ours_model, *batches[0])
  clip_norm = float(np.median(norms))
  # Optimizer epsilon at 1e-3 keeps the first steps, ~lr g / (|g| + eps),
  # well-conditioned where g is near zero, so that equal gradients give
  # updates equal to float precision.
  ours = dp_step.DPStep(
      ours_model, dp_step.classification_loss,
      optimizers.make_optimizer(optimizer, 1e-2,
                                ours_model.trainable_variables, epsilon=1e-3),
      clip_norm=clip_norm, noise_multiplier=0.0, expected_batch_size=_B,
      seed=0, engine=engine)
  theirs = tf_privacy.TfPrivacyStep(
      theirs_model, lambda labels, out: tf.reduce_mean(
          tf.reshape(dp_step.classification_loss(labels, out),
                     [tf.shape(out)[0], -1]), axis=1),
      tf_privacy.make_optimizer(
          optimizer, clip_norm=clip_norm, noise_multiplier=0.0,
          learning_rate=1e-2, epsilon=1e-3,
          variables=theirs_model.trainable_variables),
      expected_batch_size=_B)
  assert isinstance(theirs.optimizer, type(ours.optimizer))
  for i, (x, y) in enumerate(batches):
    ours.accumulate(x, y, mask)
    if i == 0:
      their_grads, _ = theirs.privatized_gradient(x, y, mask)
      for a, b in zip(ours.privatized_gradient(), their_grads):
        assert_close(a, b)
    ours.apply()
    theirs.accumulate(x, y, mask)
    for a, b in zip(ours_model.get_weights(), theirs_model.get_weights()):
      assert_close(a, b)


@pytest.mark.parametrize('engine', ENGINES)
def test_every_contribution_is_at_most_c(engine):
  model = LAYER_MODELS['conv2d_strided']()
  x, y = batch_for(model, 4, 1, seed=3)
  clip_norm = 0.1
  for i in range(4):
    summed, norms, _ = dp_step.clipping_engine(engine)(
        model, example_loss, x, y, tf.one_hot(i, 4), clip_norm)
    contribution = float(tf.linalg.global_norm(summed))
    assert contribution <= clip_norm * (1 + RTOL)
    assert contribution == pytest.approx(min(float(norms[i]), clip_norm),
                                         rel=RTOL)
