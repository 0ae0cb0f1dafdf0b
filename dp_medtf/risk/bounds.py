"""Reconstruction-risk bounds of DP-SGD: worst-case and relaxed adversary.

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

Two independent methods compute ReRo:

* `rero_edgeworth`: the five-cumulant Edgeworth expansion of S under H0 and
  H1, as in the paper. It is an asymptotic series in powers of the
  standardized cumulants lambda_r of S (which shrink like T^(-1/2)); where
  max_r |lambda_r|^(1/(r-2)) > 1 the terms no longer decrease and the expansion
  is reported as not applicable (None): few steps, or rare large jumps of L
  (small q, large mu, huge epsilon).
* `rero_numerical`: exact tests on lattice laws, T-fold composed by FFT
  convolution and repeated squaring, which bracket ReRo. The upper law splits
  each one-step bin of L onto its two lattice end points, keeping its H0 and
  its H1 mass ("connect the dots"), and moves negligible tails to +-infinity;
  each change makes the test easier, so its power bounds ReRo from above. The
  lower law labels each bin by the lattice point nearest to its own privacy
  loss; tests of the summed labels are tests of the mechanism, so their best
  power bounds ReRo from below. Both gaps are second order in the spacing h.
  Valid for any q, T and epsilon; where even the simple test "some step
  exceeds c" has power 1 to within 1e-12 (huge epsilon), ReRo is reported as
  1 without a lattice.

Risk profiles report the numerical upper bound, with the width of the bracket
as its error: it is a guaranteed bound (up to round-off, also reported) with
no regime where it breaks down, while the Edgeworth expansion, which the paper
used, has no error bound and fails for few steps or rare large jumps. The
Edgeworth value is kept as a cross-check (`Rero.agrees`).

Example:

  >>> loss = PrivacyLoss(mu=1.0, sampling_rate=1.0)
  >>> round(rero_numerical(loss, steps=1, kappa=0.01).value, 4)  # Gaussian.
  0.0924
  >>> round(rero_edgeworth(loss, steps=1, kappa=0.01).value, 4)
  0.0924
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
from scipy import fft
from scipy import integrate
from scipy import optimize
from scipy import special

from dp_medtf.privacy import accounting

# The Edgeworth expansion is a series in this parameter (see module doc).
EDGEWORTH_MAX_EXPANSION_PARAMETER = 1.0

# One-step lattice spacing as a fraction of the smaller standard deviation of
# L under H0 and H1: splitting (or labelling) a bin adds at most h^2/4 of
# variance per step, here < 1/16000 of the variance of S.
_SPACING_PER_STD = 1.0 / 64
_MAX_SPACING = 0.05
# Largest one-step lattice, times 4.
_MAX_LATTICE = 2**21
# Convolve directly (exactly) when one factor has at most this many entries.
_DIRECT_CONVOLUTION = 32
# FFT convolution leaves absolute round-off of 1e-16 to 1e-15 times the
# largest entry; entries below this fraction of it are noise (see
# _Lattice.denoise). Higher floors relabel real mass: a loss in the lower law
# that is multiplied by the number of copies composed.
_NOISE_FLOOR = 3e-16
# H1 mass moved by truncation, summed over all steps, stays below _TAIL_BUDGET
# (a loss of power), and H0 mass below _TAIL_BUDGET * kappa (of level).
_TAIL_BUDGET = 1e-10
# Where any_step_test_power is within this of 1, ReRo is reported as 1.
_SATURATED = 1e-12
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


def _normal_interval(a: np.ndarray, b: np.ndarray) -> np.ndarray:
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
      m0 = 2.0 * _normal_interval(a, b)
      shifted = (_normal_interval(a - mu, b - mu) +
                 _normal_interval(-b - mu, -a - mu))
    else:
      m0 = _normal_interval(a, b)
      shifted = _normal_interval(a - mu, b - mu)
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


# --------------------------------------------------------------------------
# Edgeworth expansion.


@dataclasses.dataclass(frozen=True)
class EdgeworthResult:
  """ReRo from the five-cumulant Edgeworth expansion.

  Attributes:
    value: the ReRo estimate, or None where the expansion is not applicable.
    expansion_parameter: max over hypotheses and r = 3, 4, 5 of
      |lambda_r|^(1 / (r - 2)); the expansion needs it below 1.
    note: why the value is None, else ''.
  """
  value: float | None
  expansion_parameter: float
  note: str = ''


def edgeworth_sf(x: np.ndarray, lambdas: np.ndarray) -> np.ndarray:
  """P(Z > x) for a standardized sum with standardized cumulants lambda_3..5.

  The expansion up to order n^(-3/2) (Petrov's terms), with probabilists'
  Hermite polynomials He_k: with cumulants of order > 2 zero it is Phi(-x).

  Args:
    x: standardized points.
    lambdas: [lambda_3, lambda_4, lambda_5].

  Returns:
    The Edgeworth survival function at x.
  """
  l3, l4, l5 = lambdas
  coefficients = np.zeros(9)
  coefficients[2] += l3 / 6.0
  coefficients[3] += l4 / 24.0
  coefficients[5] += l3**2 / 72.0
  coefficients[4] += l5 / 120.0
  coefficients[6] += l3 * l4 / 144.0
  coefficients[8] += l3**3 / 1296.0
  x = np.asarray(x, dtype=float)
  correction = np.polynomial.hermite_e.hermeval(x, coefficients)
  density = np.exp(-0.5 * x**2) / math.sqrt(2.0 * math.pi)
  return special.ndtr(-x) + density * correction


def _standardized(cumulants: np.ndarray,
                  steps: int) -> tuple[float, float, np.ndarray]:
  """Mean, standard deviation and lambda_3..5 of the T-fold sum."""
  total = cumulants * steps
  scale = math.sqrt(total[1])
  with np.errstate(divide='ignore', over='ignore', invalid='ignore'):
    lambdas = total[2:] / scale**np.arange(3, 6)
  return total[0], scale, lambdas


def _edgeworth_quantile(kappa: float, lambdas: np.ndarray) -> float | None:
  """The unique x with edgeworth_sf(x) = kappa, or None."""
  grid = np.linspace(-12.0, 12.0, 4801)
  sf = edgeworth_sf(grid, lambdas) - kappa
  crossings = np.nonzero(np.sign(sf[:-1]) != np.sign(sf[1:]))[0]
  if len(crossings) != 1:
    return None
  i = crossings[0]
  return float(optimize.brentq(
      lambda x: float(edgeworth_sf(x, lambdas)) - kappa, grid[i], grid[i + 1],
      xtol=1e-14, rtol=1e-14))


def rero_edgeworth(loss: PrivacyLoss, steps: int,
                   kappa: float) -> EdgeworthResult:
  """ReRo by the five-cumulant Edgeworth expansion of the summed privacy loss.

  Solves SF0(t) = kappa for the H0 law of S, then returns SF1(t) for the H1
  law, both from their Edgeworth expansions.

  Args:
    loss: the one-step privacy loss.
    steps: T >= 1.
    kappa: prior success probability in (0, 1).

  Returns:
    An EdgeworthResult; value None where the expansion does not apply.
  """
  _validate_steps_kappa(steps, kappa)
  c0, c1 = loss.cumulants(0), loss.cumulants(1)
  if not (np.all(np.isfinite(c0)) and np.all(np.isfinite(c1))):
    return EdgeworthResult(None, math.inf, 'cumulants overflow')
  if not (c0[1] > 0.0 and c1[1] > 0.0):
    return EdgeworthResult(
        None, math.inf, 'privacy loss degenerate (variance underflows): '
        'every step either reveals the target or nothing')
  mean0, scale0, lambdas0 = _standardized(c0, steps)
  mean1, scale1, lambdas1 = _standardized(c1, steps)
  orders = np.arange(1, 4)
  parameter = float(max(np.max(np.abs(lambdas0)**(1.0 / orders)),
                        np.max(np.abs(lambdas1)**(1.0 / orders))))
  if parameter > EDGEWORTH_MAX_EXPANSION_PARAMETER:
    return EdgeworthResult(
        None, parameter,
        f'expansion parameter {parameter:.3g} > '
        f'{EDGEWORTH_MAX_EXPANSION_PARAMETER:g}: too few steps or rare large '
        'jumps of the privacy loss')
  x0 = _edgeworth_quantile(kappa, lambdas0)
  if x0 is None:
    return EdgeworthResult(None, parameter,
                           'H0 survival function not invertible at kappa')
  threshold = mean0 + x0 * scale0
  value = float(edgeworth_sf((threshold - mean1) / scale1, lambdas1))
  return EdgeworthResult(min(max(value, kappa), 1.0), parameter)


# --------------------------------------------------------------------------
# Numerical method: composition of lattice laws, bracketing ReRo.


@dataclasses.dataclass(frozen=True)
class _Budget:
  """How much mass a truncation may move into the groups at +-infinity.

  Attributes:
    tail0: H0 mass that may go from the high end at once.
    tail1: H1 mass that may go from the low end at once.
    max_slope: 1 / kappa, the steepest the ROC can be at level kappa.
  """
  tail0: float
  tail1: float
  max_slope: float


@dataclasses.dataclass
class _Lattice:
  """H0 and H1 laws of a statistic on the lattice spacing * Z, plus two groups.

  p0[i], p1[i] are the masses at (start + i) * spacing; pos0, pos1 and neg0,
  neg1 those of the outcomes labelled +inf and -inf. A sum with a -inf part is
  -inf, else with a +inf part +inf.

  In an upper law the statistic is the privacy loss itself (p0 = exp(-s) p1),
  with H1 mass at +inf (outcomes that reveal H1) and H0 mass at -inf; every
  change makes the test easier. In a lower law the statistic is a function
  (label) of the outcome, so that any test of it is a test of the outcome;
  changes only relabel outcomes.
  """
  upper: bool
  spacing: float
  start: int
  p0: np.ndarray
  p1: np.ndarray
  pos0: float = 0.0
  pos1: float = 0.0
  neg0: float = 0.0
  neg1: float = 0.0

  def move(self, mask0: np.ndarray, mask1: np.ndarray, to0: str,
           to1: str) -> None:
    """Moves H0 mass in mask0 to group to0, H1 mass in mask1 to group to1."""
    for mask, law, group in ((mask0, self.p0, to0 + '0'),
                             (mask1, self.p1, to1 + '1')):
      setattr(self, group, getattr(self, group) + float(law[mask].sum()))
      law[mask] = 0.0

  def make_certain(self, mask: np.ndarray) -> None:
    """Upper law: the outcomes in mask reveal the hypothesis that drew them.

    Post-processing recovers the original outcome, so the test gets easier.
    """
    self.move(mask, mask, 'neg', 'pos')

  def denoise(self, max_slope: float) -> _Lattice:
    """Repairs the round-off of FFT convolution (about 1e-15 of the maximum).

    Upper law: p0[x] = exp(-s_x) p1[x] holds exactly (see _discretize_upper),
    so each point keeps the law that is resolved better there, p1 where
    exp(s_x) >= max(p1) / max(p0) and p0 elsewhere, and recomputes the other
    from it (never amplifying round-off by exp(|s_x|)); points where the kept
    law is below _NOISE_FLOOR of its maximum are made certain.

    Lower law: points where either law is below _NOISE_FLOOR of its maximum
    are relabelled -inf when p1 <= max_slope p0 (never rejected: at most p1
    of power lost), else +inf (rejected: at most p0 of level spent).

    Args:
      max_slope: 1 / kappa.

    Returns:
      self, changed in place.
    """
    self.p0, self.p1 = np.maximum(self.p0, 0.0), np.maximum(self.p1, 0.0)
    top0, top1 = self.p0.max(initial=0.0), self.p1.max(initial=0.0)
    small0 = self.p0 < _NOISE_FLOOR * top0
    small1 = self.p1 < _NOISE_FLOOR * top1
    if not self.upper:
      to_neg = self.p1 <= max_slope * self.p0
      for mask, group in (((small0 | small1) & to_neg, 'neg'),
                          ((small0 | small1) & ~to_neg, 'pos')):
        self.move(mask, mask, group, group)
      return self
    losses = (self.start + np.arange(len(self.p0))) * self.spacing
    if top0 == 0.0 or top1 == 0.0:  # One law has no finite mass left.
      keep1 = np.full(len(losses), top1 > 0.0)
    else:
      keep1 = losses >= math.log(top1) - math.log(top0)
    self.make_certain(np.where(keep1, small1, small0))
    with np.errstate(divide='ignore', over='ignore'):
      derived0 = np.exp(np.log(self.p1) - losses)
      derived1 = np.exp(np.log(self.p0) + losses)
    self.p0 = np.where(keep1, derived0, self.p0)
    self.p1 = np.where(keep1, self.p1, derived1)
    return self

  def trim(self, budget: _Budget) -> _Lattice:
    """Moves negligible tails to the groups, then drops zeros at both ends.

    The low end holding at most budget.tail1 of H1 mass goes to -inf, the
    high end holding at most budget.tail0 of H0 mass to +inf (upper law:
    made certain). This costs at most tail1 of power, or tail0 of level.

    Args:
      budget: the tolerances.

    Returns:
      self, trimmed in place.
    """
    n = len(self.p0)
    low = int(np.searchsorted(np.cumsum(self.p1), budget.tail1, side='right'))
    high = n - int(np.searchsorted(np.cumsum(self.p0[::-1]), budget.tail0,
                                   side='right'))
    low_tail = np.arange(n) < low
    high_tail = np.arange(n) >= max(high, 0)
    if self.upper:
      self.make_certain(low_tail | high_tail)
    else:
      self.move(low_tail, low_tail, 'neg', 'neg')
      self.move(high_tail, high_tail, 'pos', 'pos')
    kept = np.nonzero((self.p0 > 0.0) | (self.p1 > 0.0))[0]
    first, last = (int(kept[0]), int(kept[-1])) if len(kept) else (0, 0)
    self.p0 = self.p0[first:last + 1]
    self.p1 = self.p1[first:last + 1]
    self.start += first
    return self


def _convolve_arrays(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Full discrete convolution: direct when small, else by real FFT."""
  if min(len(a), len(b)) <= _DIRECT_CONVOLUTION:
    return np.convolve(a, b)
  n = len(a) + len(b) - 1
  size = fft.next_fast_len(n, real=True)
  return fft.irfft(fft.rfft(a, size) * fft.rfft(b, size), size)[:n]


def _convolve(a: _Lattice, b: _Lattice, budget: _Budget) -> _Lattice:
  """The law of the sum of independent statistics a and b, trimmed."""
  groups = {}
  for h in '01':
    finite_a = 1.0 - getattr(a, 'pos' + h) - getattr(a, 'neg' + h)
    finite_b = 1.0 - getattr(b, 'pos' + h) - getattr(b, 'neg' + h)
    not_neg_a, not_neg_b = 1.0 - getattr(a, 'neg' + h), 1.0 - getattr(
        b, 'neg' + h)
    groups['neg' + h] = 1.0 - not_neg_a * not_neg_b
    groups['pos' + h] = max(not_neg_a * not_neg_b - finite_a * finite_b, 0.0)
  return _Lattice(
      upper=a.upper, spacing=a.spacing, start=a.start + b.start,
      p0=_convolve_arrays(a.p0, b.p0), p1=_convolve_arrays(a.p1, b.p1),
      **groups).denoise(budget.max_slope).trim(budget)


def _loss_range(loss: PrivacyLoss, budget: _Budget) -> tuple[float, float]:
  """[l_low, l_high]: H1 mass below l_low, H0 mass above l_high negligible."""
  l_high = float(loss.loss(-special.ndtri(budget.tail0 / 2.0)))
  l_low = loss.lower_end
  if loss.sampling_rate == 1.0:  # Unbounded, or astronomically wide, below.
    v = loss.mu + special.ndtri(budget.tail1 / 2.0)
    l_low = float(loss.loss(max(v, 0.0) if loss.relaxed else v))
  return l_low, max(l_high, l_low)


def _bins(loss: PrivacyLoss, spacing: float, budget: _Budget
         ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
  """Lattice points spanning _loss_range and the masses between them.

  Returns:
    (first, grid, m0, m1): grid = spacing * (first + arange), and masses of
    the bins (-inf, grid[0]], (grid[0], grid[1]], ..., (grid[-1], inf).
  """
  l_low, l_high = _loss_range(loss, budget)
  first = math.floor(l_low / spacing)
  last = max(math.ceil(l_high / spacing), first + 1)
  if last - first >= _MAX_LATTICE:
    raise ValueError(f'spacing {spacing:g} needs {last - first + 1} lattice '
                     f'points for one step (at most {_MAX_LATTICE}).')
  grid = np.arange(first, last + 1) * spacing
  m0, m1 = loss.interval_masses(np.concatenate([[-np.inf], grid, [np.inf]]))
  return first, grid, m0, m1


def _discretize_upper(loss: PrivacyLoss, spacing: float,
                      budget: _Budget) -> _Lattice:
  """One step's loss on the lattice, by splitting each bin onto its ends.

  A bin (g, g + h] with masses (m0, m1) becomes masses at g and g + h with the
  same totals under H0 and under H1: the H1 mass at g + h is
  (m1 - e^g m0) / (1 - e^-h), the H0 mass at g is (m0 - e^-(g+h) m1) /
  (1 - e^-h), and then p0 = exp(-s) p1 at both ends ("connect the dots").
  Merging the two ends gives back the bin, so the lattice law is at least as
  distinguishable as the true one; the excess is second order in h. The
  outer bins are made certain.
  """
  first, grid, m0, m1 = _bins(loss, spacing, budget)
  inner0, inner1 = m0[1:-1], m1[1:-1]  # The bins (grid[i], grid[i + 1]].
  denominator = -math.expm1(-spacing)
  with np.errstate(divide='ignore', over='ignore', invalid='ignore'):
    up1 = (inner1 - np.exp(grid[:-1] + np.log(inner0))) / denominator
    down0 = (inner0 - np.exp(np.log(inner1) - grid[1:])) / denominator
  up1 = np.clip(np.nan_to_num(up1), 0.0, inner1)
  down0 = np.clip(np.nan_to_num(down0), 0.0, inner0)
  p0 = np.zeros(len(grid) + 2)  # Entries 0 and -1: the outer bins.
  p1 = np.zeros(len(grid) + 2)
  p0[1:-2] += down0
  p0[2:-1] += inner0 - down0
  p1[1:-2] += inner1 - up1
  p1[2:-1] += up1
  p0[[0, -1]], p1[[0, -1]] = m0[[0, -1]], m1[[0, -1]]
  lattice = _Lattice(True, spacing, first - 1, p0, p1)
  lattice.make_certain(np.isin(np.arange(len(p0)), [0, len(p0) - 1]))
  return lattice.trim(budget)


def _discretize_lower(loss: PrivacyLoss, spacing: float,
                      budget: _Budget) -> _Lattice:
  """One step labelled by the lattice point nearest to its bin's loss.

  All outcomes in a bin get one label, the point nearest to the bin's own
  privacy loss log(m1 / m0): a function of the outcome, so tests of the
  summed labels are tests of the mechanism, and their best power at level
  kappa is a lower bound on ReRo. Labels blur the sum by at most h / 2 per
  step, again a second-order loss. The outer bins are labelled -inf, +inf.
  """
  first, grid, m0, m1 = _bins(loss, spacing, budget)
  inner0, inner1 = m0[1:-1], m1[1:-1]
  with np.errstate(divide='ignore', invalid='ignore'):
    labels = np.round((np.log(inner1) - np.log(inner0)) / spacing)
  # Empty or one-sided bins: the nearer end of the bin.
  index = np.arange(len(inner0)) + first
  labels = np.where(np.isfinite(labels), labels,
                    np.where(inner1 > 0.0, index + 1, index))
  labels = np.clip(labels - first, 0, len(grid) - 1).astype(np.int64)
  p0 = np.bincount(labels, weights=inner0, minlength=len(grid))
  p1 = np.bincount(labels, weights=inner1, minlength=len(grid))
  lattice = _Lattice(False, spacing, first, p0, p1, pos0=m0[-1], pos1=m1[-1],
                     neg0=m0[0], neg1=m1[0])
  return lattice.trim(budget)


def _self_compose(step: _Lattice, steps: int, budget: _Budget) -> _Lattice:
  """The law of the sum of `steps` independent copies, by repeated squaring."""
  result = None
  power = step
  remaining = int(steps)
  while True:
    if remaining & 1:
      result = power if result is None else _convolve(result, power, budget)
    remaining >>= 1
    if not remaining:
      return result
    power = _convolve(power, power, budget)


def _neyman_pearson_power(lattice: _Lattice,
                          kappa: float) -> tuple[float, float]:
  """Power of the best level-kappa test of the lattice statistic.

  Rejects outcomes in decreasing order of p1 / p0 until the level is spent,
  the last one in part.

  Returns:
    (power, slope): slope = p1 / p0 at the last outcome, the slope of the
    ROC at kappa (how much an error in the level moves the power).
  """
  p0 = np.concatenate([lattice.p0, [lattice.pos0, lattice.neg0]])
  p1 = np.concatenate([lattice.p1, [lattice.pos1, lattice.neg1]])
  with np.errstate(divide='ignore', invalid='ignore'):
    ratio = np.where(p1 > 0.0, p1 / p0, 0.0)
  order = np.argsort(-ratio, kind='stable')
  p0, p1 = p0[order], p1[order]
  spent = np.cumsum(p0)
  k = int(np.searchsorted(spent, kappa, side='right'))
  if k == len(p0):  # The level allows rejecting everything.
    return min(1.0, float(p1.sum())), 0.0
  before0 = spent[k - 1] if k else 0.0
  fraction = (kappa - before0) / p0[k]
  power = min(1.0, float(p1[:k].sum() + fraction * p1[k]))
  return power, float(ratio[order[k]])


def _validate_steps_kappa(steps: int, kappa: float) -> None:
  if int(steps) != steps or steps < 1:
    raise ValueError(f'steps must be a positive integer, got {steps}.')
  if not 0.0 < kappa < 1.0:
    raise ValueError(f'kappa must lie in (0, 1), got {kappa}.')


def _budget(steps: int, kappa: float) -> _Budget:
  tail1 = _TAIL_BUDGET / (2.0 * steps)
  return _Budget(tail0=tail1 * kappa, tail1=tail1, max_slope=1.0 / kappa)


@dataclasses.dataclass(frozen=True)
class NumericalResult:
  """ReRo from the lattice compositions.

  Attributes:
    value: an upper bound on ReRo.
    lower: a lower bound on ReRo.
    error: value - lower plus round-off (machine epsilon per lattice entry,
      in the level and, through the ROC slope, in the power): the true ReRo
      lies within `error` below `value`.
    spacing: the lattice spacing h (nan where no lattice was needed).
  """
  value: float
  lower: float
  error: float
  spacing: float


def default_spacing(loss: PrivacyLoss, steps: int, kappa: float) -> float:
  """Lattice spacing: 1/64 of the smaller one-step standard deviation of L.

  At least 1e-4 / sqrt(T) (a near-atom of L, split over two points, then
  spreads S by about sqrt(T) h / 2, which stays negligible), and coarse
  enough for one step's lattice to hold at most _MAX_LATTICE / 4 points.

  Args:
    loss: the one-step privacy loss.
    steps: T.
    kappa: the prior (sets the truncation of the one-step range).

  Returns:
    The spacing h.
  """
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', RuntimeWarning)
    var0, var1 = loss.cumulants(0)[1], loss.cumulants(1)[1]
  finite = [v for v in (var0, var1) if np.isfinite(v) and v > 0.0]
  if not finite:
    return _MAX_SPACING
  spacing = min(math.sqrt(min(finite)) * _SPACING_PER_STD, _MAX_SPACING)
  spacing = max(spacing, 1e-4 / math.sqrt(steps))
  l_low, l_high = _loss_range(loss, _budget(steps, kappa))
  return max(spacing, (l_high - l_low) / (_MAX_LATTICE // 4))


def any_step_test_power(loss: PrivacyLoss, steps: int, kappa: float) -> float:
  """Power at level kappa of the test "some step has v > c": ReRo >= this.

  v is u (worst case) or |u| (relaxed). Cheap and exact, it shows where ReRo
  is 1 to within round-off (huge epsilon) without composing anything.

  Args:
    loss: the one-step privacy loss.
    steps: T.
    kappa: the level.

  Returns:
    1 - P1(no step exceeds c)^T, with c such that 1 - P0(...)^T = kappa.
  """
  a = -math.expm1(math.log1p(-kappa) / steps)  # 1 - (1 - a)^T = kappa.
  q, mu = loss.sampling_rate, loss.mu
  if loss.relaxed:
    c = -special.ndtri(a / 2.0)
    miss = (1.0 - q) * (1.0 - a) + q * _normal_interval(-c - mu, c - mu)
  else:
    c = -special.ndtri(a)
    miss = (1.0 - q) * (1.0 - a) + q * special.ndtr(c - mu)
  return float(-math.expm1(steps * math.log(max(miss, 1e-300))))


def _compose_power(discretize, loss: PrivacyLoss, steps: int, kappa: float,
                   spacing: float) -> tuple[float, float]:
  """(power of the composed lattice law, its round-off estimate)."""
  budget = _budget(steps, kappa)
  total = _self_compose(discretize(loss, spacing, budget), steps, budget)
  power, slope = _neyman_pearson_power(total, kappa)
  # Machine epsilon per entry in the level and in the power.
  rounding = len(total.p0) * np.finfo(float).eps * (1.0 + slope)
  return power, rounding


def rero_numerical(loss: PrivacyLoss, steps: int, kappa: float,
                   spacing: float | None = None) -> NumericalResult:
  """ReRo = 1 - beta(kappa) bracketed by two lattice compositions.

  Args:
    loss: the one-step privacy loss.
    steps: T >= 1.
    kappa: prior success probability in (0, 1).
    spacing: lattice spacing h; default_spacing() when None.

  Returns:
    A NumericalResult.
  """
  _validate_steps_kappa(steps, kappa)
  floor = any_step_test_power(loss, steps, kappa)
  if 1.0 - floor <= _SATURATED:
    return NumericalResult(1.0, floor, 1.0 - floor, math.nan)
  h = default_spacing(loss, steps, kappa) if spacing is None else spacing
  upper, rounding_upper = _compose_power(_discretize_upper, loss, steps,
                                         kappa, h)
  lower, rounding_lower = _compose_power(_discretize_lower, loss, steps,
                                         kappa, h)
  lower = max(lower, floor)
  error = max(upper - lower, 0.0) + rounding_upper + rounding_lower
  return NumericalResult(upper, lower, error, h)


# --------------------------------------------------------------------------
# Both methods, and risk profiles over privacy budgets.

# Two ReRo values are said to agree when they differ by at most this much
# beyond the numerical method's error estimate: half a unit in the last digit
# of the paper's tables (percentages with two decimals).
TOLERANCE = 5e-5


@dataclasses.dataclass(frozen=True)
class Rero:
  """ReRo for one adversary by both methods.

  Attributes:
    value: the numerical upper bound on ReRo; the one reported.
    lower: the numerical lower bound on ReRo.
    error: value - lower plus round-off.
    edgeworth: the Edgeworth value, None where the expansion does not apply.
    edgeworth_note: why the Edgeworth value is None, else ''.
  """
  value: float
  lower: float
  error: float
  edgeworth: float | None
  edgeworth_note: str = ''

  def agrees(self, tolerance: float = TOLERANCE) -> bool:
    """Whether both methods agree to `tolerance` plus the numerical error."""
    return bool(self.edgeworth is not None and
                abs(self.edgeworth - self.value) <= tolerance + self.error)


def rero(noise_multiplier: float, sampling_rate: float, steps: int,
         kappa: float, relaxed: bool = False) -> Rero:
  """ReRo of T DP-SGD steps against one adversary, by both methods.

  Args:
    noise_multiplier: z = noise std / clip norm (mu = 1/z).
    sampling_rate: q in (0, 1].
    steps: T >= 1.
    kappa: prior success probability in (0, 1).
    relaxed: the relaxed adversary (sees |u|) instead of the worst case.

  Returns:
    A Rero.
  """
  if not 0.0 < noise_multiplier < math.inf:
    raise ValueError('noise_multiplier must be positive and finite, got '
                     f'{noise_multiplier}.')
  loss = PrivacyLoss(1.0 / noise_multiplier, sampling_rate, relaxed)
  numerical = rero_numerical(loss, steps, kappa)
  edgeworth = rero_edgeworth(loss, steps, kappa)
  return Rero(numerical.value, numerical.lower, numerical.error,
              edgeworth.value, edgeworth.note)


def rero_worst_case(noise_multiplier: float, sampling_rate: float, steps: int,
                    kappa: float) -> Rero:
  """ReRo against the worst-case adversary (sees u). See `rero`."""
  return rero(noise_multiplier, sampling_rate, steps, kappa, relaxed=False)


def rero_relaxed(noise_multiplier: float, sampling_rate: float, steps: int,
                 kappa: float) -> Rero:
  """ReRo against the relaxed adversary (sees |u|). See `rero`."""
  return rero(noise_multiplier, sampling_rate, steps, kappa, relaxed=True)


def sampling_rate_and_steps(num_examples: int, batch_size: int,
                            epochs: int) -> tuple[float, int]:
  """q = B / N and T = (N // B) * epochs, as in training.

  Args:
    num_examples: training-set size N >= 1.
    batch_size: expected batch size B in [1, N].
    epochs: number of epochs >= 1.

  Returns:
    (q, T).

  Raises:
    ValueError: naming the impossible argument.
  """
  for name, value in (('num_examples', num_examples),
                      ('batch_size', batch_size), ('epochs', epochs)):
    if int(value) != value or value < 1:
      raise ValueError(f'{name} must be a positive integer, got {value}.')
  if batch_size > num_examples:
    raise ValueError(f'batch_size must be at most num_examples '
                     f'({num_examples}), got {batch_size}.')
  return batch_size / num_examples, (num_examples // batch_size) * int(epochs)


def _describe(result: Rero, tolerance: float) -> dict:
  return {
      'numerical': result.value,
      'numerical_lower': result.lower,
      'numerical_error': result.error,
      'edgeworth': result.edgeworth,
      'edgeworth_note': result.edgeworth_note,
      'agree': result.agrees(tolerance),
  }


def risk_profile(*, num_examples: int, batch_size: int, epochs: int,
                 delta: float, epsilons: list[float] | None = None,
                 noise_multipliers: list[float] | None = None,
                 tolerance: float = TOLERANCE) -> list[dict]:
  """ReRo bounds of one training recipe for several privacy budgets.

  The noise multiplier of each budget is calibrated with the accountant used
  in training (dp_medtf.privacy.accounting, RDP); kappa = 1 / N.

  Args:
    num_examples: training-set size N.
    batch_size: expected batch size B.
    epochs: number of epochs.
    delta: target delta in (0, 1).
    epsilons: budgets (> 0, finite; up to 1e18 and beyond).
    noise_multipliers: instead of epsilons, noise multipliers; epsilon is then
      what the accountant spends.
    tolerance: agreement tolerance of the two methods.

  Returns:
    One dict per budget with keys epsilon, noise_multiplier, sampling_rate,
    steps, kappa, rero_worst_case, rero_relaxed (the numerical values) and
    cross_check: {method, tolerance, worst_case, relaxed}, the latter two with
    numerical (the upper bound reported), numerical_lower, numerical_error,
    edgeworth (None where not applicable), edgeworth_note and agree.

  Raises:
    ValueError: naming the impossible argument.
  """
  q, steps = sampling_rate_and_steps(num_examples, batch_size, epochs)
  accounting.validate(delta=delta)
  if (epsilons is None) == (noise_multipliers is None):
    raise ValueError('Give exactly one of epsilons and noise_multipliers.')
  rows = []
  for value in (epsilons if epsilons is not None else noise_multipliers):
    if epsilons is not None:
      if math.isnan(value) or not 0.0 < value < math.inf:
        raise ValueError(f'epsilon must be positive and finite, got {value}.')
      epsilon = float(value)
      z = accounting.calibrate_noise_multiplier(epsilon, delta, q, steps)
    else:
      accounting.validate(noise_multiplier=value)
      z = float(value)
      epsilon = accounting.spent_epsilon(z, delta, q, steps)
    kappa = 1.0 / num_examples
    if num_examples == 1:  # Guessing the one record always succeeds.
      worst = relaxed = Rero(1.0, 1.0, 0.0, 1.0)
    else:
      worst = rero_worst_case(z, q, steps, kappa)
      relaxed = rero_relaxed(z, q, steps, kappa)
    rows.append({
        'epsilon': epsilon,
        'noise_multiplier': z,
        'sampling_rate': q,
        'steps': steps,
        'kappa': kappa,
        'rero_worst_case': worst.value,
        'rero_relaxed': relaxed.value,
        'cross_check': {
            'method': 'numerical',
            'tolerance': tolerance,
            'worst_case': _describe(worst, tolerance),
            'relaxed': _describe(relaxed, tolerance),
        },
    })
  return rows
