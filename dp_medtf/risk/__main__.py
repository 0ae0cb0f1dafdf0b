r"""Reconstruction-risk bounds of DP-SGD recipes for privacy budgets.

For each budget: the worst-case and the relaxed reconstruction robustness
bound (ReRo), with the noise multiplier calibrated by the training accountant
and kappa = 1/N, by two methods side by side: rero_exact (lattice
composition) and rero_edgeworth (the Edgeworth expansion the paper used).
Prints a table; optionally writes JSON, CSV and a figure.

  python -m dp_medtf.risk --dataset=radimagenet,ham10000,msd_liver \
      --epsilon=1,8,20,32,1e9,1e12 --output=/tmp/risk.json \
      --csv=/tmp/risk.csv --plot=/tmp/risk.png --curve_points=25

  python -m dp_medtf.risk --num_examples=106 --batch_size=1 --epochs=500 \
      --delta=8e-7 --noise_multiplier=0.96
"""

from __future__ import annotations

import json
import os

from absl import app
from absl import flags
import numpy as np

from dp_medtf import cli
from dp_medtf import epsilons as epsilons_lib
from dp_medtf import recipes
from dp_medtf.risk import bounds
from dp_medtf.risk import plot

_DATASET = flags.DEFINE_list(
    'dataset', None, f'Recipes to read N, batch size, epochs and delta from '
    f'(comma-separated; of {", ".join(recipes.DATASETS)}).')
_NUM_EXAMPLES = flags.DEFINE_integer('num_examples', None,
                                     'Training-set size N (without --dataset).')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', None,
                                   'Expected batch size B (without --dataset).')
_EPOCHS = flags.DEFINE_integer('epochs', None,
                               'Number of epochs (without --dataset).')
_DELTA = flags.DEFINE_float('delta', None, 'Target delta (without --dataset).')
_EPSILON = flags.DEFINE_list('epsilon', None,
                             'Privacy budgets, comma-separated (1,8,1e18).')
_NOISE_MULTIPLIER = flags.DEFINE_list(
    'noise_multiplier', None, 'Noise multipliers instead of --epsilon.')
_OUTPUT = flags.DEFINE_string('output', None, 'JSON file to write.')
_CSV = flags.DEFINE_string('csv', None, 'CSV file to write (one line per '
                           'budget; the JSON fields, nested keys joined by '
                           'a dot).')
_PLOT = flags.DEFINE_string('plot', None, 'PNG file to write (like Fig. 2).')
_CURVE_POINTS = flags.DEFINE_integer(
    'curve_points', 0, 'With --plot and --epsilon: also compute this many '
    'log-spaced budgets between the smallest and largest, for a smooth curve.')

_EXPLICIT = ('num_examples', 'batch_size', 'epochs', 'delta')


def _recipes() -> dict[str, dict]:
  """{label: dict(num_examples, batch_size, epochs, delta)} from the flags."""
  given = [name for name in _EXPLICIT if flags.FLAGS[name].present]
  if _DATASET.value:
    if given:
      raise app.UsageError(
          f'Give either --dataset or {", ".join("--" + n for n in _EXPLICIT)}, '
          f'not both (got --{", --".join(given)}).')
    settings = {}
    for dataset in _DATASET.value:
      if dataset not in recipes.DATASETS:
        raise app.UsageError(f'--dataset: unknown dataset {dataset!r}; choose '
                             f'from {", ".join(recipes.DATASETS)}.')
      config = recipes.load(dataset)
      settings[dataset] = dict(
          num_examples=config.num_train_examples,
          batch_size=config.batch_size, epochs=config.epochs,
          delta=config.dp.delta)
    return settings
  missing = [name for name in _EXPLICIT if name not in given]
  if missing:
    raise app.UsageError(
        'Give --dataset, or all of '
        f'{", ".join("--" + n for n in _EXPLICIT)} (missing: '
        f'{", ".join("--" + n for n in missing)}).')
  setting = {name: flags.FLAGS[name].value for name in _EXPLICIT}
  if setting['num_examples'] < 1:
    raise app.UsageError(
        f'--num_examples must be at least 1, got {setting["num_examples"]}.')
  if setting['batch_size'] < 1 or setting['batch_size'] > setting[
      'num_examples']:
    raise app.UsageError(
        f'--batch_size must lie in [1, --num_examples = '
        f'{setting["num_examples"]}], got {setting["batch_size"]}.')
  if setting['epochs'] < 1:
    raise app.UsageError(f'--epochs must be at least 1, got '
                         f'{setting["epochs"]}.')
  if not 0.0 < setting['delta'] < 1.0:
    raise app.UsageError(
        f'--delta must lie in (0, 1), got {setting["delta"]}.')
  return {'explicit': setting}


def _budgets() -> dict[str, list[float]]:
  """{'epsilons': [...]} or {'noise_multipliers': [...]} from the flags."""
  if (_EPSILON.value is None) == (_NOISE_MULTIPLIER.value is None):
    raise app.UsageError(
        'Give exactly one of --epsilon and --noise_multiplier.')
  # Both lists take the same rule: positive finite numbers, none repeated.
  name, values = (('epsilon', _EPSILON.value) if _EPSILON.value is not None
                  else ('noise_multiplier', _NOISE_MULTIPLIER.value))
  try:
    numbers = epsilons_lib.parse_epsilons(','.join(values), f'--{name}',
                                          finite=True)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  return {f'{name}s': numbers}


def _profile(setting: dict, budgets: dict) -> list[dict]:
  """bounds.risk_profile, with its input errors as usage errors."""
  try:
    return bounds.risk_profile(**setting, **budgets)
  except ValueError as error:
    raise app.UsageError(str(error)) from error


def _make_parent(path: str) -> None:
  """Creates the folder of an output file if it is missing."""
  folder = os.path.dirname(path)
  if folder:
    os.makedirs(folder, exist_ok=True)


def main(argv: list[str]) -> None:
  """Checks the flags, prints the table, writes the JSON, CSV and figure."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {" ".join(argv[1:])}.')
  if _CURVE_POINTS.value < 0:
    raise app.UsageError(
        f'--curve_points must be >= 0, got {_CURVE_POINTS.value}.')
  cli.check_output_file('output', _OUTPUT.value)
  cli.check_output_file('csv', _CSV.value)
  cli.check_output_file('plot', _PLOT.value)
  settings = _recipes()
  budgets = _budgets()
  profiles = {label: _profile(setting, budgets)
              for label, setting in settings.items()}
  print(plot.format_table(profiles))
  if _OUTPUT.value:
    rows = [dict(row, dataset=None if label == 'explicit' else label)
            for label, label_rows in profiles.items() for row in label_rows]
    _make_parent(_OUTPUT.value)
    with open(_OUTPUT.value, 'w', encoding='utf-8') as f:
      json.dump(rows, f, indent=2)
  if _CSV.value:
    _make_parent(_CSV.value)
    with open(_CSV.value, 'w', encoding='utf-8', newline='') as f:
      f.write(plot.format_csv(profiles))
  if _PLOT.value:
    curves = profiles
    if _CURVE_POINTS.value and 'epsilons' in budgets:
      epsilons = budgets['epsilons']
      grid = np.geomspace(min(epsilons), max(epsilons), _CURVE_POINTS.value)
      dense = {'epsilons': sorted(set(grid.tolist()) | set(epsilons))}
      curves = {label: _profile(setting, dense)
                for label, setting in settings.items()}
    _make_parent(_PLOT.value)
    plot.plot_profiles(curves, _PLOT.value)


if __name__ == '__main__':
  cli.run(main)
