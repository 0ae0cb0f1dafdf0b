"""tf.data pipelines over any split: train chunks and eval batches.

A split is anything with `len(split)` and a traceable
`split.load_example(index) -> (x, y)` (see dp_medtf.data.Split): arrays in
memory, or files read on demand. The train pipeline turns a plan of physical
chunks (from sampling.py) into (x [b, K, ...], y [b, ...], mask [b]) batches:
load each example in a parallel map, batch back into the chunks, normalise,
augment into K views. Augmentation seeds derive from (seed, step), so the
stream is deterministic given the seed.

Example:

  >>> split = ArraySplit(np.zeros([10, 8, 8, 1], np.float32),
  ...                    np.zeros([10], np.int32))
  >>> norm = Normalizer.fixed(mean=[0.5], std=[0.25])
  >>> plan = [(0, c) for c in sampling.to_chunks(np.arange(5), 4)]
  >>> ds = train_dataset(split, plan, norm, multiplicity=2, flip_probs={},
  ...                    seed=0)
  >>> [x.shape for x, y, m in ds.take(1)]
  [TensorShape([4, 2, 8, 8, 1])]
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping

import numpy as np
import tensorflow as tf

from dp_medtf.data import augment
from dp_medtf.data import sampling
from dp_medtf.data.split import ArraySplit  # pylint: disable=unused-import


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


def train_dataset(split, plan: Iterable[tuple[int, sampling.Chunk]],
                  normalizer: Normalizer, multiplicity: int,
                  flip_probs: Mapping[int, float],
                  seed: int) -> tf.data.Dataset:
  """The stream of physical training chunks.

  Args:
    split: the training split.
    plan: (step, chunk) pairs in order; all chunks of one size.
    normalizer: the input standardisation.
    multiplicity: K views per example.
    flip_probs: flip probability per spatial axis (see augment.views).
    seed: the augmentation seed.

  Returns:
    A dataset of (x [b, K, ...], y [b, ...], mask [b]).
  """
  plan = list(plan)
  chunk_size = len(plan[0][1].indices)
  steps = np.repeat([s for s, _ in plan], chunk_size).astype(np.int64)
  indices = np.concatenate([c.indices for _, c in plan])
  masks = np.concatenate([c.mask for _, c in plan])

  def load(step, index, mask):
    x, y = split.load_example(index)
    return step, x, y, mask

  def finish(step, x, y, mask):
    x = augment.views(normalizer(x), multiplicity, flip_probs,
                      seed=tf.stack([tf.cast(seed, tf.int64), step[0]]))
    if len(y.shape) > 1 and (flip_probs and max(flip_probs.values()) > 0):
      raise NotImplementedError('Flipping label maps is not supported.')
    return x, y, mask

  ds = tf.data.Dataset.from_tensor_slices((steps, indices, masks))
  ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(chunk_size, drop_remainder=True)
  return ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True).prefetch(tf.data.AUTOTUNE)


def eval_dataset(split, normalizer: Normalizer,
                 batch_size: int) -> tf.data.Dataset:
  """Batches of (x, y) for evaluation, in order."""
  ds = tf.data.Dataset.range(len(split)).map(
      split.load_example, num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True)
  return ds.batch(batch_size).map(
      lambda x, y: (normalizer(x), y),
      num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
