"""The one interface every dataset reader returns: a `Split`.

A split is a sized collection of examples that tf.data can read on demand,
whether they sit in memory (`ArraySplit`) or in files (ImageFileSplit in
files.py, VolumeSplit in msd_liver.py). Code that consumes a split
(pipeline.py, the attack app) uses only this protocol, never a reader's own
attributes.

Example:

  >>> split = ArraySplit(np.zeros([4, 8, 8, 1], np.float32),
  ...                    np.array([0, 1, 0, 1], np.int32))
  >>> isinstance(split, Split), len(split)
  (True, 4)
  >>> x, y = split.load_example(tf.constant(1, tf.int64))
  >>> x.shape, int(y)
  (TensorShape([8, 8, 1]), 1)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Protocol, runtime_checkable

import numpy as np
import tensorflow as tf


@runtime_checkable
class Split(Protocol):
  """One split of a dataset.

  Members:
    len(split): the number of examples N.
    load_example(index): (x, y) tensors of example `index` (an int64 scalar
      tensor in [0, N)), traceable by tf.data: x float32 [*spatial, C] of a
      fixed shape, y an int label or an int label map [*spatial].
    labels: the N labels, int [N] for classification (used for metrics and
      class weights) or [N, *spatial] label maps for segmentation.

  A split may also have `load_batch(indices)`: (x [b, ...], y [b, ...]) of
  the examples at an int64 [b] tensor of indices, equal to stacking
  load_example's, for readers that fetch a batch faster than its examples
  one at a time (pipeline.train_dataset uses it when present).

  isinstance(obj, Split) checks that the members exist; on Python < 3.12 it
  reads `labels`, which some readers compute by loading every example.
  """

  def __len__(self) -> int:
    ...

  def load_example(self, index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    ...

  @property
  def labels(self) -> np.ndarray:
    ...


@dataclasses.dataclass(frozen=True)
class ArraySplit:
  """A Split held in memory.

  Attributes:
    images: float32 [N, *spatial, C] in [0, 1].
    labels: int32 [N] class labels, or [N, *spatial] label maps.
  """
  images: np.ndarray
  labels: np.ndarray

  def __len__(self) -> int:
    return len(self.labels)

  @functools.cached_property
  def _tensors(self):
    with tf.init_scope():  # Eager tensors, shared by every traced graph.
      return tf.constant(self.images), tf.constant(self.labels)

  def load_example(self, index: tf.Tensor):
    """(image, label) of example `index`, traceable by tf.data."""
    images, labels = self._tensors
    return tf.gather(images, index), tf.gather(labels, index)

  def load_batch(self, indices: tf.Tensor):
    """(images, labels) of examples `indices` [b], traceable by tf.data."""
    return self.load_example(indices)
