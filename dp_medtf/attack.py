"""Measures the imprint attack's reconstruction risk at several DP budgets.

A malicious server prepends an imprint block to the dataset's model, sets the
batch size to 1 and reconstructs each image from its (clipped and noised)
gradient. Writes to --workdir:

  errors.csv                 image_id, budget, error, best_candidate
  summary.json               per budget: noise multiplier, q, T, shares of
                             images with error below 0.1 / 0.2 / 0.3, ...
  error_cdf.png              cumulative distribution of errors per budget
  best_reconstructions.png   the five best reconstructions per budget

An image's error is the minimum over its candidate reconstructions of
1 - SSIM (scikit-image, Gaussian 11 x 11 window with sigma 1.5, data range 1
of the images in [0, 1]; 3D volumes slice by slice). Images with at most 10%
non-zero pixels are skipped and counted. The noise of each budget is
calibrated for the attack's setting: batch size 1 over the training split,
q = 1 / N and T = epochs * N from the recipe.

Command:

  python -m dp_medtf.attack --dataset=demo --num_images=100 \
      --epsilon=1e9,1e12,1e15,1e18,inf --workdir=/tmp/attack

The flags are checked, and --workdir must be (or be creatable as) a writable
folder, before any image is loaded.
"""

from __future__ import annotations

import csv
import json
import math
import os

from absl import app
from absl import flags
import tensorflow as tf

from dp_medtf import cli
from dp_medtf import data
from dp_medtf import models
from dp_medtf import recipes
from dp_medtf.attacks import imprint
from dp_medtf.attacks import plots
from dp_medtf.attacks import runner

_DATASET = flags.DEFINE_enum('dataset', 'demo', recipes.DATASETS,
                             'Dataset recipe (dp_medtf/configs/<dataset>.py).')
_DATA_DIR = flags.DEFINE_string('data_dir', '',
                                'Folder holding the dataset.')
_EPSILON = flags.DEFINE_string(
    'epsilon', '1e9,1e12,1e15,1e18,inf',
    'Comma-separated privacy budgets; inf for non-private training.')
_NUM_IMAGES = flags.DEFINE_integer(
    'num_images', None, 'Attack the first N images of the split (all if '
    'unset).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder.')
_SPLIT = flags.DEFINE_enum('split', 'train', data.SPLITS,
                           'Split whose images are attacked.')
_CLIP_NORM = flags.DEFINE_float(
    'clip_norm', None, 'Clip norm C for every budget; the recipe\'s '
    'dp.clip_norms / dp.clip_norm if unset.')
_NUM_BINS = flags.DEFINE_integer('num_bins', 10,
                                 'Bins of the imprint block.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the model and the noise.')
_DELTA = flags.DEFINE_float('delta', None, 'Target delta of every budget; '
                            'default: the recipe\'s dp.delta.')
flags.mark_flag_as_required('workdir')


def parse_epsilons(text: str) -> list[float]:
  """Parses '1e9,inf' into [1e9, inf].

  Raises:
    ValueError: for an empty list, a non-number, a non-positive or
      repeated budget.
  """
  items = [t.strip() for t in text.split(',') if t.strip()]
  if not items:
    raise ValueError('needs at least one budget')
  values = []
  for item in items:
    try:
      value = float(item)
    except ValueError:
      raise ValueError(f'{item!r} is not a number') from None
    if math.isnan(value) or value <= 0:
      raise ValueError(f'budgets must be positive, got {item}')
    values.append(value)
  keys = [runner.budget_key(v) for v in values]
  if len(set(keys)) != len(keys):
    raise ValueError(f'repeated budget in {text}')
  return values


def _valid_epsilons(text: str) -> bool:
  try:
    parse_epsilons(text)
  except ValueError as e:
    raise flags.ValidationError(f'{e}.') from None
  return True


flags.register_validator('epsilon', _valid_epsilons)
flags.register_validator('num_images', lambda n: n is None or n >= 1,
                         'must be at least 1.')
flags.register_validator('clip_norm', lambda c: c is None or c > 0,
                         'must be positive.')
flags.register_validator('num_bins', lambda n: n >= 1,
                         'must be at least 1.')
flags.register_validator('delta', lambda d: d is None or 0 < d < 1,
                         'must lie in (0, 1).')


def write_outputs(result: runner.AttackResult, workdir: str) -> dict:
  """Writes the CSV, summary.json and both figures; returns the summary."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'errors.csv'), 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['image_id', 'budget', 'error', 'best_candidate'])
    for r in result.records:
      writer.writerow([r.image_id, r.budget, f'{r.error:.6f}', r.candidate])
  summary = result.summary()
  with open(os.path.join(workdir, 'summary.json'), 'w') as f:
    json.dump(summary, f, indent=2)
  plots.plot_error_cdf({b.key: result.errors(b.key) for b in result.budgets},
                       os.path.join(workdir, 'error_cdf.png'))
  plots.plot_best_reconstructions(
      result.best, os.path.join(workdir, 'best_reconstructions.png'))
  return summary


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  data_dir = _DATA_DIR.value
  if _DATASET.value != 'demo' and not data_dir:
    raise app.UsageError(
        f'--data_dir is required for --dataset={_DATASET.value}.')
  cli.check_output_dir('workdir', _WORKDIR.value)
  config = recipes.load(_DATASET.value)
  if _DELTA.value is not None:
    with config.unlocked():
      config.dp.delta = _DELTA.value
  epsilons = parse_epsilons(_EPSILON.value)
  try:
    budgets = runner.budgets_from_config(config, epsilons, _CLIP_NORM.value)
  except ValueError as e:
    raise app.UsageError(f'--epsilon={_EPSILON.value}: {e}') from None
  try:
    split = data.load_split(config, _SPLIT.value, data_dir)
  except (data.DatasetNotAvailableError, FileNotFoundError, ValueError) as e:
    message = str(e)
    if '--dataset' not in message:
      message = f'--dataset={_DATASET.value}: {message}'
    raise app.UsageError(message) from None
  images, labels = split.images, split.labels
  if _NUM_IMAGES.value is not None:
    images, labels = images[:_NUM_IMAGES.value], labels[:_NUM_IMAGES.value]

  for b in budgets:
    print(f'epsilon={b.key}: noise multiplier {b.noise_multiplier:.4g}, '
          f'clip norm {b.clip_norm}, q={b.sampling_rate:.4g}, T={b.steps}')

  tf.keras.utils.set_random_seed(_SEED.value)
  model = models.build(config.model, images.shape[1:], config.num_classes)
  attacked = imprint.imprint_model(model, num_bins=_NUM_BINS.value)
  bar = tf.keras.utils.Progbar(len(images), unit_name='image')
  result = runner.run_attack(attacked, images, labels, budgets,
                             seed=_SEED.value, progress=bar.update)
  summary = write_outputs(result, _WORKDIR.value)
  for key, entry in summary.items():
    print(f'epsilon={key}: share below 0.1 = {entry["share_below_0.1"]}, '
          f'median error = {entry["median_error"]}, '
          f'{entry["num_images"]} images, {entry["num_skipped"]} skipped')
  return 0


if __name__ == '__main__':
  cli.run(main)
