"""Per-example gradient clipping.

The vectorized engine computes each example's gradient with
tf.vectorized_map (one backward pass, batched by pfor instead of TF Privacy's
jacobian over the batch's losses), clips each to L2 norm at most C over all
trainable variables together, and sums.

The ghost engines (dp_medtf.privacy.ghost) find the norms another way and
weight the examples the same way (clip_weights).

Example:

  >>> per_example = tf.constant([[3.0, 4.0], [0.3, 0.4]])
  >>> norms = tf.sqrt(per_example_squared_norms(per_example))
  >>> norms.numpy().tolist()
  [5.0, 0.5]
  >>> clip_weights(norms, 1.0, tf.ones([2])).numpy().tolist()
  [0.20000000298023224, 1.0]
"""

from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf

# (labels [K, ...], predictions [K, ...]) -> scalar loss of one example's K
# augmented views; the views' losses are averaged before clipping.
ExampleLoss = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def global_norm(grads: Sequence[tf.Tensor]) -> tf.Tensor:
  """The L2 norm of a list of tensors taken together."""
  return tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads]))


def clip_factor(norms: tf.Tensor, clip_norm: float) -> tf.Tensor:
  """min(1, C / norm), with 1 for zero norms."""
  return tf.minimum(1.0, clip_norm / tf.maximum(norms, 1e-12))


def per_example_squared_norms(per_example: tf.Tensor) -> tf.Tensor:
  """[B] squared L2 norms of the B per-example gradients [B, ...]."""
  flat = tf.reshape(per_example, [tf.shape(per_example)[0], -1])
  return tf.reduce_sum(tf.square(flat), axis=1)


def clip_weights(norms: tf.Tensor, clip_norm: float,
                 mask: tf.Tensor) -> tf.Tensor:
  """Each example's weight in the clipped sum.

  Args:
    norms: [B] per-example gradient norms.
    clip_norm: the bound C.
    mask: [B], 1 for real examples and 0 for padding.

  Returns:
    [B] min(1, C / norm_i), zero for padding.
  """
  return clip_factor(norms, clip_norm) * tf.cast(mask, norms.dtype)


def vectorized_clipped_sum(model: tf.keras.Model, loss_fn: ExampleLoss,
                           x: tf.Tensor, y: tf.Tensor, mask: tf.Tensor,
                           clip_norm: float):
  """Sum over the batch of per-example gradients, each clipped to `clip_norm`.

  Args:
    model: a Keras model whose per-example outputs do not depend on other
      examples of the batch (no BatchNorm; layer_checks.check_model).
    loss_fn: the loss of one example's K views.
    x: inputs [B, K, ...] (K augmented views of each example).
    y: labels [B, ...], shared by an example's views.
    mask: [B] float, 1 for real examples and 0 for padding.
    clip_norm: the bound C.

  Returns:
    (list of summed clipped gradients, per-example norms [B],
     per-example losses [B]).
  """
  variables = model.trainable_variables

  def one_example(args):
    xi, yi = args
    views = tf.shape(xi)[0]
    labels = tf.repeat(yi[None], views, axis=0)
    with tf.GradientTape() as tape:
      loss = loss_fn(labels, model(xi, training=True))
    return tape.gradient(loss, variables), loss

  per_example, losses = tf.vectorized_map(one_example, (x, y))
  batch = tf.shape(x)[:1]
  per_example = [tf.zeros(tf.concat([batch, tf.shape(v)], 0), v.dtype)
                 if g is None else g for v, g in zip(variables, per_example)]
  norms = tf.sqrt(tf.add_n([per_example_squared_norms(g)
                            for g in per_example]))
  weights = clip_weights(norms, clip_norm, mask)
  summed = [tf.tensordot(weights, g, axes=1) for g in per_example]
  return summed, norms, losses
