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
import io
import json
import os
import resource
import subprocess
import sys
import time

from absl import app
from absl import flags

from dp_medtf import cli
from dp_medtf import recipe_flags

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

# The synthetic corpus: classes per modality (RadImageNet's layout), distinct
# images, image side.
SCALE_CLASSES = ('CT/abd/normal', 'CT/abd/pancreatitis', 'CT/lung/nodule',
                 'CT/lung/normal', 'MR/knee/normal', 'MR/knee/acl_tear',
                 'MR/brain/normal', 'MR/brain/tumor', 'US/gallstone',
                 'US/normal', 'US/kidney', 'US/liver')
SCALE_DISTINCT = 256
SCALE_SIZE = 224


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


def pipeline_rate(config, split, plan, examples: int) -> float:
  """Examples per second of pipeline.train_dataset's chunks."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from dp_medtf.data import pipeline  # pylint: disable=g-import-not-at-top
  from dp_medtf.data import sampling  # pylint: disable=g-import-not-at-top
  chunks = max(1, -(-examples // plan.chunk_size))
  rng = np.random.default_rng(0)
  plan_chunks = [(s, c) for s in range(chunks) for c in sampling.to_chunks(
      rng.integers(0, len(split), plan.chunk_size), plan.chunk_size)]
  rate, _ = _rate(pipeline.train_dataset(split, plan_chunks),
                  lambda e: int(e[0].shape[0]))
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
  stored, y, mask = next(iter(pipeline.train_dataset(split, [(0, chunk)])))
  views = tf.function(lambda x, s: pipeline.training_views(
      x, normalizer, int(config.augment.multiplicity), _flip_probs(config),
      int(config.seed), s))
  step.accumulate(views(stored, tf.constant(0, tf.int64)), y, mask)
  step.apply()
  start = time.perf_counter()
  for i in range(repeats):  # As PrivateModel.fit: views, then the step.
    loss = step.accumulate(views(stored, tf.constant(i, tf.int64)), y, mask)
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


def _distinct_pngs(count: int, size: int, seed: int = 0) -> list[bytes]:
  """`count` PNG files of smooth anatomy-like blobs with noise (numpy, PIL)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:size, 0:size] / size
  images = []
  for _ in range(count):
    image = np.zeros([size, size])
    for _ in range(4):
      cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(
          0.05, 0.35)
      image += rng.uniform(0.2, 0.6) * np.exp(
          -((yy - cy)**2 + (xx - cx)**2) / (2 * r * r))
    image += rng.normal(0, 0.03, image.shape)
    pixels = np.clip(image * 255, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, 'PNG')
    images.append(buffer.getvalue())
  return images


def generate_corpus(folder: str, count: int) -> str:
  """A RadImageNet-format corpus of `count` PNGs; returns its data_dir.

  Images cycle through SCALE_DISTINCT distinct files and the classes of
  SCALE_CLASSES; every tenth image goes to validation and the next to test,
  listed in RadiologyAI_{train,val,test}.csv. A finished corpus (its CSVs
  written last) is reused.
  """
  import csv  # pylint: disable=g-import-not-at-top
  data_dir = os.path.join(folder, 'raw')
  names = {'train': 'RadiologyAI_train.csv', 'val': 'RadiologyAI_val.csv',
           'test': 'RadiologyAI_test.csv'}
  if all(os.path.exists(os.path.join(data_dir, n)) for n in names.values()):
    return data_dir
  pngs = _distinct_pngs(SCALE_DISTINCT, SCALE_SIZE)
  rows = {s: [] for s in names}
  for label in SCALE_CLASSES:
    os.makedirs(os.path.join(data_dir, 'radiology_ai', label), exist_ok=True)
  for i in range(count):
    label = SCALE_CLASSES[i % len(SCALE_CLASSES)]
    relative = f'radiology_ai/{label}/img{i:07d}.png'
    with open(os.path.join(data_dir, relative), 'wb') as f:
      f.write(pngs[(i * 7919) % SCALE_DISTINCT])
    split = {8: 'val', 9: 'test'}.get(i % 10, 'train')
    rows[split].append((relative, label.replace('/', '-')))
  for split, name in names.items():
    with open(os.path.join(data_dir, name + '.incomplete'), 'w',
              newline='') as f:
      writer = csv.writer(f)
      writer.writerow(['filename', 'label'])
      writer.writerows(rows[split])
    os.replace(os.path.join(data_dir, name + '.incomplete'),
               os.path.join(data_dir, name))
  return data_dir


def scale_config(config):
  """The recipe for the synthetic corpus: its classes, files read on demand."""
  config = copy.deepcopy(config)
  with config.unlocked():
    config.num_classes = len(SCALE_CLASSES)
    config.data.cache_bytes = 0
  return config


def _peak_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_source(config, data_dir: str, batches: int) -> dict:
  """Delivers Poisson batches from one source to the train step's input.

  Batch 0 warms the pipeline up (threads, autotuning) and is timed apart;
  batches 1..`batches` give the steady rate.

  Returns:
    {'examples_per_s' (steady), 'first_batch_examples_per_s',
    'reader_examples_per_s' (load_example alone, one more batch),
    'first_chunk_s' (from load_split to the first chunk), 'examples',
    'peak_rss_mb', 'num_train'}.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from dp_medtf import data  # pylint: disable=g-import-not-at-top
  from dp_medtf.data import pipeline  # pylint: disable=g-import-not-at-top
  from dp_medtf.data import sampling  # pylint: disable=g-import-not-at-top
  began = time.perf_counter()
  split = data.load_split(config, 'train', data_dir)
  n = len(split)
  sampler = sampling.PoissonSampler(n, int(config.batch_size) / n, key=0)
  chunk = int(config.physical_batch_size)
  plan = [(step, c) for step in range(batches + 1)
          for c in sampling.to_chunks(sampler.step_indices(step), chunk)]
  first_chunk_s = None
  examples = {0: 0, 1: 0}  # Warm-up batch, timed batches.
  ends = {}
  for (step, _), (_, _, mask) in zip(plan, pipeline.train_dataset(split,
                                                                  plan)):
    if first_chunk_s is None:  # Timed alone: not part of either rate.
      first_chunk_s = time.perf_counter() - began
      ends[0] = time.perf_counter()
      continue
    examples[min(step, 1)] += int(tf.reduce_sum(mask))
    ends[min(step, 1)] = time.perf_counter()
  first_batch_rate = examples[0] / max(ends[0] - began - first_chunk_s, 1e-9)
  rate = examples[1] / max(ends[1] - ends[0], 1e-9)
  # The source alone: load_example over one more Poisson batch.
  indices = sampler.step_indices(batches + 1)
  reader = tf.data.Dataset.from_tensor_slices(indices).map(
      split.load_example, num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True).batch(chunk).prefetch(tf.data.AUTOTUNE)
  start = time.perf_counter()
  for _ in reader:
    pass
  reader_rate = len(indices) / (time.perf_counter() - start)
  return {'examples_per_s': rate,
          'first_batch_examples_per_s': first_batch_rate,
          'reader_examples_per_s': reader_rate,
          'first_chunk_s': first_chunk_s, 'examples': examples[1],
          'peak_rss_mb': _peak_rss_mb(), 'num_train': n}


def measure_step(config, data_dir: str, chunk: int, repeats: int) -> dict:
  """Examples per second the recipe's DP step consumes on `chunk` examples."""
  from dp_medtf import data  # pylint: disable=g-import-not-at-top
  from dp_medtf import fit  # pylint: disable=g-import-not-at-top
  config = copy.deepcopy(config)
  with config.unlocked():
    config.physical_batch_size = chunk
  split = data.load_split(config, 'train', data_dir)
  plan = fit.plan_privacy(config, len(split))
  normalizer = fit.normalizer_for(config, split, plan.private)
  return {'examples_per_s': step_rate(config, plan, split, normalizer,
                                      repeats),
          'chunk': plan.chunk_size, 'peak_rss_mb': _peak_rss_mb()}


def drop_page_cache() -> None:
  """Empties Linux's page cache (needs root).

  Raises:
    cli.Fault: where it cannot (not Linux, not root).
  """
  try:
    os.sync()
    with open('/proc/sys/vm/drop_caches', 'w') as f:
      f.write('1\n')
  except OSError as e:
    raise cli.Fault(f'--scale_cold: cannot empty the page cache '
                    f'(/proc/sys/vm/drop_caches: {e.strerror}); it needs '
                    'Linux and root.') from None


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
  config = scale_config(config)
  folder = _SCALE_DIR.value
  raw_dir = os.path.join(folder, 'raw')
  prepared_dir = os.path.join(folder, 'prepared')
  phase = _SCALE_PHASE.value
  if _SOURCE.value:
    if _SOURCE.value == 'step':
      result = measure_step(config, prepared_dir, _SCALE_STEP_CHUNK.value,
                            _STEP_REPEATS.value)
    else:
      result = measure_source(
          config, raw_dir if _SOURCE.value == 'raw' else prepared_dir,
          _SCALE_BATCHES.value)
    print(json.dumps(result))
    return
  if phase in ('all', 'generate'):
    began = time.perf_counter()
    generate_corpus(folder, _SCALE.value)
    print(f'corpus: {_SCALE.value} PNGs in {raw_dir} '
          f'({time.perf_counter() - began:.0f} s)')
  if phase in ('all', 'prepare'):
    from dp_medtf.data import prepare  # pylint: disable=g-import-not-at-top
    began = time.perf_counter()
    prepare.prepare(config, raw_dir, prepared_dir)
    print(f'prepared: {prepared_dir} ({time.perf_counter() - began:.0f} s)')
  if phase not in ('all', 'measure'):
    return
  results = {}
  sources = ('raw', 'records') + (('step',) if _SCALE_STEP_CHUNK.value else ())
  for source in sources:
    if _COLD.value and source != 'step':
      drop_page_cache()
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
    first, later = reader_rates(
        data.load_split(files_config, 'train', data_dir), _EXAMPLES.value)
  else:
    first, later = reader_rates(split, _EXAMPLES.value)
  normalizer = fit.normalizer_for(config, split, plan.private)
  chained = pipeline_rate(config, split, plan, _EXAMPLES.value)
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
  recipe_flags.set_default_config(sys.argv)
  cli.run(main)


if __name__ == '__main__':
  run()
