"""The mechanism's randomness is secret: an adversary cannot recompute it.

The attack these tests stop: with the noise and the batches seeded by the
published training seed, two runs on neighbouring data sets differ by exactly
the removed example's clipped gradient / B (the noise cancels), and the
steps that hold any example are known (no amplification by subsampling).
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from dp_medtf import losses
from dp_medtf.data import sampling
from dp_medtf.privacy import randomness
from dp_medtf.privacy import step as dp_step


def test_secret_randomness_reads_os_entropy(monkeypatch):
  requested = []
  real = os.urandom

  def spy(n):
    requested.append(n)
    return real(n)

  monkeypatch.setattr(os, 'urandom', spy)
  secret = randomness.MechanismRandomness()
  # 256 bits for the sampler, 192 for the Philox state of the noise.
  assert sorted(requested) == [24, 32]
  assert secret.mode == randomness.SECRET
  assert secret.sampling_key().shape == (4,)


def test_secret_draws_differ_and_seeded_draws_repeat():
  a, b = randomness.MechanismRandomness(), randomness.MechanismRandomness()
  assert not np.array_equal(a.sampling_key(), b.sampling_key())
  na = a.noise_generator.normal([64]).numpy()
  nb = b.noise_generator.normal([64]).numpy()
  assert not np.allclose(na, nb)
  sa = sampling.PoissonSampler(1000, 0.1, a.sampling_key()).step_indices(0)
  sb = sampling.PoissonSampler(1000, 0.1, b.sampling_key()).step_indices(0)
  assert not np.array_equal(sa, sb)
  # The insecure mode is what it says: a function of the seed.
  c, d = (randomness.MechanismRandomness(seed=5),
          randomness.MechanismRandomness(seed=5))
  assert c.mode == d.mode == randomness.SEEDED
  np.testing.assert_array_equal(c.noise_generator.normal([8]),
                                d.noise_generator.normal([8]))


def test_checkpoint_restores_the_secret_state(tmp_path):
  original = randomness.MechanismRandomness()
  original.noise_generator.normal([3])  # Advance the state.
  path = tf.train.Checkpoint(r=original).write(str(tmp_path / 'ckpt'))
  restored = randomness.MechanismRandomness()
  tf.train.Checkpoint(r=restored).read(path).assert_consumed()
  np.testing.assert_array_equal(restored.sampling_key(),
                                original.sampling_key())
  np.testing.assert_array_equal(restored.noise_generator.normal([16]),
                                original.noise_generator.normal([16]))


def _model():
  tf.keras.utils.set_random_seed(0)
  model = tf.keras.Sequential([tf.keras.layers.Dense(8, activation='tanh'),
                               tf.keras.layers.Dense(3)])
  model.build([None, 6])
  return model


def _privatized(x, y, mask, generator, z, clip, b):
  step = dp_step.DPStep(_model(), losses.classification_loss,
                        tf.keras.optimizers.SGD(0.0), clip_norm=clip,
                        noise_multiplier=z, expected_batch_size=b,
                        generator=generator)
  step.accumulate(x, y, mask)
  return np.concatenate([g.numpy().ravel()
                         for g in step.privatized_gradient()])


@pytest.mark.parametrize('clip', [0.1, 1.0])
def test_neighbouring_runs_do_not_cancel_the_noise(clip):
  z, b, n = 1.0, 8.0, 8
  rng = np.random.default_rng(0)
  x = tf.constant(rng.normal(size=[n, 1, 6]), tf.float32)
  y = tf.constant(rng.integers(0, 3, n), tf.int32)
  full, neighbour = tf.ones([n]), tf.concat([[0.0], tf.ones([n - 1])], 0)
  clipped_g0 = _privatized(x, y, full - neighbour, tf.random.Generator.from_seed(
      0), 0.0, clip, b)

  def difference(make_generator):
    return (_privatized(x, y, full, make_generator(), z, clip, b) -
            _privatized(x, y, neighbour, make_generator(), z, clip, b))

  # Seeded noise (the insecure mode): the difference is exactly g0 / B.
  seeded = difference(lambda: randomness.MechanismRandomness(7).noise_generator)
  np.testing.assert_allclose(seeded, clipped_g0, atol=1e-6)
  # Secret noise: the residual is the difference of two independent draws,
  # N(0, 2 (zC/B)^2) per coordinate, so its norm is about sqrt(2 d) zC/B.
  # It falls below half of that with probability P(chi2_d < d/4), under
  # 1e-9 for the d = 83 coordinates here.
  residual = difference(
      lambda: randomness.MechanismRandomness().noise_generator) - clipped_g0
  d = residual.size
  assert d == 83
  assert np.linalg.norm(residual) > 0.5 * np.sqrt(2 * d) * z * clip / b


def test_poisson_key_must_be_secret_to_hide_membership():
  # Whoever knows the key knows every step that holds example 0.
  key = randomness.MechanismRandomness().sampling_key()
  first = sampling.PoissonSampler(500, 0.05, key)
  again = sampling.PoissonSampler(500, 0.05, key)
  for step in range(5):
    np.testing.assert_array_equal(first.step_indices(step),
                                  again.step_indices(step))
  other = sampling.PoissonSampler(500, 0.05, randomness.MechanismRandomness(
  ).sampling_key())
  assert any(not np.array_equal(first.step_indices(s), other.step_indices(s))
             for s in range(5))
