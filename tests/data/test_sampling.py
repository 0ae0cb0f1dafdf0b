"""Poisson sampling and chunking: rates, determinism, nothing dropped."""

import math

import numpy as np
import pytest

from dp_medtf.data import sampling


def test_poisson_rate_and_independence():
  n, q, steps = 2000, 0.05, 400
  sampler = sampling.PoissonSampler(n, q, key=1)
  sizes = np.array([len(sampler.step_indices(s)) for s in range(steps)])
  # Batch sizes are Binomial(n, q): mean nq, variance nq(1-q).
  mean_se = math.sqrt(n * q * (1 - q) / steps)
  assert abs(sizes.mean() - n * q) < 5 * mean_se
  var = n * q * (1 - q)
  # Sample variance of `steps` draws: relative standard error ~ sqrt(2/steps).
  assert sizes.var(ddof=1) == pytest.approx(var, rel=5 * math.sqrt(2 / steps))
  # Each example is drawn with probability q, independently of the others.
  counts = np.zeros(n)
  for s in range(steps):
    counts[sampler.step_indices(s)] += 1
  assert counts.mean() / steps == pytest.approx(q, rel=5 * math.sqrt(
      (1 - q) / (q * n * steps)))


def test_sampler_is_deterministic_per_seed_and_step():
  a = sampling.PoissonSampler(500, 0.1, key=3)
  b = sampling.PoissonSampler(500, 0.1, key=3)
  np.testing.assert_array_equal(a.step_indices(17), b.step_indices(17))
  assert not np.array_equal(a.step_indices(17), a.step_indices(18))
  assert not np.array_equal(
      a.step_indices(17), sampling.PoissonSampler(500, 0.1, 4).step_indices(17))


@pytest.mark.parametrize('count,size', [(0, 4), (3, 4), (4, 4), (9, 4)])
def test_chunks_keep_every_example_once(count, size):
  indices = np.arange(100, 100 + count)
  chunks = sampling.to_chunks(indices, size)
  assert len(chunks) == max(1, math.ceil(count / size))
  assert all(c.indices.shape == (size,) and c.mask.shape == (size,)
             for c in chunks)
  kept = np.concatenate([c.indices[c.mask == 1] for c in chunks])
  np.testing.assert_array_equal(kept, indices)


def test_poisson_bound_holds_the_batches():
  n, q, steps = 2400, 256 / 2400, 108
  bound = sampling.poisson_bound(n, q, steps)
  assert 256 < bound < 256 + 6 * math.sqrt(256)
  sampler = sampling.PoissonSampler(n, q, key=0)
  assert max(len(sampler.step_indices(s)) for s in range(steps)) <= bound


def test_shuffled_batches_cover_the_epoch():
  chunks = sampling.shuffled_batches(10, 4, seed=0, epoch=2)
  kept = np.concatenate([c.indices[c.mask == 1] for c in chunks])
  np.testing.assert_array_equal(np.sort(kept), np.arange(10))


@pytest.mark.parametrize('n,q', [(0, 0.1), (10, 0.0), (10, 1.5)])
def test_bad_sampler_arguments(n, q):
  with pytest.raises(ValueError):
    sampling.PoissonSampler(n, q, key=0)
