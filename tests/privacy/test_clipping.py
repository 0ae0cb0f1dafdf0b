"""Per-example clipping: equals an explicit loop; every contribution <= C."""

import numpy as np
import pytest
import tensorflow as tf

from dp_medtf.privacy import clipping
from dp_medtf.privacy import step as dp_step
from tests.privacy import small_models


def _example_loss(labels, outputs):
  return tf.reduce_mean(dp_step.classification_loss(labels, outputs))


def _batch(model_name, batch, views=1, seed=0):
  rng = np.random.default_rng(seed)
  model = small_models.MODELS[model_name]()
  shape = model.input_shape[1:]
  # Scales spread the gradient norms so that some fall below C.
  scale = rng.uniform(0.05, 3.0, size=(batch, 1) + (1,) * len(shape))
  x = (rng.normal(size=(batch, views) + shape) * scale).astype(np.float32)
  y = rng.integers(0, model.output_shape[-1], size=batch).astype(np.int32)
  return model, tf.constant(x), tf.constant(y)


def _loop_reference(model, x, y, mask, clip_norm):
  """Explicit per-example loop: gradient, norm, clip, sum."""
  total = [tf.zeros_like(v) for v in model.trainable_variables]
  norms = []
  for i in range(x.shape[0]):
    with tf.GradientTape() as tape:
      loss = _example_loss(tf.repeat(y[i:i + 1], x.shape[1]), model(x[i]))
    grads = tape.gradient(loss, model.trainable_variables)
    norm = float(tf.linalg.global_norm(grads))
    norms.append(norm)
    factor = min(1.0, clip_norm / norm) * float(mask[i])
    total = [t + factor * g for t, g in zip(total, grads)]
  return total, np.array(norms)


@pytest.mark.parametrize('model_name', sorted(small_models.MODELS))
@pytest.mark.parametrize('batch', [1, 5])
@pytest.mark.parametrize('clip_norm', [0.01, 0.5, 100.0])
def test_vectorized_equals_loop(model_name, batch, clip_norm):
  model, x, y = _batch(model_name, batch, views=2 if batch > 1 else 1)
  mask = tf.constant([1.0] * (batch - 1) + [0.0 if batch > 1 else 1.0])
  summed, norms, _ = clipping.vectorized_clipped_sum(
      model, _example_loss, x, y, mask, clip_norm)
  expected, expected_norms = _loop_reference(model, x, y, mask, clip_norm)
  np.testing.assert_allclose(norms.numpy(), expected_norms, rtol=1e-4)
  for got, want in zip(summed, expected):
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4,
                               atol=1e-6)
  if clip_norm == 100.0:  # No example reaches C: clipping must not act.
    assert (expected_norms < clip_norm).all()


@pytest.mark.parametrize('clip_norm', [0.05, 1.0])
def test_every_contribution_is_at_most_c(clip_norm):
  model, x, y = _batch('conv_groupnorm_dense', 6, seed=3)
  for i in range(6):
    one_hot = tf.one_hot(i, 6)
    summed, norms, _ = clipping.vectorized_clipped_sum(
        model, _example_loss, x, y, one_hot, clip_norm)
    contribution = float(clipping.global_norm(summed))
    assert contribution <= clip_norm * (1 + 1e-5)
    assert contribution == pytest.approx(min(float(norms[i]), clip_norm),
                                         rel=1e-4)


def test_clip_weights():
  """min(1, C / norm); a zero gradient keeps weight 1; padding weighs 0."""
  weights = clipping.clip_weights(tf.constant([5.0, 0.5, 0.0, 5.0]), 2.5,
                                  tf.constant([1.0, 1.0, 1.0, 0.0]))
  assert weights.numpy().tolist() == pytest.approx([0.5, 1.0, 1.0, 0.0])
