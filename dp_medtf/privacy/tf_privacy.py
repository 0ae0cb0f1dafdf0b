"""TF Privacy's DP Keras optimizers as a training step (the reference path).

TF Privacy clips each microbatch's gradient (here: each example) through a
jacobian over the batch's losses and adds N(0, (zC)^2) noise on every
minimize call, then divides by the number of microbatches. Its cost grows
with the square of the batch, and it noises each call, so a logical batch
must fit in one physical chunk: `accumulate` runs the whole DP update and
`apply` has nothing left to do. Padding examples carry zero loss, hence zero
gradient, but count among the microbatches; the step therefore rescales TF
Privacy's average to (clipped sum + noise) / B, the divisor of our engines.

The DP optimizers are TF Privacy's generic Keras DP classes built over the
optimizers of dp_medtf.privacy.optimizers, the classes our engines use, so
that the two paths differ only in how they clip.

Example:

  >>> opt = make_optimizer('adam', clip_norm=1.0, noise_multiplier=1.1,
  ...                      learning_rate=2e-3)
  >>> type(opt).__name__
  'DPOptimizerClass'
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf
from tensorflow_privacy.privacy.optimizers import dp_optimizer_keras

from dp_medtf.privacy import optimizers
from dp_medtf.privacy import step as dp_step


def _dp_optimizer_class(cls: type[tf.keras.optimizers.Optimizer]):
  """TF Privacy's Gaussian DP optimizer over the non-legacy Keras `cls`."""

  class Named(cls):  # pylint: disable=missing-class-docstring
    __doc__ = cls.__doc__

    @property
    def _name(self) -> str:
      # TF Privacy names its gradient scope after the legacy optimizers'
      # `_name`; the non-legacy ones call it `name`.
      return self.name

  Named.__name__ = cls.__name__
  return dp_optimizer_keras.make_gaussian_query_optimizer_class(
      dp_optimizer_keras.make_keras_generic_optimizer_class(Named))


_OPTIMIZERS = {name: _dp_optimizer_class(cls)
               for name, cls in optimizers.OPTIMIZERS.items()}


def make_optimizer(name: str, *, clip_norm: float, noise_multiplier: float,
                   learning_rate: float, num_microbatches: int | None = None,
                   variables: Sequence[tf.Variable] | None = None, **kwargs):
  """TF Privacy's DP version of the optimizer `name` of OPTIMIZERS.

  Args:
    name: one of dp_medtf.privacy.optimizers.OPTIMIZERS.
    clip_norm: C.
    noise_multiplier: z.
    learning_rate: the optimizer's learning rate.
    num_microbatches: None: one microbatch per example.
    variables: if given, the optimizer's variables are created for these
      model variables now (under the current strategy).
    **kwargs: further arguments of the optimizer class (epsilon, ...).

  Returns:
    The DP Keras optimizer.

  Raises:
    ValueError: unknown `name`.
  """
  optimizers.optimizer_class(name)  # Checks the name.

  def factory():
    return _OPTIMIZERS[name](l2_norm_clip=clip_norm,
                             noise_multiplier=noise_multiplier,
                             num_microbatches=num_microbatches,
                             learning_rate=learning_rate, **kwargs)

  if variables is None:
    return factory()
  return optimizers.build(factory, variables)


def per_example_losses(model, loss_fn, x, y, mask):
  """Per-example losses [B] (K views averaged), zero for padding."""
  flat_x, flat_y, k = dp_step.flatten_views(x, y)
  view_losses = loss_fn(flat_y, model(flat_x, training=True))
  losses = tf.reduce_mean(tf.reshape(view_losses, [-1, k]), axis=1)
  return losses * tf.cast(mask, losses.dtype)


class TfPrivacyStep:
  """One TF Privacy DP update per physical chunk (one chunk per step).

  Args:
    model: the Keras model.
    loss_fn: per-view loss vector from (labels, outputs).
    optimizer: a DP optimizer of `make_optimizer` (or TF Privacy's).
    expected_batch_size: B = q N, the divisor of the noised sum of clipped
      gradients, as in DPStep (TF Privacy divides by the chunk's number of
      microbatches, padding included).
  """

  def __init__(self, model: tf.keras.Model, loss_fn, optimizer, *,
               expected_batch_size: float):
    if expected_batch_size <= 0:
      raise ValueError('expected_batch_size must be positive, got '
                       f'{expected_batch_size}.')
    self.model = model
    self.loss_fn = loss_fn
    self.optimizer = optimizer
    self.expected_batch_size = float(expected_batch_size)
    self.accumulate = tf.function(self._accumulate)

  def privatized_gradient(self, x, y, mask):
    """(Sum of clipped per-example gradients + noise) / B for one chunk.

    Returns:
      The gradients and the per-example losses (zero for padding).
    """
    with tf.GradientTape() as tape:
      losses = per_example_losses(self.model, self.loss_fn, x, y, mask)
    grads_and_vars = self.optimizer._compute_gradients(  # pylint: disable=protected-access
        losses, self.model.trainable_variables, tape=tape)
    # TF Privacy returned (sum + noise) / microbatches.
    microbatches = (self.optimizer._num_microbatches or  # pylint: disable=protected-access
                    tf.shape(losses)[0])
    scale = tf.cast(microbatches, losses.dtype) / self.expected_batch_size
    return [g * scale for g, _ in grads_and_vars], losses

  def _accumulate(self, x, y, mask):
    grads, losses = self.privatized_gradient(x, y, mask)
    self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
    mask = tf.cast(mask, losses.dtype)
    return tf.reduce_sum(losses) / tf.maximum(tf.reduce_sum(mask), 1.0)

  def apply(self):
    """Nothing: the update happened in accumulate."""
