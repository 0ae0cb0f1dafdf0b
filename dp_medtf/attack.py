"""Measures the imprint attack's reconstruction risk at several DP budgets.

A malicious server prepends an imprint block to the dataset's model, chooses
the batch size (--batch_size, 1 by default) and reconstructs the images of
each batch from its (clipped and noised) gradient. Writes to --workdir:

  errors.csv                 image_id, budget, error, best_candidate
  summary.json               per budget: noise multiplier, q, T, C, batch
                             size, shares of images with error below
                             0.1 / 0.2 / 0.3, ...
  error_cdf.png              cumulative distribution of errors per budget
  best_reconstructions.png   the five best reconstructions per budget

An image's error is the minimum over the candidate reconstructions of its
batch's gradient of 1 - SSIM (scikit-image, Gaussian 11 x 11 window with
sigma 1.5, data range 1 of the images in [0, 1]; 3D volumes slice by slice).
Where the recipe's attack.skip_near_empty is set (RadImageNet, as in the
paper), images with at most 10% non-zero pixels are left unscored and
counted.

The noise of each budget comes from one of two places:

  * --epsilon=LIST: calibrated as a training run of the recipe (with the
    --config.<field> overrides) would be at that budget, for the attack's
    batch size B over the training split's real size N: q = B / N,
    T = (N // B) * epochs, the recipe's clip norm at that budget.
  * --run_dir=DIR[,DIR...]: the finished training run(s) in DIR: each run
    gives one budget, its epsilon, with that run's own z, q, T and C from its
    results.json. The run's N must match the data's. --epsilon, --delta and
    --clip_norm, if given, must agree with the runs.

The app takes the train app's flags (--dataset, --config and its
--config.<field> overrides, --data_dir, --delta, --seed, --workdir), with
--epsilon a comma-separated list of budgets.

Commands:

  python -m dp_medtf.attack --dataset=demo --num_images=100 \\
      --epsilon=1e9,1e12,1e15,1e18,inf --workdir=/tmp/attack
  python -m dp_medtf.attack --dataset=demo --config.epochs=4 \\
      --run_dir=sweeps/demo/demo/eps8_seed10,sweeps/demo/demo/epsinf_seed10 \\
      --workdir=sweeps/demo/demo/attack

The flags are checked, and --workdir must be (or be creatable as) a writable
folder, before any image is loaded.
"""

from __future__ import annotations

import csv
import json
import os
import sys

from absl import app
from absl import flags
import tensorflow as tf

from dp_medtf import cli
from dp_medtf import data
from dp_medtf import epsilons as epsilons_lib
from dp_medtf import json_files
from dp_medtf import models
from dp_medtf import runs as runs_lib
from dp_medtf import recipe_flags
from dp_medtf.attacks import imprint
from dp_medtf.attacks import plots
from dp_medtf.attacks import runner

FLAGS = flags.FLAGS
DEFAULT_EPSILONS = '1e9,1e12,1e15,1e18,inf'
flags.adopt_module_key_flags(recipe_flags)

_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Output folder (required): reconstructions, scores, '
    'summary.json and the figures.')

_NUM_IMAGES = flags.DEFINE_integer(
    'num_images', None, 'Attack the first N images of the split (all if '
    'unset).')
_SPLIT = flags.DEFINE_enum('split', 'train', data.SPLITS,
                           'Split whose images are attacked.')
_CLIP_NORM = flags.DEFINE_float(
    'clip_norm', None, 'Clip norm C for every budget; the recipe\'s '
    'dp.clip_norms / dp.clip_norm if unset.')
_NUM_BINS = flags.DEFINE_integer('num_bins', 10,
                                 'Bins of the imprint block.')
_BATCH_SIZE = flags.DEFINE_integer(
    'batch_size', 1, 'Images per attacked gradient (the server\'s choice); '
    'without --run_dir the noise is calibrated for q = batch_size / N.')
_RUN_DIR = flags.DEFINE_list(
    'run_dir', None, 'Finished train workdirs; each gives one budget, with '
    'its own noise multiplier, q, T and clip norm (see the module doc).')

flags.register_validator('num_images', lambda n: n is None or n >= 1,
                         'must be at least 1.')
flags.register_validator('clip_norm', lambda c: c is None or c > 0,
                         'must be positive.')
flags.register_validator('num_bins', lambda n: n >= 1,
                         'must be at least 1.')
flags.register_validator('batch_size', lambda n: n >= 1,
                         'must be at least 1.')


def read_run(run_dir: str) -> runs_lib.RunResults:
  """The results.json of a train workdir, checked (dp_medtf.runs).

  Args:
    run_dir: the workdir.

  Returns:
    The run's RunResults.

  Raises:
    app.UsageError: naming --run_dir, when results.json is missing,
      unreadable, or lacks or mistypes a field (named).
  """
  try:
    results = runs_lib.read_results(run_dir, missing_ok=True)
  except json_files.JsonFileError as e:
    raise app.UsageError(f'--run_dir={run_dir}: {e}') from None
  if results is None:
    raise app.UsageError(f'--run_dir={run_dir} has no '
                         f'{runs_lib.RESULTS_FILE}; is it a workdir of '
                         'python -m dp_medtf.train?')
  return results


def budgets_from_runs(run_dirs, config, num_train_examples: int):
  """One budget per finished run, checked against the flags and the data.

  Raises:
    app.UsageError: for a run of another dataset or N, a repeated budget, or
      --epsilon, --delta or --clip_norm disagreeing with the runs.
  """
  budgets = []
  for run_dir in run_dirs:
    results = read_run(run_dir)
    try:
      budget = runner.budget_from_run(results, run_dir)
    except ValueError as e:
      raise app.UsageError(f'--run_dir: {e}') from None
    if results.dataset != config.dataset:
      raise app.UsageError(
          f'--run_dir={run_dir} trained on {results.dataset}, not '
          f'--dataset={config.dataset}.')
    if results.num_train_examples != num_train_examples:
      raise app.UsageError(
          f'--run_dir={run_dir} trained on {results.num_train_examples} '
          f'examples, but the training split here has {num_train_examples}; '
          "pass the run's --data_dir and --config overrides.")
    twin = next((b for b in budgets if b.key == budget.key), None)
    if twin:
      raise app.UsageError(f'--run_dir: {twin.run_dir} and {run_dir} both '
                           f'trained at epsilon={budget.key}; give one run '
                           'per budget.')
    budgets.append(budget)
  keys = [b.key for b in budgets]
  if FLAGS.epsilon is not None:
    try:
      wanted = [epsilons_lib.epsilon_text(e)
                for e in epsilons_lib.parse_epsilons(FLAGS.epsilon)]
    except ValueError as e:
      raise app.UsageError(str(e)) from None
    if sorted(wanted) != sorted(keys):
      raise app.UsageError(
          f'--epsilon={FLAGS.epsilon} conflicts with --run_dir, whose runs '
          f'trained at epsilon={",".join(keys)}; leave --epsilon out.')
  if _CLIP_NORM.value is not None:
    raise app.UsageError('--clip_norm conflicts with --run_dir: the runs\' '
                         'clip norms are used.')
  if FLAGS.delta is not None:
    odd = [b for b in budgets if b.delta != FLAGS.delta]
    if odd:
      raise app.UsageError(f'--delta={FLAGS.delta} conflicts with '
                           f'--run_dir={odd[0].run_dir}, which used delta='
                           f'{odd[0].delta:g}; leave --delta out.')
  return budgets


def write_outputs(result, workdir: str) -> dict:
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


def _examples(split, num: int, where: str):
  """(index, image, label) of the first `num` examples, via load_example."""
  ds = tf.data.Dataset.range(num).map(split.load_example)
  for index, (x, y) in enumerate(ds.as_numpy_iterator()):
    low, high = float(x.min()), float(x.max())
    if low < -1e-6 or high > 1 + 1e-6:
      raise cli.Fault(
          f'{where}: example {index} has values in [{low:.3g}, {high:.3g}]; '
          'the attack scores images in [0, 1] (set the recipe\'s '
          'attack.data to read them so).')
    yield index, x, y


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  workdir = _WORKDIR.value
  if not workdir:
    raise app.UsageError('--workdir is required.')
  cli.check_output_dir('workdir', workdir)
  config = recipe_flags.resolve_config(recipe_flags.load_config(),
                                       apply_epsilon=False)
  data_dir = FLAGS.data_dir or ''
  if config.dataset != 'demo' and not data_dir:
    raise app.UsageError(
        f'--data_dir is required for --dataset={config.dataset}.')
  run_dirs = _RUN_DIR.value or []
  epsilons = None
  if not run_dirs:
    text = FLAGS.epsilon if FLAGS.epsilon is not None else DEFAULT_EPSILONS
    try:
      epsilons = epsilons_lib.parse_epsilons(text)
    except ValueError as e:
      raise app.UsageError(str(e)) from None
  settings = config.get('attack', None)
  skip_near_empty = bool(settings and settings.skip_near_empty)
  if settings and settings.get('data', None):
    with config.unlocked():
      config.data.update(settings.data.to_dict())
  tf.get_logger().setLevel('ERROR')

  try:
    train_split = data.load_split(config, 'train', data_dir)
    split = (train_split if _SPLIT.value == 'train' else
             data.load_split(config, _SPLIT.value, data_dir))
  except (data.DatasetNotAvailableError, FileNotFoundError, ValueError) as e:
    message = str(e)
    if '--dataset' not in message:
      message = f'--dataset={config.dataset}: {message}'
    raise app.UsageError(message) from None
  num_train = len(train_split)
  batch_size = _BATCH_SIZE.value
  if batch_size > num_train:
    raise app.UsageError(f'--batch_size={batch_size} is larger than the '
                         f'training split ({num_train} examples).')
  num_images = len(split) if _NUM_IMAGES.value is None else _NUM_IMAGES.value
  if num_images > len(split):
    raise app.UsageError(f'--num_images={num_images} is larger than the '
                         f'{_SPLIT.value} split ({len(split)} examples).')
  if run_dirs:
    budgets = budgets_from_runs(run_dirs, config, num_train)
  else:
    try:
      budgets = runner.budgets_from_config(
          config, epsilons, num_train, batch_size=batch_size,
          clip_norm=_CLIP_NORM.value)
    except ValueError as e:
      raise app.UsageError(f'--epsilon={FLAGS.epsilon}: {e}') from None

  for b in budgets:
    source = f' (from {b.run_dir})' if b.run_dir else ''
    print(f'epsilon={b.key}: noise multiplier {b.noise_multiplier:.4g}, '
          f'clip norm {b.clip_norm}, q={b.sampling_rate:.4g}, T={b.steps}, '
          f'N={num_train}, batch size {batch_size}{source}')

  tf.keras.utils.set_random_seed(int(config.seed))
  shape = tuple(split.load_example(tf.constant(0, tf.int64))[0].shape)
  model = models.build(config.model, shape, config.num_classes)
  attacked = imprint.imprint_model(model, num_bins=_NUM_BINS.value)
  bar = tf.keras.utils.Progbar(num_images, unit_name='image')
  result = runner.attack(
      attacked,
      _examples(split, num_images,
                f'--dataset={config.dataset} ({_SPLIT.value} split)'),
      budgets, batch_size=batch_size, seed=int(config.seed),
      skip_near_empty=skip_near_empty,
      progress=bar.update)
  summary = write_outputs(result, workdir)
  for key, entry in summary.items():
    print(f'epsilon={key}: share below 0.1 = {entry["share_below_0.1"]}, '
          f'median error = {entry["median_error"]}, '
          f'{entry["num_images"]} images, {entry["num_skipped"]} skipped')
  return 0


def run() -> None:
  """Console entry point."""
  recipe_flags.set_default_config(sys.argv)
  cli.run(main)


if __name__ == '__main__':
  run()
