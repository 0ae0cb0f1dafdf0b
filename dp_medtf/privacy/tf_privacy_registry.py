"""The project's per-layer rules as TF Privacy's fast-clipping LayerRegistry.

TF Privacy's ghost clipping (`clip_grads.compute_gradient_norms`, `DPModel`)
looks up each layer's squared-norm function in a LayerRegistry; its own
covers Dense and Embedding. `to_tf_privacy` adds the rules of a
dp_medtf.privacy.layer_registry.Registry (convolutions, their weight-centred
and transposed forms, group and layer normalisation), each reduced to the
squared norms that TF Privacy expects.

Example:

  >>> registry = to_tf_privacy(layer_registry.default_registry())
  >>> registry.is_elem(tf.keras.layers.Conv2D(4, 3))
  True
"""

from __future__ import annotations

from typing import Any, Mapping

import tensorflow as tf
from tensorflow_privacy.privacy.fast_gradient_clipping import (
    layer_registry as tfp_layer_registry)

from dp_medtf.privacy import layer_registry
from dp_medtf.privacy import layer_rules


def _squared_norms_rule(rule: layer_rules.Rule):
  """`rule` with gradients_fn returning the [B] squared norms of the layer's
  variables together, as TF Privacy's rules do."""

  def tf_privacy_rule(layer, args, kwargs: Mapping[str, Any], tape,
                      num_microbatches=None):
    base, outputs, gradients = rule(layer, args, kwargs, tape,
                                    num_microbatches)
    return base, outputs, lambda g: tf.add_n(
        [v.squared_norms for v in gradients(g)])

  return tf_privacy_rule


def to_tf_privacy(
    registry: layer_registry.Registry) -> tfp_layer_registry.LayerRegistry:
  """TF Privacy's default LayerRegistry with the registry's rules added.

  Args:
    registry: the rules to add; they replace TF Privacy's for the layer
      classes both hold (Dense).

  Returns:
    A LayerRegistry for TF Privacy's `compute_gradient_norms` and `DPModel`.
  """
  result = tfp_layer_registry.make_default_layer_registry()
  for layer_class, rule in registry.rules().items():
    result.insert(layer_class, _squared_norms_rule(rule))
  return result
