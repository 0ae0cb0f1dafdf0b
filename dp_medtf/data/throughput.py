"""Measures a reader's images per second against the train step's appetite.

Three rates, on the recipe's training split:

  * reader, first pass: load_example over the split, from the files (for
    MSD Liver also resampling, which fills the volume cache);
  * reader, later passes: the same again (OS and volume caches warm);
  * train pipeline: pipeline.train_dataset's chunks (load, batch into
    chunks), as PrivateModel.fit consumes them;

and the train step's consumption: examples per second that the recipe's
step (DP or not, by --epsilon) processes on one chunk, its normalising
and K views included, its input excluded. The
input keeps up when the pipeline's rate exceeds the step's.

Usage:

  python -m dp_medtf.data.throughput --dataset=ham10000 \\
      --data_dir=/data/HAM10000 --epsilon=8 --config.data.image_size=64 \\
      --config.input_shape="(64, 64, 3)"

Flags are those of dp_medtf.train (--dataset, --config.<field>, --epsilon,
--data_dir, ...) plus --examples and --step_repeats. --data_dir may be a
folder made by python -m dp_medtf.data.prepare.

Scale mode (--scale=N) compares the two sources of RadImageNet at the
recipe's shape: it writes a synthetic RadImageNet-format corpus of N
grayscale PNGs (a few hundred distinct 224 x 224 images, each saved under
many names; 80/10/10 split files) into --scale_dir, prepares it, then, each
in a fresh process, delivers one warm-up and then --scale_batches timed
Poisson batches (the recipe's 3,328 examples per step, in its physical
chunks) to the train step from the raw files and from the records, and times
the recipe's DP step (normalising and K = 4 views included) on a small
chunk. It prints a table and one JSON line: examples/s delivered, time to
the first chunk (index or metadata included), peak RSS per source, and the
step's consumption. --scale_phase runs one phase at a time (generate,
prepare, measure; each skips work already done).

  python -m dp_medtf.data.throughput --dataset=radimagenet --scale=100000 \
      --scale_dir=/tmp/rin_scale
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags

from dp_medtf import cli
from dp_medtf import recipe_flags
from dp_medtf.data import input_rates
from dp_medtf.data import record_writer

flags.adopt_module_key_flags(recipe_flags)
_EXAMPLES = flags.DEFINE_integer(
    'examples', 256, 'Examples timed per reader rate (the split repeats if '
    'it is smaller).')
_STEP_REPEATS = flags.DEFINE_integer(
    'step_repeats', 5, 'Timed train-step calls, after one warm-up call.')
_SCALE = flags.DEFINE_integer(
    'scale', 0, 'Scale mode: the number of synthetic RadImageNet images to '
    'generate, prepare and read (0: off).')
_SCALE_DIR = flags.DEFINE_string(
    'scale_dir', None, 'Scale mode: where the corpus and its prepared folder '
    'go (kept, and reused when run again).')
_SCALE_PHASE = flags.DEFINE_enum(
    'scale_phase', 'all', ('all', 'generate', 'prepare', 'measure'),
    'Scale mode: the phase to run.')
_SCALE_BATCHES = flags.DEFINE_integer(
    'scale_batches', 2, 'Scale mode: Poisson batches timed per source.',
    lower_bound=1)
_SCALE_STEP_CHUNK = flags.DEFINE_integer(
    'scale_step_chunk', 2, 'Scale mode: the chunk the train step is timed on '
    '(its rate per example; the recipe\'s chunk of 64 x 4 views at 224 x 224 '
    'does not fit a small machine); 0: do not time the step.')
_COLD = flags.DEFINE_bool(
    'scale_cold', False, 'Scale mode: empty the OS page cache before each '
    'source (Linux, as root), so that every file is read from disk, as when '
    'a dataset is larger than memory.')
_SOURCE = flags.DEFINE_enum(
    'scale_source', None, ('raw', 'records', 'step'),
    'Internal: measure one source in this process.')


def _reason(error: Exception) -> str:
  """The informative line of an error (TF's start with boilerplate)."""
  text = getattr(error, 'message', None) or str(error)
  lines = [l.strip() for l in text.splitlines()
           if l.strip() and not l.startswith((' ', '\t', '[[', 'File'))
           and not l.startswith(('Graph execution error', 'Detected at'))]
  return (lines[-1] if lines else type(error).__name__)[:100]


def _child(source: str, argv: list[str]) -> dict:
  """Runs one measurement in a fresh process; returns its JSON result."""
  flags_out = [a for a in argv[1:] if not a.startswith(
      ('--scale_phase', '--scale_source'))]
  proc = subprocess.run(
      [sys.executable, '-m', 'dp_medtf.data.throughput', *flags_out,
       '--scale_phase=measure', f'--scale_source={source}'],
      capture_output=True, text=True, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith('{')]
  if proc.returncode != 0 or not lines:
    raise cli.Fault(f'--scale: measuring {source} failed: '
                    f'{cli.last_line(proc.stderr) or proc.returncode}')
  return json.loads(lines[-1])


def scale_main(config, argv: list[str]) -> None:
  """--scale: generate, prepare and measure (see the module docstring)."""
  if config.dataset != 'radimagenet':
    raise app.UsageError('--scale needs --dataset=radimagenet.')
  if not _SCALE_DIR.value:
    raise app.UsageError('--scale needs --scale_dir.')
  config = input_rates.scale_config(config)
  folder = _SCALE_DIR.value
  raw_dir = os.path.join(folder, 'raw')
  prepared_dir = os.path.join(folder, 'prepared')
  phase = _SCALE_PHASE.value
  if _SOURCE.value:
    if _SOURCE.value == 'step':
      result = input_rates.measure_step(config, prepared_dir,
                                        _SCALE_STEP_CHUNK.value,
                                        _STEP_REPEATS.value)
    else:
      result = input_rates.measure_source(
          config, raw_dir if _SOURCE.value == 'raw' else prepared_dir,
          _SCALE_BATCHES.value)
    print(json.dumps(result))
    return
  if phase in ('all', 'generate'):
    began = time.perf_counter()
    input_rates.generate_corpus(folder, _SCALE.value)
    print(f'corpus: {_SCALE.value} PNGs in {raw_dir} '
          f'({time.perf_counter() - began:.0f} s)')
  if phase in ('all', 'prepare'):
    began = time.perf_counter()
    record_writer.prepare(config, raw_dir, prepared_dir)
    print(f'prepared: {prepared_dir} ({time.perf_counter() - began:.0f} s)')
  if phase not in ('all', 'measure'):
    return
  results = {}
  sources = ('raw', 'records') + (('step',) if _SCALE_STEP_CHUNK.value else ())
  for source in sources:
    if _COLD.value and source != 'step':
      input_rates.drop_page_cache()
    results[source] = _child(source, argv)
    print(f'{source}: {json.dumps(results[source])}', flush=True)
  raw, records = results['raw'], results['records']
  print(f'RadImageNet format, {_SCALE.value} images ({raw["num_train"]} '
        f'train, page cache {"emptied" if _COLD.value else "as found"}), '
        f'224x224x1, Poisson batches of {config.batch_size}, '
        f'K={config.augment.multiplicity}, chunks of '
        f'{config.physical_batch_size}, {_SCALE_BATCHES.value} timed batches '
        'after one warm-up batch')
  print('  source    delivered/s  first batch/s  reader/s  first chunk (s)  '
        'peak RSS (MB)')
  for name in ('raw', 'records'):
    r = results[name]
    print(f'  {name:8s} {r["examples_per_s"]:12.0f} '
          f'{r["first_batch_examples_per_s"]:14.0f} '
          f'{r["reader_examples_per_s"]:9.0f} {r["first_chunk_s"]:16.1f} '
          f'{r["peak_rss_mb"]:14.0f}')
  speedup = records['examples_per_s'] / raw['examples_per_s']
  reader_speedup = (records['reader_examples_per_s'] /
                    raw['reader_examples_per_s'])
  print(f'  records / raw: {speedup:.1f}x delivered, {reader_speedup:.1f}x '
        'reader')
  if 'step' in results:
    print(f'  DP {config.model.name} step consumes '
          f'{results["step"]["examples_per_s"]:.2f} examples/s (chunk '
          f'{results["step"]["chunk"]})')
  print(json.dumps({'scale': _SCALE.value, 'cold': _COLD.value, **results}))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = recipe_flags.resolve_config(recipe_flags.load_config())
  if _SCALE.value:
    scale_main(config, sys.argv)
    return
  data_dir = flags.FLAGS.data_dir or ''
  if config.dataset != 'demo' and not data_dir:
    raise app.UsageError(
        f'--data_dir is required for --dataset={config.dataset}.')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from dp_medtf import data  # pylint: disable=g-import-not-at-top
  from dp_medtf import fit  # pylint: disable=g-import-not-at-top
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
    first, later = input_rates.reader_rates(
        data.load_split(files_config, 'train', data_dir), _EXAMPLES.value)
  else:
    first, later = input_rates.reader_rates(split, _EXAMPLES.value)
  normalizer = fit.normalizer_for(config, split, plan.private)
  chained = input_rates.pipeline_rate(config, split, plan, _EXAMPLES.value)
  try:
    consumed = input_rates.step_rate(config, plan, split, normalizer,
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
  recipe_flags.set_default_config(sys.argv)
  cli.run(main)


if __name__ == '__main__':
  run()
