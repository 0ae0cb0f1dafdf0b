"""tf.data pipelines from in-memory splits: train chunks and eval batches.

The train pipeline turns a plan of physical chunks (from sampling.py) into
(x [b, K, ...], y [b], mask [b]) batches: gather, normalise, augment into K
views, in a parallel map with prefetch. Augmentation seeds derive from
(seed, step), so the stream is deterministic given the seed.

Example:

  >>> split = ArraySplit(np.zeros([10, 8, 8, 1], np.float32),
  ...                    np.zeros([10], np.int32))
  >>> norm = Normalizer.fit(split.images)
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
from dp_medtf.data.demo import ArraySplit


@dataclasses.dataclass(frozen=True)
class Normalizer:
  """Per-channel standardisation with training-set statistics."""
  mean: np.ndarray
  std: np.ndarray

  @classmethod
  def fit(cls, images: np.ndarray) -> 'Normalizer':
    axes = tuple(range(images.ndim - 1))
    return cls(images.mean(axis=axes).astype(np.float32),
               np.maximum(images.std(axis=axes), 1e-6).astype(np.float32))

  def __call__(self, x):
    return (x - self.mean) / self.std


def train_dataset(split: ArraySplit,
                  plan: Iterable[tuple[int, sampling.Chunk]],
                  normalizer: Normalizer, multiplicity: int,
                  flip_probs: Mapping[int, float],
                  seed: int) -> tf.data.Dataset:
  """The stream of physical training chunks.

  Args:
    split: the training split in memory.
    plan: (step, chunk) pairs in order.
    normalizer: the input standardisation.
    multiplicity: K views per example.
    flip_probs: flip probability per spatial axis (see augment.views).
    seed: the augmentation seed.

  Returns:
    A dataset of (x [b, K, ...], y [b], mask [b]).
  """
  plan = list(plan)
  steps = np.array([s for s, _ in plan], np.int64)
  indices = np.stack([c.indices for _, c in plan])
  masks = np.stack([c.mask for _, c in plan])
  images = tf.constant(split.images)
  labels = tf.constant(split.labels)

  def fetch(step, idx, mask):
    x = normalizer(tf.gather(images, idx))
    x = augment.views(x, multiplicity, flip_probs,
                      seed=tf.stack([tf.cast(seed, tf.int64), step]))
    return x, tf.gather(labels, idx), mask

  ds = tf.data.Dataset.from_tensor_slices((steps, indices, masks))
  return ds.map(fetch, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True).prefetch(tf.data.AUTOTUNE)


def eval_dataset(split: ArraySplit, normalizer: Normalizer,
                 batch_size: int) -> tf.data.Dataset:
  """Batches of (x, y) for evaluation, in order."""
  ds = tf.data.Dataset.from_tensor_slices((split.images, split.labels))
  return ds.batch(batch_size).map(
      lambda x, y: (normalizer(x), y),
      num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
