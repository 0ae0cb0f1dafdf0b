"""What a checkpoint must remember about the privacy already spent.

The ledger lists the DP-SGD steps taken, as segments of (noise multiplier,
sampling rate, steps). It is saved inside every checkpoint (as a JSON string
variable), so the model weights and the privacy they cost are restored
together: a resumed run continues the same ledger and its final epsilon is
that of an uninterrupted run of the same length.

Example:

  >>> ledger = PrivacyLedger()
  >>> ledger.record(noise_multiplier=1.0, sampling_rate=0.01, steps=100)
  >>> ledger.record(noise_multiplier=1.0, sampling_rate=0.01, steps=50)
  >>> ledger.segments
  [Segment(noise_multiplier=1.0, sampling_rate=0.01, steps=150)]
"""

from __future__ import annotations

import dataclasses
import json

import tensorflow as tf

from dp_medtf.privacy import accounting


class BudgetExceededError(RuntimeError):
  """Training further would spend more than the target epsilon."""


@dataclasses.dataclass(frozen=True)
class Segment:
  """Consecutive steps with one noise multiplier and sampling rate."""
  noise_multiplier: float
  sampling_rate: float
  steps: int


class PrivacyLedger(tf.Module):
  """The DP-SGD steps a model has been trained with.

  A tf.Module holding its state in a string variable, so that
  tf.train.Checkpoint saves and restores it with the model.
  """

  def __init__(self, name: str | None = None):
    super().__init__(name=name)
    self._state = tf.Variable('[]', dtype=tf.string, trainable=False,
                              name='ledger_json')

  @property
  def segments(self) -> list[Segment]:
    return [Segment(**s) for s in json.loads(self._state.numpy().decode())]

  @property
  def steps(self) -> int:
    """Total steps recorded."""
    return sum(s.steps for s in self.segments)

  def record(self, noise_multiplier: float, sampling_rate: float,
             steps: int = 1) -> None:
    """Adds `steps` steps, merging with the last segment when it matches."""
    segments = self._with(noise_multiplier, sampling_rate, steps)
    self._state.assign(json.dumps([dataclasses.asdict(s) for s in segments]))

  def _with(self, noise_multiplier: float, sampling_rate: float,
            steps: int) -> list[Segment]:
    """The segments after `steps` more steps, merged into the last segment
    when it matches (one segment is accounted exactly)."""
    accounting.validate(noise_multiplier=noise_multiplier,
                        sampling_rate=sampling_rate, steps=steps)
    segments = self.segments
    if segments and (segments[-1].noise_multiplier == noise_multiplier and
                     segments[-1].sampling_rate == sampling_rate):
      last = segments.pop()
      segments.append(dataclasses.replace(last, steps=last.steps + steps))
    else:
      segments.append(Segment(noise_multiplier, sampling_rate, steps))
    return segments

  def epsilon(self, delta: float) -> float:
    """Epsilon spent by everything recorded, by the RDP accountant.

    The same computation as the calibration (accounting.composed_epsilon),
    numerically sound at tiny sampling rates and huge step counts.
    """
    accounting.validate(delta=delta)
    return accounting.composed_epsilon(
        [(s.noise_multiplier, s.sampling_rate, s.steps)
         for s in self.segments], delta)

  def projected_epsilon(self, delta: float, noise_multiplier: float,
                        sampling_rate: float, more_steps: int) -> float:
    """Epsilon after `more_steps` further steps (none is recorded).

    Example:

      >>> ledger = PrivacyLedger()
      >>> ledger.record(1.0, 0.01, steps=100)
      >>> ledger.projected_epsilon(1e-5, 1.0, 0.01, 100) > ledger.epsilon(1e-5)
      True
    """
    segments = (self._with(noise_multiplier, sampling_rate, more_steps)
                if more_steps > 0 else self.segments)
    if not segments:
      return 0.0
    accounting.validate(delta=delta)
    return accounting.composed_epsilon(
        [(s.noise_multiplier, s.sampling_rate, s.steps) for s in segments],
        delta)

  def to_dict(self) -> list[dict[str, float]]:
    """The segments as plain dicts (for results.json)."""
    return [dataclasses.asdict(s) for s in self.segments]
