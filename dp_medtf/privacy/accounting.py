"""Privacy accounting for DP-SGD with Poisson sampling: calibrate and spend.

One accountant serves the whole project: dp-accounting's RDP accountant (the
same analysis TF Privacy and Opacus use) over T self-composed steps of the
Poisson-subsampled Gaussian mechanism.

Example:

  >>> z = calibrate_noise_multiplier(8.0, 8e-7, sampling_rate=0.01, steps=1000)
  >>> round(spent_epsilon(z, 8e-7, sampling_rate=0.01, steps=1000), 1)
  8.0
"""

from __future__ import annotations

import dataclasses
import math

import dp_accounting
from scipy import optimize
from dp_accounting import rdp

# Bisection bracket for the noise multiplier, in log space. 1e-15 reaches
# epsilon far beyond 1e18 for any realistic (q, T); 1e3 goes below 0.01 for any q >= 1e-6 (larger z makes the
# accountant's arithmetic round to negative divergences).
_LOG_Z_MIN = math.log(1e-15)
_LOG_Z_MAX = math.log(1e3)


@dataclasses.dataclass(frozen=True)
class DpSgdSetting:
  """What the accountant needs to know about a DP-SGD run.

  Attributes:
    sampling_rate: probability q with which each example joins each step.
    steps: number of noisy steps T.
    delta: target delta.
  """
  sampling_rate: float
  steps: int
  delta: float

  def __post_init__(self):
    validate(sampling_rate=self.sampling_rate, steps=self.steps,
             delta=self.delta)


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


def dp_event(noise_multiplier: float, sampling_rate: float,
             steps: int) -> dp_accounting.DpEvent:
  """The DpEvent of `steps` Poisson-subsampled Gaussian steps."""
  step = dp_accounting.GaussianDpEvent(noise_multiplier)
  if sampling_rate < 1.0:
    step = dp_accounting.PoissonSampledDpEvent(sampling_rate, step)
  return dp_accounting.SelfComposedDpEvent(step, int(steps))


def spent_epsilon(noise_multiplier: float, delta: float, sampling_rate: float,
                  steps: int) -> float:
  """Epsilon spent by `steps` DP-SGD steps, by the RDP accountant.

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
  accountant = rdp.RdpAccountant()
  accountant.compose(dp_event(noise_multiplier, sampling_rate, steps))
  return float(accountant.get_epsilon(delta))


def calibrate_noise_multiplier(epsilon: float, delta: float,
                               sampling_rate: float, steps: int,
                               rtol: float = 1e-3) -> float:
  """The smallest noise multiplier whose T steps spend at most `epsilon`.

  A root search over log(z), so that it is robust from epsilon ~0.01 to
  beyond 1e18 (where z is tiny). The result always satisfies
  spent_epsilon(z) <= epsilon, and is within `rtol` of it.

  Args:
    epsilon: target epsilon (> 0, finite).
    delta: target delta in (0, 1).
    sampling_rate: Poisson sampling probability q in (0, 1].
    steps: number of steps T >= 1.
    rtol: relative tolerance on the spent epsilon.

  Returns:
    The noise multiplier z.

  Raises:
    ValueError: for impossible inputs, or a target outside the reachable
      range of the bracket.
  """
  validate(epsilon=epsilon, delta=delta, sampling_rate=sampling_rate,
           steps=steps)
  if math.isinf(epsilon):
    raise ValueError('epsilon=inf needs no noise; train without DP instead.')

  def log_excess(log_z):
    return math.log(
        spent_epsilon(math.exp(log_z), delta, sampling_rate, steps) / epsilon)

  if log_excess(_LOG_Z_MAX) > 0:
    raise ValueError(
        f'epsilon={epsilon} is below what noise multiplier '
        f'{math.exp(_LOG_Z_MAX):g} reaches at delta={delta}, '
        f'q={sampling_rate}, T={steps}.')
  if log_excess(_LOG_Z_MIN) <= 0:
    return math.exp(_LOG_Z_MIN)
  # log(epsilon) is smooth and decreasing in log(z): Brent's method converges
  # in a few dozen evaluations where bisection needs ~60.
  log_z = optimize.brentq(log_excess, _LOG_Z_MIN, _LOG_Z_MAX,
                          xtol=1e-3 * rtol, rtol=1e-12)
  # Step up to the safe side: spent <= epsilon, within rtol of it.
  while log_excess(log_z) > 0:
    log_z += 1e-3 * rtol
  return math.exp(log_z)
