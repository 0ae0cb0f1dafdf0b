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

from dp_medtf.configs import base


def get_config() -> ml_collections.ConfigDict:
  """The MSD Liver recipe."""
  config = base.get_config()
  config.dataset = config.recipe = 'msd_liver'
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
  config.model = ml_collections.ConfigDict(dict(
      name='unet3d', width=16, centre_weights=True))
  config.batch_size = 1
  config.physical_batch_size = 4
  config.epochs = 500
  config.eval_batch_size = 1
  # As published with the authors' code: HU clipped to hu_range, then
  # (HU + 81.91) / 8.736. The reader maps the window to [0, 1], so in its
  # units mean = (-81.91 + 150) / 350, std = 8.736 / 350.
  config.normalization.mean = (0.19454,)
  config.normalization.std = (0.02496,)
  config.dp.clip_norm = 0.046  # The paper authors' published value.
  # Unweighted loss up to epsilon 20, class weights (background 0.1, liver
  # 0.4, tumour 0.5) above it, as in the paper.
  config.budget_rules = (
      dict(above=20.0, set={'class_weights': (0.1, 0.4, 0.5)}),
  )
  # The paper's sweep (Table 3); inf is the non-private baseline recipe
  # (msd_liver_baseline.py).
  config.sweep.epsilons = (1.0, 8.0, 20.0, 1e9, float('inf'))
  return config
