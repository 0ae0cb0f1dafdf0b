"""The imprint reconstruction attack of a malicious server, under DP.

Example:

  >>> from dp_medtf import attacks
  >>> attacked = attacks.imprint_model(model, num_bins=10)
  >>> budgets = attacks.make_budgets([1e9, math.inf], delta=8e-7,
  ...                                num_train_examples=2400, epochs=12,
  ...                                clip_norm=1.0)
  >>> result = attacks.run_attack(attacked, images, labels, budgets)
"""

from dp_medtf.attacks.imprint import data_thresholds
from dp_medtf.attacks.imprint import find_imprint_block
from dp_medtf.attacks.imprint import gaussian_thresholds
from dp_medtf.attacks.imprint import imprint_model
from dp_medtf.attacks.imprint import ImprintBlock
from dp_medtf.attacks.recovery import Reconstruction
from dp_medtf.attacks.recovery import recover
from dp_medtf.attacks.runner import AttackResult
from dp_medtf.attacks.runner import Budget
from dp_medtf.attacks.runner import budget_key
from dp_medtf.attacks.runner import budgets_from_config
from dp_medtf.attacks.runner import make_budgets
from dp_medtf.attacks.runner import privatize
from dp_medtf.attacks.runner import run_attack
from dp_medtf.attacks.scoring import best_match
from dp_medtf.attacks.scoring import error_matrix
from dp_medtf.attacks.scoring import is_near_empty
from dp_medtf.attacks.scoring import Match
from dp_medtf.attacks.scoring import reconstruction_error
from dp_medtf.attacks.scoring import ssim
