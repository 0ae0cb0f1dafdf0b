"""Per-view losses and the Dice metric."""

import numpy as np
import pytest
import tensorflow as tf

from dp_medtf import losses
from dp_medtf import metrics


def test_dice_per_class_by_hand():
  truth = np.array([[[0, 1, 1, 2]], [[0, 0, 0, 0]]])
  pred = np.array([[[0, 1, 2, 2]], [[0, 0, 0, 0]]])
  dice = metrics.dice_per_class(truth, pred, 3)
  # Volume 0: class 1 overlap 1 of 2 + 1 -> 2/3; class 2: 1 of 1 + 2 -> 2/3.
  np.testing.assert_allclose(dice[0], [1.0, 2 / 3, 2 / 3])
  assert dice[1, 0] == 1.0 and np.isnan(dice[1, 1]) and np.isnan(dice[1, 2])


def test_dice_loss_by_hand():
  # One view of two voxels, labels (0, 2), all logits 0: p = 1/3 everywhere.
  labels = tf.constant([[0, 2]])
  logits = tf.zeros([1, 2, 3])
  # Class 0 and 2: overlap 1/3, sum(p) = 2/3, sum(g) = 1 -> Dice
  # (2/3) / (5/3 + 1e-5); class 1 (absent): 0 / (2/3 + 1e-5) = 0.
  d = (2 / 3) / (5 / 3 + 1e-5)
  assert float(losses.dice_loss(labels, logits)[0]) == pytest.approx(
      1 - (d + 0 + d) / 3, rel=1e-6)
  # Weights are normalised by their sum: (0.1 d + 0.4 * 0 + 0.5 d) / 1.0.
  assert float(losses.dice_loss(labels, logits, (0.1, 0.4, 0.5))[0]) == (
      pytest.approx(1 - 0.6 * d, rel=1e-6))
  assert float(losses.dice_loss(labels, logits, (1.0, 4.0, 5.0))[0]) == (
      pytest.approx(1 - 0.6 * d, rel=1e-6))
  # Confident and right: every class present scores 2 / (2 + 1e-5).
  right = 50.0 * tf.one_hot(tf.constant([[0, 1, 2]]), 3)
  assert float(losses.dice_loss(tf.constant([[0, 1, 2]]), right)[0]) == (
      pytest.approx(1 - 2 / (2 + 1e-5), abs=1e-6))


def _dice_loss_numpy(labels, logits, weights):
  """The authors' f_score loss, written out for one view in numpy."""
  e = np.exp(logits - logits.max(-1, keepdims=True))
  p = (e / e.sum(-1, keepdims=True)).reshape(-1, logits.shape[-1])
  g = np.eye(logits.shape[-1])[labels.reshape(-1)]
  dice = 2 * (p * g).sum(0) / (p.sum(0) + g.sum(0) + 1e-5)
  return 1 - np.average(dice, weights=weights)


@pytest.mark.parametrize('weights', [None, (0.1, 0.4, 0.5)])
def test_dice_loss_is_per_view_and_matches_numpy(weights):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, size=(2, 3, 4, 5))
  labels[1] = np.where(labels[1] == 2, 1, labels[1])  # View 1: no tumour.
  logits = rng.normal(size=(2, 3, 4, 5, 3)).astype(np.float32)
  loss = losses.dice_loss(tf.constant(labels), tf.constant(logits), weights)
  assert loss.shape == (2,)
  np.testing.assert_allclose(
      loss.numpy(), [_dice_loss_numpy(labels[i], logits[i], weights)
                     for i in range(2)], rtol=1e-5)
  # Per-example use under tf.vectorized_map (6-D logits) gives the same.
  mapped = tf.vectorized_map(
      lambda a: losses.dice_loss(a[0][None], a[1][None], weights)[0],
      (tf.constant(labels), tf.constant(logits)))
  np.testing.assert_allclose(mapped.numpy(), loss.numpy(), rtol=1e-5)


def test_classification_loss_weights_each_example_by_its_label():
  labels = tf.constant([0, 1])
  logits = tf.zeros([2, 2])
  np.testing.assert_allclose(
      losses.classification_loss(labels, logits, (0.1, 0.9)).numpy(),
      [0.1 * np.log(2), 0.9 * np.log(2)], rtol=1e-6)


def test_for_task():
  assert losses.for_task('classification') is losses.classification_loss
  seg = losses.for_task('segmentation', (0.1, 0.4, 0.5))
  labels, logits = tf.zeros([1, 2, 2], tf.int32), tf.zeros([1, 2, 2, 3])
  assert seg(labels, logits).shape == (1,)
  np.testing.assert_allclose(
      seg(labels, logits), losses.dice_loss(labels, logits, (0.1, 0.4, 0.5)))
  weighted = losses.for_task('classification', (0.1, 0.9))
  np.testing.assert_allclose(
      weighted(tf.constant([1]), tf.zeros([1, 2])), [0.9 * np.log(2)],
      rtol=1e-6)
  with pytest.raises(ValueError, match='task'):
    losses.for_task('detection')
