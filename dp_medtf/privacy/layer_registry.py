"""Which per-example gradient rule each layer takes, by exact layer class.

A Registry maps layer classes to the rules of dp_medtf.privacy.layer_rules,
each bound to one mode ('mixed', 'ghost' or 'explicit'); a trainable layer of
a class it does not hold takes the per-example loop rule (logged) or is
refused. `default_registry` holds the rules for the layer types of the
project's models; the ghost engines (dp_medtf.privacy.ghost) look up every
trainable layer in it, and layer_checks trusts the layers it holds to keep
the examples of a batch apart.

Example:

  >>> registry = default_registry()
  >>> registry.lookup(tf.keras.layers.Conv2D(4, 3)).func.__name__
  'conv_rule'
  >>> registry.is_elem(tf.keras.layers.BatchNormalization())
  False
"""

from __future__ import annotations

import functools

from absl import logging
import tensorflow as tf

from dp_medtf.models import layers as dp_layers
from dp_medtf.privacy import layer_rules


class Registry:
  """Layer class -> rule, by exact class (a subclass may change `call`).

  Args:
    mode: 'mixed' (per layer, the cheaper of ghost norm and explicit
      per-example gradient), 'ghost' (ghost norms wherever available) or
      'explicit'.
    fallback: what to do for a trainable layer with no rule: 'loop' (the
      per-example loop rule, logged) or 'error'.
  """

  def __init__(self, mode: str = 'mixed', fallback: str = 'loop'):
    if mode not in layer_rules.MODES:
      raise ValueError(f'Unknown mode {mode!r}; choose one of '
                       f'{layer_rules.MODES}.')
    if fallback not in ('loop', 'error'):
      raise ValueError(f"fallback must be 'loop' or 'error', got {fallback!r}.")
    self.mode = mode
    self.fallback = fallback
    self._rules: dict[type, layer_rules.Rule] = {}

  def insert(self, layer_class: type, rule: layer_rules.Rule) -> None:
    """Registers `rule` for layers of exactly `layer_class`."""
    self._rules[layer_class] = functools.partial(rule, mode=self.mode)

  def is_elem(self, layer: tf.keras.layers.Layer) -> bool:
    """Whether a rule is registered for the layer's exact class."""
    return type(layer) in self._rules

  def rules(self) -> dict[type, layer_rules.Rule]:
    """The registered layer classes and their rules."""
    return dict(self._rules)

  def lookup(self, layer: tf.keras.layers.Layer) -> layer_rules.Rule:
    """The layer's rule, or the fallback for an unregistered one.

    Raises:
      NotImplementedError: for an unregistered trainable layer when the
        fallback is 'error'.
    """
    if type(layer) in self._rules:
      return self._rules[type(layer)]
    if self.fallback == 'error':
      raise NotImplementedError(
          f'Layer {layer.name} ({type(layer).__name__}) has no per-example '
          f'gradient rule; registered: '
          f'{sorted(c.__name__ for c in self._rules)}.')
    logging.warning(
        'Layer %s (%s) has no per-example gradient rule: its per-example '
        'gradients are computed one example at a time (slow).', layer.name,
        type(layer).__name__)
    return functools.partial(layer_rules.per_example_loop_rule, mode=self.mode)


def default_registry(mode: str = 'mixed', fallback: str = 'loop') -> Registry:
  """Rules for the layer types of the project's models."""
  registry = Registry(mode, fallback)
  registry.insert(tf.keras.layers.Dense, layer_rules.dense_rule)
  for conv in ((tf.keras.layers.Conv1D, tf.keras.layers.Conv2D,
                tf.keras.layers.Conv3D) + layer_rules.TRANSPOSED_CONVS +
               dp_layers.CENTRED_CONVS):
    registry.insert(conv, layer_rules.conv_rule)
  for norm in (tf.keras.layers.GroupNormalization, dp_layers.ScaleNorm):
    registry.insert(norm, layer_rules.group_norm_rule)
  registry.insert(tf.keras.layers.LayerNormalization,
                  layer_rules.layer_norm_rule)
  return registry

