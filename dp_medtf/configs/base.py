"""What every recipe shares; each dataset's recipe states what differs.

The fields, and the values the paper's recipes have in common (NAdam at
2e-3, delta = 8e-7, the ghost-norm engine, weight-centred convolutions, the
authors' five seeds). A dataset's recipe calls `get_config()` and sets its
data, model size, batches, epochs, normalisation, clip norm and sweep.

Example:

  >>> config = get_config()
  >>> config.optimizer, config.dp.delta, config.task
  ('nadam', 8e-07, 'classification')
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """The shared fields; `dataset`, `data` and the sizes are the recipe's."""
  config = ml_collections.ConfigDict()
  config.dataset = ''
  config.recipe = ''  # The recipe's name in results.json (e.g. a baseline).
  config.data = ml_collections.ConfigDict()
  config.num_train_examples = 0
  config.input_shape = ()
  config.num_classes = 2
  config.task = 'classification'  # Or 'segmentation' (label maps).
  config.class_names = ()  # Segmentation: names of the Dice columns.
  # Each example's loss times the weight of its label; () unweighted.
  config.class_weights = ()
  # centre_weights: weight-centred convolutions, as the paper's authors.
  config.model = ml_collections.ConfigDict(dict(
      name='resnet9', width=64, centre_weights=True))
  config.optimizer = 'nadam'
  config.learning_rate = 2e-3
  config.batch_size = 256  # Expected logical batch size B = q * N.
  config.physical_batch_size = 0  # 0: the Poisson bound, one chunk a step.
  config.epochs = 1
  config.eval_batch_size = 64
  config.augment = ml_collections.ConfigDict(
      dict(flip_vertical=0.0, flip_horizontal=0.0, multiplicity=1))
  # Fixed input standardisation per channel, never measured on the private
  # training split. fit_on_data=True (non-private runs only) measures the
  # training split instead.
  config.normalization = ml_collections.ConfigDict(dict(
      mean=(0.0,), std=(1.0,), fit_on_data=False))
  config.dp = ml_collections.ConfigDict(dict(
      epsilon=8.0, delta=8e-7, clip_norm=1.0, engine='ghost_bk',
      # Per-budget clip norms keyed by the budget's text ('8', '1e9'), which
      # python -m dp_medtf.tune_clip can tune; on private data that tuning
      # is not covered by the budget. clip_norm otherwise.
      clip_norms={},
      # True: Poisson batches and noise derive from `seed` (reproducible,
      # NOT private; tests and debugging only).
      insecure_seeded_randomness=False))
  # Fields set by budget (see recipes.apply_budget_rules).
  config.budget_rules = ()
  # Early stopping: non-private runs only (patience 0: off). metric ''
  # watches the validation MCC (classification) or first foreground Dice.
  config.early_stopping = ml_collections.ConfigDict(dict(
      patience=0, min_delta=0.001, metric='', mode='max'))
  # dp_medtf.sweep's defaults: the budgets (inf: the non-private baseline)
  # times the seeds of the authors' README.
  config.sweep = ml_collections.ConfigDict(dict(
      epsilons=(1.0, 8.0, 1e9, float('inf')),
      seeds=(10, 11, 100, 101, 110)))
  config.seed = 0
  config.jit_compile = False  # XLA: needed on TPU, slower on CPU.
  config.checkpoint_every_steps = 0  # 0: at the end of each epoch.
  config.stop_after_steps = 0  # > 0: stop early (a preemptible slot).
  # The imprint attack (python -m dp_medtf.attack). skip_near_empty leaves
  # images with at most 10% non-zero pixels unscored (the paper does so for
  # RadImageNet only); `data` overrides config.data for the attack, which
  # reconstructs and scores images in [0, 1].
  config.attack = ml_collections.ConfigDict(dict(
      skip_near_empty=False, data=ml_collections.ConfigDict()))
  return config


def make_baseline(config: ml_collections.ConfigDict,
                  patience: int) -> ml_collections.ConfigDict:
  """A dataset's DP recipe turned into its non-private baseline.

  Args:
    config: the dataset's recipe (changed in place).
    patience: early stopping's patience in epochs (the baseline trains up to
      config.epochs; early stopping decides).

  Returns:
    `config`, named <dataset>_baseline, at epsilon = inf, without budget
    rules.
  """
  config.recipe = f'{config.dataset}_baseline'
  config.dp.epsilon = float('inf')
  config.budget_rules = ()
  config.early_stopping.patience = patience
  return config
