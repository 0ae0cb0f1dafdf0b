"""Non-private baseline on MSD Task03 Liver: 3D U-Net with early stopping.

The paper's non-private recipe (Methods, MSD Liver): U-Net with 16 channels,
no augmentation, weighted loss (background 0.1, liver 0.4, tumour 0.5),
batch 2, NAdam at 2e-3, and early stopping with a patience of 50 epochs and a
0.1% improvement threshold. From the authors' configs/msd_liver.yaml: the
Dice loss with those weights, batch 1 with 2 accumulated batches, at most 500
epochs, early stopping that maximises the validation fscore_avg (the mean
soft Dice over all classes, background included: 'soft_dice' here) with
min_delta 0.001, and the model of the last epoch tested (no return to the
best). Everything else is the DP recipe's (msd_liver.py).

Command:

  python -m dp_medtf.train --dataset=msd_liver --baseline \
      --data_dir=/data/Task03_Liver
"""

import ml_collections

from dp_medtf.configs import base
from dp_medtf.configs import msd_liver


def get_config() -> ml_collections.ConfigDict:
  """The MSD Liver baseline: the DP recipe with what differs."""
  config = base.make_baseline(msd_liver.get_config(), patience=50)
  config.class_weights = (0.1, 0.4, 0.5)
  config.batch_size = 2
  # At most the DP recipe's 500 epochs: early stopping decides.
  config.early_stopping.metric = 'soft_dice'
  return config
