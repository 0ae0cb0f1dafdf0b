"""Finds and loads the per-dataset recipes (dp_medtf/configs/<dataset>.py).

Example:

  >>> load('demo').dataset
  'demo'
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import math

import ml_collections

DATASETS = ('demo', 'ham10000', 'radimagenet', 'msd_liver')


def path(dataset: str, baseline: bool = False) -> str:
  """The file path of a dataset's recipe.

  Args:
    dataset: one of DATASETS.
    baseline: the non-private baseline recipe,
      dp_medtf/configs/<dataset>_baseline.py, instead of the DP one.

  Returns:
    The path of dp_medtf/configs/<dataset>[_baseline].py as installed.

  Raises:
    ValueError: for an unknown dataset, or a baseline it does not have.

  Example:

    >>> path('ham10000', baseline=True).endswith('ham10000_baseline.py')
    True
  """
  if dataset not in DATASETS:
    raise ValueError(
        f'Unknown dataset {dataset!r}; choose one of {", ".join(DATASETS)}.')
  if baseline and not has_baseline(dataset):
    raise ValueError(
        f'--dataset={dataset} has no non-private baseline recipe (those with '
        f'one: {", ".join(d for d in DATASETS if has_baseline(d))}).')
  name = f'{dataset}_baseline' if baseline else dataset
  return str(importlib.resources.files('dp_medtf.configs') / f'{name}.py')


def has_baseline(dataset: str) -> bool:
  """Whether dp_medtf/configs/<dataset>_baseline.py exists."""
  return (importlib.resources.files('dp_medtf.configs') /
          f'{dataset}_baseline.py').is_file()


def load(dataset: str, baseline: bool = False) -> ml_collections.ConfigDict:
  """Loads a dataset's recipe (or its baseline) by calling its get_config()."""
  name = f'{dataset}_baseline' if baseline else dataset
  spec = importlib.util.spec_from_file_location(f'_recipe_{name}',
                                                path(dataset, baseline))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


# Fields whose contents differ per dataset or model (the reader's settings,
# the model's constructor arguments).
_OPEN_FIELDS = ('data', 'model', 'attack.data', 'dp.clip_norms')


def missing_fields(config: ml_collections.ConfigDict) -> list[str]:
  """The fields of configs/base.py that `config` lacks, as dotted names.

  Example:

    >>> config = load('demo')
    >>> del config.dp['engine']
    >>> missing_fields(config)
    ['dp.engine']
  """
  from dp_medtf.configs import base  # pylint: disable=g-import-not-at-top

  def walk(want, have, prefix):
    for key, value in want.items():
      name = prefix + key
      if key not in have:
        yield name
      elif (isinstance(value, ml_collections.ConfigDict) and
            name not in _OPEN_FIELDS and
            isinstance(have[key], ml_collections.ConfigDict)):
        yield from walk(value, have[key], name + '.')

  return list(walk(base.get_config(), config, ''))


def _number(config: ml_collections.ConfigDict, field: str) -> float:
  node = config
  for part in field.split('.'):
    node = node[part]
  try:
    value = float(node)
  except (TypeError, ValueError):
    raise ValueError(f'--config.{field} must be a number, got {node!r}.')
  return value


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks a recipe's numeric fields before any data is read.

  Args:
    config: the recipe, with flags applied.

  Raises:
    ValueError: naming the first bad field (`--config.<field>`).
  """
  missing = missing_fields(config)
  if missing:
    raise ValueError(
        f'The recipe lacks {", ".join("config." + f for f in missing)}: '
        'build recipes on dp_medtf/configs/base.py (base.get_config()), which '
        'gives every field its default.')

  def check(field, ok, what):
    value = _number(config, field)
    if math.isnan(value) or not ok(value):
      raise ValueError(f'--config.{field} must be {what}, got {value:g}.')

  positive = lambda v: 0 < v < math.inf
  integer = lambda v: float(v).is_integer()
  check('learning_rate', positive, 'positive and finite')
  check('batch_size', lambda v: v >= 1 and integer(v), 'a positive integer')
  check('epochs', lambda v: v >= 1 and integer(v), 'a positive integer')
  check('physical_batch_size', lambda v: v >= 0 and integer(v),
        'a non-negative integer (0: automatic)')
  check('eval_batch_size', lambda v: v >= 1 and integer(v),
        'a positive integer')
  check('dp.clip_norm', positive, 'positive and finite')
  for key, value in (config.dp.clip_norms or {}).items():
    norm = float(value)
    if not positive(norm):
      raise ValueError(f'--config.dp.clip_norms[{key}] must be positive and '
                       f'finite, got {norm:g}.')
  weights = [float(w) for w in config.class_weights or ()]
  for i, weight in enumerate(weights):
    if math.isnan(weight) or not 0 <= weight < math.inf:
      raise ValueError(f'--config.class_weights[{i}] must be non-negative '
                       f'and finite, got {weight:g}.')
  if weights and (len(weights) != int(config.num_classes) or
                  sum(weights) <= 0):
    raise ValueError(
        f'--config.class_weights needs one weight per class '
        f'({int(config.num_classes)}), not all zero; got {tuple(weights)}.')
  _validate_early_stopping(config)
  for axis in ('flip_vertical', 'flip_horizontal'):
    check(f'augment.{axis}', lambda v: 0 <= v <= 1, 'a probability in [0, 1]')
  check('augment.multiplicity', lambda v: v >= 1 and integer(v),
        'a positive integer')
  for field in ('checkpoint_every_steps', 'stop_after_steps'):
    check(field, lambda v: v >= 0 and integer(v), 'a non-negative integer')
  norm = config.normalization
  channels = int(config.input_shape[-1])
  for name in ('mean', 'std'):
    values = [float(v) for v in norm[name]]
    if len(values) not in (1, channels):
      raise ValueError(
          f'--config.normalization.{name} needs 1 or {channels} values (one '
          f'per input channel), got {len(values)}.')
    for v in values:
      if not math.isfinite(v) or (name == 'std' and v <= 0):
        raise ValueError(
            f'--config.normalization.{name} must be '
            f'{"positive and " if name == "std" else ""}finite, got '
            f'{values}.')


def _validate_early_stopping(config: ml_collections.ConfigDict) -> None:
  """Checks `early_stopping` (absent or patience 0: off).

  Raises:
    ValueError: naming the field; for early stopping in a private run.
  """
  if not config.early_stopping:
    return
  patience = _number(config, 'early_stopping.patience')
  if not (patience >= 0 and float(patience).is_integer()):
    raise ValueError('--config.early_stopping.patience must be a '
                     f'non-negative integer (0: off), got {patience:g}.')
  if not patience:
    return
  stopping = config.early_stopping
  min_delta = _number(config, 'early_stopping.min_delta')
  if not 0 <= min_delta < math.inf:
    raise ValueError('--config.early_stopping.min_delta must be '
                     f'non-negative and finite, got {min_delta:g}.')
  if stopping.mode not in ('max', 'min'):
    raise ValueError("--config.early_stopping.mode must be 'max' or 'min', "
                     f"got {stopping.mode!r}.")
  if not math.isinf(_number(config, 'dp.epsilon')):
    raise ValueError(
        '--config.early_stopping.patience > 0 needs --epsilon=inf: a private '
        'run fixes its number of steps in advance for the accountant, and '
        'validation metrics of private data are not private either.')


def apply_budget_rules(config: ml_collections.ConfigDict
                       ) -> ml_collections.ConfigDict:
  """The recipe with its budget-dependent fields set for its epsilon.

  A recipe's `budget_rules` is a tuple of dicts `{'above': a, 'up_to': b,
  'set': {field: value}}` (`up_to` defaults to infinity): each rule whose
  a < epsilon <= b sets its dotted fields, e.g. `{'augment.flip_vertical':
  0.5}`. Later rules win. `--config.budget_rules="()"` turns them off.

  Args:
    config: the recipe, with flags applied.

  Returns:
    A copy with the matching rules applied (the input is not changed).

  Raises:
    ValueError: naming the rule, for a field the recipe does not have.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  epsilon = float(config.dp.epsilon)
  for i, rule in enumerate(config.budget_rules or ()):
    rule = dict(rule)
    low, high = float(rule.get('above', -math.inf)), float(
        rule.get('up_to', math.inf))
    if not low < epsilon <= high:
      continue
    for field, value in dict(rule['set']).items():
      node, *path = [config] + field.split('.')
      for part in path[:-1]:
        node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
      if (not isinstance(node, ml_collections.ConfigDict) or
          path[-1] not in node):
        raise ValueError(f'--config.budget_rules[{i}] sets {field!r}, which '
                         'the recipe does not have.')
      node[path[-1]] = value
  return config
