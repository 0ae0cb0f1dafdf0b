"""TF Privacy's DP Keras optimizers as a training step (the reference path).

TF Privacy clips each microbatch's gradient (here: each example) through a
jacobian over the batch's losses and adds N(0, (zC)^2) noise on every
minimize call, then divides by the number of microbatches. Its cost grows
with the square of the batch, and it noises each call, so a logical batch
must fit in one physical chunk: `accumulate` runs the whole DP update and
`apply` has nothing left to do. Padding examples carry zero loss, hence zero
gradient, but count in the divisor (the chunk size, not q N).

Example:

  >>> opt = make_optimizer('adam', clip_norm=1.0, noise_multiplier=1.1,
  ...                      learning_rate=2e-3)
  >>> type(opt).__name__
  'DPOptimizerClass'
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow_privacy.privacy.optimizers import dp_optimizer_keras

from dp_medtf.privacy import step as dp_step

DPKerasNadamOptimizer = dp_optimizer_keras.make_keras_optimizer_class(
    tf.keras.optimizers.legacy.Nadam)

_OPTIMIZERS = {'adam': dp_optimizer_keras.DPKerasAdamOptimizer,
               'nadam': DPKerasNadamOptimizer}


def make_optimizer(name: str, *, clip_norm: float, noise_multiplier: float,
                   learning_rate: float, num_microbatches: int | None = None):
  """TF Privacy's DP Adam or DP NAdam.

  Args:
    name: 'adam' or 'nadam'.
    clip_norm: C.
    noise_multiplier: z.
    learning_rate: the optimizer's learning rate.
    num_microbatches: None: one microbatch per example.

  Returns:
    The DP Keras (legacy) optimizer.
  """
  if name not in _OPTIMIZERS:
    raise ValueError(f'Unknown optimizer {name!r}; choose one of '
                     f'{sorted(_OPTIMIZERS)}.')
  return _OPTIMIZERS[name](l2_norm_clip=clip_norm,
                           noise_multiplier=noise_multiplier,
                           num_microbatches=num_microbatches,
                           learning_rate=learning_rate)


def per_example_losses(model, loss_fn, x, y, mask):
  """Per-example losses [B] (K views averaged), zero for padding."""
  flat_x, flat_y, k = dp_step.flatten_views(x, y)
  view_losses = loss_fn(flat_y, model(flat_x, training=True))
  losses = tf.reduce_mean(tf.reshape(view_losses, [-1, k]), axis=1)
  return losses * tf.cast(mask, losses.dtype)


class TfPrivacyStep:
  """One TF Privacy DP update per physical chunk (one chunk per step)."""

  def __init__(self, model: tf.keras.Model, loss_fn, optimizer):
    self.model = model
    self.loss_fn = loss_fn
    self.optimizer = optimizer
    self.accumulate = tf.function(self._accumulate)

  def privatized_gradient(self, x, y, mask):
    """TF Privacy's clipped, noised, normalised gradient for one chunk."""
    with tf.GradientTape() as tape:
      losses = per_example_losses(self.model, self.loss_fn, x, y, mask)
    grads_and_vars = self.optimizer._compute_gradients(  # pylint: disable=protected-access
        losses, self.model.trainable_variables, tape=tape)
    return [g for g, _ in grads_and_vars], losses

  def _accumulate(self, x, y, mask):
    grads, losses = self.privatized_gradient(x, y, mask)
    self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
    mask = tf.cast(mask, losses.dtype)
    return tf.reduce_sum(losses) / tf.maximum(tf.reduce_sum(mask), 1.0)

  def apply(self):
    """Nothing: the update happened in accumulate."""
