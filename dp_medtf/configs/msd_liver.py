"""DP 3D U-Net on MSD Task03 Liver (liver and tumour segmentation).

The paper's private recipe: U-Net with 16 base channels, NAdam at 2e-3, batch
1, 500 epochs, no augmentation; unweighted loss for epsilon <= 20, class
weights (background 0.1, liver 0.4, tumour 0.5) above; delta = 8e-7. Volumes
are resampled to 128 x 128 x 50 and CT values clipped to [-150, 200] HU.

Command:

  python -m dp_medtf.train --dataset=msd_liver --data_dir=/data/Task03_Liver \
      --epsilon=8
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """The MSD Liver recipe."""
  config = ml_collections.ConfigDict()
  config.dataset = 'msd_liver'
  # volume_shape is (D, H, W). slice_mode serves axial slices [H, W, 1]
  # instead of volumes (then set input_shape to (H, W, 1)). Preprocessed
  # volumes stay in memory up to cache_bytes. skip_bad_files and
  # verify_files as in the HAM10000 recipe (checking loads every volume).
  config.data = ml_collections.ConfigDict(dict(
      volume_shape=(50, 128, 128), hu_range=(-150.0, 200.0), split_seed=0,
      test_fraction=0.1, validation_fraction=0.1, slice_mode=False,
      cache_bytes=2 << 30, skip_bad_files=False, verify_files=False))
  # 131 training volumes: 10% test, then 10% of the rest validation -> 106.
  config.num_train_examples = 106
  config.input_shape = (50, 128, 128, 1)
  config.num_classes = 3
  config.task = 'segmentation'
  config.class_names = ('background', 'liver', 'tumour')
  # Loss weights per class; empty: unweighted (the paper's choice for
  # epsilon <= 20; budget_rules below weights them above).
  config.class_weights = ()
  # centre_weights: weight-centred convolutions, as the paper's authors.
  config.model = ml_collections.ConfigDict(dict(
      name='unet3d', width=16, centre_weights=True))
  config.optimizer = 'nadam'
  config.learning_rate = 2e-3
  config.batch_size = 1
  config.physical_batch_size = 4
  config.epochs = 500
  config.eval_batch_size = 1
  config.augment = ml_collections.ConfigDict(
      dict(flip_vertical=0.0, flip_horizontal=0.0, multiplicity=1))
  # Fixed standardisation, as published with the authors' code: HU clipped
  # to hu_range, then (HU + 81.91) / 8.736. The reader maps the window to
  # [0, 1], so in its units mean = (-81.91 + 150) / 350, std = 8.736 / 350.
  # Never measured on the private training split.
  # fit_on_data=True (non-private runs only) measures it instead.
  config.normalization = ml_collections.ConfigDict(dict(
      mean=(0.19454,), std=(0.02496,), fit_on_data=False))
  config.dp = ml_collections.ConfigDict(dict(
      epsilon=8.0, delta=8e-7, clip_norm=0.046, engine='ghost_bk',
      # C: the paper authors' published value at epsilon 8. Per-budget
      # values (keyed by str(epsilon)) may be tuned with
      # python -m dp_medtf.tune_clip; on private data that tuning is not
      # covered by the budget.
      clip_norms={},
      # True: Poisson batches and noise derive from `seed` (reproducible,
      # NOT private; tests and debugging only).
      insecure_seeded_randomness=False))
  # Class weights (background 0.1, liver 0.4, tumour 0.5) above epsilon 20,
  # as in the paper.
  config.budget_rules = (
      dict(above=20.0, set={'class_weights': (0.1, 0.4, 0.5)}),
  )
  # Early stopping: non-private runs only (patience 0: off). metric ''
  # watches the validation MCC (classification) or first foreground Dice.
  config.early_stopping = ml_collections.ConfigDict(dict(
      patience=0, min_delta=0.001, metric='', mode='max'))
  # The paper's sweep (Table 3; launch/sweep.py's defaults): these budgets,
  # inf being the non-private baseline recipe (msd_liver_baseline.py), times
  # the seeds of the authors' README.
  config.sweep = ml_collections.ConfigDict(dict(
      epsilons=(1.0, 8.0, 20.0, 1e9, float('inf')),
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
