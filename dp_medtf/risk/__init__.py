"""Reconstruction-risk bounds of DP-SGD (worst-case and relaxed adversary).

Example:

  >>> from dp_medtf import risk
  >>> rows = risk.risk_profile(num_examples=106, batch_size=1, epochs=500,
  ...                          delta=8e-7, epsilons=[8.0])
  >>> round(100 * rows[0]['rero_worst_case'], 1)  # Percent.
  18.0

Command line: python -m dp_medtf.risk --help
"""

from dp_medtf.risk.bounds import any_step_test_power
from dp_medtf.risk.bounds import EdgeworthResult
from dp_medtf.risk.bounds import NumericalResult
from dp_medtf.risk.bounds import PrivacyLoss
from dp_medtf.risk.bounds import Rero
from dp_medtf.risk.bounds import rero
from dp_medtf.risk.bounds import rero_edgeworth
from dp_medtf.risk.bounds import rero_numerical
from dp_medtf.risk.bounds import rero_relaxed
from dp_medtf.risk.bounds import rero_worst_case
from dp_medtf.risk.bounds import risk_profile
from dp_medtf.risk.bounds import sampling_rate_and_steps
from dp_medtf.risk.bounds import TOLERANCE
