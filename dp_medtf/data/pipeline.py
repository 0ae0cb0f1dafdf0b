"""tf.data pipelines over any split: train chunks and eval batches.

A split is anything with `len(split)` and a traceable
`split.load_example(index) -> (x, y)` (see dp_medtf.data.Split): arrays in
memory, or files read on demand. The train pipeline turns a plan of physical
chunks (from sampling.py) into (x [b, ...], y [b, ...], mask [b]) batches of
the examples as stored: a split with `load_batch` (prepared records, arrays)
reads each chunk in one call, several chunks at once; any other split loads
each example in a parallel map, batched back into the chunks. Normalising
them and making the K augmented views (`training_views`) runs in the fit
loop's tf.function, on the device that runs it (one GPU: that GPU; under a
multi-device strategy, before the chunk is split across the replicas). Done
in tf.data it multiplied the bytes each example costs the host's input
threads by K and made them the bottleneck. Augmentation seeds derive from
(seed, step), so the views are deterministic given the seed.

Example:

  >>> split = ArraySplit(np.zeros([10, 8, 8, 1], np.float32),
  ...                    np.zeros([10], np.int32))
  >>> norm = Normalizer.fixed(mean=[0.5], std=[0.25])
  >>> plan = [(0, c) for c in sampling.to_chunks(np.arange(5), 4)]
  >>> x, y, mask = next(iter(train_dataset(split, plan)))
  >>> x.shape, mask.numpy().tolist()
  (TensorShape([4, 8, 8, 1]), [1.0, 1.0, 1.0, 1.0])
  >>> training_views(x, norm, multiplicity=2, flip_probs={1: 0.5}, seed=0,
  ...                step=0).shape
  TensorShape([4, 2, 8, 8, 1])
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping

import numpy as np
import tensorflow as tf

from dp_medtf.data import augment
from dp_medtf.data import sampling
from dp_medtf.data.split import ArraySplit  # pylint: disable=unused-import

# Chunks read at once from a split with load_batch. Random reads wait on the
# disk (or network), not the CPU, so this is more than the cores: measured on
# a 100,000-image prepared RadImageNet from an emptied page cache, one chunk
# at a time read 2,000 examples/s, four or more at once about 5,900.
CHUNK_READS = 8


@dataclasses.dataclass(frozen=True)
class Normalizer:
  """Per-channel standardisation: (x - mean) / std.

  Private runs use fixed constants from the recipe (`Normalizer.fixed`);
  `Normalizer.fit` measures them on a split, which only a non-private run may
  do on its training data.
  """
  mean: np.ndarray
  std: np.ndarray

  @classmethod
  def fixed(cls, mean, std) -> 'Normalizer':
    """Constants given per channel (or one value for every channel).

    Raises:
      ValueError: for a non-finite mean, a std that is not positive, or
        mean and std of different lengths.
    """
    mean = np.atleast_1d(np.asarray(mean, np.float32))
    std = np.atleast_1d(np.asarray(std, np.float32))
    if mean.shape != std.shape or mean.ndim != 1:
      raise ValueError(f'normalization.mean {mean.tolist()} and '
                       f'normalization.std {std.tolist()} must be two lists '
                       'of the same length (one value per channel).')
    if not np.all(np.isfinite(mean)):
      raise ValueError(f'normalization.mean must be finite, got '
                       f'{mean.tolist()}.')
    if not np.all(np.isfinite(std) & (std > 0)):
      raise ValueError(f'normalization.std must be positive and finite, got '
                       f'{std.tolist()}.')
    return cls(mean, std)

  @classmethod
  def fit(cls, split, max_examples: int = 4096, seed: int = 0,
          batch_size: int = 256) -> 'Normalizer':
    """Mean and std per channel over (a seeded sample of) a split."""
    count = min(len(split), max_examples)
    rng = np.random.default_rng(seed)
    indices = np.sort(rng.choice(len(split), count, replace=False))
    ds = tf.data.Dataset.from_tensor_slices(indices).map(
        lambda i: split.load_example(i)[0],
        num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    total = total_sq = 0.0
    pixels = 0
    for x in ds:
      x = tf.cast(x, tf.float64)
      axes = list(range(len(x.shape) - 1))
      total += tf.reduce_sum(x, axes).numpy()
      total_sq += tf.reduce_sum(tf.square(x), axes).numpy()
      pixels += int(np.prod(x.shape[:-1]))
    mean = total / pixels
    std = np.sqrt(np.maximum(total_sq / pixels - mean**2, 0.0))
    return cls(mean.astype(np.float32),
               np.maximum(std, 1e-6).astype(np.float32))

  def __call__(self, x):
    return (tf.cast(x, tf.float32) - self.mean) / self.std


def train_dataset(split, plan: Iterable[tuple[int, sampling.Chunk]]
                  ) -> tf.data.Dataset:
  """The stream of physical training chunks, as stored.

  Args:
    split: the training split.
    plan: (step, chunk) pairs in order; all chunks of one size.

  Returns:
    A dataset of (x [b, ...], y [b, ...], mask [b]), one element per chunk
    of the plan; x as `split.load_example` gives it (training_views makes
    the model's input from it).
  """
  plan = list(plan)
  chunk_size = len(plan[0][1].indices)
  indices = np.concatenate([c.indices for _, c in plan])
  masks = np.concatenate([c.mask for _, c in plan])
  ds = tf.data.Dataset.from_tensor_slices((indices, masks))
  load_batch = getattr(split, 'load_batch', None)
  if load_batch is None:
    ds = ds.map(lambda i, m: (*split.load_example(i), m),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(chunk_size, drop_remainder=True)
  else:
    ds = ds.batch(chunk_size, drop_remainder=True).map(
        lambda i, m: (*load_batch(i), m),
        num_parallel_calls=CHUNK_READS, deterministic=True)
  return ds.prefetch(tf.data.AUTOTUNE)


def training_views(x: tf.Tensor, normalizer: Normalizer, multiplicity: int,
                   flip_probs: Mapping[int, float], seed: int | tf.Tensor,
                   step: int | tf.Tensor) -> tf.Tensor:
  """The model's training input from a chunk of train_dataset.

  Traceable; the train step runs it inside its tf.function.

  Args:
    x: [b, ...] examples as stored.
    normalizer: the input standardisation.
    multiplicity: K views per example.
    flip_probs: flip probability per spatial axis (see augment.views).
    seed: the augmentation seed.
    step: the training step the chunk belongs to.

  Returns:
    [b, K, ...] float32: K augmented views of each normalised example.
  """
  seed = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])
  return augment.views(normalizer(x), multiplicity, flip_probs, seed=seed)


def check_flips(label_shape: tuple[int, ...],
                flip_probs: Mapping[int, float]) -> None:
  """Refuses flips with label maps (the labels would have to flip too).

  Raises:
    NotImplementedError: label maps (segmentation) with a flip probability.
  """
  if label_shape and flip_probs and max(flip_probs.values()) > 0:
    raise NotImplementedError('Flipping label maps is not supported.')


def eval_dataset(split, normalizer: Normalizer,
                 batch_size: int) -> tf.data.Dataset:
  """Batches of (x, y) for evaluation, in order."""
  ds = tf.data.Dataset.range(len(split)).map(
      split.load_example, num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True)
  return ds.batch(batch_size).map(
      lambda x, y: (normalizer(x), y),
      num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
