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


def test_soft_dice_is_zero_for_confident_correct_logits():
  labels = tf.constant([[[0, 1], [2, 1]]])
  logits = 50.0 * tf.one_hot(labels, 3)
  assert float(losses.soft_dice_loss(labels, logits)[0]) == pytest.approx(
      0.0, abs=1e-6)
  wrong = 50.0 * tf.one_hot((labels + 1) % 3, 3)
  # No overlap: each class's Dice is smooth / (|P| + |G| + smooth), with
  # (|P| + |G|) = (2, 3, 3) for classes (0, 1, 2).
  expected = 1 - (1 / 3 + 1 / 4 + 1 / 4) / 3
  assert float(losses.soft_dice_loss(labels, wrong)[0]) == pytest.approx(
      expected, rel=1e-5)


def test_segmentation_loss_is_per_view_and_weighted():
  labels = tf.constant([[[0, 2]], [[1, 1]]])
  logits = tf.zeros([2, 1, 2, 3])
  plain = losses.segmentation_loss(labels, logits)
  weighted = losses.segmentation_loss(labels, logits, (0.1, 0.4, 0.5))
  assert plain.shape == (2,)
  ce = np.log(3.0)
  # The weights scale each voxel's cross-entropy by its class weight.
  np.testing.assert_allclose((plain - weighted).numpy(),
                             [ce - ce * (0.1 + 0.5) / 2, ce - ce * 0.4],
                             rtol=1e-5)


def test_for_task():
  assert losses.for_task('classification') is losses.classification_loss
  seg = losses.for_task('segmentation', (0.1, 0.4, 0.5))
  assert seg(tf.zeros([1, 2, 2], tf.int32), tf.zeros([1, 2, 2, 3])).shape == (1,)
  with pytest.raises(ValueError, match='task'):
    losses.for_task('detection')
