"""Dataset readers. `load_split` is the one entry point the apps use.

Each dataset is one module here, named like the recipe's `dataset` field,
that defines `load_split(config, split, data_dir) -> Split`. `Split`
(dp_medtf/data/split.py) is the one interface of a split: `len(split)`,
`split.load_example(index) -> (x, y)` traceable by tf.data, and
`split.labels`; pipeline.py and the attack app use nothing else, so that
arrays in memory (`ArraySplit`) and files read on demand serve alike.

Example:

  >>> from dp_medtf import recipes
  >>> split = load_split(recipes.load('demo'), 'test')
  >>> len(split)
  300
"""

from __future__ import annotations

import importlib

import ml_collections

from dp_medtf.data.split import ArraySplit  # pylint: disable=unused-import
from dp_medtf.data.split import Split

SPLITS = ('train', 'validation', 'test')


class DatasetNotAvailableError(NotImplementedError):
  """The dataset has a recipe but no reader in this version."""


def load_split(config: ml_collections.ConfigDict, split: str,
               data_dir: str = '') -> Split:
  """Loads one split of the dataset named by config.dataset.

  Args:
    config: a recipe (dp_medtf/configs/<dataset>.py).
    split: 'train', 'validation' or 'test'.
    data_dir: the folder holding the dataset in its original layout (unused
      for the demo), or a folder made by `python -m dp_medtf.data.prepare`
      (recognised by its metadata file; read by dp_medtf.data.records).

  Returns:
    The split, a `Split`.

  Raises:
    ValueError: for an unknown split.
    DatasetNotAvailableError: for a dataset whose reader is not available.
  """
  if split not in SPLITS:
    raise ValueError(f'Unknown split {split!r}; choose one of {SPLITS}.')
  from dp_medtf.data import records  # pylint: disable=g-import-not-at-top
  if records.is_prepared(data_dir):
    return records.load_split(config, split, data_dir)
  try:
    reader = importlib.import_module(f'{__name__}.{config.dataset}')
  except ModuleNotFoundError:
    reader = None
  if reader is None or not hasattr(reader, 'load_split'):
    raise DatasetNotAvailableError(
        f'--dataset={config.dataset}: its reader is not available yet; '
        'use --dataset=demo.')
  return reader.load_split(config, split, data_dir)
