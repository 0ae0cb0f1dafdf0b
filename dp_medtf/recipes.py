"""Finds and loads the per-dataset recipes (dp_medtf/configs/<dataset>.py).

Example:

  >>> load('demo').dataset
  'demo'
"""

from __future__ import annotations

import importlib.resources
import importlib.util

import ml_collections

DATASETS = ('demo', 'ham10000', 'radimagenet', 'msd_liver')


def path(dataset: str) -> str:
  """The file path of a dataset's recipe.

  Args:
    dataset: one of DATASETS.

  Returns:
    The path of dp_medtf/configs/<dataset>.py as installed.

  Raises:
    ValueError: for an unknown dataset.
  """
  if dataset not in DATASETS:
    raise ValueError(
        f'Unknown dataset {dataset!r}; choose one of {", ".join(DATASETS)}.')
  return str(importlib.resources.files('dp_medtf.configs') / f'{dataset}.py')


def load(dataset: str) -> ml_collections.ConfigDict:
  """Loads a dataset's recipe by calling its get_config()."""
  spec = importlib.util.spec_from_file_location(f'_recipe_{dataset}',
                                                path(dataset))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()
