"""DP ResNet-9 on the embedded synthetic-lesion demo (CPU, a few minutes).

Command:

  python -m dp_medtf.train --dataset=demo --epsilon=8
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """The demo recipe."""
  config = ml_collections.ConfigDict()
  config.dataset = 'demo'
  config.data = ml_collections.ConfigDict(dict(image_size=32, data_seed=0))
  config.num_train_examples = 2400
  config.input_shape = (32, 32, 3)
  config.num_classes = 2
  # centre_weights: weight-centred convolutions, as the paper's authors.
  config.model = ml_collections.ConfigDict(dict(
      name='resnet9', width=16, centre_weights=True))
  config.optimizer = 'nadam'
  config.learning_rate = 2e-3
  config.batch_size = 256  # Expected logical batch size B = q * N.
  config.physical_batch_size = 0  # 0: the Poisson bound, one chunk a step.
  config.epochs = 12
  config.eval_batch_size = 300
  config.augment = ml_collections.ConfigDict(
      dict(flip_vertical=0.5, flip_horizontal=0.5, multiplicity=1))
  # Fixed input standardisation, per channel. For the demo: measured once on
  # 4,000 images drawn from the public generator with seeds other than the
  # data's (0.7476/0.5598/0.4681, std 0.1670/0.1452/0.1307), never on the
  # training split. fit_on_data=True (non-private runs only) measures the
  # training split instead.
  config.normalization = ml_collections.ConfigDict(dict(
      mean=(0.748, 0.560, 0.468), std=(0.167, 0.145, 0.131), fit_on_data=False))
  config.dp = ml_collections.ConfigDict(dict(
      epsilon=8.0, delta=8e-7, clip_norm=1.0, engine='ghost_bk',
      # Per-budget clip norms, keyed by str(epsilon); clip_norm otherwise.
      clip_norms={},
      # True: Poisson batches and noise derive from `seed` (reproducible,
      # NOT private; tests and debugging only).
      insecure_seeded_randomness=False))
  config.budget_rules = ()
  # Early stopping: non-private runs only (patience 0: off). metric ''
  # watches the validation MCC (classification) or first foreground Dice.
  config.early_stopping = ml_collections.ConfigDict(dict(
      patience=0, min_delta=0.001, metric='', mode='max'))
  # The demo's sweep (launch/sweep.py's defaults); inf: non-private.
  config.sweep = ml_collections.ConfigDict(dict(
      epsilons=(1.0, 8.0, 1e9, float('inf')),
      seeds=(10, 11, 100, 101, 110)))
  config.seed = 0
  config.jit_compile = False  # XLA: needed on TPU, slower on this CPU.
  config.checkpoint_every_steps = 0  # 0: at the end of each epoch.
  config.stop_after_steps = 0  # > 0: stop early (a preemptible slot).
  # The imprint attack (python -m dp_medtf.attack). skip_near_empty leaves
  # images with at most 10% non-zero pixels unscored (the paper does so for
  # RadImageNet only); `data` overrides config.data for the attack, which
  # reconstructs and scores images in [0, 1].
  config.attack = ml_collections.ConfigDict(dict(
      skip_near_empty=False, data=ml_collections.ConfigDict()))
  return config
