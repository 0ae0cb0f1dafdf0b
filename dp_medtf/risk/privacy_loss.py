"""The privacy loss of one step of DP-SGD against a reconstruction adversary.

An adversary who tries to reconstruct one training record succeeds with prior
probability kappa by guessing (kappa = 1/N for a training set of N records).
After T steps of the Poisson-subsampled Gaussian mechanism, no reconstruction
attack succeeds with probability above the reconstruction robustness bound

  ReRo = 1 - beta(kappa),

where beta is the trade-off curve of the T-fold composed mechanism: the type-II
error at type-I error kappa of the optimal (Neyman-Pearson) test between

  H0: u_t ~ N(0, 1)   and   H1: u_t ~ (1 - q) N(0, 1) + q N(mu, 1),

t = 1..T, with mu = 1 / noise_multiplier and q the sampling rate. The
worst-case adversary sees u; the relaxed adversary, who does not know the
target record in advance, sees only |u|. The optimal test thresholds the summed
privacy loss S = sum_t L(u_t), with one-step privacy loss

  worst case:  L(u) = log(1 - q + q exp(mu u - mu^2 / 2)),
  relaxed:     L(u) = log(1 - q + q exp(-mu^2 / 2) cosh(mu u)).

`PrivacyLoss` holds L: its H0 and H1 masses on intervals (for the lattice
method, dp_medtf.risk.lattice) and its first five cumulants (for the
Edgeworth method, dp_medtf.risk.edgeworth).

Example:

  >>> loss = PrivacyLoss(mu=1.0, sampling_rate=0.5)
  >>> [round(float(c), 4) for c in loss.cumulants(0)[:2]]  # Mean, variance.
  [-0.1114, 0.1785]
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
from scipy import integrate
from scipy import special

# Half-width, in standard deviations, of the integration windows for moments.
_QUAD_HALF_WIDTH = 38.0


def _log_expm1(x: np.ndarray) -> np.ndarray:
  """log(exp(x) - 1), accurate for tiny and huge x > 0; -inf for x <= 0."""
  x = np.asarray(x, dtype=float)
  with np.errstate(divide='ignore', invalid='ignore'):
    small = np.log(np.expm1(np.minimum(x, 30.0)))
    large = x + np.log1p(-np.exp(-np.maximum(x, 30.0)))
  return np.where(x <= 0.0, -np.inf, np.where(x < 30.0, small, large))


def _log_cosh(x: np.ndarray) -> np.ndarray:
  x = np.abs(x)
  return x + np.log1p(np.exp(-2.0 * x)) - math.log(2.0)


def _arccosh_exp(c: np.ndarray) -> np.ndarray:
  """arccosh(exp(c)) for c >= 0 without overflow; 0 for c <= 0."""
  c = np.maximum(np.asarray(c, dtype=float), 0.0)
  return c + np.log1p(np.sqrt(-np.expm1(-2.0 * c)))


def normal_interval(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """P(a < Z <= b) for Z ~ N(0, 1), accurate in both tails."""
  upper = special.ndtr(-a) - special.ndtr(-b)
  lower = special.ndtr(b) - special.ndtr(a)
  return np.maximum(np.where(a > 0.0, upper, lower), 0.0)


@dataclasses.dataclass(frozen=True)
class PrivacyLoss:
  """One step's privacy loss L of the Poisson-subsampled Gaussian mechanism.

  L is a nondecreasing function of a variable v: v = u for the worst case,
  v = |u| for the relaxed adversary. L = base + excess(u) with excess >= 0
  when q < 1.

  Attributes:
    mu: 1 / noise multiplier (the clip norm divided by the noise std).
    sampling_rate: q in (0, 1].
    relaxed: False for the worst-case adversary, True for the relaxed one.
  """
  mu: float
  sampling_rate: float
  relaxed: bool = False

  def __post_init__(self):
    if not 0.0 < self.mu < math.inf:
      raise ValueError(f'mu must be positive and finite, got {self.mu}.')
    if not 0.0 < self.sampling_rate <= 1.0:
      raise ValueError(
          f'sampling_rate must lie in (0, 1], got {self.sampling_rate}.')

  @property
  def _full_batch(self) -> bool:
    return self.sampling_rate == 1.0

  @property
  def base(self) -> float:
    """log(1 - q), the floor of L; -mu^2 / 2 at q = 1."""
    if self._full_batch:
      return -0.5 * self.mu**2
    return math.log1p(-self.sampling_rate)

  @property
  def _log_ratio(self) -> float:
    """log(q / (1 - q)) - mu^2 / 2: the jump term inside the softplus."""
    q = self.sampling_rate
    return math.log(q) - math.log1p(-q) - 0.5 * self.mu**2

  def _jump(self, v: np.ndarray) -> np.ndarray:
    """mu v (worst case) or log cosh(mu v) (relaxed)."""
    return _log_cosh(self.mu * v) if self.relaxed else self.mu * v

  def excess(self, u: np.ndarray) -> np.ndarray:
    """L(u) - base."""
    jump = self._jump(np.asarray(u, dtype=float))
    if self._full_batch:
      return jump
    return np.logaddexp(0.0, self._log_ratio + jump)

  def loss(self, u: np.ndarray) -> np.ndarray:
    """The one-step privacy loss L(u)."""
    return self.base + self.excess(u)

  @property
  def lower_end(self) -> float:
    """inf_u L(u): -inf for the worst case at q = 1."""
    if self.relaxed:
      return float(self.loss(0.0))
    return -math.inf if self._full_batch else self.base

  def variable(self, l: np.ndarray) -> np.ndarray:
    """The v at which L = l (-inf, or 0 when relaxed, below the range of L)."""
    e = np.asarray(l, dtype=float) - self.base
    jump = e if self._full_batch else _log_expm1(e) - self._log_ratio
    if self.relaxed:
      return _arccosh_exp(jump) / self.mu
    with np.errstate(invalid='ignore'):
      return np.where(np.isneginf(jump), -np.inf, jump / self.mu)

  def interval_masses(self, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """H0 and H1 probabilities of L in (edges[i], edges[i + 1]].

    Args:
      edges: increasing values of L; -inf and +inf are allowed.

    Returns:
      (m0, m1), each of length len(edges) - 1.
    """
    v = self.variable(edges)
    a, b = v[:-1], v[1:]
    q, mu = self.sampling_rate, self.mu
    if self.relaxed:
      m0 = 2.0 * normal_interval(a, b)
      shifted = (normal_interval(a - mu, b - mu) +
                 normal_interval(-b - mu, -a - mu))
    else:
      m0 = normal_interval(a, b)
      shifted = normal_interval(a - mu, b - mu)
    return m0, (1.0 - q) * m0 + q * shifted

  def _kinks(self) -> list[float]:
    """Values of u where L bends from its floor to its jump branch."""
    if self._full_batch:
      return [0.0] if self.relaxed else []
    if self.relaxed:
      if self._log_ratio >= 0.0:
        return [0.0]
      k = float(_arccosh_exp(-self._log_ratio)) / self.mu
      return [-k, 0.0, k]
    return [-self._log_ratio / self.mu]

  def _expect(self, fn, center: float) -> float:
    """E[fn(excess(u))] for u ~ N(center, 1) by adaptive quadrature."""
    lo, hi = center - _QUAD_HALF_WIDTH, center + _QUAD_HALF_WIDTH
    points = sorted(k for k in self._kinks() + [center] if lo < k < hi)

    def integrand(u):
      return fn(float(self.excess(u))) * math.exp(-0.5 * (u - center)**2)

    with warnings.catch_warnings():
      warnings.simplefilter('ignore', integrate.IntegrationWarning)
      value, _ = integrate.quad(integrand, lo, hi, points=points or None,
                                epsabs=0.0, epsrel=1e-11, limit=400)
    return value / math.sqrt(2.0 * math.pi)

  def cumulants(self, hypothesis: int) -> np.ndarray:
    """The first five cumulants of L under H0 (0) or H1 (1).

    Central moments of L - base by adaptive quadrature over u (relative
    accuracy 1e-11), then k4 = m4 - 3 m2^2 and k5 = m5 - 10 m3 m2.

    Args:
      hypothesis: 0 for u ~ N(0, 1), 1 for the subsampled alternative.

    Returns:
      [k1, k2, k3, k4, k5] (may be inf when mu is astronomically large).
    """
    q = self.sampling_rate if hypothesis == 1 else 0.0

    def expect(fn):
      value = (1.0 - q) * self._expect(fn, 0.0)
      if q > 0.0:
        value += q * self._expect(fn, self.mu)
      return value

    mean = expect(lambda e: e)
    m2, m3, m4, m5 = (expect(lambda e, r=r: (e - mean)**r)
                      for r in (2, 3, 4, 5))
    with np.errstate(over='ignore', invalid='ignore'):
      return np.array([self.base + mean, m2, m3, m4 - 3.0 * m2**2,
                       m5 - 10.0 * m3 * m2])


def validate_steps_kappa(steps: int, kappa: float) -> None:
  """Raises ValueError, naming the argument, unless T >= 1 and 0 < kappa < 1.

  Args:
    steps: the number of steps T.
    kappa: the prior success probability.

  Raises:
    ValueError: naming steps or kappa.
  """
  if int(steps) != steps or steps < 1:
    raise ValueError(f'steps must be a positive integer, got {steps}.')
  if not 0.0 < kappa < 1.0:
    raise ValueError(f'kappa must lie in (0, 1), got {kappa}.')
