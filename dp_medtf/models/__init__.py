"""Model registry: a model is one module here that defines `build`.

`build(model_config, input_shape, num_classes)` imports
dp_medtf.models.<model_config.name> and calls its
`build(input_shape, num_classes, **other_fields)`, so adding a model is
adding one file. The field `single_logit` (any model) gives a two-class
task one learned logit z, the log-odds of class 1 (the paper authors'
HAM10000 head, num_classes 1 with a sigmoid cross-entropy), instead of two:
the model then ends in layers.BinaryLogits, which outputs [0, z], so that
the softmax cross-entropy of the losses module is the sigmoid cross-entropy
of z and argmax predicts class 1 when z > 0.

`load_model(path)` loads a saved .keras model of the package (any model
here, or one with the imprint block) in a fresh session.

Example:

  >>> import ml_collections
  >>> cfg = ml_collections.ConfigDict(dict(name='resnet9', width=16))
  >>> model = build(cfg, (32, 32, 3), 2)
  >>> model.name
  'resnet9'
  >>> model.save('resnet9.keras')
  >>> load_model('resnet9.keras').name
  'resnet9'
"""

from __future__ import annotations

import importlib
import inspect
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
    model_config: 'name', optionally 'single_logit', plus keyword arguments
      of that model's build().
    input_shape: shape of one input, without the batch axis.
    num_classes: number of classes per pixel or image.

  Returns:
    The Keras model: num_classes logits, or 1 with single_logit.

  Raises:
    ValueError: for an unknown model name or field, or single_logit with
      other than two classes.
  """
  kwargs = dict(model_config)
  name = kwargs.pop('name')
  if name not in available():
    raise ValueError(f'Unknown model {name!r}; available: {available()}.')
  single_logit = kwargs.pop('single_logit', False)
  if single_logit and num_classes != 2:
    raise ValueError('--config.model.single_logit needs num_classes = 2, got '
                     f'{num_classes}.')
  module = importlib.import_module(f'{__name__}.{name}')
  fields = list(inspect.signature(module.build).parameters)[2:]
  unknown = sorted(set(kwargs) - set(fields))
  if unknown:
    raise ValueError(
        f'--config.model.{unknown[0]}: not a field of model {name!r}; its '
        f'fields: name, single_logit, {", ".join(fields)}.')
  model = module.build(tuple(input_shape), 1 if single_logit else num_classes,
                       **kwargs)
  if not single_logit:
    return model
  # pylint: disable=g-import-not-at-top,redefined-outer-name
  import tensorflow as tf
  from dp_medtf.models import layers
  # pylint: enable=g-import-not-at-top,redefined-outer-name
  logits = layers.BinaryLogits(name='binary_logits')(model.outputs[0])
  return tf.keras.Model(model.inputs, logits, name=model.name)
