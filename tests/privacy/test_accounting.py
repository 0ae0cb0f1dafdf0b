"""Noise calibration: round trip, independent cross-checks, bad input."""

import math

import dp_accounting
import pytest
from tensorflow_privacy.privacy.analysis import compute_dp_sgd_privacy_lib

from dp_medtf.privacy import accounting

DELTA = 8e-7
# (q, T): HAM10000-like, a single full-batch step, MSD-Liver-like.
SETTINGS = [(2048 / 8112, 300), (1.0, 1), (1 / 106, 53_000)]


@pytest.mark.parametrize('q,steps', SETTINGS)
@pytest.mark.parametrize('epsilon', [0.5, 1.0, 8.0, 32.0, 1e3, 1e6, 1e9, 1e12])
def test_calibration_round_trip(epsilon, q, steps):
  z = accounting.calibrate_noise_multiplier(epsilon, DELTA, q, steps)
  spent = accounting.spent_epsilon(z, DELTA, q, steps)
  assert spent <= epsilon
  assert spent >= 0.99 * epsilon


def test_calibration_reaches_1e18():
  z = accounting.calibrate_noise_multiplier(1e18, DELTA, 0.01, 5000)
  assert 0 < z < 1e-6
  assert 0.99e18 <= accounting.spent_epsilon(z, DELTA, 0.01, 5000) <= 1e18


@pytest.mark.parametrize('z,q,steps', [(1.1, 0.01, 60), (0.6, 0.25, 40),
                                       (3.0, 1.0, 10)])
def test_spent_epsilon_matches_dp_accounting_directly(z, q, steps):
  accountant = dp_accounting.rdp.RdpAccountant()
  event = dp_accounting.GaussianDpEvent(z)
  if q < 1:
    event = dp_accounting.PoissonSampledDpEvent(q, event)
  for _ in range(steps):  # Composed one step at a time, not self-composed.
    accountant.compose(event)
  assert accounting.spent_epsilon(z, DELTA, q, steps) == pytest.approx(
      accountant.get_epsilon(DELTA), rel=1e-9)


def test_spent_epsilon_matches_tf_privacy():
  # TF Privacy's own DP-SGD statement: Poisson rate 256/60000, 15 epochs.
  q, epochs, z = 256 / 60_000, 15, 1.1
  expected = compute_dp_sgd_privacy_lib._compute_dp_sgd_example_privacy(  # pylint: disable=protected-access
      epochs, z, 1e-5, used_microbatching=False,
      poisson_subsampling_probability=q)
  steps = int(math.ceil(epochs / q))
  assert accounting.spent_epsilon(z, 1e-5, q, steps) == (
      pytest.approx(expected, rel=1e-9))


def _independent_epsilon(z, q, steps, delta, orders):
  """Integer-order RDP of the sampled Gaussian (Mironov et al. 2019, Sec. 3.3)
  and the conversion of Balle et al. (2020, Thm. 21), written from the papers.
  """
  best = math.inf
  for a in orders:
    log_terms = [math.lgamma(a + 1) - math.lgamma(k + 1) - math.lgamma(a - k + 1)
                 + (a - k) * math.log1p(-q) + k * math.log(q)
                 + (k * k - k) / (2 * z * z) for k in range(a + 1)]
    top = max(log_terms)
    log_a = top + math.log(sum(math.exp(t - top) for t in log_terms))
    rdp = steps * log_a / (a - 1)
    eps = rdp + math.log1p(-1 / a) - (math.log(delta) + math.log(a)) / (a - 1)
    best = min(best, eps)
  return best


@pytest.mark.parametrize('z,q,steps', [(1.1, 0.01, 1000), (0.8, 0.05, 300)])
def test_spent_epsilon_matches_an_independent_computation(z, q, steps):
  orders = list(range(2, 65))
  accountant = dp_accounting.rdp.RdpAccountant(orders=orders)
  accountant.compose(accounting.dp_event(z, q, steps))
  ours = accountant.get_epsilon(1e-5)
  assert ours == pytest.approx(_independent_epsilon(z, q, steps, 1e-5, orders),
                               rel=1e-6)
  # The project's default orders include fractional ones: never worse.
  assert accounting.spent_epsilon(z, 1e-5, q, steps) <= ours * (1 + 1e-12)


def test_more_noise_spends_less():
  eps = [accounting.spent_epsilon(z, DELTA, 0.1, 100) for z in (0.5, 1, 2, 4)]
  assert eps == sorted(eps, reverse=True)


@pytest.mark.parametrize('kwargs,name', [
    (dict(epsilon=-1.0, delta=DELTA, sampling_rate=0.1, steps=10), 'epsilon'),
    (dict(epsilon=1.0, delta=1.0, sampling_rate=0.1, steps=10), 'delta'),
    (dict(epsilon=1.0, delta=DELTA, sampling_rate=1.5, steps=10),
     'sampling_rate'),
    (dict(epsilon=1.0, delta=DELTA, sampling_rate=0.1, steps=0), 'steps'),
])
def test_impossible_inputs_name_the_argument(kwargs, name):
  with pytest.raises(ValueError, match=name):
    accounting.calibrate_noise_multiplier(**kwargs)


def test_unreachably_small_epsilon_is_an_error():
  with pytest.raises(ValueError, match='epsilon=1e-06'):
    accounting.calibrate_noise_multiplier(1e-6, DELTA, 1.0, 10_000)
