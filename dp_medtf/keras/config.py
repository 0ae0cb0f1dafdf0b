"""`DPKerasConfig`: what a private Keras model needs to know to train.

A frozen dataclass, checked when it is made: an impossible value or
combination raises a one-line ValueError naming the field. The noise
multiplier is calibrated from (epsilon, delta, q, T) on first use, with the
same RDP accountant that reports the epsilon spent.

Example:

  >>> config = DPKerasConfig(epsilon=8.0, clipping_norm=1.0, batch_size=64,
  ...                        train_size=2400, epochs=3)
  >>> config.steps_per_epoch, config.train_steps_total, config.sampling_rate
  (37, 111, 0.02666666666666667)
  >>> round(config.resolved_noise_multiplier, 3)
  0.663
  >>> DPKerasConfig(epsilon=8.0, clipping_norm=1.0, batch_size=64,
  ...               train_size=2400)
  Traceback (most recent call last):
  ...
  ValueError: DPKerasConfig: give exactly one of epochs and train_steps.
"""

from __future__ import annotations

import dataclasses
import functools
import math

from dp_medtf import epsilons as epsilons_lib
from dp_medtf.data import sampling
from dp_medtf.privacy import accounting
from dp_medtf.privacy import step as dp_step


def _fail(message: str):
  raise ValueError(f'DPKerasConfig: {message}')


@dataclasses.dataclass(frozen=True)
class DPKerasConfig:
  """The DP-SGD setting of one training run.

  Attributes:
    batch_size: B, the expected logical batch; each example joins each step
      with probability q = B / N (Poisson sampling).
    train_size: N, the number of training examples `fit` receives.
    clipping_norm: C, the L2 bound on each example's gradient.
    epsilon: the target epsilon; math.inf trains without DP (shuffled
      batches of B, no clipping or noise). Give this or noise_multiplier.
    delta: the target delta.
    epochs: passes over the data (T = (N // B) * epochs); or train_steps.
    train_steps: T directly; or epochs.
    noise_multiplier: z, instead of epsilon (the epsilon spent is then
      reported, not targeted). 0 adds no noise: not private, for tests.
    physical_batch_size: examples per physical chunk; 0: a bound that holds
      a whole Poisson batch in all but rare steps. Larger batches still
      train exactly, over several chunks, with one noise draw per step.
    engine: the per-example clipping engine (dp_medtf.privacy.step.ENGINES);
      ghost_bk is the fastest and exact for the layers of the registry.
    augmentation_multiplicity: K augmented views per example, averaged
      before clipping.
    insecure_seeded_randomness: derive the Poisson batches and the noise
      from `seed`: reproducible and NOT private (anyone who knows the seed
      can remove the noise). False: secret OS entropy.
    seed: the seed of the insecure mode, and of augmentation.
    jit_compile: compile the DP step with XLA.
  """
  batch_size: int
  train_size: int
  clipping_norm: float
  epsilon: float | None = None
  delta: float = 8e-7
  epochs: int | None = None
  train_steps: int | None = None
  noise_multiplier: float | None = None
  physical_batch_size: int = 0
  engine: str = 'ghost_bk'
  augmentation_multiplicity: int = 1
  insecure_seeded_randomness: bool = False
  seed: int = 0
  jit_compile: bool = False

  def __post_init__(self):
    if int(self.train_size) != self.train_size or self.train_size < 1:
      _fail(f'train_size must be a positive integer, got {self.train_size}.')
    if (int(self.batch_size) != self.batch_size or
        not 1 <= self.batch_size <= self.train_size):
      _fail(f'batch_size must be an integer in [1, train_size='
            f'{self.train_size}], got {self.batch_size}.')
    if (self.epochs is None) == (self.train_steps is None):
      _fail('give exactly one of epochs and train_steps.')
    for name in ('epochs', 'train_steps'):
      value = getattr(self, name)
      if value is not None and (int(value) != value or value < 1):
        _fail(f'{name} must be a positive integer, got {value}.')
    if (self.epsilon is None) == (self.noise_multiplier is None):
      _fail('give exactly one of epsilon and noise_multiplier.')
    if self.epsilon is not None and (math.isnan(self.epsilon) or
                                     self.epsilon <= 0):
      _fail(f'epsilon must be positive (inf: no DP), got {self.epsilon}.')
    if self.noise_multiplier is not None and not (
        0 <= self.noise_multiplier < math.inf):
      _fail(f'noise_multiplier must be finite and >= 0, got '
            f'{self.noise_multiplier}.')
    if not 0 < self.delta < 1:
      _fail(f'delta must lie in (0, 1), got {self.delta}.')
    if not 0 < self.clipping_norm < math.inf:
      _fail(f'clipping_norm must be positive and finite, got '
            f'{self.clipping_norm}.')
    if self.engine not in dp_step.ENGINES:
      _fail(f'engine must be one of {", ".join(dp_step.ENGINES)}, got '
            f'{self.engine!r}.')
    if self.physical_batch_size < 0:
      _fail(f'physical_batch_size must be >= 0, got '
            f'{self.physical_batch_size}.')
    if self.augmentation_multiplicity < 1:
      _fail(f'augmentation_multiplicity must be >= 1, got '
            f'{self.augmentation_multiplicity}.')
    if self.private and self.epsilon is not None:
      accounting.validate(epsilon=self.epsilon, delta=self.delta,
                          sampling_rate=self.sampling_rate,
                          steps=self.train_steps_total)
      if self.epsilon < accounting.smallest_reachable_epsilon(self.delta):
        _fail(f'epsilon={epsilons_lib.epsilon_text(self.epsilon)} cannot be '
              f'reached at delta={self.delta:g} with any noise.')

  @property
  def private(self) -> bool:
    """False for epsilon=inf (no clipping, no noise, shuffled batches)."""
    return not (self.epsilon is not None and math.isinf(self.epsilon))

  @property
  def sampling_rate(self) -> float:
    """q = B / N."""
    return self._q_and_epoch()[0]

  @property
  def steps_per_epoch(self) -> int:
    """N // B for DP (Poisson batches of B on average); ceil(N / B) without."""
    return self._q_and_epoch()[1]

  def _q_and_epoch(self) -> tuple[float, int]:
    return accounting.sampling_rate_and_steps(
        self.train_size, self.batch_size, 1, private=self.private)

  @property
  def train_steps_total(self) -> int:
    """T: the steps the budget is calibrated for."""
    if self.train_steps is not None:
      return int(self.train_steps)
    return self.steps_per_epoch * int(self.epochs)

  @property
  def epochs_total(self) -> int:
    """The epochs T spans (the last one may be partial)."""
    return math.ceil(self.train_steps_total / self.steps_per_epoch)

  @functools.cached_property
  def resolved_noise_multiplier(self) -> float:
    """z: given, or calibrated so that T steps spend at most epsilon."""
    if not self.private:
      return 0.0
    if self.noise_multiplier is not None:
      return float(self.noise_multiplier)
    return accounting.calibrate_noise_multiplier(
        self.epsilon, self.delta, self.sampling_rate, self.train_steps_total)

  @property
  def epsilon_target(self) -> float:
    """The budget: epsilon, or what T steps at the given z spend."""
    if self.epsilon is not None:
      return float(self.epsilon)
    if self.noise_multiplier == 0:
      return math.inf
    return accounting.spent_epsilon(self.noise_multiplier, self.delta,
                                    self.sampling_rate,
                                    self.train_steps_total)

  def chunk_size(self, replicas: int = 1) -> int:
    """Examples per physical chunk, a multiple of `replicas`."""
    if not self.private:
      chunk = self.batch_size
    else:
      chunk = self.physical_batch_size or sampling.poisson_bound(
          self.train_size, self.sampling_rate, self.train_steps_total)
    return -(-chunk // replicas) * replicas
