"""Trains a model with (or without) differential privacy.

Usage:

  python -m dp_medtf.train                                # demo, epsilon 8
  python -m dp_medtf.train --dataset=demo --epsilon=inf   # non-private
  python -m dp_medtf.train --dataset=radimagenet --data_dir=/data/rin \\
      --epsilon=32 --workdir=/tmp/rin_eps32
  python -m dp_medtf.train --config=dp_medtf/configs/demo.py --config.epochs=3
  python -m dp_medtf.train --dataset=ham10000 --data_dir=/data/ham \\
      --baseline          # the paper's non-private baseline recipe

--config defaults to dp_medtf/configs/<dataset>.py; any field can be overridden with
--config.<field>=<value>. --epsilon, --delta and --seed override the recipe.
"""

from __future__ import annotations

import math
import os
import sys

from absl import app
from absl import flags
from absl import logging

from dp_medtf import cli
from dp_medtf import recipe_flags
from dp_medtf import runs as runs_lib

FLAGS = flags.FLAGS
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder; default '
                               'workdir/<dataset>_eps<epsilon>_seed<seed>.')
_RESUME = flags.DEFINE_bool('resume', False, 'Continue the run in --workdir '
                            'from its last checkpoint.')
_EAGER = flags.DEFINE_bool('eager', False, 'Run the train step eagerly '
                           '(debugging).')
_STRATEGY = flags.DEFINE_enum(
    'strategy', 'default', ('default', 'mirrored', 'multiworker', 'tpu'),
    'tf.distribute strategy; DP noise is added once per logical batch in '
    'total, whatever the number of replicas.')
_TPU = flags.DEFINE_string('tpu', 'local', 'TPU name or address for '
                           '--strategy=tpu.')
flags.adopt_module_key_flags(recipe_flags)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.baseline and FLAGS['config'].present:
    raise app.UsageError('--baseline picks the recipe; give either --baseline '
                         'or --config.')
  config = recipe_flags.resolve_config(recipe_flags.load_config())
  if FLAGS.baseline and not math.isinf(config.dp.epsilon):
    raise app.UsageError('--baseline trains without privacy; --epsilon must '
                         f'be inf or left out, got {FLAGS.epsilon}.')
  data_dir = FLAGS.data_dir or ''
  if config.dataset != 'demo':
    if not data_dir:
      raise app.UsageError(f'--data_dir is required for --dataset='
                           f'{config.dataset}.')
    if not os.path.isdir(data_dir) and '://' not in data_dir:
      raise app.UsageError(f'--data_dir={data_dir} is not a folder.')
  workdir = _WORKDIR.value
  if not workdir:
    try:
      name = runs_lib.run_name(config.dp.epsilon, config.seed)
      workdir = os.path.join('workdir', f'{config.dataset}_{name}')
    except ValueError as e:  # A budget or seed no run could have.
      raise app.UsageError(f'--config.dp.epsilon={config.dp.epsilon}, '
                           f'--config.seed={config.seed}: {e}') from None
  cli.check_output_dir('workdir', workdir)

  # Imported here so that --help and flag errors answer without loading TF.
  import tensorflow as tf
  from dp_medtf import data
  from dp_medtf import distribute
  from dp_medtf import fit
  tf.get_logger().setLevel('ERROR')  # pfor's per-op fallback notes.
  tf.config.run_functions_eagerly(_EAGER.value)
  try:
    strategy = distribute.make_strategy(_STRATEGY.value, _TPU.value)
    results = fit.train_and_evaluate(config, workdir, data_dir,
                                     resume=_RESUME.value, strategy=strategy)
  except (data.DatasetNotAvailableError, ValueError, FileExistsError,
          fit.BudgetExceededError, fit.NonFiniteError,
          fit.CheckpointError) as e:
    raise app.UsageError(str(e))
  logging.info('Results in %s', workdir)
  print(f"{results['status']}: test metrics {results['metrics']}, epsilon "
        f"spent {results['epsilon_spent']} ({results['wall_seconds']:.0f} s) "
        f'-> {runs_lib.RunLayout(workdir).results}')


def run() -> None:
  """Console entry point."""
  recipe_flags.set_default_config(sys.argv)
  cli.run(main)


if __name__ == '__main__':
  run()
