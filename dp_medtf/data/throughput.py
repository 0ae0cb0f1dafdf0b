"""Measures a reader's images per second against the train step's appetite.

Three rates, on the recipe's training split:

  * reader, first pass: load_example over the split, from the files (for
    MSD Liver also resampling, which fills the volume cache);
  * reader, later passes: the same again (OS and volume caches warm);
  * train pipeline: pipeline.train_dataset's chunks (load, normalise, K
    augmented views), as fit.py consumes them;

and the train step's consumption: examples per second that the recipe's
step (DP or not, by --epsilon) processes on one chunk, excluding input. The
input keeps up when the pipeline's rate exceeds the step's.

Usage:

  python -m dp_medtf.data.throughput --dataset=ham10000 \\
      --data_dir=/data/HAM10000 --epsilon=8 --config.data.image_size=64 \\
      --config.input_shape="(64, 64, 3)"

Flags are those of dp_medtf.train (--dataset, --config.<field>, --epsilon,
--data_dir, ...) plus --examples and --step_repeats.
"""

from __future__ import annotations

import copy
import sys
import time

from absl import app
from absl import flags

from dp_medtf import cli
from dp_medtf import train as train_app

_EXAMPLES = flags.DEFINE_integer(
    'examples', 256, 'Examples timed per reader rate (the split repeats if '
    'it is smaller).')
_STEP_REPEATS = flags.DEFINE_integer(
    'step_repeats', 5, 'Timed train-step calls, after one warm-up call.')


def _flip_probs(config) -> dict[int, float]:
  """The recipe's flip probability per spatial axis (as fit.py uses them)."""
  return {1: float(config.augment.flip_vertical),
          2: float(config.augment.flip_horizontal)}


def _rate(dataset, count_fn) -> tuple[float, int]:
  """(examples per second, examples) of one pass over a tf.data dataset."""
  start = time.perf_counter()
  count = 0
  for element in dataset:
    count += count_fn(element)
  return count / max(time.perf_counter() - start, 1e-9), count


def reader_rates(split, examples: int) -> tuple[float, float]:
  """Examples per second of load_example: first pass and a later pass."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  count = min(examples, len(split))
  repeats = -(-examples // len(split))

  def dataset(n):
    return tf.data.Dataset.range(n).map(
        lambda i: split.load_example(i % len(split)),
        num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

  first, _ = _rate(dataset(count), lambda e: 1)
  later, _ = _rate(dataset(repeats * len(split)), lambda e: 1)
  return first, later


def pipeline_rate(config, split, plan, normalizer, examples: int) -> float:
  """Examples per second of pipeline.train_dataset's chunks."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from dp_medtf.data import pipeline  # pylint: disable=g-import-not-at-top
  from dp_medtf.data import sampling  # pylint: disable=g-import-not-at-top
  chunks = max(1, -(-examples // plan.chunk_size))
  rng = np.random.default_rng(0)
  plan_chunks = [(s, c) for s in range(chunks) for c in sampling.to_chunks(
      rng.integers(0, len(split), plan.chunk_size), plan.chunk_size)]
  ds = pipeline.train_dataset(
      split, plan_chunks, normalizer, int(config.augment.multiplicity),
      _flip_probs(config), int(config.seed))
  rate, _ = _rate(ds, lambda e: int(e[0].shape[0]))
  return rate


def step_rate(config, plan, split, normalizer, repeats: int) -> float:
  """Examples per second the recipe's train step consumes (input excluded)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from dp_medtf import fit  # pylint: disable=g-import-not-at-top
  from dp_medtf import models  # pylint: disable=g-import-not-at-top
  from dp_medtf.data import pipeline  # pylint: disable=g-import-not-at-top
  from dp_medtf.data import sampling  # pylint: disable=g-import-not-at-top
  model = models.build(config.model, tuple(config.input_shape),
                       int(config.num_classes))
  step = fit.make_step(config, plan, model)
  chunk = sampling.to_chunks(
      list(range(min(plan.chunk_size, len(split)))), plan.chunk_size)[0]
  x, y, mask = next(iter(pipeline.train_dataset(
      split, [(0, chunk)], normalizer, int(config.augment.multiplicity),
      _flip_probs(config), int(config.seed))))
  step.accumulate(x, y, mask)
  step.apply()
  start = time.perf_counter()
  for _ in range(repeats):
    loss = step.accumulate(x, y, mask)
    step.apply()
  float(tf.reduce_sum(loss))
  return repeats * plan.chunk_size / (time.perf_counter() - start)


def _reason(error: Exception) -> str:
  """The informative line of an error (TF's start with boilerplate)."""
  text = getattr(error, 'message', None) or str(error)
  lines = [l.strip() for l in text.splitlines()
           if l.strip() and not l.startswith((' ', '\t', '[[', 'File'))
           and not l.startswith(('Graph execution error', 'Detected at'))]
  return (lines[-1] if lines else type(error).__name__)[:100]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = train_app.resolve_config(train_app.load_config())
  data_dir = flags.FLAGS.data_dir or ''
  if config.dataset != 'demo' and not data_dir:
    raise app.UsageError(
        f'--data_dir is required for --dataset={config.dataset}.')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from dp_medtf import data  # pylint: disable=g-import-not-at-top
  from dp_medtf import fit  # pylint: disable=g-import-not-at-top
  from dp_medtf.data import pipeline  # pylint: disable=g-import-not-at-top
  tf.get_logger().setLevel('ERROR')
  try:
    split = data.load_split(config, 'train', data_dir)
    plan = fit.plan_privacy(config, len(split))
  except ValueError as e:
    raise app.UsageError(str(e))
  in_memory = isinstance(split, data.ArraySplit) and 'cache_bytes' in (
      config.data)
  if in_memory:  # Time the reader on the files, not on the cached arrays.
    files_config = copy.deepcopy(config)
    with files_config.unlocked():
      files_config.data.cache_bytes = 0
    first, later = reader_rates(
        data.load_split(files_config, 'train', data_dir), _EXAMPLES.value)
  else:
    first, later = reader_rates(split, _EXAMPLES.value)
  normalizer = pipeline.Normalizer.fit(split)
  chained = pipeline_rate(config, split, plan, normalizer, _EXAMPLES.value)
  try:
    consumed = step_rate(config, plan, split, normalizer,
                         _STEP_REPEATS.value)
    consumed = f'{consumed:9.1f}'
  except (tf.errors.OpError, ValueError, NotImplementedError) as e:
    consumed = f'      n/a ({type(e).__name__}: {_reason(e)})'
  mode = (f'DP eps={config.dp.epsilon:g}' if plan.private else 'non-private')
  print(f'{config.dataset}: {len(split)} training examples of shape '
        f'{tuple(config.input_shape)}, chunk {plan.chunk_size}, '
        f'K={config.augment.multiplicity}, model {config.model.name}, {mode}')
  if in_memory:
    print('  (the training split fits in config.data.cache_bytes: the train '
          'pipeline reads it from memory)')
  print(f'  reader, first pass     {first:9.1f} examples/s')
  print(f'  reader, later passes   {later:9.1f} examples/s')
  print(f'  train pipeline         {chained:9.1f} examples/s')
  print(f'  train step consumes    {consumed} examples/s')


def run() -> None:
  """Console entry point."""
  train_app.set_default_config(sys.argv)
  cli.run(main)


if __name__ == '__main__':
  run()
