"""Picks the clip norm as the paper does: one epoch per candidate.

Usage:

  python -m dp_medtf.tune_clip --dataset=ham10000 --data_dir=/data/ham \
      --epsilon=8 --clip_norms=1,3,9 --workdir=/tmp/tune_ham

Takes the train app's flags (--dataset, --config and its overrides,
--epsilon, --delta, --seed, --data_dir, --workdir) and --clip_norms. Prints a
table of the validation metric after one epoch for each candidate and writes
it to <workdir>/tune_clip.json. Tuning on private data is not covered by the
budget: see docs/privacy.md.
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags

from dp_medtf import cli
from dp_medtf import epsilons as epsilons_lib
from dp_medtf import json_files
from dp_medtf import recipe_flags

flags.adopt_module_key_flags(recipe_flags)
_CLIP_NORMS = flags.DEFINE_list(
    'clip_norms', None, 'Candidate clip norms, e.g. 0.5,1,2.')
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Output folder; default '
    'workdir/tune_clip_<dataset>_eps<epsilon>.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not _CLIP_NORMS.value:
    raise app.UsageError('--clip_norms is required, e.g. --clip_norms=1,3,9.')
  try:
    candidates = [float(c) for c in _CLIP_NORMS.value]
  except ValueError:
    raise app.UsageError(f'--clip_norms must be numbers, got '
                         f'{",".join(_CLIP_NORMS.value)}.') from None
  config = recipe_flags.resolve_config(recipe_flags.load_config())
  data_dir = flags.FLAGS.data_dir or ''
  workdir = _WORKDIR.value or os.path.join(
      'workdir', f'tune_clip_{config.dataset}_eps'
      f'{epsilons_lib.epsilon_text(config.dp.epsilon)}')
  cli.check_output_dir('workdir', workdir)

  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from dp_medtf import data  # pylint: disable=g-import-not-at-top
  from dp_medtf import fit  # pylint: disable=g-import-not-at-top
  from dp_medtf import tuning  # pylint: disable=g-import-not-at-top
  tf.get_logger().setLevel('ERROR')
  try:
    rows = tuning.tune_clip_norm(config, candidates, workdir, data_dir)
  except (data.DatasetNotAvailableError, ValueError, FileExistsError,
          fit.BudgetExceededError, fit.NonFiniteError) as e:
    raise app.UsageError(str(e))
  json_files.write_json(os.path.join(workdir, 'tune_clip.json'), rows)
  print(tuning.format_table(rows))
  print('Tuning the clip norm on private data is not covered by the '
        'privacy budget (docs/privacy.md).')


def run() -> None:
  """Console entry point."""
  recipe_flags.set_default_config(sys.argv)
  cli.run(main)


if __name__ == '__main__':
  run()
