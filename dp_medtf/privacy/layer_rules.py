"""Per-layer-type rules for per-example gradient norms and clipped sums.

A rule runs one layer's forward pass and returns the tensors `base` whose
gradients, taken from the summed loss of a batch, determine the per-example
gradients of the layer's variables.

Dense and convolution layers: `base` is the output before the activation.
The kernel gradient of example i is A_i^T G_i, with A_i the rows (or
unfolded patches) of its input and G_i the rows of its output gradient
(T rows: its views times its output positions). From (A, G) the rule either

  * materialises the per-example gradients ('explicit'), or
  * computes their norms without them ('ghost'): ||A_i^T G_i||_F^2 =
    <A_i A_i^T, G_i G_i^T> (Goodfellow 2015; Li et al. 2021 for sequences;
    Bu et al. 2022 for convolutions through unfolded patches),

choosing per layer, as in mixed ghost clipping (Bu et al. 2022), the cheaper:
ghost when its grams' T^2 (d + p) multiply-adds undercut the explicit
gradient's T d p (d: patch size, p: output channels), which holds for the
small feature maps and dense layers at the end of a network.

Weight-centred convolutions (dp_medtf.models.layers.CENTRED_CONVS) convolve
with W - mean(W) (the mean over the d entries of each kernel slice). The raw
kernel's gradient is then C A_i^T G_i with C = I - 1 1^T / d the centring
projection, and C A_i^T G_i = (A_i C)^T G_i: the ghost norm of the patches
minus their row means. The explicit gradient and the weighted sums
differentiate through the layer's own centring.

Normalisation layers (GroupNormalization, ScaleNorm, LayerNormalization):
`base` is a per-example copy of gamma and of beta, so the same backward pass
gives their per-example gradients directly.

Layers without a rule of their own take `per_example_loop_rule`, one backward
pass per example. dp_medtf.privacy.layer_registry maps layer classes to these
rules.

The rules follow the signature of TF Privacy's fast-gradient-clipping layer
registry, `rule(layer, args, kwargs, tape, num_microbatches) -> (base,
outputs, gradients_fn)`, except that `gradients_fn(dL/dbase)` returns one
`VariableGradients` per trainable variable (norms and a weighted sum) rather
than only the squared norms (dp_medtf.privacy.tf_privacy_registry adapts
them to TF Privacy).

Example:

  >>> layer = tf.keras.layers.Dense(2)
  >>> x = tf.ones([4, 3])
  >>> with tf.GradientTape() as tape:
  ...   base, outputs, gradients_fn = dense_rule(layer, (x,), {}, tape)
  ...   loss = tf.reduce_sum(outputs)
  >>> kernel, bias = gradients_fn(tape.gradient(loss, base))
  >>> kernel.method, bias.method, kernel.squared_norms.shape
  ('ghost', 'explicit', TensorShape([4]))
  >>> ghost_squared_norms(tf.ones([2, 3, 4]), tf.ones([2, 3, 5])).numpy()
  array([180., 180.], dtype=float32)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from typing import Any, Callable, Sequence

from absl import logging
import tensorflow as tf

from dp_medtf.models import layers as dp_layers
from dp_medtf.privacy import clipping

# The rules' `mode`: how a kernel's per-example norms are found (use_ghost).
MODES = ('mixed', 'ghost', 'explicit')


@dataclasses.dataclass(frozen=True)
class VariableGradients:
  """The per-example gradients of one variable, materialised or factored.

  Attributes:
    variable: the variable.
    squared_norms: [B] squared L2 norms of the B per-example gradients.
    weighted_sum: maps weights w [B] to sum_i w_i g_i (the variable's shape).
    method: 'explicit' or 'ghost', for logging.
  """
  variable: tf.Variable
  squared_norms: tf.Tensor
  weighted_sum: Callable[[tf.Tensor], tf.Tensor]
  method: str


GradientsFn = Callable[[tf.Tensor], list[VariableGradients]]
Rule = Callable[..., tuple[tf.Tensor, Any, GradientsFn]]


def explicit(variable: tf.Variable,
             per_example: tf.Tensor) -> VariableGradients:
  """VariableGradients from materialised per-example gradients [B, ...]."""
  return VariableGradients(
      variable, clipping.per_example_squared_norms(per_example),
      lambda w: tf.tensordot(w, per_example, axes=1), 'explicit')


def ghost_squared_norms(left: tf.Tensor, right: tf.Tensor) -> tf.Tensor:
  """||left_i^T right_i||_F^2 for each i, without forming the product.

  Args:
    left: [B, T, d].
    right: [B, T, p].

  Returns:
    [B] squared norms sum_{t,s} (l_t . l_s)(r_t . r_s).
  """
  if left.shape[1] == 1:  # One row: ||l||^2 ||r||^2.
    return (tf.reduce_sum(tf.square(left), axis=[1, 2]) *
            tf.reduce_sum(tf.square(right), axis=[1, 2]))
  left_gram = tf.matmul(left, left, transpose_b=True)
  right_gram = tf.matmul(right, right, transpose_b=True)
  return tf.reduce_sum(left_gram * right_gram, axis=[1, 2])


def use_ghost(mode: str, rows: int, d: int, p: int) -> bool:
  """Whether a layer's kernel takes the ghost norm (else explicit).

  Args:
    mode: 'mixed': the one with fewer operations; per example the ghost
      norm's two T x T grams take T^2 (d + p) multiply-adds, the explicit
      gradient T d p (and its d p memory, against T^2). 'ghost' or
      'explicit': that one wherever possible.
    rows: T, the rows of one example (its views times its output positions).
    d: the input (patch) size of the kernel.
    p: its output size.
  """
  if mode == 'ghost':
    return True
  if mode == 'explicit':
    return False
  return rows * (d + p) < d * p


def per_example_rows(t: tf.Tensor, num_examples) -> tf.Tensor:
  """[N, ..., c] rows of B examples (example-major) -> [B, N/B * ..., c]."""
  return tf.reshape(t, tf.stack([num_examples, -1, tf.shape(t)[-1]]))


# Up to this many examples, map_examples unrolls fn once per example.
UNROLL_EXAMPLES = 32


def map_examples(fn: Callable[..., Any], tensors: Sequence[tf.Tensor],
                 num_examples) -> Any:
  """Stacks fn over examples, each a contiguous slice of N/B rows.

  Up to UNROLL_EXAMPLES examples (a static count), a Python loop: one op
  per example, no while_loop. Beyond, tf.vectorized_map (a while_loop for
  ops pfor cannot vectorise, such as a conv's filter gradient), so that the
  graph holds fn once: unrolled, tracing grew with the chunk (ResNet-9 at
  width 4, 16 x 16: 110 s for a chunk of 316 examples, 11 s vectorised),
  while at a chunk of 32 (width 64, 64 x 64) the loop runs 6% faster.
  """
  n = tensors[0].shape[0]
  static = all(t.shape[1:].is_fully_defined() for t in tensors)
  if isinstance(num_examples, int) and n is not None and static:
    k = n // num_examples
    if num_examples <= UNROLL_EXAMPLES:
      outs = [fn(*(t[i * k:(i + 1) * k] for t in tensors))
              for i in range(num_examples)]
      return tf.nest.map_structure(lambda *o: tf.stack(o), *outs)
    grouped = [tf.reshape(t, [num_examples, k, *t.shape[1:]])
               for t in tensors]
  else:
    grouped = [tf.reshape(t, tf.concat([[num_examples, -1], tf.shape(t)[1:]],
                                       0)) for t in tensors]
  return tf.vectorized_map(lambda args: fn(*args), grouped,
                           fallback_to_while_loop=True)


def _num_examples(x: tf.Tensor, num_microbatches):
  if num_microbatches is not None:
    return num_microbatches
  return x.shape[0] if x.shape[0] is not None else tf.shape(x)[0]


def _single_input(layer, args, kwargs) -> tf.Tensor:
  if len(args) != 1 or not isinstance(args[0], tf.Tensor):
    raise ValueError(f'Layer {layer.name} ({type(layer).__name__}) must be '
                     'called on one tensor for its per-example gradient rule.')
  if kwargs.get('mask') is not None:
    raise ValueError(f'Layer {layer.name}: masked inputs are not supported by '
                     'its per-example gradient rule.')
  return args[0]


@contextlib.contextmanager
def _without_activation(layer):
  """The layer computes its pre-activation output inside the block."""
  activation = layer.activation
  layer.activation = None
  try:
    yield
  finally:
    layer.activation = activation


def _activate(layer, base):
  return layer.activation(base) if layer.activation is not None else base


def _check_channels_last(layer):
  if getattr(layer, 'data_format', 'channels_last') != 'channels_last':
    raise ValueError(f'Layer {layer.name}: only channels_last is supported.')


def _weighted_rows(g: tf.Tensor, weights: tf.Tensor, num_examples):
  """Scales the rows of each example of g [N, ...] by its weight."""
  per_row = tf.repeat(weights, tf.shape(g)[0] // num_examples)
  return g * tf.reshape(per_row, [-1] + [1] * (g.shape.rank - 1))


def _bias_gradients(bias, g_rows) -> VariableGradients:
  """The bias gradient of example i: its output gradient summed over rows."""
  return explicit(bias, tf.reduce_sum(g_rows, axis=1))


def _forward_watched(layer, args, kwargs, tape):
  """(x, base, outputs): the input, the pre-activation output (watched) and
  the activated output.

  The rules' gradients are taken with respect to the pre-activation output.
  """
  x = _single_input(layer, args, kwargs)
  with _without_activation(layer):
    base = layer(x)
  tape.watch(base)
  return x, base, _activate(layer, base)


def dense_rule(layer: tf.keras.layers.Dense, args, kwargs, tape,
               num_microbatches=None, *, mode: str = 'mixed'):
  """Rule for Dense on inputs of any rank (rows: all but the last axis)."""
  x, base, outputs = _forward_watched(layer, args, kwargs, tape)

  def gradients(g):
    b = _num_examples(x, num_microbatches)
    a_rows, g_rows = per_example_rows(x, b), per_example_rows(g, b)
    rows = int(a_rows.shape[1]) if a_rows.shape[1] is not None else None
    d, p = layer.kernel.shape
    out = []
    if rows is not None and use_ghost(mode, rows, d, p):
      out.append(VariableGradients(
          layer.kernel, ghost_squared_norms(a_rows, g_rows),
          lambda w: tf.einsum('btd,btp->dp', a_rows,
                              g_rows * w[:, None, None]), 'ghost'))
    else:
      out.append(explicit(layer.kernel,
                          tf.einsum('btd,btp->bdp', a_rows, g_rows)))
    if layer.use_bias:
      out.append(_bias_gradients(layer.bias, g_rows))
    return out

  return base, outputs, gradients


# The transposed convolutions: conv_rule swaps the roles of input and output
# gradient for them.
TRANSPOSED_CONVS = (tf.keras.layers.Conv1DTranspose,
                    tf.keras.layers.Conv2DTranspose,
                    tf.keras.layers.Conv3DTranspose)


def _patches(t: tf.Tensor, layer) -> tf.Tensor | None:
  """Unfolded kernel-sized patches of t [N, *spatial, c] on the conv's grid.

  Returns:
    [N, *grid, prod(kernel_size) * c], or None where unsupported (causal
    padding; dilation outside 2-D convolutions).
  """
  padding = layer.padding.upper()
  if padding not in ('SAME', 'VALID'):
    return None
  rank = len(layer.kernel_size)
  dilated = any(r != 1 for r in layer.dilation_rate)
  if dilated and isinstance(layer, TRANSPOSED_CONVS):
    return None
  if rank == 1:
    if dilated:
      return None
    p = tf.image.extract_patches(
        t[:, None], [1, 1, layer.kernel_size[0], 1],
        [1, 1, layer.strides[0], 1], [1, 1, 1, 1], padding)
    return p[:, 0]
  if rank == 2:
    return tf.image.extract_patches(
        t, [1, *layer.kernel_size, 1], [1, *layer.strides, 1],
        [1, *layer.dilation_rate, 1], padding)
  if rank == 3 and not dilated:
    return tf.extract_volume_patches(
        t, [1, *layer.kernel_size, 1], [1, *layer.strides, 1], padding)
  return None


def _kernel_gradient(layer, x: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
  """d/dkernel of <layer's pre-activation output on x, g>: one backward.

  Only the kernel's backward op is kept (the forward has no consumer and is
  pruned from the graph).
  """
  with tf.GradientTape(watch_accessed_variables=False) as tape:
    tape.watch(layer.kernel)
    with _without_activation(layer):
      y = layer(x)
  return tape.gradient(y, layer.kernel, output_gradients=g)


def conv_rule(layer, args, kwargs, tape, num_microbatches=None, *,
              mode: str = 'mixed'):
  """Rule for Conv1D/2D/3D and their transposes (channels_last), plain or
  weight-centred.

  Grouped convolutions take the per-example loop (per_example_loop_rule).

  For a convolution the kernel gradient of example i is P_i^T G_i, with P_i
  the unfolded patches of its input on the output grid. A transposed
  convolution is the adjoint, so the roles swap: the patches are taken of
  the output gradient, on the input grid, and paired with the input.
  """
  _check_channels_last(layer)
  if getattr(layer, 'groups', 1) != 1:
    # The patches' grams would need one block per group; the per-example
    # loop is exact for any grouping.
    logging.warning('Layer %s (%s) is a grouped convolution: its per-example '
                    'gradients are computed one example at a time (slow).',
                    layer.name, type(layer).__name__)
    return per_example_loop_rule(layer, args, kwargs, tape, num_microbatches)
  x, base, outputs = _forward_watched(layer, args, kwargs, tape)

  def gradients(g):
    b = _num_examples(x, num_microbatches)
    transposed = isinstance(layer, TRANSPOSED_CONVS)
    source, paired = (g, x) if transposed else (x, g)
    n_positions = math.prod(paired.shape[1:-1])
    views = (paired.shape[0] // b if isinstance(b, int) and
             paired.shape[0] is not None else None)
    d, p = math.prod(layer.kernel.shape[:-1]), layer.kernel.shape[-1]
    patches = None
    if views is not None and use_ghost(mode, views * n_positions, d, p):
      patches = _patches(source, layer)
      if patches is not None and patches.shape[1:-1] != paired.shape[1:-1]:
        patches = None  # E.g. a transposed conv's output_padding.
    out = []
    if patches is not None:
      if isinstance(layer, dp_layers.CENTRED_CONVS):
        # Each patch's row holds one kernel slice's d entries (the fan-in of
        # an output channel; for a transposed conv, the spatial and filter
        # entries of an input channel): (A C)^T G, see the module docstring.
        patches = patches - tf.reduce_mean(patches, axis=-1, keepdims=True)
      out.append(VariableGradients(
          layer.kernel,
          ghost_squared_norms(per_example_rows(patches, b),
                              per_example_rows(paired, b)),
          lambda w: _kernel_gradient(layer, x, _weighted_rows(g, w, b)),
          'ghost'))
    else:
      out.append(explicit(layer.kernel, map_examples(
          functools.partial(_kernel_gradient, layer), [x, g], b)))
    if layer.use_bias:
      out.append(_bias_gradients(layer.bias, per_example_rows(g, b)))
    return out

  return base, outputs, gradients


def _rows_per_example(x: tf.Tensor, num_examples):
  if isinstance(num_examples, int) and x.shape[0] is not None:
    return x.shape[0] // num_examples
  return tf.shape(x)[0] // num_examples


def _per_example_copy(variable: tf.Variable, num_examples, rows_per_example,
                      row_shape, tape):
  """The variable copied per example [B, ...] (watched) and per row.

  The backward pass that gives the other layers' output gradients then also
  gives each example's gradient of the variable, at the cost of the batch's
  own gradient of it.
  """
  copy = tf.broadcast_to(variable, tf.concat(
      [tf.reshape(num_examples, [1]), variable.shape], 0))
  tape.watch(copy)
  per_row = copy
  if not (isinstance(rows_per_example, int) and rows_per_example == 1):
    per_row = tf.repeat(copy, rows_per_example, axis=0)
  return copy, tf.reshape(per_row, row_shape)


def _copies_gradients(variables):
  def gradients(g):
    return [explicit(v, gv) for v, gv in zip(variables, g)]
  return gradients


def group_norm_rule(layer: tf.keras.layers.GroupNormalization, args, kwargs,
                    tape, num_microbatches=None, **unused):
  """Rule for GroupNormalization (and ScaleNorm): explicit gamma and beta.

  The rule normalises as the layer does (per example, group and channel
  slice), as y = x * s + o with s = gamma / std and o = beta - mean * s
  (two passes over x), through per-example copies of gamma and beta.
  """
  x = _single_input(layer, args, kwargs)
  axis = layer.axis % x.shape.rank
  if axis != x.shape.rank - 1:
    raise ValueError(f'Layer {layer.name}: only channels_last is supported.')
  channels, groups = x.shape[-1], layer.groups
  grouped = tf.reshape(x, tf.concat(
      [tf.shape(x)[:-1], [groups, channels // groups]], 0))
  rank = grouped.shape.rank
  mean, variance = tf.nn.moments(
      grouped, list(range(1, rank - 2)) + [rank - 1], keepdims=True)
  scale = tf.math.rsqrt(variance + layer.epsilon)
  b = _num_examples(x, num_microbatches)
  k = _rows_per_example(x, b)
  row_shape = [-1] + [1] * (rank - 3) + [groups, channels // groups]
  copies, variables = [], []
  if layer.scale:
    copy, gamma = _per_example_copy(layer.gamma, b, k, row_shape, tape)
    scale = scale * gamma
    copies.append(copy)
    variables.append(layer.gamma)
  offset = -mean * scale
  if layer.center:
    copy, beta = _per_example_copy(layer.beta, b, k, row_shape, tape)
    offset = offset + beta
    copies.append(copy)
    variables.append(layer.beta)
  outputs = tf.reshape(grouped * scale + offset, tf.shape(x))
  return copies, outputs, _copies_gradients(variables)


def layer_norm_rule(layer: tf.keras.layers.LayerNormalization, args, kwargs,
                    tape, num_microbatches=None, **unused):
  """Rule for LayerNormalization over any axes: explicit gamma and beta."""
  x = _single_input(layer, args, kwargs)
  axes = sorted(a % x.shape.rank for a in layer.axis)
  mean, variance = tf.nn.moments(x, axes, keepdims=True)
  outputs = (x - mean) * tf.math.rsqrt(variance + layer.epsilon)
  b = _num_examples(x, num_microbatches)
  k = _rows_per_example(x, b)
  row_shape = [-1] + [x.shape[a] if a in axes else 1
                      for a in range(1, x.shape.rank)]
  copies, variables = [], []
  for variable, enabled, combine in ((layer.gamma, layer.scale, tf.multiply),
                                     (layer.beta, layer.center, tf.add)):
    if enabled:
      copy, per_row = _per_example_copy(variable, b, k, row_shape, tape)
      outputs = combine(outputs, per_row)
      copies.append(copy)
      variables.append(variable)
  return copies, outputs, _copies_gradients(variables)


def _slice_rows(structure, start, stop):
  return tf.nest.map_structure(
      lambda t: t[start:stop] if isinstance(t, tf.Tensor) else t, structure)


def per_example_loop_rule(layer, args, kwargs, tape, num_microbatches=None,
                          **unused):
  """Fallback rule for a layer whose rows depend on their own inputs only.

  One backward pass per example through the layer alone: slow, but it needs
  nothing from the layer type.
  """
  outputs = layer(*args, **kwargs)
  if not isinstance(outputs, tf.Tensor):
    raise ValueError(f'Layer {layer.name}: the fallback rule needs a single '
                     'output tensor.')
  tape.watch(outputs)
  variables = list(layer.trainable_variables)

  def gradients(g):
    first = tf.nest.flatten(args)[0]
    b = _num_examples(first, num_microbatches)
    n = first.shape[0]
    if not isinstance(b, int) or n is None:
      raise ValueError(f'Layer {layer.name}: the fallback rule needs a static '
                       'batch size.')
    k = n // b
    per_example = []
    for i in range(b):
      with tf.GradientTape(watch_accessed_variables=False) as inner:
        inner.watch(variables)
        out_i = layer(*_slice_rows(args, i * k, (i + 1) * k),
                      **_slice_rows(kwargs, i * k, (i + 1) * k))
      grads = inner.gradient(out_i, variables,
                             output_gradients=g[i * k:(i + 1) * k],
                             unconnected_gradients=tf.UnconnectedGradients.ZERO)
      per_example.append(grads)
    return [explicit(v, tf.stack([grads[j] for grads in per_example]))
            for j, v in enumerate(variables)]

  return outputs, outputs, gradients


