"""The attack on a recipe's data, at several budgets, into a folder.

The library of `python -m dp_medtf.attack`. `prepare` reads the recipe's data
(with its attack settings) and the budgets, calibrated for the attack or
taken from finished training runs, and checks them against each other;
`run` builds the recipe's model, imprints it and attacks the first images of
the split (runner.attack); `write_outputs` writes the folder:

  errors.csv                 image_id, budget, error, best_candidate
  summary.json               AttackResult.summary(), by budget
  error_cdf.png              cumulative distribution of errors per budget
  best_reconstructions.png   the five best reconstructions per budget

What was asked wrongly raises ValueError naming the app's flag; an image
outside [0, 1] raises ImageRangeError while it is attacked.

Example:

  >>> from dp_medtf import recipes
  >>> config = recipes.load('demo')
  >>> plan = prepare(config, '', epsilon='1e12,inf', num_images=2)
  >>> [b.key for b in plan.budgets], plan.num_train_examples
  (['1e12', 'inf'], 2400)
  >>> prepare(config, '', epsilon='1e12', batch_size=5000)
  Traceback (most recent call last):
  ...
  ValueError: --batch_size=5000 is larger than the training split ...
"""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Any, Callable, Iterator, Sequence

import ml_collections
import numpy as np
import tensorflow as tf

from dp_medtf import data
from dp_medtf import epsilons as epsilons_lib
from dp_medtf import json_files
from dp_medtf import models
from dp_medtf import runs as runs_lib
from dp_medtf.attacks import imprint
from dp_medtf.attacks import plots
from dp_medtf.attacks import runner

DEFAULT_EPSILONS = '1e9,1e12,1e15,1e18,inf'
ERRORS_FILE = 'errors.csv'
SUMMARY_FILE = 'summary.json'
ERROR_CDF_FILE = 'error_cdf.png'
BEST_RECONSTRUCTIONS_FILE = 'best_reconstructions.png'


class ImageRangeError(ValueError):
  """An attacked image has values outside [0, 1]; names the example."""


@dataclasses.dataclass(frozen=True)
class Plan:
  """An attack, checked and ready to run.

  Attributes:
    config: the recipe, with its attack.data settings applied.
    split: the attacked split.
    split_name: its name ('train', 'validation' or 'test').
    num_train_examples: N, the size of the training split in the data.
    num_images: how many of the split's first images are attacked.
    batch_size: images per attacked gradient.
    budgets: the budgets, in order.
    skip_near_empty: whether near-empty images are left unscored.
  """
  config: ml_collections.ConfigDict
  split: Any
  split_name: str
  num_train_examples: int
  num_images: int
  batch_size: int
  budgets: list[runner.Budget]
  skip_near_empty: bool


def read_run(run_dir: str) -> runs_lib.RunResults:
  """The results.json of a train workdir, checked (runs.read_results).

  Args:
    run_dir: the workdir.

  Returns:
    The run's RunResults.

  Raises:
    ValueError: naming --run_dir, when results.json is missing,
      unreadable, or lacks or mistypes a field (named).
  """
  try:
    results = runs_lib.read_results(run_dir, missing_ok=True)
  except json_files.JsonFileError as e:
    raise ValueError(f'--run_dir={run_dir}: {e}') from None
  if results is None:
    raise ValueError(f'--run_dir={run_dir} has no {runs_lib.RESULTS_FILE}; '
                     'is it a workdir of python -m dp_medtf.train?')
  return results


def budgets_from_runs(run_dirs: Sequence[str],
                      config: ml_collections.ConfigDict,
                      num_train_examples: int, *, epsilon: str | None = None,
                      delta: float | None = None,
                      clip_norm: float | None = None) -> list[runner.Budget]:
  """One budget per finished run, checked against the flags and the data.

  Args:
    run_dirs: the train workdirs.
    config: the recipe the attack reads its data with.
    num_train_examples: N, the size of the training split in the data.
    epsilon: --epsilon as given (a comma-separated list), or None.
    delta: --delta, or None.
    clip_norm: --clip_norm, or None.

  Returns:
    The runs' budgets, in order.

  Raises:
    ValueError: naming the flag, for a run of another dataset or N, a
      repeated budget, or --epsilon, --delta or --clip_norm disagreeing with
      the runs.
  """
  budgets = []
  for run_dir in run_dirs:
    results = read_run(run_dir)
    try:
      budget = runner.budget_from_run(results, run_dir)
    except ValueError as e:
      raise ValueError(f'--run_dir: {e}') from None
    if results.dataset != config.dataset:
      raise ValueError(
          f'--run_dir={run_dir} trained on {results.dataset}, not '
          f'--dataset={config.dataset}.')
    if results.num_train_examples != num_train_examples:
      raise ValueError(
          f'--run_dir={run_dir} trained on {results.num_train_examples} '
          f'examples, but the training split here has {num_train_examples}; '
          "pass the run's --data_dir and --config overrides.")
    twin = next((b for b in budgets if b.key == budget.key), None)
    if twin:
      raise ValueError(f'--run_dir: {twin.run_dir} and {run_dir} both '
                       f'trained at epsilon={budget.key}; give one run per '
                       'budget.')
    budgets.append(budget)
  keys = [b.key for b in budgets]
  if epsilon is not None:
    wanted = [epsilons_lib.epsilon_text(e)
              for e in epsilons_lib.parse_epsilons(epsilon)]
    if sorted(wanted) != sorted(keys):
      raise ValueError(
          f'--epsilon={epsilon} conflicts with --run_dir, whose runs '
          f'trained at epsilon={",".join(keys)}; leave --epsilon out.')
  if clip_norm is not None:
    raise ValueError('--clip_norm conflicts with --run_dir: the runs\' clip '
                     'norms are used.')
  if delta is not None:
    odd = [b for b in budgets if b.delta != delta]
    if odd:
      raise ValueError(f'--delta={delta} conflicts with '
                       f'--run_dir={odd[0].run_dir}, which used delta='
                       f'{odd[0].delta:g}; leave --delta out.')
  return budgets


def load_splits(config: ml_collections.ConfigDict, split: str,
                data_dir: str) -> tuple[Any, Any]:
  """The training split (for N) and the attacked split.

  Args:
    config: the recipe.
    split: the attacked split's name.
    data_dir: the dataset's folder ('' for the demo).

  Returns:
    (training split, attacked split); the same object for 'train'.

  Raises:
    ValueError: naming --dataset, when the data cannot be read.
  """
  try:
    train_split = data.load_split(config, 'train', data_dir)
    attacked = (train_split if split == 'train' else
                data.load_split(config, split, data_dir))
  except (data.DatasetNotAvailableError, FileNotFoundError, ValueError) as e:
    message = str(e)
    if '--dataset' not in message:
      message = f'--dataset={config.dataset}: {message}'
    raise ValueError(message) from None
  return train_split, attacked


def prepare(config: ml_collections.ConfigDict, data_dir: str, *,
            epsilon: str | None = None, delta: float | None = None,
            run_dirs: Sequence[str] = (), split: str = 'train',
            num_images: int | None = None, batch_size: int = 1,
            clip_norm: float | None = None) -> Plan:
  """Reads the data and the budgets of an attack, and checks them.

  Args:
    config: the recipe, with its overrides (attack.data is applied to it).
    data_dir: the dataset's folder ('' for the demo).
    epsilon: --epsilon, a comma-separated list of budgets; None:
      DEFAULT_EPSILONS, or the runs' budgets with `run_dirs`.
    delta: --delta; with `run_dirs`, it must be the runs'.
    run_dirs: finished train workdirs, one budget each; empty: the budgets
      are calibrated for the attack (runner.budgets_from_config).
    split: the attacked split's name.
    num_images: how many of its first images to attack; None: all.
    batch_size: images per attacked gradient.
    clip_norm: C for every calibrated budget; None: the recipe's.

  Returns:
    The Plan.

  Raises:
    ValueError: naming the flag, for budgets that cannot be read or
      calibrated, data that cannot be read, or a batch or a number of images
      larger than the data.
  """
  epsilons = None
  if not run_dirs:
    epsilons = epsilons_lib.parse_epsilons(
        epsilon if epsilon is not None else DEFAULT_EPSILONS)
  settings = config.attack
  skip_near_empty = bool(settings.skip_near_empty)
  if settings.data:
    with config.unlocked():
      config.data.update(settings.data.to_dict())
  train_split, attacked = load_splits(config, split, data_dir)
  num_train = len(train_split)
  if batch_size > num_train:
    raise ValueError(f'--batch_size={batch_size} is larger than the '
                     f'training split ({num_train} examples).')
  if num_images is None:
    num_images = len(attacked)
  if num_images > len(attacked):
    raise ValueError(f'--num_images={num_images} is larger than the '
                     f'{split} split ({len(attacked)} examples).')
  if run_dirs:
    budgets = budgets_from_runs(run_dirs, config, num_train, epsilon=epsilon,
                                delta=delta, clip_norm=clip_norm)
  else:
    try:
      budgets = runner.budgets_from_config(
          config, epsilons, num_train, batch_size=batch_size,
          clip_norm=clip_norm)
    except ValueError as e:
      raise ValueError(f'--epsilon={epsilon}: {e}') from None
  return Plan(config, attacked, split, num_train, num_images, batch_size,
              budgets, skip_near_empty)


def budget_line(budget: runner.Budget, plan: Plan) -> str:
  """One line on a budget's noise, for the console.

  Args:
    budget: one of plan.budgets.
    plan: the attack's Plan.

  Returns:
    e.g. 'epsilon=8: noise multiplier 0.93, clip norm 1.0, q=0.1067, T=9,
    N=2400, batch size 1 (from runs/eps8_seed10)'.
  """
  source = f' (from {budget.run_dir})' if budget.run_dir else ''
  return (f'epsilon={budget.key}: noise multiplier '
          f'{budget.noise_multiplier:.4g}, clip norm {budget.clip_norm}, '
          f'q={budget.sampling_rate:.4g}, T={budget.steps}, '
          f'N={plan.num_train_examples}, batch size {plan.batch_size}'
          f'{source}')


def examples(split, num: int, where: str
             ) -> Iterator[tuple[int, np.ndarray, Any]]:
  """(index, image, label) of the first `num` examples, via load_example.

  Args:
    split: the split.
    num: how many examples.
    where: the split, as errors name it.

  Yields:
    (index, image, label), the image in [0, 1].

  Raises:
    ImageRangeError: naming `where` and the example, for an image outside
      [0, 1].
  """
  ds = tf.data.Dataset.range(num).map(split.load_example)
  for index, (x, y) in enumerate(ds.as_numpy_iterator()):
    low, high = float(x.min()), float(x.max())
    if low < -1e-6 or high > 1 + 1e-6:
      raise ImageRangeError(
          f'{where}: example {index} has values in [{low:.3g}, {high:.3g}]; '
          'the attack scores images in [0, 1] (set the recipe\'s '
          'attack.data to read them so).')
    yield index, x, y


def run(plan: Plan, *, num_bins: int = 10,
        progress: Callable[[int], None] | None = None
        ) -> runner.AttackResult:
  """Attacks the planned images with the recipe's model, imprinted.

  Args:
    plan: the Plan.
    num_bins: bins of the imprint block.
    progress: called with the number of images done after each batch.

  Returns:
    The AttackResult.

  Raises:
    ImageRangeError: for an image outside [0, 1].
  """
  config = plan.config
  seed = int(config.seed)
  tf.keras.utils.set_random_seed(seed)
  shape = tuple(plan.split.load_example(tf.constant(0, tf.int64))[0].shape)
  model = models.build(config.model, shape, config.num_classes)
  attacked = imprint.imprint_model(model, num_bins=num_bins)
  where = f'--dataset={config.dataset} ({plan.split_name} split)'
  return runner.attack(
      attacked, examples(plan.split, plan.num_images, where),
      plan.budgets, batch_size=plan.batch_size, seed=seed,
      skip_near_empty=plan.skip_near_empty, progress=progress)


def write_outputs(result: runner.AttackResult,
                  workdir: str) -> dict[str, dict[str, Any]]:
  """Writes the CSV, summary.json and both figures.

  Args:
    result: the attack's result.
    workdir: the output folder (created if missing).

  Returns:
    The summary (AttackResult.summary()), as written to summary.json.
  """
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, ERRORS_FILE), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['image_id', 'budget', 'error', 'best_candidate'])
    for r in result.records:
      writer.writerow([r.image_id, r.budget, f'{r.error:.6f}', r.candidate])
  summary = result.summary()
  json_files.write_json(os.path.join(workdir, SUMMARY_FILE), summary)
  plots.plot_error_cdf({b.key: result.errors(b.key) for b in result.budgets},
                       os.path.join(workdir, ERROR_CDF_FILE))
  plots.plot_best_reconstructions(
      result.best, os.path.join(workdir, BEST_RECONSTRUCTIONS_FILE))
  return summary


def summary_line(key: str, entry: dict[str, Any]) -> str:
  """One line on a budget's outcome, for the console.

  Args:
    key: the budget's key.
    entry: its entry of the summary.

  Returns:
    e.g. 'epsilon=inf: share below 0.1 = 1.0, median error = 0.0, 3 images,
    0 skipped'.
  """
  return (f'epsilon={key}: share below 0.1 = {entry["share_below_0.1"]}, '
          f'median error = {entry["median_error"]}, '
          f'{entry["num_images"]} images, {entry["num_skipped"]} skipped')
