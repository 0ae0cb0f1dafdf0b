"""DP ResNet-9 on the embedded synthetic-lesion demo (CPU, a few minutes).

Command:

  python -m dp_medtf.train --dataset=demo --epsilon=8
"""

import ml_collections

from dp_medtf.configs import base


def get_config() -> ml_collections.ConfigDict:
  """The demo recipe."""
  config = base.get_config()
  config.dataset = config.recipe = 'demo'
  config.data = ml_collections.ConfigDict(dict(image_size=32, data_seed=0))
  config.num_train_examples = 2400
  config.input_shape = (32, 32, 3)
  config.model.width = 16
  config.batch_size = 256
  config.epochs = 12
  config.eval_batch_size = 300
  config.augment.flip_vertical = config.augment.flip_horizontal = 0.5
  # Measured once on 4,000 images drawn from the public generator with seeds
  # other than the data's (0.7476/0.5598/0.4681, std 0.1670/0.1452/0.1307),
  # never on the training split.
  config.normalization.mean = (0.748, 0.560, 0.468)
  config.normalization.std = (0.167, 0.145, 0.131)
  config.jit_compile = False  # XLA: needed on TPU, slower on this CPU.
  return config
