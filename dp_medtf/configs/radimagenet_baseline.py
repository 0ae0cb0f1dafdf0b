"""Non-private baseline on RadImageNet: WideResNet-40-4 with early stopping.

The paper's non-private recipe (Methods, RadImageNet): WideResNet-40-4,
unweighted loss, batch 16, random vertical (p = 0.2) and horizontal (p = 0.1)
flips, NAdam at 2e-3, and the number of epochs set by early stopping with a
patience of 5 epochs and a 0.1% improvement threshold. From the authors'
configs/radimagenet.yaml: BatchNorm and Mish in the WideResNet, at most 200
epochs, early stopping that maximises the validation MCC with min_delta 0.001,
and the model of the last epoch is the one tested (no return to the best).
Their file differs from the paper in flips (0.5 / 0.5), patience (10) and 32
accumulated batches; this recipe follows the paper. Everything else is the
DP recipe's (radimagenet.py).

Command:

  python -m dp_medtf.train --dataset=radimagenet --baseline \
      --data_dir=/data/radimagenet
"""

import ml_collections

from dp_medtf.configs import base
from dp_medtf.configs import radimagenet


def get_config() -> ml_collections.ConfigDict:
  """The RadImageNet baseline: the DP recipe with what differs."""
  config = base.make_baseline(radimagenet.get_config(), patience=5)
  config.model = ml_collections.ConfigDict(dict(
      name='wideresnet', depth=40, width=64, norm='batch',
      activation='mish'))
  config.batch_size = 16
  config.epochs = 200  # At most: early stopping decides.
  config.augment.flip_horizontal = 0.1  # Vertical: 0.2, as in the DP recipe.
  config.augment.multiplicity = 1
  return config
