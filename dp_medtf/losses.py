"""Per-view losses: one value per input view, so that DP-SGD can average an
example's K augmented views before clipping.

Example:

  >>> labels = tf.zeros([2, 4, 4, 4], tf.int32)
  >>> logits = tf.zeros([2, 4, 4, 4, 3])
  >>> segmentation_loss(labels, logits).shape
  TensorShape([2])
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

PerViewLoss = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def classification_loss(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  """Softmax cross-entropy [n] from integer labels [n] and logits [n, K]."""
  return tf.keras.losses.sparse_categorical_crossentropy(
      labels, logits, from_logits=True)


def soft_dice_loss(labels: tf.Tensor, logits: tf.Tensor,
                   smooth: float = 1.0) -> tf.Tensor:
  """1 - mean over classes of the soft Dice of each view [n].

  Args:
    labels: int label maps [n, *spatial].
    logits: [n, *spatial, num_classes].
    smooth: added to numerator and denominator (empty classes score 1).
  """
  num_classes = logits.shape[-1]
  # exp(log_softmax): under tf.vectorized_map a 3D volume's logits become
  # 6-D, beyond what the CPU softmax kernel accepts (at most 5-D).
  probs = tf.exp(tf.nn.log_softmax(logits, axis=-1))
  truth = tf.one_hot(labels, num_classes, dtype=probs.dtype)
  axes = list(range(1, len(logits.shape) - 1))
  overlap = tf.reduce_sum(probs * truth, axes)
  total = tf.reduce_sum(probs, axes) + tf.reduce_sum(truth, axes)
  dice = (2.0 * overlap + smooth) / (total + smooth)
  return 1.0 - tf.reduce_mean(dice, axis=-1)


def segmentation_loss(labels: tf.Tensor, logits: tf.Tensor,
                      class_weights: Sequence[float] | None = None
                      ) -> tf.Tensor:
  """Soft Dice plus (class-weighted) voxel cross-entropy, per view [n].

  Args:
    labels: int label maps [n, *spatial].
    logits: [n, *spatial, num_classes].
    class_weights: weight of each class in the cross-entropy (the paper's
      weighted loss: background 0.1, liver 0.4, tumour 0.5); None: equal.
  """
  ce = tf.keras.losses.sparse_categorical_crossentropy(
      labels, logits, from_logits=True)
  if class_weights:
    ce *= tf.gather(tf.constant(class_weights, ce.dtype), labels)
  axes = list(range(1, len(ce.shape)))
  return soft_dice_loss(labels, logits) + tf.reduce_mean(ce, axes)


def for_task(task: str, class_weights: Sequence[float] = ()) -> PerViewLoss:
  """The per-view loss of a recipe's task.

  Args:
    task: 'classification' or 'segmentation'.
    class_weights: segmentation cross-entropy weights (empty: equal).
  """
  if task == 'classification':
    return classification_loss
  if task == 'segmentation':
    weights = tuple(class_weights) or None
    return lambda labels, logits: segmentation_loss(labels, logits, weights)
  raise ValueError(f"Unknown task {task!r}; choose 'classification' or "
                   "'segmentation'.")
