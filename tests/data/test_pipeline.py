"""The train pipeline delivers stored chunks; training_views makes the input."""

import numpy as np
import pytest
import tensorflow as tf

from dp_medtf.data import pipeline
from dp_medtf.data import sampling


def _split():
  x = np.random.default_rng(0).integers(0, 256, [12, 6, 6, 1]).astype(
      np.uint8)
  return pipeline.ArraySplit(x, np.arange(12, dtype=np.int32)), x


def test_chunks_are_the_stored_examples_in_plan_order():
  split, x = _split()
  plan = [(s, c) for s in range(2) for c in sampling.to_chunks(
      np.array([7, 1, 4, 10, 2][s::2]), 2)]
  chunks = list(pipeline.train_dataset(split, plan))
  assert len(chunks) == len(plan)
  for (_, chunk), (xb, yb, mask) in zip(plan, chunks):
    assert xb.dtype == tf.uint8  # As stored: no float copy on the host.
    np.testing.assert_array_equal(xb.numpy(), x[chunk.indices])
    np.testing.assert_array_equal(yb.numpy(), chunk.indices)
    np.testing.assert_array_equal(mask.numpy(), chunk.mask)


class _OneByOne:
  """A split with only the Split protocol's members (no load_batch)."""

  def __init__(self, split):
    self._split = split
    self.labels = split.labels

  def __len__(self):
    return len(self._split)

  def load_example(self, index):
    return self._split.load_example(index)


def test_batched_and_one_by_one_loading_give_the_same_chunks():
  split, _ = _split()
  plan = [(s, c) for s in range(3) for c in sampling.to_chunks(
      np.array([[11, 0, 3], [5, 5, 9, 2], []][s], np.int64), 2)]
  batched = list(pipeline.train_dataset(split, plan))
  one_by_one = list(pipeline.train_dataset(_OneByOne(split), plan))
  assert len(batched) == len(one_by_one) == len(plan)
  for a, b in zip(batched, one_by_one):
    for ta, tb in zip(a, b):
      assert ta.dtype == tb.dtype
      np.testing.assert_array_equal(ta.numpy(), tb.numpy())


def test_views_normalise_and_depend_on_seed_and_step():
  split, x = _split()
  stored = next(iter(pipeline.train_dataset(
      split, [(0, sampling.to_chunks(np.arange(8), 8)[0])])))[0]
  norm = pipeline.Normalizer.fixed(mean=[100.0], std=[50.0])
  plain = pipeline.training_views(stored, norm, 1, {}, seed=0, step=0)
  np.testing.assert_allclose(plain.numpy()[:, 0], (x[:8] - 100.0) / 50.0,
                             rtol=1e-6)

  traced = tf.function(lambda x, seed, step: pipeline.training_views(
      x, norm, 4, {1: 0.5, 2: 0.5}, seed, step))

  def views(seed, step):
    return traced(stored, tf.constant(seed), tf.constant(step)).numpy()

  np.testing.assert_array_equal(views(3, 5), views(3, 5))
  # Traced and eager draw the same flips; the arithmetic may round 1 ulp apart.
  np.testing.assert_allclose(
      views(3, 5), pipeline.training_views(stored, norm, 4, {1: 0.5, 2: 0.5},
                                           3, 5).numpy(), rtol=3e-7, atol=3e-7)
  assert not np.array_equal(views(3, 5), views(3, 6))
  assert not np.array_equal(views(3, 5), views(4, 5))


def test_label_maps_refuse_flips():
  pipeline.check_flips((), {1: 0.5})
  pipeline.check_flips((4, 4), {1: 0.0})
  with pytest.raises(NotImplementedError, match='label maps'):
    pipeline.check_flips((4, 4), {2: 0.5})
