"""Non-private baseline on HAM10000: ResNet-9 with early stopping.

The paper's non-private recipe (Methods, HAM10000): ResNet-9, weighted loss,
batch 32, random vertical flips (p = 0.5), NAdam at 2e-3, and early stopping
with a patience of 50 epochs and a 0.1% improvement threshold. From the
authors' configs/ham10000.yaml: at most 500 epochs, early stopping that
maximises the validation MCC with min_delta 0.001, the model of the last
epoch tested (no return to the best), and the class weights (0.1, 0.9) (the
only weights that file names, commented out next to
calculate_class_weights: False; the paper says the loss is weighted). Their
file's patience is 30; this recipe follows the paper. Everything else is the
DP recipe's (ham10000.py).

Command:

  python -m dp_medtf.train --dataset=ham10000 --baseline \
      --data_dir=/data/HAM10000
"""

import ml_collections

from dp_medtf.configs import base
from dp_medtf.configs import ham10000


def get_config() -> ml_collections.ConfigDict:
  """The HAM10000 baseline: the DP recipe with what differs."""
  config = base.make_baseline(ham10000.get_config(), patience=50)
  # Each example's cross-entropy times the weight of its label
  # (benign, needs treatment).
  config.class_weights = (0.1, 0.9)
  config.batch_size = 32
  config.epochs = 500  # At most: early stopping decides.
  config.augment.flip_vertical = 0.5
  return config
