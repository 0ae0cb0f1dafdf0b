"""The DP step: TF Privacy's update at noise 0, noise std z C / B, one draw."""

import math

import numpy as np
import pytest
import tensorflow as tf

from dp_medtf.privacy import step as dp_step
from dp_medtf.privacy import tf_privacy
from tests.privacy import small_models


def _data(batch, views, seed=0):
  rng = np.random.default_rng(seed)
  scale = rng.uniform(0.05, 3.0, size=(batch, 1, 1, 1, 1))
  x = (rng.normal(size=(batch, views, 8, 8, 3)) * scale).astype(np.float32)
  y = rng.integers(0, 3, size=batch).astype(np.int32)
  return tf.constant(x), tf.constant(y), tf.ones([batch])


@pytest.mark.parametrize('batch,views', [(1, 1), (4, 1), (6, 2)])
@pytest.mark.parametrize('clip_norm', [0.05, 1.0, 50.0])
def test_default_step_equals_tf_privacy_at_noise_zero(batch, views, clip_norm):
  x, y, mask = _data(batch, views)
  ours_model = small_models.conv_groupnorm_dense()
  theirs_model = small_models.conv_groupnorm_dense()
  theirs_model.set_weights(ours_model.get_weights())

  # Adam's epsilon at 1e-3 keeps its first step, lr * g / (|g| + eps),
  # well-conditioned where g is near zero, so equal gradients give updates
  # equal to float precision.
  ours = dp_step.DPStep(
      ours_model, dp_step.classification_loss,
      tf.keras.optimizers.legacy.Adam(1e-2, epsilon=1e-3), clip_norm=clip_norm,
      noise_multiplier=0.0, expected_batch_size=batch, seed=0)
  theirs = tf_privacy.TfPrivacyStep(
      theirs_model, dp_step.classification_loss,
      tf_privacy.dp_optimizer_keras.DPKerasAdamOptimizer(
          l2_norm_clip=clip_norm, noise_multiplier=0.0, learning_rate=1e-2,
          epsilon=1e-3), expected_batch_size=batch)

  ours.accumulate(x, y, mask)
  our_grads = ours.privatized_gradient()
  their_grads, _ = theirs.privatized_gradient(x, y, mask)
  for a, b in zip(our_grads, their_grads):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-7)

  ours.apply()
  theirs.accumulate(x, y, mask)
  for a, b in zip(ours_model.get_weights(), theirs_model.get_weights()):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def _wide_model():
  tf.keras.utils.set_random_seed(0)
  inputs = tf.keras.Input(shape=(50,))
  return tf.keras.Model(inputs, tf.keras.layers.Dense(200)(inputs))


@pytest.mark.parametrize('z,clip_norm,batch', [(1.0, 1.0, 10), (0.3, 2.5, 64),
                                               (7.0, 0.1, 3)])
def test_noise_std_is_z_c_over_b_once_per_logical_batch(z, clip_norm, batch):
  model = _wide_model()
  step = dp_step.DPStep(model, lambda yy, out: tf.reduce_sum(out, -1) * 0.0,
                        tf.keras.optimizers.SGD(1.0), clip_norm=clip_norm,
                        noise_multiplier=z, expected_batch_size=batch, seed=7)
  before = [w.copy() for w in model.get_weights()]
  # Two all-padding chunks of one logical batch: only the noise moves weights.
  for _ in range(2):
    step.accumulate(tf.ones([4, 1, 50]), tf.zeros([4], tf.int32), tf.zeros([4]))
  step.apply()
  delta = np.concatenate([(b - a).ravel()
                          for a, b in zip(model.get_weights(), before)])
  n = delta.size  # 10,200 coordinates.
  expected = z * clip_norm / batch
  # Sample std of n normal draws: relative standard error 1/sqrt(2n) ~ 0.7%;
  # 5 standard errors. A second noise draw would give sqrt(2) = +41%.
  tolerance = 5 / math.sqrt(2 * n)
  assert np.std(delta) == pytest.approx(expected, rel=tolerance)
  assert abs(np.mean(delta)) < 5 * expected / math.sqrt(n)


def test_noise_differs_between_steps_and_is_seeded():
  def draws(seed):
    model = _wide_model()
    step = dp_step.DPStep(model, dp_step.classification_loss,
                          tf.keras.optimizers.SGD(1.0), clip_norm=1.0,
                          noise_multiplier=1.0, expected_batch_size=1,
                          seed=seed)
    return [step.privatized_gradient()[0].numpy() for _ in range(2)]
  a, b = draws(3), draws(3)
  np.testing.assert_array_equal(a[0], b[0])
  assert not np.allclose(a[0], a[1])


def test_non_private_step_is_the_mean_gradient():
  x, y, _ = _data(5, 1)
  mask = tf.constant([1.0, 1.0, 1.0, 0.0, 0.0])
  model = small_models.conv_groupnorm_dense()
  reference = small_models.conv_groupnorm_dense()
  reference.set_weights(model.get_weights())
  step = dp_step.NonPrivateStep(model, dp_step.classification_loss,
                                tf.keras.optimizers.SGD(0.1))
  step.accumulate(x[:2], y[:2], mask[:2])   # Two chunks of one batch.
  step.accumulate(x[2:], y[2:], mask[2:])
  step.apply()
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(dp_step.classification_loss(
        y[:3], reference(x[:3, 0])))
  grads = tape.gradient(loss, reference.trainable_variables)
  for w, w0, g in zip(model.trainable_variables,
                      reference.trainable_variables, grads):
    np.testing.assert_allclose(w.numpy(), (w0 - 0.1 * g).numpy(), rtol=1e-4,
                               atol=1e-6)


@pytest.mark.parametrize('kwargs,match', [
    (dict(clip_norm=0.0, noise_multiplier=1.0), 'clip_norm'),
    (dict(clip_norm=1.0, noise_multiplier=-1.0), 'noise_multiplier'),
    (dict(clip_norm=1.0, noise_multiplier=1.0, engine='magic'), 'engine'),
])
def test_bad_step_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    dp_step.DPStep(_wide_model(), dp_step.classification_loss,
                   tf.keras.optimizers.SGD(1.0), expected_batch_size=1,
                   seed=0, **kwargs)
