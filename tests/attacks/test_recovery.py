"""Tests of recovery from imprint gradients and of the SSIM scoring."""

import numpy as np
import pytest
from skimage import metrics
import tensorflow as tf

from dp_medtf.attacks import imprint
from dp_medtf.attacks import recovery
from dp_medtf.attacks import scoring


def _smooth_images(num, shape, seed=0):
  """Smooth random images in [0, 1]: a few random sinusoids per image."""
  rng = np.random.default_rng(seed)
  grids = np.meshgrid(*[np.linspace(0, 1, s) for s in shape[:-1]],
                      indexing='ij')
  out = []
  for _ in range(num):
    image = np.zeros(shape[:-1] + (shape[-1],))
    for c in range(shape[-1]):
      wave = sum(np.sin(2 * np.pi * rng.uniform(0.5, 2) * g + rng.uniform(
          0, 2 * np.pi)) for g in grids)
      image[..., c] = wave
    image -= image.min()
    out.append(image / image.max())
  return np.stack(out).astype(np.float32)


def test_hand_computed_gradient_recovers_input_exactly():
  # One image x = [0.2, 0.6] (shape [1, 2, 1], brightness 0.4), thresholds
  # -1, 0.3, 0.5: bins 0 and 1 are active, bin 2 is not. With the loss
  # L = sum of the block's outputs, dL/dout = 1 on both pixels and each active
  # bin gets dL/dh = 2 pixels / 3 bins = 2/3. Hence
  #   dL/db = [2/3, 2/3, 0],  dL/dW[:, i] = x * dL/db_i.
  x = np.array([0.2, 0.6], np.float32).reshape(1, 1, 2, 1)
  block = imprint.ImprintBlock(num_bins=3, thresholds=[-1.0, 0.3, 0.5])
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(block(tf.constant(x)))
  kernel_grad, bias_grad = tape.gradient(loss, [block.kernel, block.bias])
  np.testing.assert_allclose(bias_grad.numpy(), [2 / 3, 2 / 3, 0], atol=1e-7)
  np.testing.assert_allclose(
      kernel_grad.numpy(),
      [[0.2 * 2 / 3, 0.2 * 2 / 3, 0], [0.6 * 2 / 3, 0.6 * 2 / 3, 0]],
      atol=1e-7)

  rec = recovery.recover(kernel_grad.numpy(), bias_grad.numpy(), (1, 2, 1))
  # Bin 2 (0 / 0) and the pair 0-1 (equal gradients) have no denominator.
  assert rec.names == ('bin 0', 'bin 1', 'bins 1-2')
  for candidate in rec.images:
    np.testing.assert_allclose(candidate, x[0], rtol=1e-6)


def test_adjacent_differences_separate_a_batch_of_two():
  dark, bright = _smooth_images(2, (16, 16, 1))
  dark, bright = 0.5 * dark, 0.5 + 0.5 * bright  # Brightness ~0.25, ~0.75.
  block = imprint.ImprintBlock(num_bins=3, thresholds=[-1.0, 0.1, 0.5])
  with tf.GradientTape() as tape:
    loss = tf.reduce_sum(block(tf.constant(np.stack([dark, bright]))))
  grads = tape.gradient(loss, [block.kernel, block.bias])
  rec = recovery.recover(grads[0].numpy(), grads[1].numpy(), dark.shape)
  errors = scoring.error_matrix(np.stack([dark, bright]), rec.images)
  assert errors.shape == (2, len(rec))
  # Only the bright image passes 0.5: bin 2 is it alone, and bins 1-2 leave
  # the dark one.
  assert errors[1, rec.names.index('bin 2')] < 1e-6
  assert errors[0, rec.names.index('bins 1-2')] < 1e-6
  assert errors.min(axis=1).max() < 1e-6


def test_recover_checks_shapes():
  with pytest.raises(ValueError, match='bias'):
    recovery.recover(np.ones((4, 3)), np.ones(2), (2, 2, 1))
  with pytest.raises(ValueError, match='pixels'):
    recovery.recover(np.ones((4, 3)), np.ones(3), (3, 3, 1))


def test_no_candidates_from_a_zero_gradient():
  rec = recovery.recover(np.zeros((4, 3)), np.zeros(3), (2, 2, 1))
  assert len(rec) == 0 and rec.images.shape == (0, 2, 2, 1)
  assert scoring.best_match(np.ones((2, 2, 1)), rec.images) == scoring.Match(
      1.0, -1)


def test_ssim_uses_gaussian_window_and_unit_data_range():
  image, other = _smooth_images(2, (16, 16, 3), seed=1)
  expected = metrics.structural_similarity(
      image, other, data_range=1.0, channel_axis=-1, gaussian_weights=True,
      sigma=1.5, use_sample_covariance=False)
  assert scoring.ssim(image, other) == pytest.approx(expected)
  assert scoring.reconstruction_error(image, image) == pytest.approx(0.0)
  # Candidates are clipped to [0, 1] first, so an out-of-range candidate
  # scores as its clipped version.
  assert scoring.ssim(image, np.clip(2 * image - 0.5, 0, 1)) == (
      scoring.ssim(image, 2 * image - 0.5))


def test_ssim_of_a_volume_averages_its_slices():
  volume, other = _smooth_images(2, (3, 16, 16, 1), seed=2)
  per_slice = [scoring.ssim(v, o) for v, o in zip(volume, other)]
  assert scoring.ssim(volume, other) == pytest.approx(np.mean(per_slice))
  with pytest.raises(ValueError, match='at least 11'):
    scoring.ssim(np.zeros((8, 8, 1)), np.zeros((8, 8, 1)))


def test_best_match_takes_the_minimum_error():
  image = _smooth_images(1, (16, 16, 1), seed=3)[0]
  noisy = image + np.random.default_rng(0).normal(0, 0.1, image.shape)
  match = scoring.best_match(image, np.stack([1 - image, noisy, image]))
  assert match.index == 2 and match.error == pytest.approx(0.0, abs=1e-9)


def test_near_empty_means_at_most_ten_percent_nonzero_pixels():
  image = np.zeros((10, 10, 3))
  image[0, :, 1] = 1.0  # 10 of 100 pixels, in one channel only.
  assert scoring.is_near_empty(image)
  image[1, 0, 0] = 0.5  # 11 pixels.
  assert not scoring.is_near_empty(image)
  assert scoring.is_near_empty(np.zeros((2, 8, 8, 1)))
