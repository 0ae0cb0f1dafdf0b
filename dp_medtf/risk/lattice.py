"""ReRo computed exactly by composing lattice laws (the `rero_exact` method).

Exact tests on lattice laws of the privacy loss (dp_medtf.risk.privacy_loss),
T-fold composed by FFT convolution and repeated squaring, bracket ReRo. The
upper law splits each one-step bin of L onto its two lattice end points,
keeping its H0 and its H1 mass ("connect the dots"), and moves negligible
tails to +-infinity; each change makes the test easier, so its power bounds
ReRo from above. The lower law labels each bin by the lattice point nearest to
its own privacy loss; tests of the summed labels are tests of the mechanism,
so their best power bounds ReRo from below. Both gaps are second order in the
spacing h. Valid for any q, T and epsilon; where even the simple test "some
step exceeds c" has power 1 to within 1e-12 (huge epsilon), ReRo is reported
as 1 without a lattice. The value reported is the upper end of the bracket,
a guaranteed bound up to round-off (included in `error`).

Example:

  >>> from dp_medtf.risk.privacy_loss import PrivacyLoss
  >>> loss = PrivacyLoss(mu=1.0, sampling_rate=1.0)
  >>> round(rero_exact(loss, steps=1, kappa=0.01).value, 4)  # Gaussian.
  0.0924
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
from scipy import fft
from scipy import special

from dp_medtf.risk import privacy_loss

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


def _loss_range(loss: privacy_loss.PrivacyLoss,
                budget: _Budget) -> tuple[float, float]:
  """[l_low, l_high]: H1 mass below l_low, H0 mass above l_high negligible."""
  l_high = float(loss.loss(-special.ndtri(budget.tail0 / 2.0)))
  l_low = loss.lower_end
  if loss.sampling_rate == 1.0:  # Unbounded, or astronomically wide, below.
    v = loss.mu + special.ndtri(budget.tail1 / 2.0)
    l_low = float(loss.loss(max(v, 0.0) if loss.relaxed else v))
  return l_low, max(l_high, l_low)


def _bins(loss: privacy_loss.PrivacyLoss, spacing: float, budget: _Budget
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


def _discretize_upper(loss: privacy_loss.PrivacyLoss, spacing: float,
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


def _discretize_lower(loss: privacy_loss.PrivacyLoss, spacing: float,
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


def _budget(steps: int, kappa: float) -> _Budget:
  tail1 = _TAIL_BUDGET / (2.0 * steps)
  return _Budget(tail0=tail1 * kappa, tail1=tail1, max_slope=1.0 / kappa)


@dataclasses.dataclass(frozen=True)
class ExactResult:
  """ReRo by the exact (lattice) method.

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


def default_spacing(loss: privacy_loss.PrivacyLoss, steps: int,
                    kappa: float) -> float:
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


def any_step_test_power(loss: privacy_loss.PrivacyLoss, steps: int,
                        kappa: float) -> float:
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
    miss = ((1.0 - q) * (1.0 - a) +
            q * privacy_loss.normal_interval(-c - mu, c - mu))
  else:
    c = -special.ndtri(a)
    miss = (1.0 - q) * (1.0 - a) + q * special.ndtr(c - mu)
  return float(-math.expm1(steps * math.log(max(miss, 1e-300))))


def _compose_power(discretize, loss: privacy_loss.PrivacyLoss, steps: int,
                   kappa: float, spacing: float) -> tuple[float, float]:
  """(power of the composed lattice law, its round-off estimate)."""
  budget = _budget(steps, kappa)
  total = _self_compose(discretize(loss, spacing, budget), steps, budget)
  power, slope = _neyman_pearson_power(total, kappa)
  # Machine epsilon per entry in the level and in the power.
  rounding = len(total.p0) * np.finfo(float).eps * (1.0 + slope)
  return power, rounding


def rero_exact(loss: privacy_loss.PrivacyLoss, steps: int, kappa: float,
               spacing: float | None = None) -> ExactResult:
  """ReRo = 1 - beta(kappa) bracketed by two lattice compositions.

  Args:
    loss: the one-step privacy loss.
    steps: T >= 1.
    kappa: prior success probability in (0, 1).
    spacing: lattice spacing h; default_spacing() when None.

  Returns:
    An ExactResult.
  """
  privacy_loss.validate_steps_kappa(steps, kappa)
  floor = any_step_test_power(loss, steps, kappa)
  if 1.0 - floor <= _SATURATED:
    return ExactResult(1.0, floor, 1.0 - floor, math.nan)
  h = default_spacing(loss, steps, kappa) if spacing is None else spacing
  upper, rounding_upper = _compose_power(_discretize_upper, loss, steps,
                                         kappa, h)
  lower, rounding_lower = _compose_power(_discretize_lower, loss, steps,
                                         kappa, h)
  lower = max(lower, floor)
  error = max(upper - lower, 0.0) + rounding_upper + rounding_lower
  return ExactResult(upper, lower, error, h)

