"""Augmentation views: shapes, flip rates, determinism."""

import numpy as np
import pytest
import tensorflow as tf

from dp_medtf.data import augment


def test_views_without_flips_are_copies():
  x = tf.random.normal([3, 4, 4, 2])
  out = augment.views(x, 2, {}, seed=(0, 0))
  for k in range(2):
    np.testing.assert_array_equal(out[:, k].numpy(), x.numpy())


@pytest.mark.parametrize('axis,prob', [(1, 0.2), (2, 0.5)])
def test_flip_rate(axis, prob):
  x = tf.reshape(tf.range(16, dtype=tf.float32), [1, 4, 4, 1])
  x = tf.repeat(x, 500, axis=0)
  out = augment.views(x, 4, {axis: prob}, seed=(1, 2)).numpy()
  flipped = np.all(out == np.flip(x.numpy(), axis)[:, None], axis=(2, 3, 4))
  n = flipped.size
  assert flipped.mean() == pytest.approx(prob, abs=5 * np.sqrt(
      prob * (1 - prob) / n))


def test_views_are_seeded():
  x = tf.random.normal([8, 4, 4, 1])
  a = augment.views(x, 3, {1: 0.5, 2: 0.5}, seed=(5, 6))
  b = augment.views(x, 3, {1: 0.5, 2: 0.5}, seed=(5, 6))
  np.testing.assert_array_equal(a.numpy(), b.numpy())
