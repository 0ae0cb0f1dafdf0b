"""Reconstruction-risk bounds of DP-SGD (worst-case and relaxed adversary).

Two methods, named in every output: `rero_exact` (lattice composition) and
`rero_edgeworth` (Edgeworth expansion, the paper's method); see
dp_medtf.risk.bounds.

Example:

  >>> from dp_medtf import risk
  >>> rows = risk.risk_profile(num_examples=106, batch_size=1, epochs=500,
  ...                          delta=8e-7, epsilons=[8.0])
  >>> worst = rows[0]['worst_case']  # Percent, by both methods:
  >>> [round(100 * worst[key], 2) for key in ('rero_exact', 'rero_edgeworth')]
  [17.96, 17.96]

Command line: python -m dp_medtf.risk --help
"""

from dp_medtf.risk.bounds import any_step_test_power
from dp_medtf.risk.bounds import EdgeworthResult
from dp_medtf.risk.bounds import ExactResult
from dp_medtf.risk.bounds import METHODS
from dp_medtf.risk.bounds import PAPER_METHOD
from dp_medtf.risk.bounds import PrivacyLoss
from dp_medtf.risk.bounds import Rero
from dp_medtf.risk.bounds import rero
from dp_medtf.risk.bounds import rero_edgeworth
from dp_medtf.risk.bounds import rero_exact
from dp_medtf.risk.bounds import rero_relaxed
from dp_medtf.risk.bounds import rero_worst_case
from dp_medtf.risk.bounds import risk_profile
from dp_medtf.risk.bounds import TOLERANCE
