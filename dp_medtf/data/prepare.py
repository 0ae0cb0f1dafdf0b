"""Converts a dataset once into ArrayRecord shards, read by index in training.

Usage:

  python -m dp_medtf.data.prepare --dataset=radimagenet \\
      --data_dir=/data/radimagenet --output_dir=/data/radimagenet_prepared
  python -m dp_medtf.train --dataset=radimagenet \\
      --data_dir=/data/radimagenet_prepared --epsilon=32

Every split is read with the dataset's own reader and each example is stored
exactly as its `load_example` returns it, before normalisation
(dp_medtf.data.record_writer writes the folder; dp_medtf.data.records holds
its layout). Training, the attack and the throughput tool take the prepared
folder as --data_dir: they recognise it by its metadata file and give
identical tensors. The recipe's fields that shape the examples (image size,
split seed and fractions, ...) are recorded, and a run whose recipe differs
is refused; per-modality standardisation and caching are applied when
reading, so they may change.

Running the same command again after an interruption keeps the finished
shards and writes the rest; with another recipe or dataset it starts over.
The output may be a gs:// folder (shards are written locally first, then
copied).

Flags are those of dp_medtf.train (--dataset, --config.<field>, --data_dir)
plus --output_dir and --examples_per_shard.
"""

from __future__ import annotations

import sys
import time

from absl import app
from absl import flags

from dp_medtf import cli
from dp_medtf import recipe_flags
from dp_medtf.data import record_writer

flags.adopt_module_key_flags(recipe_flags)
_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', None, 'The prepared folder to write (local or gs://).')
_EXAMPLES_PER_SHARD = flags.DEFINE_integer(
    'examples_per_shard', 0, 'Examples per shard; 0: about 1 GiB of float32 '
    'examples per shard.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = recipe_flags.resolve_config(recipe_flags.load_config())
  data_dir = flags.FLAGS.data_dir or ''
  if config.dataset != 'demo' and not data_dir:
    raise app.UsageError(
        f'--data_dir is required for --dataset={config.dataset}.')
  if not _OUTPUT_DIR.value:
    raise app.UsageError('--output_dir is required.')
  if _EXAMPLES_PER_SHARD.value < 0:
    raise app.UsageError('--examples_per_shard must be 0 or positive.')
  cli.check_output_dir('output_dir', _OUTPUT_DIR.value)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.get_logger().setLevel('ERROR')
  began = time.perf_counter()
  try:
    meta = record_writer.prepare(config, data_dir, _OUTPUT_DIR.value,
                                 _EXAMPLES_PER_SHARD.value, log=print)
  except ValueError as e:  # DataError and PreparedDataError among them.
    raise app.UsageError(str(e)) from None
  counts = '/'.join(str(meta['splits'][s]['num_examples'])
                    for s in record_writer.SPLITS)
  print(f'{config.dataset}: {counts} examples (train/validation/test) in '
        f'{_OUTPUT_DIR.value} ({time.perf_counter() - began:.0f} s)')


def run() -> None:
  """Console entry point."""
  recipe_flags.set_default_config(sys.argv)
  cli.run(main)


if __name__ == '__main__':
  run()
