"""The flags that pick and adjust a recipe, shared by every app.

--dataset (and --baseline) choose the default recipe,
dp_medtf/configs/<dataset>[_baseline].py; --config names another file;
--config.<field>=<value> overrides a field; --epsilon, --delta and --seed
override the recipe's; --data_dir is the dataset's folder. The apps
(train, attack, tune_clip, data.prepare, data.throughput) define these by
importing this module and add their own flags.

Example:

  >>> FLAGS['dataset'].default, FLAGS['epsilon'].default
  ('demo', None)
"""

from __future__ import annotations

import os

from absl import app
from absl import flags
from ml_collections import config_flags

from dp_medtf import cli
from dp_medtf import epsilons as epsilons_lib
from dp_medtf import recipes

FLAGS = flags.FLAGS
_DATASET = flags.DEFINE_enum('dataset', 'demo', recipes.DATASETS,
                             'Which dataset (and default recipe) to use.')
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'A get_config() recipe file; defaults to the dataset\'s.',
    lock_config=True)
_EPSILON = flags.DEFINE_string(
    'epsilon', None, 'Target epsilon (a positive number, or inf for '
    'non-private training); default: the recipe\'s.')
_DELTA = flags.DEFINE_float('delta', None,
                            'Target delta; default: the recipe\'s (8e-7).')
_SEED = flags.DEFINE_integer('seed', None, 'Training seed; default: the '
                             'recipe\'s.')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'The dataset folder in its '
                                'original layout (not needed for the demo).')
_BASELINE = flags.DEFINE_bool(
    'baseline', False, 'Train the dataset\'s non-private baseline recipe '
    '(dp_medtf/configs/<dataset>_baseline.py: the paper\'s non-private '
    'model, with early stopping) instead of its DP recipe; --epsilon must be '
    'inf or left out.')


def _recipe_choice(argv: list[str]) -> tuple[str, bool] | None:
  """(--dataset, --baseline) as absl parses them, before the other flags.

  config_flags loads --config's default recipe when it is set, before the
  command line is parsed; this reads the flags that choose it from argv
  (flagfiles included) with absl's own parser. None when --config is given
  or a value is invalid (the full parse then reports it).
  """
  early = flags.FlagValues()
  flags.DEFINE_enum('dataset', _DATASET.default, recipes.DATASETS, '',
                    flag_values=early)
  flags.DEFINE_bool('baseline', False, '', flag_values=early)
  flags.DEFINE_string('config', None, '', flag_values=early)
  try:
    early(list(argv), known_only=True)
  except flags.Error:
    return None
  if early['config'].present:
    return None
  return early.dataset, early.baseline


def set_default_config(argv: list[str]) -> None:
  """Points --config at the dataset's recipe unless it was given.

  The recipe is dp_medtf/configs/<dataset>.py, or <dataset>_baseline.py with
  --baseline. Exits with a one-line usage error when a --config.<field>
  override names a field the recipe lacks (absl reads the file while setting
  the default), or when the dataset has no baseline recipe.
  """
  choice = _recipe_choice(argv)
  if choice is not None:
    dataset, baseline = choice
    try:
      FLAGS.set_default('config', recipes.path(dataset, baseline=baseline))
    except ValueError as e:  # No baseline recipe.
      cli.error(f'--baseline: {e}', cli.USAGE_EXIT)
    except (AttributeError, KeyError) as e:  # A --config.<field> override.
      cli.error(cli.unknown_field_message(e, argv), cli.USAGE_EXIT)


def resolve_config(config, apply_epsilon: bool = True):
  """Applies the top-level flags to the recipe and checks them.

  Args:
    config: the --config recipe.
    apply_epsilon: set dp.epsilon from --epsilon; False for apps whose
      --epsilon is not one budget (the attack takes a list).
  """
  # Without --config the recipe was chosen from argv before parsing; the
  # parsed --dataset must agree (it is the dataset the run names).
  if config.dataset != _DATASET.value and (FLAGS['dataset'].present or
                                           not FLAGS['config'].present):
    raise app.UsageError(
        f'--dataset={_DATASET.value} disagrees with the recipe\'s dataset '
        f'{config.dataset!r}.')
  with config.unlocked():
    if apply_epsilon and _EPSILON.value is not None:
      try:
        config.dp.epsilon = epsilons_lib.parse_epsilon(_EPSILON.value)
      except ValueError as e:
        raise app.UsageError(str(e)) from None
    if _DELTA.value is not None:
      if not 0 < _DELTA.value < 1:
        raise app.UsageError(f'--delta must lie in (0, 1), got {_DELTA.value}.')
      config.dp.delta = _DELTA.value
    if _SEED.value is not None:
      config.seed = _SEED.value
  return config


def load_config():
  """The --config recipe; an unreadable or incomplete file is a usage error."""
  config = _CONFIG.value
  path = FLAGS['config'].config_filename
  try:
    config.dataset  # pylint: disable=pointless-statement
  except OSError as e:
    reason = ('no such file' if not os.path.isfile(path) else
              cli.last_line(str(e.__cause__ or e)))
    raise app.UsageError(f'--config={path}: {reason}.') from None
  missing = recipes.missing_fields(config)
  if missing:
    raise app.UsageError(
        f'--config={path} lacks {", ".join("config." + f for f in missing)}: '
        'build recipes on dp_medtf/configs/base.py (base.get_config()).')
  return config


