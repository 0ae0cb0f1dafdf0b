"""Dataset readers. `load_split` is the one entry point the apps use.

Example:

  >>> from dp_medtf import recipes
  >>> split = load_split(recipes.load('demo'), 'test')
  >>> split.images.shape
  (300, 32, 32, 3)
"""

from __future__ import annotations

import ml_collections

from dp_medtf.data import demo
from dp_medtf.data.demo import ArraySplit

SPLITS = ('train', 'validation', 'test')


class DatasetNotAvailableError(NotImplementedError):
  """The dataset has a recipe but no reader in this version."""


def load_split(config: ml_collections.ConfigDict, split: str,
               data_dir: str = '') -> ArraySplit:
  """Loads one split of the dataset named by config.dataset.

  Args:
    config: a recipe (configs/<dataset>.py).
    split: 'train', 'validation' or 'test'.
    data_dir: the folder holding the dataset in its original layout (unused
      for the demo).

  Returns:
    The split as arrays: images float32 [N, ...] and labels.

  Raises:
    ValueError: for an unknown split.
    DatasetNotAvailableError: for a dataset whose reader is not available.
  """
  if split not in SPLITS:
    raise ValueError(f'Unknown split {split!r}; choose one of {SPLITS}.')
  if config.dataset == 'demo':
    return demo.load(config.data.image_size, config.data.data_seed)[split]
  raise DatasetNotAvailableError(
      f'--dataset={config.dataset}: its reader is not available yet; '
      'use --dataset=demo.')
