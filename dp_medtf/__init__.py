"""dp_medtf: differentially private training for medical imaging, in TF/Keras.

Importing the package is light (TensorFlow is not loaded). It

  * sets TF_CPP_MIN_LOG_LEVEL to 3 unless already set, so that TensorFlow's
    C++ start-up lines ('Unable to register cuDNN factory', ...) stay off
    the console; set it to 0 to see them;
  * hides TF Privacy's deprecation note on make_keras_optimizer_class;
  * makes every saved package model loadable with
    tf.keras.models.load_model: the package's Keras layers are registered
    as soon as TensorFlow has loaded (now, if it already has). Loading
    through dp_medtf.models.load_model registers them in any case.

Example:

  >>> import dp_medtf
  >>> import tensorflow as tf
  >>> inputs = tf.keras.Input((4, 4, 3))
  >>> outputs = dp_medtf.models.layers.CentredConv2D(2, 3)(inputs)
  >>> tf.keras.Model(inputs, outputs).save('model.keras')
  >>> model = tf.keras.models.load_model('model.keras')
  >>> type(model.layers[1]).__name__
  'CentredConv2D'
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import sys
import warnings

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
warnings.filterwarnings(
    'ignore', message='`make_keras_optimizer_class` will be depracated',
    category=UserWarning)

__version__ = '0.1.0'
_SUBMODULES = ('attacks', 'cli', 'data', 'losses', 'metrics', 'models',
               'privacy', 'recipes', 'risk')


def __getattr__(name: str):
  """Imports submodules on first use: dp_medtf.models, dp_medtf.attacks, ..."""
  if name in _SUBMODULES:
    return importlib.import_module(f'{__name__}.{name}')
  raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


# ------------------------------------------- Keras objects of saved models
#
# A saved model names its layers 'dp_medtf>ScaleNorm', ...; Keras finds them
# only once the defining module has run. Importing those modules needs
# TensorFlow, which `import dp_medtf` does not load, so they are imported
# right after TensorFlow (and Keras, if it is being imported) has finished
# loading.

_WATCHED = ('tensorflow', 'keras')
_registered = False


def _loading(name: str) -> bool:
  """Whether module `name` is imported but still running its body."""
  module = sys.modules.get(name)
  spec = getattr(module, '__spec__', None)
  return bool(getattr(spec, '_initializing', False))


def _register_when_ready(just_loaded: str | None = None) -> None:
  """Registers the Keras objects once TensorFlow and Keras have loaded.

  Args:
    just_loaded: a module whose body has just finished running (the import
      system still marks it as loading).
  """
  global _registered
  if (_registered or 'tensorflow' not in sys.modules or
      any(_loading(name) for name in _WATCHED if name != just_loaded)):
    return
  _registered = True
  if _finder in sys.meta_path:
    sys.meta_path.remove(_finder)
  try:
    importlib.import_module(f'{__name__}.models').register_custom_objects()
  except Exception as e:  # pylint: disable=broad-except
    # Never break the user's `import tensorflow`; load_model still works.
    warnings.warn(f'dp_medtf could not register its Keras layers: {e!r}')


class _AfterImport(importlib.abc.MetaPathFinder):
  """Calls _register_when_ready after TensorFlow or Keras has loaded."""

  def find_spec(self, fullname, path=None, target=None):
    del path, target
    if fullname not in _WATCHED:
      return None
    # The finders after this one locate the module; its loader is wrapped.
    index = sys.meta_path.index(self) if self in sys.meta_path else -1
    spec = None
    for finder in sys.meta_path[index + 1:]:
      find = getattr(finder, 'find_spec', None)
      spec = find(fullname, None) if find else None
      if spec is not None:
        break
    if spec is None or spec.loader is None or not hasattr(
        spec.loader, 'exec_module'):
      return spec
    loader_exec = spec.loader.exec_module

    def exec_module(module):
      loader_exec(module)
      _register_when_ready(fullname)

    spec.loader.exec_module = exec_module
    return spec


_finder = _AfterImport()
if 'tensorflow' in sys.modules:
  _register_when_ready()
else:
  sys.meta_path.insert(0, _finder)
