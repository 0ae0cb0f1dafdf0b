"""Input and train-step rates: what the reader delivers, what the step takes.

reader_rates, pipeline_rate and step_rate time a split's load_example, the
chunks of pipeline.train_dataset and the recipe's train step (examples per
second; the input keeps up when the pipeline's rate exceeds the step's).
For the comparison of RadImageNet's two sources at scale, generate_corpus
writes a synthetic RadImageNet-format corpus, scale_config is the recipe
that reads it, and measure_source and measure_step time Poisson batches
delivered from one source and the DP step. The app is
dp_medtf.data.throughput.

Example:

  A small synthetic corpus (every tenth image to validation, the next to
  test):

  >>> from dp_medtf import recipes
  >>> scale_config(recipes.load('radimagenet')).num_classes
  12
  >>> generate_corpus('corpus', 20)
  'corpus/raw'
  >>> sorted(os.listdir('corpus/raw'))
  ['RadiologyAI_test.csv', 'RadiologyAI_train.csv', 'RadiologyAI_val.csv',
   'radiology_ai']
"""

from __future__ import annotations

import copy
import io
import os
import resource
import time

from dp_medtf import cli

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
