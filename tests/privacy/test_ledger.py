"""PrivacyLedger.projected_epsilon: what recording the steps would give."""

import math

import pytest

from dp_medtf.privacy import ledger as privacy_ledger


@pytest.mark.parametrize('recorded, more', [
    ([], (1.1, 0.01, 50)),
    ([(1.1, 0.01, 30)], (1.1, 0.01, 50)),  # Continues the last segment.
    ([(1.1, 0.01, 30)], (0.9, 0.02, 50)),  # A new segment.
    ([(0.9, 0.02, 10), (1.1, 0.01, 30)], (1.1, 0.01, 0)),
])
def test_projection_equals_recording(recorded, more):
  ledger = privacy_ledger.PrivacyLedger()
  for z, q, t in recorded:
    ledger.record(z, q, t)
  projected = ledger.projected_epsilon(8e-7, *more)
  assert ledger.steps == sum(t for _, _, t in recorded)  # Nothing recorded.
  if more[2]:
    ledger.record(*more)
  if not ledger.steps:
    assert projected == 0.0
  else:
    assert projected == ledger.epsilon(8e-7)
    assert math.isfinite(projected) and projected > 0
