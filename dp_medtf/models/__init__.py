"""Model registry: a model is one module here that defines `build`.

`build(model_config, input_shape, num_classes)` imports
dp_medtf.models.<model_config.name> and calls its
`build(input_shape, num_classes, **other_fields)`, so adding a model is
adding one file.

`load_model(path)` loads a saved .keras model of the package (any model
here, or one with the imprint block) in a fresh session.

Example:

  >>> import ml_collections
  >>> cfg = ml_collections.ConfigDict(dict(name='resnet9', width=16))
  >>> model = build(cfg, (32, 32, 3), 2)
  >>> model.name
  'resnet9'
  >>> model.save('/tmp/resnet9.keras')
  >>> load_model('/tmp/resnet9.keras').name
  'resnet9'
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Mapping, TYPE_CHECKING

if TYPE_CHECKING:
  import tensorflow as tf

_NOT_MODELS = ('layers',)
# The modules that define (and register) the package's Keras objects.
CUSTOM_OBJECT_MODULES = ('dp_medtf.models.layers', 'dp_medtf.attacks.imprint')


def register_custom_objects() -> None:
  """Registers every Keras layer of the package, for loading saved models."""
  for module in CUSTOM_OBJECT_MODULES:
    importlib.import_module(module)


def load_model(path: str, **kwargs) -> tf.keras.Model:
  """Loads a saved model (.keras) of the package.

  Args:
    path: the .keras file.
    **kwargs: passed to tf.keras.models.load_model (compile, ...).

  Returns:
    The model.
  """
  register_custom_objects()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top,redefined-outer-name
  return tf.keras.models.load_model(path, **kwargs)


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
