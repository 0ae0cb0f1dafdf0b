"""Tests of dp_medtf.risk.bounds: closed forms, orderings, both methods."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from dp_medtf.risk import bounds

# The moments behind the Edgeworth expansion are integrated to a relative
# accuracy of 1e-11; with the cumulants of order >= 3 zero (q = 1) its result
# is then exact to 1e-11 per standardized cumulant. 100 times that:
_EDGEWORTH_EXACT_TOLERANCE = 1e-9


def _gaussian_rero(mu: float, kappa: float) -> float:
  """1 - beta(kappa) of G_mu: Phi(Phi^-1(kappa) + mu)."""
  return stats.norm.cdf(stats.norm.ppf(kappa) + mu)


def _folded_gaussian_rero(mu: float, kappa: float) -> float:
  """The relaxed adversary at q = 1, T = 1: reject when |u| > c."""
  c = stats.norm.isf(kappa / 2.0)
  return stats.norm.cdf(mu - c) + stats.norm.cdf(-mu - c)


def _assert_brackets(result: bounds.ExactResult, exact: float) -> None:
  """lower <= exact <= value, up to the round-off part of the error."""
  rounding = result.error - (result.value - result.lower)
  assert rounding >= 0.0
  assert result.lower - rounding <= exact <= result.value + rounding


@pytest.mark.parametrize('kappa', [0.3, 1e-2, 1e-6])
@pytest.mark.parametrize('mu_total', [0.1, 1.0, 3.0])
@pytest.mark.parametrize('steps', [1, 7, 1000])
def test_full_batch_is_gaussian(mu_total, steps, kappa):
  # q = 1: T steps of G_mu compose to G_{mu sqrt(T)}.
  loss = bounds.PrivacyLoss(mu=mu_total / math.sqrt(steps), sampling_rate=1.0)
  expected = _gaussian_rero(mu_total, kappa)
  _assert_brackets(bounds.rero_exact(loss, steps, kappa), expected)
  edgeworth = bounds.rero_edgeworth(loss, steps, kappa)
  assert edgeworth.value == pytest.approx(expected, rel=0,
                                          abs=_EDGEWORTH_EXACT_TOLERANCE)


@pytest.mark.parametrize('kappa', [0.3, 1e-2, 1e-6])
@pytest.mark.parametrize('mu', [0.1, 1.0, 3.0])
def test_relaxed_full_batch_one_step_is_folded_gaussian(mu, kappa):
  loss = bounds.PrivacyLoss(mu=mu, sampling_rate=1.0, relaxed=True)
  _assert_brackets(bounds.rero_exact(loss, 1, kappa),
                   _folded_gaussian_rero(mu, kappa))


_GRID = [(q, steps, z) for q in (0.01, 0.3, 1.0) for steps in (1, 50, 2000)
         for z in (0.7, 2.0, 8.0)]


@pytest.mark.parametrize('q,steps,z', _GRID)
def test_relaxed_at_most_worst_case_and_above_simple_test(q, steps, z):
  kappa = 1e-3
  worst = bounds.rero_worst_case(z, q, steps, kappa)
  relaxed = bounds.rero_relaxed(z, q, steps, kappa)
  # |u| is a post-processing of u.
  assert relaxed.rero_exact <= (worst.rero_exact + worst.rero_exact_error +
                                relaxed.rero_exact_error)
  for result, is_relaxed in ((worst, False), (relaxed, True)):
    assert kappa <= result.rero_exact <= 1.0
    # The optimal test is at least as powerful as "some step has v > c".
    loss = bounds.PrivacyLoss(1.0 / z, q, is_relaxed)
    assert bounds.any_step_test_power(loss, steps, kappa) <= (
        result.rero_exact + result.rero_exact_error)


@pytest.mark.parametrize('num_examples,batch_size,epochs', [
    (2000, 200, 10),  # q = 0.1, T = 100.
    (50, 50, 20),  # q = 1, T = 20.
])
def test_monotone_in_epsilon(num_examples, batch_size, epochs):
  epsilons = [0.5, 8.0, 1e3, 1e18]
  rows = bounds.risk_profile(num_examples=num_examples, batch_size=batch_size,
                             epochs=epochs, delta=1e-5, epsilons=epsilons)
  sigmas = [row['noise_multiplier'] for row in rows]
  assert sigmas == sorted(sigmas, reverse=True)
  for key in ('worst_case', 'relaxed'):
    values = [row[key]['rero_exact'] for row in rows]
    errors = [row[key]['rero_exact_error'] for row in rows]
    for i in range(len(rows) - 1):
      assert values[i + 1] >= values[i] - errors[i] - errors[i + 1]
    assert values[-1] == pytest.approx(_coverage(rows[-1]), abs=errors[-1])


def _coverage(row: dict) -> float:
  """ReRo as sigma -> 0: a step reveals the target iff it is sampled."""
  missed = (1.0 - row['sampling_rate'])**row['steps']
  return 1.0 - (1.0 - row['kappa']) * missed


def _mu_for_total(q: float, steps: int, mu_total: float) -> float:
  """mu with q sqrt(T (e^mu^2 - 1)) = mu_total, the CLT's effective mu."""
  return math.sqrt(math.log1p((mu_total / q)**2 / steps))


@pytest.mark.parametrize('relaxed', [False, True])
@pytest.mark.parametrize('mu_total', [0.5, 2.0])
@pytest.mark.parametrize('q', [0.01, 0.1, 1.0])
def test_methods_agree_with_many_steps(q, mu_total, relaxed):
  steps = 10_000
  z = 1.0 / _mu_for_total(q, steps, mu_total)
  result = bounds.rero(z, q, steps, 1e-3, relaxed)
  assert result.rero_edgeworth is not None
  assert result.agrees(), (result.rero_exact, result.rero_edgeworth,
                           result.rero_exact_error)
  assert result.rero_exact_error <= bounds.TOLERANCE


def test_edgeworth_not_applicable_for_one_subsampled_step():
  loss = bounds.PrivacyLoss(mu=2.0, sampling_rate=0.01)
  result = bounds.rero_edgeworth(loss, steps=1, kappa=1e-3)
  assert result.value is None
  assert result.expansion_parameter > bounds.EDGEWORTH_MAX_EXPANSION_PARAMETER
  assert 'expansion parameter' in result.note
  exact = bounds.rero_exact(loss, 1, 1e-3)
  assert 1e-3 <= exact.value <= 1.0


def test_huge_epsilon_saturates():
  rows = bounds.risk_profile(num_examples=106, batch_size=1, epochs=500,
                             delta=8e-7, epsilons=[1e9, 1e18])
  for row in rows:
    # Every record is in ~500 steps, each of which reveals it: ReRo = 1.
    assert row['worst_case']['rero_exact'] == 1.0
    assert row['relaxed']['rero_exact'] == 1.0
    assert row['worst_case']['rero_edgeworth'] is None
    assert row['worst_case']['edgeworth_note']
    assert row['noise_multiplier'] > 0.0


def test_huge_epsilon_with_few_steps_is_coverage():
  # At sigma -> 0 a step reveals the target iff it is sampled, so ReRo ->
  # 1 - (1 - kappa) (1 - q)^T.
  rows = bounds.risk_profile(num_examples=500, batch_size=50, epochs=4,
                             delta=1e-5, epsilons=[1e18])
  row = rows[0]
  assert (row['sampling_rate'], row['steps']) == (0.1, 40)
  for key in ('worst_case', 'relaxed'):
    error = row[key]['rero_exact_error']
    assert row[key]['rero_exact'] == pytest.approx(_coverage(row), abs=error)


@pytest.mark.parametrize('kwargs,name', [
    (dict(num_examples=0, batch_size=1, epochs=1), 'num_examples'),
    (dict(num_examples=10, batch_size=11, epochs=1), 'batch_size'),
    (dict(num_examples=10, batch_size=0, epochs=1), 'batch_size'),
    (dict(num_examples=10, batch_size=2, epochs=0), 'epochs'),
])
def test_impossible_recipes_raise(kwargs, name):
  with pytest.raises(ValueError, match=name):
    bounds.risk_profile(**kwargs, delta=1e-5, epsilons=[1.0])


@pytest.mark.parametrize('kwargs,name', [
    (dict(delta=1.0, epsilons=[1.0]), 'delta'),
    (dict(delta=1e-5, epsilons=[-1.0]), 'epsilon'),
    (dict(delta=1e-5, epsilons=[math.inf]), 'epsilon'),
    (dict(delta=1e-5, noise_multipliers=[0.0]), 'noise_multiplier'),
    (dict(delta=1e-5), 'epsilons'),
])
def test_impossible_budgets_raise(kwargs, name):
  with pytest.raises(ValueError, match=name):
    bounds.risk_profile(num_examples=100, batch_size=10, epochs=1, **kwargs)


def test_impossible_mechanism_raises():
  with pytest.raises(ValueError, match='sampling_rate'):
    bounds.PrivacyLoss(mu=1.0, sampling_rate=1.5)
  with pytest.raises(ValueError, match='kappa'):
    bounds.rero_exact(bounds.PrivacyLoss(1.0, 0.1), 10, kappa=1.0)
  with pytest.raises(ValueError, match='steps'):
    bounds.rero_edgeworth(bounds.PrivacyLoss(1.0, 0.1), 0, kappa=0.1)


def test_noise_multiplier_input_spends_its_epsilon():
  rows = bounds.risk_profile(num_examples=1000, batch_size=100, epochs=5,
                             delta=1e-5, noise_multipliers=[1.0, 4.0])
  assert rows[0]['epsilon'] > rows[1]['epsilon'] > 0.0
  assert (rows[0]['worst_case']['rero_exact'] >=
          rows[1]['worst_case']['rero_exact'])


def test_edgeworth_sf_is_gaussian_without_higher_cumulants():
  x = np.linspace(-5.0, 5.0, 11)
  np.testing.assert_allclose(bounds.edgeworth_sf(x, np.zeros(3)),
                             stats.norm.sf(x), rtol=0, atol=1e-15)
