"""Privacy accounting for DP-SGD with Poisson sampling: calibrate and spend.

One accountant serves the whole project: the RDP analysis of T self-composed
steps of the Poisson-subsampled Gaussian mechanism over dp-accounting's
default orders (the analysis TF Privacy and Opacus use), converted to
(epsilon, delta) as dp-accounting does.

dp-accounting sums each order's series around 1 in floating point, so at tiny
q and large z (per-step RDP below ~1e-13) its values drown in rounding: they
come out zero or negative, and the conversion then reports epsilon = 0 or
raises. Here the integer orders are summed in a form without cancellation,
log1p(sum_{k>=2} C(a, k) q^k (1-q)^(a-k) expm1(k(k-1) / (2 z^2))), and
fractional orders are taken from dp-accounting only where the RDP order
relations confirm them; elsewhere they are bounded from the integer orders.

Example:

  >>> z = calibrate_noise_multiplier(8.0, 8e-7, sampling_rate=0.01, steps=1000)
  >>> round(spent_epsilon(z, 8e-7, sampling_rate=0.01, steps=1000), 1)
  8.0
"""

from __future__ import annotations

import math
from typing import Callable

import dp_accounting
from dp_accounting import rdp
from dp_accounting.rdp import rdp_privacy_accountant
import numpy as np
from scipy import special

from dp_medtf import epsilons as epsilons_lib

ORDERS = np.asarray(rdp_privacy_accountant.DEFAULT_RDP_ORDERS, dtype=float)
_IS_INT = ORDERS == np.floor(ORDERS)
_INT_ORDERS = ORDERS[_IS_INT].astype(int)
_FRAC_ORDERS = ORDERS[~_IS_INT]
# Every fractional order lies between two consecutive integer orders.
_FLOOR = np.floor(_FRAC_ORDERS).astype(int)
assert all(np.isin(_FLOOR[_FLOOR >= 2], _INT_ORDERS))
assert all(np.isin(_FLOOR + 1, _INT_ORDERS))
# (order, k) index pairs of the integer-order sums, k = 2..order.
_PAIR_ORDER = np.concatenate([np.full(a - 1, a) for a in _INT_ORDERS])
_PAIR_K = np.concatenate([np.arange(2, a + 1) for a in _INT_ORDERS])
_PAIR_START = np.concatenate([[0], np.cumsum(_INT_ORDERS - 1)[:-1]])
_LOG_BINOM = (special.gammaln(_PAIR_ORDER + 1) - special.gammaln(_PAIR_K + 1)
              - special.gammaln(_PAIR_ORDER - _PAIR_K + 1))
# Relative slack for rounding of correct values in the order-relation checks.
_SLACK = 1e-9
# The search gives up beyond these noise multipliers.
_Z_MIN, _Z_MAX = 1e-30, 1e30


def validate(*, sampling_rate: float | None = None, steps: int | None = None,
             delta: float | None = None, epsilon: float | None = None,
             noise_multiplier: float | None = None) -> None:
  """Raises ValueError, naming the argument, for an impossible privacy input.

  Args:
    sampling_rate: must lie in (0, 1].
    steps: must be a positive integer.
    delta: must lie in (0, 1).
    epsilon: must be positive (math.inf allowed: no privacy).
    noise_multiplier: must be positive and finite.
  """
  if sampling_rate is not None and not 0.0 < sampling_rate <= 1.0:
    raise ValueError(f'sampling_rate must lie in (0, 1], got {sampling_rate}.')
  if steps is not None and (int(steps) != steps or steps < 1):
    raise ValueError(f'steps must be a positive integer, got {steps}.')
  if delta is not None and not 0.0 < delta < 1.0:
    raise ValueError(f'delta must lie in (0, 1), got {delta}.')
  if epsilon is not None and (math.isnan(epsilon) or epsilon <= 0.0):
    raise ValueError(f'epsilon must be positive, got {epsilon}.')
  if noise_multiplier is not None and not (
      0.0 < noise_multiplier < math.inf):
    raise ValueError(
        f'noise_multiplier must be positive and finite, got {noise_multiplier}.')


def sampling_rate_and_steps(num_examples: int, batch_size: int, epochs: int,
                            *, private: bool = True) -> tuple[float, int]:
  """The q and T a training run of N examples is calibrated for.

  DP-SGD samples each example with probability q = B / N per step and runs
  T = (N // B) * epochs steps; without DP the batches are shuffled, not
  sampled, and an epoch takes ceil(N / B) steps.

  Args:
    num_examples: training-set size N >= 1.
    batch_size: expected batch size B in [1, N].
    epochs: number of epochs >= 1.
    private: False for training without DP (epsilon = inf).

  Returns:
    (q, T).

  Raises:
    ValueError: naming the impossible argument.

  Example:

    >>> sampling_rate_and_steps(2400, 64, 3)
    (0.02666666666666667, 111)
    >>> sampling_rate_and_steps(2400, 64, 3, private=False)[1]
    114
  """
  for name, value in (('num_examples', num_examples),
                      ('batch_size', batch_size), ('epochs', epochs)):
    if int(value) != value or value < 1:
      raise ValueError(f'{name} must be a positive integer, got {value}.')
  n, b = int(num_examples), int(batch_size)
  if b > n:
    raise ValueError(f'batch_size must lie in [1, {n}] (the training-set '
                     f'size), got {b}.')
  per_epoch = n // b if private else math.ceil(n / b)
  return b / n, per_epoch * int(epochs)


def dp_event(noise_multiplier: float, sampling_rate: float,
             steps: int) -> dp_accounting.DpEvent:
  """The DpEvent of `steps` Poisson-subsampled Gaussian steps."""
  step = dp_accounting.GaussianDpEvent(noise_multiplier)
  if sampling_rate < 1.0:
    step = dp_accounting.PoissonSampledDpEvent(sampling_rate, step)
  return dp_accounting.SelfComposedDpEvent(step, int(steps))


def _log_expm1(x: np.ndarray) -> np.ndarray:
  """log(exp(x) - 1) for x >= 0, without overflow for large x."""
  with np.errstate(divide='ignore', over='ignore'):
    return np.where(x > 30.0, x + np.log1p(-np.exp(-np.minimum(x, 1e300))),
                    np.log(np.expm1(np.minimum(x, 30.0))))


def integer_order_rdp(noise_multiplier: float, sampling_rate: float,
                      steps: int) -> np.ndarray:
  """RDP of T sampled-Gaussian steps at the integer default orders.

  For q < 1, A_a = E[(1 - q + q L)^a] = 1 + sum_{k>=2} C(a, k) q^k (1-q)^(a-k)
  (exp(k(k-1) / (2 z^2)) - 1) (Mironov et al. 2019, Sec. 3.3; the k = 0, 1
  terms sum to 1 with the rest of the binomial expansion). All terms are
  positive, so the sum keeps full relative precision however small it is.

  Args:
    noise_multiplier: z > 0.
    sampling_rate: q in (0, 1].
    steps: T.

  Returns:
    RDP at each order of _INT_ORDERS (may be inf).
  """
  z, q = float(noise_multiplier), float(sampling_rate)
  if q == 1.0:
    return steps * _INT_ORDERS / (2.0 * z * z)
  with np.errstate(over='ignore'):
    log_terms = (_LOG_BINOM + _PAIR_K * math.log(q)
                 + (_PAIR_ORDER - _PAIR_K) * math.log1p(-q)
                 + _log_expm1(_PAIR_K * (_PAIR_K - 1) / (2.0 * z * z)))
  top = np.maximum.reduceat(log_terms, _PAIR_START)
  finite_top = np.where(np.isfinite(top), top, 0.0)
  with np.errstate(invalid='ignore', over='ignore'):
    sums = np.add.reduceat(
        np.exp(log_terms - np.repeat(finite_top, _INT_ORDERS - 1)),
        _PAIR_START)
    log_a_minus_1 = np.where(np.isfinite(top), finite_top + np.log(sums), top)
    log_a = np.logaddexp(0.0, log_a_minus_1)
  return steps * log_a / (_INT_ORDERS - 1)


def _fractional_bounds(r_int: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Bounds on the RDP at the fractional orders from the integer orders.

  RDP is nondecreasing in the order (lower bound: the integer order below,
  0 below 2), and (a - 1) RDP_a is convex in a (a log-moment-generating
  function), so its chord between consecutive integers bounds it above.

  Args:
    r_int: RDP at _INT_ORDERS.

  Returns:
    (lower, upper) at _FRAC_ORDERS.
  """
  by_order = dict(zip(_INT_ORDERS.tolist(), r_int.tolist()))
  by_order[1] = 0.0  # Only used as the chord's left end: (1 - 1) * r = 0.
  lower = np.array([by_order[a] if a >= 2 else 0.0 for a in _FLOOR.tolist()])
  left = np.array([(a - 1) * by_order[a] for a in _FLOOR.tolist()])
  right = np.array([a * by_order[a + 1] for a in _FLOOR.tolist()])
  with np.errstate(invalid='ignore'):
    chord = left + (_FRAC_ORDERS - _FLOOR) * (right - left)
    upper = np.where(np.isinf(right), np.inf, chord / (_FRAC_ORDERS - 1))
  return lower, upper


def _order_epsilons(orders: np.ndarray, r: np.ndarray,
                    delta: float) -> np.ndarray:
  """Epsilon at each order: dp-accounting's conversion, order by order."""
  return np.array([rdp.compute_epsilon([a], [v], delta)[0]
                   for a, v in zip(orders.tolist(), r.tolist())])


def _conversion(orders: np.ndarray, delta: float) -> np.ndarray:
  """epsilon_a - RDP_a in dp-accounting's conversion (orders above 1.01)."""
  return np.log1p(-1.0 / orders) - np.log(delta * orders) / (orders - 1.0)


def _fractional_floor(lower: np.ndarray, delta: float) -> np.ndarray:
  """Smallest epsilon each fractional order can give, from its RDP floor.

  Orders under 2 have floor 0 and are taken without the KL branch.
  """
  return np.where(_FLOOR >= 2, _order_epsilons(_FRAC_ORDERS, lower, delta),
                  np.maximum(0.0, _conversion(_FRAC_ORDERS, delta)))


def _epsilon_from_integer_orders(z: float, delta: float, q: float,
                                 steps: int) -> tuple[float, float]:
  """(epsilon over the integer orders, a lower bound on the full epsilon).

  The lower bound takes each fractional order at its smallest possible RDP;
  its KL branch (epsilon = 0 below RDP delta^2) is left out for orders under
  2, where the integer orders give no lower bound.
  """
  r_int = integer_order_rdp(z, q, steps)
  eps_int = float(np.min(_order_epsilons(_INT_ORDERS.astype(float), r_int,
                                         delta)))
  lower, _ = _fractional_bounds(r_int)
  return eps_int, min(eps_int, float(np.min(_fractional_floor(lower, delta))))


def _fractional_rdp(z: float, q: float, steps: int,
                    orders: np.ndarray) -> np.ndarray | None:
  """dp-accounting's RDP at some fractional orders; None where it fails."""
  accountant = rdp.RdpAccountant(orders=orders.tolist())
  try:
    accountant.compose(dp_event(z, q, steps))
  except (ValueError, OverflowError, FloatingPointError):
    return None
  return accountant.rdp


def spent_epsilon(noise_multiplier: float, delta: float, sampling_rate: float,
                  steps: int) -> float:
  """Epsilon spent by `steps` DP-SGD steps, by the RDP accountant.

  Equal to dp-accounting's RdpAccountant with its default orders wherever
  that is numerically sound. A fractional order whose epsilon could not beat
  the integer orders (judged from its smallest possible RDP) is skipped, and
  one whose dp-accounting value breaks the order relations (or fails) is
  replaced by its upper bound; both can only raise the result. The skip
  ignores one corner, where it is conservative: a fractional order under 2
  reaching the conversion's KL branch (epsilon = 0 at RDP below ~delta^2)
  while order 2 does not.

  Args:
    noise_multiplier: z, the noise std divided by the clip norm.
    delta: target delta.
    sampling_rate: Poisson sampling probability q.
    steps: number of steps T (0 spends nothing).

  Returns:
    epsilon at `delta`; 0.0 when no step was taken.
  """
  validate(noise_multiplier=noise_multiplier, delta=delta,
           sampling_rate=sampling_rate)
  if steps == 0:
    return 0.0
  validate(steps=steps)
  z, q, steps = float(noise_multiplier), float(sampling_rate), int(steps)
  r_int = integer_order_rdp(z, q, steps)
  eps_int = _order_epsilons(_INT_ORDERS.astype(float), r_int, delta)
  best = float(np.min(eps_int))
  lower, upper = _fractional_bounds(r_int)
  if q == 1.0:  # Closed form at every order.
    return min(best, float(np.min(_order_epsilons(
        _FRAC_ORDERS, steps * _FRAC_ORDERS / (2.0 * z * z), delta))))
  candidates = _fractional_floor(lower, delta) < best
  if not np.any(candidates):
    return best
  orders = _FRAC_ORDERS[candidates]
  lower, upper = lower[candidates], upper[candidates]
  computed = _fractional_rdp(z, q, steps, orders)
  if computed is None:
    r_frac = upper
  else:
    ok = ((computed > 0) & (computed >= lower * (1 - _SLACK))
          & (computed <= upper * (1 + _SLACK)))
    r_frac = np.where(ok, computed, upper)
  return min(best, float(np.min(_order_epsilons(orders, r_frac, delta))))


def composed_epsilon(segments, delta: float) -> float:
  """Epsilon of several DP-SGD segments run one after the other.

  One segment: exactly spent_epsilon. Several: their RDP adds order by order
  over the integer orders (fractional orders are left out, which can only
  raise the result).

  Args:
    segments: (noise_multiplier, sampling_rate, steps) triples.
    delta: target delta.

  Returns:
    epsilon at `delta`; 0.0 for no steps.
  """
  segments = [(float(z), float(q), int(t)) for z, q, t in segments if t]
  if not segments:
    return 0.0
  if len(segments) == 1:
    return spent_epsilon(segments[0][0], delta, segments[0][1],
                         segments[0][2])
  validate(delta=delta)
  total = np.zeros(len(_INT_ORDERS))
  for z, q, t in segments:
    validate(noise_multiplier=z, sampling_rate=q, steps=t)
    total = total + integer_order_rdp(z, q, t)
  return float(np.min(_order_epsilons(_INT_ORDERS.astype(float), total,
                                      delta)))


def _log_ratio(epsilon: float, target: float) -> float:
  """log(epsilon / target), finite: +-1e3 for an infinite or zero epsilon."""
  if epsilon == 0.0:
    return -1e3
  if math.isinf(epsilon) or math.isnan(epsilon):
    return 1e3
  return math.log(epsilon / target)


def _bracket(spend: Callable[[float], float], target: float, log_z: float,
             g: float, known_lo: tuple[float, float] | None = None
             ) -> tuple[float, float, float, float]:
  """A bracket (lo, g(lo), hi, g(hi)) in log z with g(lo) > 0 >= g(hi).

  g = log(spend / target). Steps away from log_z (where g is given) with doubling steps, downwards
  no further than known_lo = (log z, g), a point known to overspend.
  Returns lo = -inf when even _Z_MIN stays within the target.

  Raises:
    ValueError: if even a noise multiplier of _Z_MAX overspends.
  """
  step = math.log(1.5)
  if g > 0:
    while True:
      next_z = log_z + step
      if next_z > math.log(_Z_MAX):
        raise ValueError(
            f'epsilon={epsilons_lib.epsilon_text(target)} needs a noise '
            f'multiplier above {_Z_MAX:g}.')
      next_g = _log_ratio(spend(math.exp(next_z)), target)
      if next_g <= 0:
        return log_z, g, next_z, next_g
      log_z, g, step = next_z, next_g, 2.0 * step
  while True:
    next_z = log_z - step
    if known_lo is not None and next_z <= known_lo[0]:
      return known_lo[0], known_lo[1], log_z, g
    if next_z < math.log(_Z_MIN):
      return -math.inf, math.inf, log_z, g
    next_g = _log_ratio(spend(math.exp(next_z)), target)
    if next_g > 0:
      return next_z, next_g, log_z, g
    log_z, g, step = next_z, next_g, 2.0 * step


def _solve(spend: Callable[[float], float], target: float, tight: float,
           lo: float, g_lo: float, hi: float, g_hi: float) -> tuple[float,
                                                                    float]:
  """Narrows a log-z bracket until spend(hi) >= target * (1 - tight).

  Regula falsi with the Illinois modification (superlinear on smooth
  spending curves, bisection where the interpolant leaves the bracket);
  hi always stays within the target.

  Returns:
    (lo, hi): spend(exp(lo)) > target >= spend(exp(hi)).
  """
  side, g_at_hi = 0, g_hi  # g_lo, g_hi get scaled by the Illinois rule.
  for _ in range(200):
    if g_at_hi >= math.log1p(-tight) or hi - lo <= 1e-13 * max(1.0, abs(hi)):
      break
    x = (lo * g_hi - hi * g_lo) / (g_hi - g_lo)
    if not lo < x < hi:
      x = 0.5 * (lo + hi)
    g = _log_ratio(spend(math.exp(x)), target)
    if g > 0:
      lo, g_lo = x, g
      if side == -1:
        g_hi *= 0.5
      side = -1
    else:
      hi, g_hi, g_at_hi = x, g, g
      if side == 1:
        g_lo *= 0.5
      side = 1
  return lo, hi


def smallest_reachable_epsilon(delta: float) -> float:
  """Infimum of the positive epsilons the RDP conversion can certify.

  With RDP -> 0 at every order the conversion still charges
  log1p(-1/a) - log(delta a) / (a - 1); only the degenerate KL branch
  (epsilon = 0 once the RDP falls below ~delta^2) goes under it.

  Args:
    delta: target delta in (0, 1).

  Returns:
    The smallest such charge over the accountant's orders.
  """
  validate(delta=delta)
  orders = ORDERS[ORDERS > 1.01]
  return max(0.0, float(np.min(_conversion(orders, delta))))


def calibrate_noise_multiplier(epsilon: float, delta: float,
                               sampling_rate: float, steps: int,
                               rtol: float = 1e-3) -> float:
  """The smallest noise multiplier whose T steps spend at most `epsilon`.

  A bracketing root search over log(z), first on cheap bounds from the
  integer orders (the integer-order epsilon bounds spent_epsilon above; the
  fractional orders' RDP floors bound it below), then on spent_epsilon
  itself between the two. The result always satisfies
  spent_epsilon(z) <= epsilon and, except where the spending curve jumps,
  spent_epsilon(z) >= epsilon * (1 - rtol).

  Args:
    epsilon: target epsilon (> 0, finite).
    delta: target delta in (0, 1).
    sampling_rate: Poisson sampling probability q in (0, 1].
    steps: number of steps T >= 1.
    rtol: relative tolerance on the spent epsilon, in (0, 1).

  Returns:
    The noise multiplier z.

  Raises:
    ValueError: for impossible inputs, or an unreachable target.
  """
  validate(epsilon=epsilon, delta=delta, sampling_rate=sampling_rate,
           steps=steps)
  if math.isinf(epsilon):
    raise ValueError('epsilon=inf needs no noise; train without DP instead.')
  if not 0.0 < rtol < 1.0:
    raise ValueError(f'rtol must lie in (0, 1), got {rtol}.')
  floor = smallest_reachable_epsilon(delta)
  if epsilon <= floor:
    raise ValueError(
        f'epsilon={epsilons_lib.epsilon_text(epsilon)} is unreachable at '
        f'delta={delta:g}: the RDP accountant certifies no epsilon at or '
        f'below {floor:.4g}, whatever the noise.')
  q, steps = float(sampling_rate), int(steps)

  def upper(z):
    return _epsilon_from_integer_orders(z, delta, q, steps)[0]

  def lower(z):
    return _epsilon_from_integer_orders(z, delta, q, steps)[1]

  def spent(z):
    return spent_epsilon(z, delta, q, steps)

  # Cheap bounds first: the answer lies in [z_low, z_up].
  _, z_up = _solve(upper, epsilon, 0.1 * rtol,
                   *_bracket(upper, epsilon, 0.0,
                             _log_ratio(upper(1.0), epsilon)))
  if z_up <= math.log(_Z_MIN):  # Even z = _Z_MIN stays within the target.
    return math.exp(z_up)
  lo_low, g_lo, hi_low, g_hi = _bracket(
      lower, epsilon, z_up, _log_ratio(lower(math.exp(z_up)), epsilon))
  known_lo = None
  if lo_low > -math.inf:
    lo_low, _ = _solve(lower, epsilon, 0.1 * rtol, lo_low, g_lo, hi_low, g_hi)
    known_lo = (lo_low, _log_ratio(lower(math.exp(lo_low)), epsilon))
  # Then spent_epsilon itself, walking down from z_up to the known bound.
  g_up = _log_ratio(spent(math.exp(z_up)), epsilon)
  if g_up >= math.log1p(-rtol):
    return math.exp(z_up)
  bracket = _bracket(spent, epsilon, z_up, g_up, known_lo)
  if bracket[0] == -math.inf:
    return math.exp(bracket[2])
  _, hi = _solve(spent, epsilon, rtol, *bracket)
  return math.exp(hi)
