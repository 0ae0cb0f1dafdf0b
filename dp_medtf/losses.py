"""Per-view losses: one value per input view, so that DP-SGD can average an
example's K augmented views before clipping.

Example:

  >>> labels = tf.zeros([2, 4, 4, 4], tf.int32)
  >>> logits = tf.zeros([2, 4, 4, 4, 3])
  >>> dice_loss(labels, logits).shape
  TensorShape([2])
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

PerViewLoss = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

# Added to the Dice denominator only, as in the paper authors' f_score
# (dptraining/utils/loss.py): an absent class that is not predicted scores 0.
DICE_EPSILON = 1e-5


def classification_loss(labels: tf.Tensor, logits: tf.Tensor,
                        class_weights: Sequence[float] | None = None
                        ) -> tf.Tensor:
  """Softmax cross-entropy [n] from integer labels [n] and logits [n, K].

  Args:
    labels: int labels [n].
    logits: [n, K].
    class_weights: each example's loss is multiplied by the weight of its
      label (not normalised, as in the authors' code); None: unweighted.

  Returns:
    The loss of each view, [n].

  Example:

    >>> loss = classification_loss(tf.constant([1]), tf.zeros([1, 2]),
    ...                            (0.1, 0.9))
    >>> loss.shape, round(float(loss[0]), 6)  # 0.9 * ln 2
    (TensorShape([1]), 0.623832)
  """
  ce = tf.keras.losses.sparse_categorical_crossentropy(
      labels, logits, from_logits=True)
  if class_weights:
    ce *= tf.gather(tf.constant(class_weights, ce.dtype), labels)
  return ce


def dice_loss(labels: tf.Tensor, logits: tf.Tensor,
              class_weights: Sequence[float] | None = None) -> tf.Tensor:
  """1 - the (weighted) mean over classes of each view's soft Dice [n].

  The paper authors' Dice loss (f_score with as_loss_fn=True in
  dptraining/utils/loss.py): softmax probabilities p, one-hot truth g, for
  every class c, background included, over all voxels of the view,

    dice_c = 2 sum(p_c g_c) / (sum(p_c) + sum(g_c) + 1e-5),

  and loss = 1 - sum_c w_c dice_c / sum_c w_c (numpy.average: the weights
  are normalised by their sum; without weights, the plain mean).

  Args:
    labels: int label maps [n, *spatial].
    logits: [n, *spatial, num_classes].
    class_weights: one weight per class (the paper's weighted loss:
      background 0.1, liver 0.4, tumour 0.5); None: equal weights.

  Returns:
    The loss of each view, [n].

  Example:

    >>> loss = dice_loss(tf.constant([[0, 1]]), 50.0 * tf.eye(2)[None])
    >>> loss.shape, round(float(loss[0]), 7)  # 1 - 2 / (2 + 1e-5)
    (TensorShape([1]), 5e-06)
  """
  num_classes = logits.shape[-1]
  # exp(log_softmax): under tf.vectorized_map a 3D volume's logits become
  # 6-D, beyond what the CPU softmax kernel accepts (at most 5-D).
  probs = tf.exp(tf.nn.log_softmax(logits, axis=-1))
  truth = tf.one_hot(labels, num_classes, dtype=probs.dtype)
  axes = list(range(1, len(logits.shape) - 1))
  overlap = tf.reduce_sum(probs * truth, axes)
  total = tf.reduce_sum(probs, axes) + tf.reduce_sum(truth, axes)
  dice = 2.0 * overlap / (total + DICE_EPSILON)
  if not class_weights:
    return 1.0 - tf.reduce_mean(dice, axis=-1)
  weights = tf.constant(class_weights, dice.dtype)
  return 1.0 - tf.reduce_sum(dice * weights, -1) / tf.reduce_sum(weights)


def for_task(task: str, class_weights: Sequence[float] = ()) -> PerViewLoss:
  """The per-view loss of a recipe's task.

  Args:
    task: 'classification' (cross-entropy) or 'segmentation' (Dice loss).
    class_weights: one weight per class (empty: unweighted).

  Returns:
    A function (labels, logits) -> loss per view [n].

  Raises:
    ValueError: for an unknown task.
  """
  weights = tuple(float(w) for w in class_weights) or None
  if task == 'classification':
    if weights is None:
      return classification_loss
    return lambda labels, logits: classification_loss(labels, logits, weights)
  if task == 'segmentation':
    return lambda labels, logits: dice_loss(labels, logits, weights)
  raise ValueError(f"Unknown task {task!r}; choose 'classification' or "
                   "'segmentation'.")
