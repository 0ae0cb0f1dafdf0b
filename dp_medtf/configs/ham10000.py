"""DP ResNet-9 on HAM10000, "needs immediate treatment" (akiec, bcc, mel).

The paper's private recipe: ResNet-9, NAdam at 2e-3, unweighted loss, logical
batch 2,048, 100 epochs, no augmentation except at epsilon = 1e9 (vertical
flips, p = 0.5), delta = 8e-7.

Command:

  python -m dp_medtf.train --dataset=ham10000 --data_dir=/data/HAM10000 \
      --epsilon=8
"""

import ml_collections

from dp_medtf.configs import base


def get_config() -> ml_collections.ConfigDict:
  """The HAM10000 recipe."""
  config = base.get_config()
  config.dataset = config.recipe = 'ham10000'
  # Images: short side resized to image_size, then a random (train) or
  # central (eval) square crop, then standardised with the fixed constants of
  # config.normalization.
  # Splits: lesions, stratified by dx, go test_fraction to test, then
  # validation_fraction of the rest to validation, drawn with split_seed.
  # A missing or (when checked) corrupt image fails naming the file, unless
  # skip_bad_files (which implies checking every image up front, as does
  # verify_files); skipped files are counted in the log. Validation and test
  # splits are decoded once into memory when they fit in cache_bytes.
  config.data = ml_collections.ConfigDict(dict(
      image_size=224, split_seed=0, test_fraction=0.1,
      validation_fraction=0.1, skip_bad_files=False, verify_files=False,
      cache_bytes=1 << 30))
  # 10,015 images; 10% of lesions go to test and 10% of the rest to
  # validation, leaving about 81% for training. The run counts them.
  config.num_train_examples = 8_112
  config.input_shape = (224, 224, 3)
  # single_logit: the authors' one-logit head (the log-odds of class 1,
  # sigmoid cross-entropy) instead of two softmax logits.
  config.model.single_logit = False
  config.batch_size = 2048
  config.physical_batch_size = 64
  config.epochs = 100
  # Images in [0, 1], per channel, as published with the authors' code.
  config.normalization.mean = (0.7639, 0.5383, 0.5617)
  config.normalization.std = (0.1374, 0.1584, 0.1766)
  # C: the paper authors' published value at epsilon 8.
  config.dp.clip_norm = 9.0
  # Vertical flips (p 0.5) only at the largest finite budget, as in the
  # paper (its sweep: 1, 8, 20, 1e9).
  config.budget_rules = (
      dict(above=20.0, set={'augment.flip_vertical': 0.5}),
  )
  # The paper's sweep (Table 3); inf is the non-private baseline recipe
  # (ham10000_baseline.py).
  config.sweep.epsilons = (1.0, 8.0, 20.0, 1e9, float('inf'))
  return config
