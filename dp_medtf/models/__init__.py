"""Model registry: a model is one module here that defines `build`.

`build(model_config, input_shape, num_classes)` imports
dp_medtf.models.<model_config.name> and calls its
`build(input_shape, num_classes, **other_fields)`, so adding a model is
adding one file.

Example:

  >>> import ml_collections
  >>> cfg = ml_collections.ConfigDict(dict(name='resnet9', width=16))
  >>> build(cfg, (32, 32, 3), 2).name
  'resnet9'
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Mapping

import tensorflow as tf

_NOT_MODELS = ('layers',)


def available() -> list[str]:
  """Names of the registered models."""
  return sorted(m.name for m in pkgutil.iter_modules(__path__)
                if m.name not in _NOT_MODELS and not m.name.startswith('_'))


def build(model_config: Mapping[str, Any], input_shape: tuple[int, ...],
          num_classes: int) -> tf.keras.Model:
  """Builds the model named by model_config['name'].

  Args:
    model_config: 'name' plus keyword arguments of that model's build().
    input_shape: shape of one input, without the batch axis.
    num_classes: number of outputs per pixel or image.

  Returns:
    The Keras model.

  Raises:
    ValueError: for an unknown model name.
  """
  kwargs = dict(model_config)
  name = kwargs.pop('name')
  if name not in available():
    raise ValueError(f'Unknown model {name!r}; available: {available()}.')
  module = importlib.import_module(f'{__name__}.{name}')
  return module.build(tuple(input_shape), num_classes, **kwargs)
