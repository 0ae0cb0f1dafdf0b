"""Build-time checks that a model suits per-example clipping.

Per-example clipping bounds each example's contribution to the summed
gradient by C only if (a) every example's output depends on that example
alone, (b) nothing but the noised gradient carries information about the
batch out of the step, and (c) the engine sees every use of every trainable
variable. `check_model` runs once when a DP step is built and raises a
ValueError naming the first layer that breaks one of these:

  * BatchNormalization (any subclass, SyncBatchNormalization) in training
    mode: batch statistics mix examples and its moving statistics are
    updated from the batch without noise. A frozen one (trainable=False)
    runs in inference mode and is accepted.
  * Normalisation over the batch axis (LayerNormalization or
    GroupNormalization with axis 0).
  * Any layer that changes a non-trainable variable when the model runs in
    training mode (probe: one forward pass on a probe batch; the variables
    are restored afterwards).
  * Any layer whose output rows depend on other rows, for layers not known
    to be per-example (the registry's types and the stateless Keras layers
    in PER_EXAMPLE_LAYERS are; Lambda, TF-op and custom layers are probed):
    the output for example 0 alone, and within the batch after the other
    examples are changed, must equal its output within the probe batch. A
    custom layer whose output is random (and so cannot be compared) is
    refused unless declared with `register_per_example`.
  * Under the ghost engines, a trainable variable read by more than one
    layer call (a layer called twice, a variable tracked by two layers,
    weight tying through a Lambda's closure): the ghost engines take each
    variable's per-example gradient from the one layer that owns it and
    would miss the other uses. Such a model must use engine='vectorized',
    whose per-example gradients are exact whatever the weight sharing; the
    check raises rather than switching engines, so that the engine that
    runs is the one configured.
  * Grouped convolutions (groups > 1) under the vectorized engine: pfor
    cannot batch their filter gradient. The ghost engines take their
    per-example gradients one example at a time (layer_registry's fallback).
  * Under the ghost engines, a subclassed model (they walk the layer graph).

The probe batch is PROBE_EXAMPLES random inputs of the model's input shape
drawn with a stateless generator (the global random state is not touched).

Example:

  >>> model = tf.keras.Sequential([
  ...     tf.keras.Input([3]),
  ...     tf.keras.layers.BatchNormalization(name='batch_normalization')])
  >>> check_model(model, 'vectorized')
  Traceback (most recent call last):
  ...
  ValueError: Layer 'batch_normalization' (BatchNormalization) uses batch ...
"""

from __future__ import annotations

import dataclasses
from typing import Any

from absl import logging
import numpy as np
import tensorflow as tf
from tensorflow_privacy.privacy.fast_gradient_clipping import (
    gradient_clipping_utils)

from dp_medtf.privacy import layer_registry

PROBE_EXAMPLES = 3
# Rows of a per-example layer computed alone or within a batch differ by
# float32 rounding only (different reduction blocking): a few ulps of the
# output's scale. Batch mixing changes them at the scale of the inputs.
RELATIVE_TOLERANCE = 1e-4
_GHOST_ENGINES = ('ghost', 'ghost_bk')
_BATCH_NORM_CLASSES = ('BatchNormalization', 'BatchNormalizationBase',
                       'SyncBatchNormalization')

_L = tf.keras.layers
# Keras layers without trainable variables whose output rows depend on
# their own input rows only (exact types: a subclass may change `call`).
PER_EXAMPLE_LAYERS: set[type] = {
    _L.InputLayer, _L.Activation, _L.ReLU, _L.LeakyReLU, _L.ELU, _L.Softmax,
    _L.ThresholdedReLU, _L.Add, _L.Subtract, _L.Multiply, _L.Average,
    _L.Maximum, _L.Minimum, _L.Concatenate, _L.Flatten, _L.Reshape,
    _L.Permute, _L.RepeatVector, _L.Identity, _L.Dropout, _L.SpatialDropout1D,
    _L.SpatialDropout2D, _L.SpatialDropout3D, _L.GaussianNoise,
    _L.GaussianDropout, _L.AlphaDropout, _L.MaxPool1D, _L.MaxPool2D,
    _L.MaxPool3D, _L.AveragePooling1D, _L.AveragePooling2D,
    _L.AveragePooling3D, _L.GlobalAveragePooling1D, _L.GlobalAveragePooling2D,
    _L.GlobalAveragePooling3D, _L.GlobalMaxPool1D, _L.GlobalMaxPool2D,
    _L.GlobalMaxPool3D, _L.Cropping1D, _L.Cropping2D, _L.Cropping3D,
    _L.ZeroPadding1D, _L.ZeroPadding2D, _L.ZeroPadding3D, _L.UpSampling1D,
    _L.UpSampling2D, _L.UpSampling3D, _L.Rescaling, _L.Resizing,
    _L.CenterCrop,
}


def register_per_example(layer_class: type) -> None:
  """Declares that layers of exactly `layer_class` never mix examples.

  Their output is then not probed; use it for a custom layer whose output is
  random in training mode (and so cannot be compared between calls).
  """
  PER_EXAMPLE_LAYERS.add(layer_class)


def _describe(layer: tf.Module) -> str:
  return f"Layer '{layer.name}' ({type(layer).__name__})"


def _all_layers(model: tf.keras.Model) -> list[tf.keras.layers.Layer]:
  """Every layer inside the model, nested ones included, in model order."""
  # pylint: disable=protected-access
  return list(model._flatten_layers(include_self=False, recursive=True))


def _is_batch_norm(layer) -> bool:
  return any(c.__name__ in _BATCH_NORM_CLASSES for c in type(layer).__mro__)


def _is_conv(layer) -> bool:
  return isinstance(layer, (_L.Conv1D, _L.Conv2D, _L.Conv3D))


def _static_checks(model: tf.keras.Model, engine: str) -> None:
  """The checks that need only the layers' types and configuration."""
  if (engine in _GHOST_ENGINES and
      not gradient_clipping_utils.has_internal_compute_graph(model)):
    raise ValueError(
        f"Model '{model.name}' ({type(model).__name__}) is not functional or "
        f"Sequential: engine {engine!r} walks the layer graph. Use "
        "engine='vectorized'.")
  for layer in _all_layers(model):
    if _is_batch_norm(layer) and layer.trainable:
      raise ValueError(
          f'{_describe(layer)} uses batch statistics in training mode; '
          'per-example clipping cannot bound its sensitivity. Use '
          'GroupNormalization/LayerNormalization.')
    if isinstance(layer, (_L.LayerNormalization, _L.GroupNormalization)):
      axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [
          layer.axis]
      rank = len(layer.input_spec.shape) if (
          layer.input_spec is not None and
          layer.input_spec.shape is not None) else None
      if any(a == 0 or (rank is not None and a == -rank) for a in axes):
        raise ValueError(f'{_describe(layer)} normalises over the batch axis; '
                         'per-example clipping cannot bound its sensitivity.')
    if (engine == 'vectorized' and _is_conv(layer) and
        getattr(layer, 'groups', 1) != 1):
      raise ValueError(
          f'{_describe(layer)} is a grouped convolution (groups='
          f"{layer.groups}), which engine='vectorized' cannot batch per "
          "example; use engine='ghost' or 'ghost_bk', or groups=1.")


def _probe_inputs(model: tf.keras.Model, seed: int):
  """PROBE_EXAMPLES random rows for each of the model's inputs, or None."""
  specs = getattr(model, 'inputs', None)
  if specs:
    shapes = [tuple(s.shape[1:]) for s in specs]
    dtypes = [s.dtype for s in specs]
  else:
    shape = getattr(model, '_build_input_shape', None)
    if shape is None or not isinstance(shape, (tuple, list, tf.TensorShape)):
      return None
    shapes, dtypes = [tuple(tf.TensorShape(shape)[1:])], [tf.float32]
  tensors = []
  for i, (shape, dtype) in enumerate(zip(shapes, dtypes)):
    if any(d is None for d in shape):
      return None
    full = (PROBE_EXAMPLES,) + shape
    if dtype.is_integer:
      t = tf.random.stateless_uniform(full, (seed, i), 0, 2, dtype=tf.int32)
      tensors.append(tf.cast(t, dtype))
    else:
      tensors.append(tf.cast(
          tf.random.stateless_normal(full, (seed, i)), dtype))
  if specs:
    return tf.nest.pack_sequence_as(model._nested_inputs, tensors)  # pylint: disable=protected-access
  return tensors[0]


def _num_rows(structure) -> int | None:
  for t in tf.nest.flatten(structure):
    if isinstance(t, tf.Tensor) and t.shape.rank:
      return t.shape[0]
  return None


def _map_rows(fn, structure, rows: int):
  """Applies fn to every tensor of `structure` with `rows` leading rows."""
  return tf.nest.map_structure(
      lambda t: fn(t) if (isinstance(t, tf.Tensor) and t.shape.rank and
                          t.shape[0] == rows) else t, structure)


def _perturb_others(t: tf.Tensor) -> tf.Tensor:
  """Keeps row 0 and changes the other rows (floats only)."""
  if not t.dtype.is_floating:
    return t
  return tf.concat([t[:1], t[1:] * -1.5 + 0.5], 0)


def _row0_difference(a, b) -> float:
  """max |a[0] - b[0]| over the outputs, relative to the outputs' scale."""
  worst = 0.0
  for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
    if not (isinstance(x, tf.Tensor) and x.dtype.is_floating and
            x.shape.rank):
      continue
    x0 = x[:1].numpy().astype(np.float64)
    y0 = y[:1].numpy().astype(np.float64)
    scale = max(np.abs(x0).max(initial=0.0), np.abs(y0).max(initial=0.0),
                1e-12)
    worst = max(worst, np.abs(x0 - y0).max(initial=0.0) / scale)
  return worst


def _training_kwargs(layer, kwargs, training: bool):
  if getattr(layer, '_expects_training_arg', False):
    return {**kwargs, 'training': training}
  return kwargs


def _check_rows_independent(layer, args, kwargs, outputs) -> None:
  """Raises if the layer's row 0 depends on its other rows.

  Args:
    layer: the layer (or a subclassed model).
    args, kwargs: its call's arguments on the probe batch (training mode).
    outputs: its outputs on them.
  """
  rows = _num_rows(args)
  if rows is None or rows < 2:
    return
  first = lambda t: t[:1]
  alone = layer(*_map_rows(first, args, rows), **_map_rows(first, kwargs, rows))
  others = layer(*_map_rows(_perturb_others, args, rows), **kwargs)
  if max(_row0_difference(outputs, alone),
         _row0_difference(outputs, others)) <= RELATIVE_TOLERANCE:
    return
  again = layer(*args, **kwargs)
  if _row0_difference(outputs, again) > RELATIVE_TOLERANCE:
    # Random in training mode: compare in inference mode instead.
    if not getattr(layer, '_expects_training_arg', False):
      _raise_random(layer)
    kwargs = _training_kwargs(layer, kwargs, False)
    outputs = layer(*args, **kwargs)
    if _row0_difference(outputs, layer(*args, **kwargs)) > (
        RELATIVE_TOLERANCE):
      _raise_random(layer)
    _check_rows_independent(layer, args, kwargs, outputs)
    return
  raise ValueError(
      f"{_describe(layer)}'s output for one example depends on the other "
      'examples of the batch; per-example clipping cannot bound its '
      'sensitivity.')


def _raise_random(layer):
  raise ValueError(
      f'{_describe(layer)} has a random output, so whether it mixes the '
      'examples of a batch cannot be checked; if it does not, declare it with '
      'dp_medtf.privacy.layer_checks.register_per_example.')


def _needs_row_probe(layer, registry: layer_registry.Registry) -> bool:
  """Whether the layer's type is not known to keep examples apart."""
  return not (type(layer) in PER_EXAMPLE_LAYERS or registry.is_elem(layer))


@dataclasses.dataclass
class _Reader:
  layer: tf.keras.layers.Layer
  call: int


def _walk(model: tf.keras.Model, inputs, registry: layer_registry.Registry):
  """Runs the model layer by layer in training mode, probing each layer.

  Returns:
    {variable ref: [(layer, call index), ...]}: the layer calls that read
    each trainable variable.
  """
  readers: dict[Any, list[_Reader]] = {}
  calls: dict[int, int] = {}

  def generator(layer, args, kwargs):
    kwargs = _training_kwargs(layer, kwargs, True)
    own = _snapshot(layer.non_trainable_weights)
    with tf.GradientTape(watch_accessed_variables=True) as tape:
      outputs = layer(*args, **kwargs)
    _check_unchanged(own, lambda unused_variable: layer)
    call = calls.get(id(layer), 0)
    calls[id(layer)] = call + 1
    for v in tape.watched_variables():
      readers.setdefault(v.ref(), []).append(_Reader(layer, call))
    if _needs_row_probe(layer, registry):
      _check_rows_independent(layer, args, kwargs, outputs)
    return outputs, None

  gradient_clipping_utils.model_forward_pass(model, inputs, generator)
  return readers


def _check_sharing(model: tf.keras.Model, readers, engine: str) -> None:
  trainable = {v.ref() for v in model.trainable_variables}
  for ref, uses in readers.items():
    if ref not in trainable or len(uses) < 2:
      continue
    variable = ref.deref()
    names = {id(u.layer): u.layer for u in uses}
    if len(names) == 1:
      where = f'{_describe(uses[0].layer)}, called {len(uses)} times'
    else:
      where = 'layers ' + ', '.join(
          f"'{l.name}' ({type(l).__name__})" for l in names.values())
    if engine in _GHOST_ENGINES:
      raise ValueError(
          f"Variable '{variable.name}' is used by {where}: engine {engine!r} "
          'takes each per-example gradient from one layer and would miss the '
          "other uses. Use engine='vectorized'.")
    logging.info("Variable '%s' is used by %s (exact under engine %r).",
                 variable.name, where, engine)


def _snapshot(variables) -> list[tuple[tf.Variable, np.ndarray]]:
  """(variable, value) of each distinct non-trainable variable."""
  seen, out = set(), []
  for v in variables:
    if v.trainable or v.ref() in seen:
      continue
    seen.add(v.ref())
    out.append((v, v.numpy()))
  return out


def _check_unchanged(snapshot, owner) -> None:
  """Raises, naming owner(variable), if a snapshot variable has changed."""
  for v, value in snapshot:
    if not np.array_equal(v.numpy(), value):
      raise ValueError(
          f"{_describe(owner(v))} updates its non-trainable variable "
          f"'{v.name}' in training mode, from the batch and without noise.")


def _owner(model: tf.keras.Model, variable: tf.Variable) -> tf.Module:
  """The innermost layer whose weights include `variable` (else the model)."""
  best, best_size = model, len(model.weights)
  for layer in _all_layers(model):
    weights = layer.weights
    if any(w is variable for w in weights) and len(weights) < best_size:
      best, best_size = layer, len(weights)
  return best


def check_model(model: tf.keras.Model, engine: str, *,
                registry: layer_registry.Registry | None = None,
                seed: int = 0) -> None:
  """Raises if the model breaks per-example clipping under `engine`.

  Args:
    model: the built Keras model the DP step trains.
    engine: 'vectorized', 'ghost' or 'ghost_bk'.
    registry: the layer types with per-example gradient rules (known not to
      mix examples); default_registry() if None.
    seed: seeds the probe batch.

  Raises:
    ValueError: naming the first offending layer or variable (see the module
      docstring for the conditions).
  """
  registry = registry or layer_registry.default_registry()
  _static_checks(model, engine)
  inputs = _probe_inputs(model, seed)
  if inputs is None:
    logging.warning(
        "Model '%s' has no fixed input shape: only its layer types were "
        'checked for per-example clipping.', model.name)
    return
  before = _snapshot(model.variables)
  owner = lambda v: _owner(model, v)
  try:
    if gradient_clipping_utils.has_internal_compute_graph(model):
      readers = _walk(model, inputs, registry)
      _check_unchanged(before, owner)
    else:
      readers = None
      outputs = model(inputs, training=True)
      _check_unchanged(before, owner)
      _check_rows_independent(model, (inputs,), {'training': True}, outputs)
  finally:
    for v, value in before:
      if not np.array_equal(v.numpy(), value):
        v.assign(value)
  if readers is not None:
    _check_sharing(model, readers, engine)
