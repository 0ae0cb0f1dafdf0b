"""Dataset readers. `load_split` is the one entry point the apps use.

Each dataset is one module here, named like the recipe's `dataset` field,
that defines `load_split(config, split, data_dir) -> Split`. A Split is
anything with

  * `len(split)`: the number of examples,
  * `split.load_example(index)`: (x, y) tensors of one example, traceable by
    tf.data (x: float [*spatial, C]; y: an int label or an int label map),
  * `split.labels`: int labels [N] for classification (used for metrics),

so that pipeline.py serves arrays in memory and files read on demand alike.

Example:

  >>> from dp_medtf import recipes
  >>> split = load_split(recipes.load('demo'), 'test')
  >>> len(split)
  300
"""

from __future__ import annotations

import importlib

import ml_collections

from dp_medtf.data.demo import ArraySplit  # pylint: disable=unused-import

SPLITS = ('train', 'validation', 'test')


class DatasetNotAvailableError(NotImplementedError):
  """The dataset has a recipe but no reader in this version."""


def load_split(config: ml_collections.ConfigDict, split: str,
               data_dir: str = ''):
  """Loads one split of the dataset named by config.dataset.

  Args:
    config: a recipe (dp_medtf/configs/<dataset>.py).
    split: 'train', 'validation' or 'test'.
    data_dir: the folder holding the dataset in its original layout (unused
      for the demo).

  Returns:
    The split (see the module docstring).

  Raises:
    ValueError: for an unknown split.
    DatasetNotAvailableError: for a dataset whose reader is not available.
  """
  if split not in SPLITS:
    raise ValueError(f'Unknown split {split!r}; choose one of {SPLITS}.')
  try:
    reader = importlib.import_module(f'{__name__}.{config.dataset}')
  except ModuleNotFoundError:
    reader = None
  if reader is None or not hasattr(reader, 'load_split'):
    raise DatasetNotAvailableError(
        f'--dataset={config.dataset}: its reader is not available yet; '
        'use --dataset=demo.')
  return reader.load_split(config, split, data_dir)
