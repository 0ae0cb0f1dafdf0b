"""ReRo by the five-cumulant Edgeworth expansion: the paper's method.

Ziller et al. (and their published code) compute the ReRo bound this way:
the first five cumulants of the one-step privacy loss L under H0 and H1
(dp_medtf.risk.privacy_loss), times T for the summed loss S, then the
Edgeworth expansion of the law of S under H0 gives the threshold of the
level-kappa test and that under H1 its power.

The expansion is an asymptotic series in powers of the standardized
cumulants lambda_r of S (which shrink like T^(-1/2)); where
max_r |lambda_r|^(1/(r-2)) > 1 the terms no longer decrease and the expansion
is reported as not applicable (None): few steps, or rare large jumps of L
(small q, large mu, huge epsilon). It has no error bound: where lambda_3 is
not small it overstates ReRo (RadImageNet, q = 0.003, at epsilon 8 to 32: by
32% to 45% of the value); dp_medtf.risk.lattice computes ReRo exactly.

Example:

  >>> from dp_medtf.risk.privacy_loss import PrivacyLoss
  >>> loss = PrivacyLoss(mu=1.0, sampling_rate=1.0)
  >>> round(rero_edgeworth(loss, steps=1, kappa=0.01).value, 4)  # Gaussian.
  0.0924
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import optimize
from scipy import special

from dp_medtf.risk import privacy_loss

# The Edgeworth expansion is a series in this parameter (see module doc).
EDGEWORTH_MAX_EXPANSION_PARAMETER = 1.0


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


def rero_edgeworth(loss: privacy_loss.PrivacyLoss, steps: int,
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
  privacy_loss.validate_steps_kappa(steps, kappa)
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
