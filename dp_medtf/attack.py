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
folder, before any image is loaded. The work is done by
dp_medtf.attacks.experiment.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags
import tensorflow as tf

from dp_medtf import cli
from dp_medtf import data
from dp_medtf import recipe_flags
from dp_medtf.attacks import experiment

FLAGS = flags.FLAGS
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
  tf.get_logger().setLevel('ERROR')
  try:
    plan = experiment.prepare(
        config, data_dir, epsilon=FLAGS.epsilon, delta=FLAGS.delta,
        run_dirs=_RUN_DIR.value or [], split=_SPLIT.value,
        num_images=_NUM_IMAGES.value, batch_size=_BATCH_SIZE.value,
        clip_norm=_CLIP_NORM.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  for budget in plan.budgets:
    print(experiment.budget_line(budget, plan))

  bar = tf.keras.utils.Progbar(plan.num_images, unit_name='image')
  try:
    result = experiment.run(plan, num_bins=_NUM_BINS.value,
                            progress=bar.update)
  except experiment.ImageRangeError as e:
    raise cli.Fault(str(e)) from None
  summary = experiment.write_outputs(result, workdir)
  for key, entry in summary.items():
    print(experiment.summary_line(key, entry))
  return 0


def run() -> None:
  """Console entry point."""
  recipe_flags.set_default_config(sys.argv)
  cli.run(main)


if __name__ == '__main__':
  run()
