"""Noise calibration: round trip, independent cross-checks, bad input."""

import math

import dp_accounting
import mpmath
import numpy as np
import pytest
from tensorflow_privacy.privacy.analysis import compute_dp_sgd_privacy_lib

from dp_medtf import epsilons
from dp_medtf.privacy import accounting
from dp_medtf.privacy import ledger as privacy_ledger

DELTA = 8e-7
# (q, T): HAM10000-like, a single full-batch step, MSD-Liver-like.
SETTINGS = [(2048 / 8112, 300), (1.0, 1), (1 / 106, 53_000)]
INTEGER_ORDERS = [int(a) for a in accounting.ORDERS if a == int(a)]


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
  with pytest.raises(ValueError, match='epsilon=1e-6 '):
    accounting.calibrate_noise_multiplier(1e-6, DELTA, 1.0, 10_000)


# Healthy settings, several with a fractional optimal order (large epsilon).
@pytest.mark.parametrize('z,q,steps,delta', [
    (0.5, 0.25, 300, 8e-7), (0.3, 0.01, 20, 1e-5), (2.0, 0.5, 1000, 8e-7),
    (1e-3, 0.1, 10, 8e-7), (0.8, 1.0, 50, 1e-5), (14.8, 4e-4, 72_969, 8.6e-5),
    (1.1, 1 / 8112, 811_200, 8e-7)])
def test_spent_epsilon_is_dp_accountings_default_orders(z, q, steps, delta):
  accountant = dp_accounting.rdp.RdpAccountant()
  accountant.compose(accounting.dp_event(z, q, steps))
  assert accounting.spent_epsilon(z, delta, q, steps) == pytest.approx(
      accountant.get_epsilon(delta), rel=1e-9)


def _mp_epsilon(z, q, steps, delta, orders):
  """Integer-order RDP of the sampled Gaussian as the plain binomial sum
  (Mironov et al. 2019, Sec. 3.3) in 50-digit arithmetic, then the
  conversion dp-accounting uses."""
  with mpmath.workdps(50):
    z, q, delta = mpmath.mpf(z), mpmath.mpf(q), mpmath.mpf(delta)
    best = mpmath.inf
    for a in orders:
      total = mpmath.fsum(
          mpmath.binomial(a, k) * (1 - q)**(a - k) * q**k
          * mpmath.exp((k * k - k) / (2 * z * z)) for k in range(a + 1))
      r = steps * mpmath.log(total) / (a - 1)
      if delta**2 + mpmath.expm1(-r) > 0:
        return 0.0
      best = min(best, r + mpmath.log1p(-mpmath.mpf(1) / a)
                 - mpmath.log(delta * a) / (a - 1))
    return float(best)


# Tiny q and large z: per-step RDP below ~1e-13, where dp-accounting's sums
# around 1 lose every digit (zero or negative RDP: epsilon 0, or an error).
BROKEN = [(1e3, 1 / 8112, 811_200), (30.0, 1 / 1_080_000, 54_000_000),
          (1e3, 1 / 1_080_000, 54_000_000), (3e3, 1 / 2e6, 10**8)]


@pytest.mark.parametrize('z,q,steps', BROKEN)
def test_dp_accounting_alone_fails_at_tiny_rdp(z, q, steps):
  accountant = dp_accounting.rdp.RdpAccountant()
  accountant.compose(accounting.dp_event(z, q, steps))
  assert np.min(accountant.rdp) <= 0.0
  try:
    assert accountant.get_epsilon(DELTA) == 0.0
  except ValueError as error:
    assert 'negative' in str(error)


@pytest.mark.parametrize('z,q,steps', BROKEN)
def test_spent_epsilon_at_tiny_rdp_matches_exact_arithmetic(z, q, steps):
  expected = _mp_epsilon(z, q, steps, DELTA, INTEGER_ORDERS)
  assert expected > 0  # The true spend: small, but not zero.
  # No fractional order gets below the integer ones here (its conversion
  # term alone exceeds them), so the integer orders give the exact answer.
  assert accounting.spent_epsilon(z, DELTA, q, steps) == pytest.approx(
      expected, rel=1e-9)


@pytest.mark.parametrize('z,q,steps', [(1e3, 1 / 8112, 811_200),
                                       (0.7, 1e-3, 5000), (0.05, 0.02, 100)])
def test_integer_orders_match_exact_arithmetic(z, q, steps):
  ours = dict(zip(INTEGER_ORDERS, accounting.integer_order_rdp(z, q, steps)))
  with mpmath.workdps(50):
    mp_q, mp_z = mpmath.mpf(q), mpmath.mpf(z)
    for a in [2, 3, 10, 63, 1024]:
      a_alpha = mpmath.fsum(
          mpmath.binomial(a, k) * (1 - mp_q)**(a - k) * mp_q**k
          * mpmath.exp((k * k - k) / (2 * mp_z**2)) for k in range(a + 1))
      expected = steps * mpmath.log(a_alpha) / (a - 1)
      assert ours[a] == pytest.approx(float(expected), rel=1e-10)


@pytest.mark.parametrize('bogus', [-1e-9, 0.0, 1e30, None])
def test_unconfirmed_fractional_orders_only_raise_the_spend(monkeypatch,
                                                            bogus):
  z, q, steps = 0.5, 0.25, 300  # The optimal order is fractional here.
  healthy = accounting.spent_epsilon(z, DELTA, q, steps)
  integer_only = dp_accounting.rdp.compute_epsilon(
      INTEGER_ORDERS, accounting.integer_order_rdp(z, q, steps), DELTA)[0]
  assert healthy < integer_only
  # dp-accounting's fractional-order values replaced by nonsense, or failing.
  monkeypatch.setattr(
      accounting, '_fractional_rdp',
      lambda z, q, steps, orders: None if bogus is None else np.full(
          len(orders), bogus))
  assert healthy <= accounting.spent_epsilon(z, DELTA, q, steps) <= (
      integer_only)


def test_smallest_reachable_epsilon():
  floor = accounting.smallest_reachable_epsilon(DELTA)
  # Order 1024 with zero RDP: log1p(-1/1024) - log(delta * 1024) / 1023.
  assert floor == pytest.approx(
      math.log1p(-1 / 1024) - math.log(DELTA * 1024) / 1023, rel=1e-12)
  below = epsilons.epsilon_text(0.99 * floor)
  with pytest.raises(ValueError, match=f'epsilon={below} is unr'):
    accounting.calibrate_noise_multiplier(0.99 * floor, DELTA, 0.01, 1000)
  z = accounting.calibrate_noise_multiplier(1.1 * floor, DELTA, 0.01, 1000)
  assert 1.1 * floor * (1 - 1e-3) <= accounting.spent_epsilon(
      z, DELTA, 0.01, 1000) <= 1.1 * floor


def test_ledger_epsilon_is_sound_where_dp_accounting_underflows():
  # At q = 1/1.08e6, T = 5.4e7 (RadImageNet, batch 1, 50 epochs) and z = 30,
  # dp-accounting's RdpAccountant rounds the RDP to 0 and reports epsilon 0.
  ledger = privacy_ledger.PrivacyLedger()
  ledger.record(30.0, 1 / 1.08e6, 54_000_000)
  expected = accounting.spent_epsilon(30.0, 8e-7, 1 / 1.08e6, 54_000_000)
  assert expected > 0
  assert ledger.epsilon(8e-7) == expected


@pytest.mark.parametrize('z1,z2', [(1.0, 1.0), (0.8, 2.0)])
def test_ledger_composes_like_dp_accounting_where_it_is_sound(z1, z2):
  ledger = privacy_ledger.PrivacyLedger()
  ledger.record(z1, 0.01, 300)
  ledger.record(z2, 0.02, 200)
  integer_orders = [float(a) for a in accounting.ORDERS if a == int(a)]
  reference = dp_accounting.rdp.RdpAccountant(orders=integer_orders)
  reference.compose(accounting.dp_event(z1, 0.01, 300))
  reference.compose(accounting.dp_event(z2, 0.02, 200))
  assert ledger.epsilon(1e-5) == pytest.approx(reference.get_epsilon(1e-5),
                                               rel=1e-6)


@pytest.mark.parametrize('n,b,epochs,private,expected', [
    (2400, 64, 3, True, (64 / 2400, 37 * 3)),   # The last partial batch of
    (2400, 64, 3, False, (64 / 2400, 38 * 3)),  # an epoch: sampled, or not.
    (106, 1, 500, True, (1 / 106, 53_000)),
    (10, 10, 2, True, (1.0, 2)),
])
def test_sampling_rate_and_steps(n, b, epochs, private, expected):
  assert accounting.sampling_rate_and_steps(n, b, epochs,
                                            private=private) == expected


@pytest.mark.parametrize('kwargs,message', [
    (dict(num_examples=0, batch_size=1, epochs=1), 'num_examples'),
    (dict(num_examples=10, batch_size=11, epochs=1),
     r'batch_size must lie in \[1, 10\]'),
    (dict(num_examples=10, batch_size=0, epochs=1), 'batch_size'),
    (dict(num_examples=10, batch_size=2.5, epochs=1), 'batch_size'),
    (dict(num_examples=10, batch_size=2, epochs=0), 'epochs'),
])
def test_sampling_rate_and_steps_rejects(kwargs, message):
  with pytest.raises(ValueError, match=message):
    accounting.sampling_rate_and_steps(**kwargs)
