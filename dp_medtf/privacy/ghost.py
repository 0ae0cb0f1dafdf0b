"""Ghost clipping: per-example norms without per-example gradients.

One forward pass records, for every layer with trainable variables, its rule's
`base` tensor (layer_rules, looked up in a layer_registry.Registry); one
backward pass of the summed loss gives dL/dbase, from which each layer's
per-example gradient norms follow (ghost norm or explicit, whichever is
cheaper for that layer). The clipped sum
sum_i min(1, C / ||g_i||) g_i is then formed in one of two ways:

  * 'second_pass' (ghost clipping, Li et al. 2021; Bu et al. 2022): a second
    backward pass of the loss re-weighted by min(1, C / ||g_i||), through the
    tape of the first forward pass;
  * 'bookkeeping' (Bu et al. 2023): from the per-layer quantities already at
    hand, since the output gradients of the re-weighted loss are the first
    pass's, row-scaled by the weights: A^T diag(w) G for ghost layers, the
    weighted sum for explicit ones. It skips the second backward pass.

Both need every example's output to depend on its own input only (no
BatchNorm), each trainable variable used by one layer call, and a functional
or Sequential Keras model; layer_checks.check_model verifies this when a DP
step is built.

Example:

  >>> model = tf.keras.Sequential([tf.keras.Input([3]),
  ...                              tf.keras.layers.Dense(2)])
  >>> loss = lambda y, out: tf.reduce_mean(tf.square(out))
  >>> summed, norms, losses = ghost_clipped_sum(
  ...     model, loss, tf.ones([4, 1, 3]), tf.zeros([4]), tf.ones([4]), 1.0)
  >>> norms.shape
  TensorShape([4])
"""

from __future__ import annotations

from typing import Callable

from absl import logging
import tensorflow as tf
from tensorflow_privacy.privacy.fast_gradient_clipping import (
    gradient_clipping_utils)

from dp_medtf.privacy import clipping
from dp_medtf.privacy import layer_registry

REWEIGHTING = ('second_pass', 'bookkeeping')


def _with_training(layer, kwargs):
  """Layers that take `training` run in training mode, as model(x, True)."""
  expects_training = getattr(layer, '_expects_training_arg', False)
  if expects_training and 'training' not in kwargs:
    return {**kwargs, 'training': True}
  return kwargs


def recorded_forward(model: tf.keras.Model, inputs: tf.Tensor,
                     registry: layer_registry.Registry, tape: tf.GradientTape,
                     num_examples):
  """Runs the model layer by layer, each trainable layer through its rule.

  Args:
    model: a functional or Sequential Keras model (nested ones are walked).
    inputs: [N, ...], the rows of `num_examples` examples, example-major.
    registry: the per-layer rules.
    tape: the tape recording the pass; each rule watches its base tensor.
    num_examples: B.

  Returns:
    (model outputs, list of (layer, base tensor, gradients_fn)).

  Raises:
    ValueError: for a subclassed model, or a trainable layer called twice
      (shared weights).
  """
  if not gradient_clipping_utils.has_internal_compute_graph(model):
    raise ValueError(
        f'Model {model.name} is not functional or Sequential: ghost clipping '
        "walks the layer graph. Use engine='vectorized'.")
  called = set()

  def generator(layer, args, kwargs):
    kwargs = _with_training(layer, kwargs)
    if not layer.trainable_variables:
      return layer(*args, **kwargs), None
    if id(layer) in called:
      raise ValueError(f'Layer {layer.name} is called more than once: shared '
                       "weights are not supported; use engine='vectorized'.")
    called.add(id(layer))
    rule = registry.lookup(layer)
    base, outputs, gradients = rule(layer, args, kwargs, tape, num_examples)
    return outputs, (layer, base, gradients)

  outputs, records = gradient_clipping_utils.model_forward_pass(
      model, inputs, generator)
  return outputs, [r for r in records if r is not None]


def per_example_losses(loss_fn: clipping.ExampleLoss, y: tf.Tensor,
                       outputs: tf.Tensor, num_examples) -> tf.Tensor:
  """[B] losses of B examples from the outputs of their B*K views."""
  grouped = tf.reshape(outputs, tf.concat(
      [[num_examples, -1], tf.shape(outputs)[1:]], 0))
  views = tf.shape(grouped)[1]

  def one(args):
    yi, out = args
    return loss_fn(tf.repeat(yi[None], views, axis=0), out)

  return tf.vectorized_map(one, (y, grouped))


def ghost_clipped_sum(model: tf.keras.Model, loss_fn: clipping.ExampleLoss,
                      x: tf.Tensor, y: tf.Tensor, mask: tf.Tensor,
                      clip_norm: float, *, reweighting: str = 'second_pass',
                      registry: layer_registry.Registry | None = None):
  """Sum over the batch of per-example gradients, each clipped to `clip_norm`.

  Same contract as clipping.vectorized_clipped_sum.

  Args:
    model: a functional or Sequential Keras model without BatchNorm.
    loss_fn: the loss of one example's K views.
    x: inputs [B, K, ...].
    y: labels [B, ...].
    mask: [B] float, 1 for real examples and 0 for padding.
    clip_norm: the bound C.
    reweighting: 'second_pass' or 'bookkeeping' (see the module docstring).
    registry: the per-layer rules; default_registry() if None.

  Returns:
    (list of summed clipped gradients, one per trainable variable,
     per-example norms [B], per-example losses [B]).
  """
  if reweighting not in REWEIGHTING:
    raise ValueError(f'Unknown reweighting {reweighting!r}; choose one of '
                     f'{REWEIGHTING}.')
  registry = registry or layer_registry.default_registry()
  variables = model.trainable_variables
  b = x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]
  flat_x = tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], 0))
  if x.shape[0] is not None and x.shape[1] is not None:
    flat_x = tf.ensure_shape(flat_x, [x.shape[0] * x.shape[1]] + x.shape[2:])

  with tf.GradientTape(persistent=True,
                       watch_accessed_variables=reweighting == 'second_pass'
                       ) as tape:
    outputs, records = recorded_forward(model, flat_x, registry, tape, b)
    losses = per_example_losses(loss_fn, y, outputs, b)
    total = tf.reduce_sum(losses)
  base_grads = tape.gradient(total, [base for _, base, _ in records],
                             unconnected_gradients=tf.UnconnectedGradients.ZERO)

  by_variable = {}
  for (_, _, gradients), g in zip(records, base_grads):
    for vg in gradients(g):
      if vg.variable.ref() in by_variable:
        raise ValueError(f'Variable {vg.variable.name} is shared by two '
                         "layers; use engine='vectorized'.")
      by_variable[vg.variable.ref()] = vg
  logging.info('Ghost clipping (%s), per-example gradient of each kernel: %s',
               reweighting, _methods(by_variable, [r[0] for r in records]))
  missing = [v.name for v in variables if v.ref() not in by_variable]
  if missing:
    raise ValueError(f'No per-example gradient rule reached variables '
                     f'{missing}.')
  norms = tf.sqrt(tf.add_n([by_variable[v.ref()].squared_norms
                            for v in variables]))
  weights = tf.stop_gradient(clipping.clip_weights(norms, clip_norm, mask))
  if reweighting == 'second_pass':
    summed = tape.gradient(losses, variables, output_gradients=weights,
                           unconnected_gradients=tf.UnconnectedGradients.ZERO)
  else:
    summed = [by_variable[v.ref()].weighted_sum(weights) for v in variables]
  del tape
  return summed, norms, losses


def _methods(by_variable, layers) -> str:
  """'name: ghost, ...' for the layers' kernels."""
  return ', '.join(
      f'{layer.name}: {by_variable[layer.kernel.ref()].method}'
      for layer in layers if getattr(layer, 'kernel', None) is not None and
      layer.kernel.ref() in by_variable)


def engine(reweighting: str) -> Callable[..., tuple]:
  """ghost_clipped_sum with a fixed reweighting, as a clipping engine."""
  def clipped_sum(model, loss_fn, x, y, mask, clip_norm):
    return ghost_clipped_sum(model, loss_fn, x, y, mask, clip_norm,
                             reweighting=reweighting)
  return clipped_sum
