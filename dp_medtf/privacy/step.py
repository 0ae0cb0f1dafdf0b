"""Training steps: DP-SGD with virtual batches, and its non-private twin.

A logical batch arrives as one or more fixed-size physical chunks. `accumulate`
adds each chunk's contribution to gradient accumulators; `apply` finishes the
logical batch and updates the model. For DP-SGD (TF Privacy's semantics):

    update = (sum_i clip_C(g_i) + N(0, (z C)^2 I)) / B

with one noise draw per logical batch, B the expected batch size q N, and
the result handed to the optimizer (NAdam or Adam).

Example:

  >>> model = tf.keras.Sequential([tf.keras.layers.Dense(2)])
  >>> model.build([None, 3])
  >>> step = DPStep(model, classification_loss, tf.keras.optimizers.Adam(),
  ...               clip_norm=1.0, noise_multiplier=1.0,
  ...               expected_batch_size=4)
  >>> loss = step.accumulate(tf.ones([4, 1, 3]), tf.constant([0, 1, 0, 1]),
  ...                        tf.ones([4]))
  >>> step.apply()
"""

from __future__ import annotations

from absl import logging
import tensorflow as tf

from dp_medtf import losses
from dp_medtf.privacy import clipping
from dp_medtf.privacy import ghost
from dp_medtf.privacy import layer_checks
from dp_medtf.privacy import noise
from dp_medtf.privacy import randomness

# Per-example clipping engines, each (model, example_loss, x, y, mask, C) ->
# (summed clipped gradients, norms [B], losses [B]):
#   vectorized: per-example gradients with tf.vectorized_map, any model;
#   ghost: mixed ghost norms, then a second backward pass of the re-weighted
#     loss (functional or Sequential models);
#   ghost_bk: mixed ghost norms, the clipped sum from the same pass
#     (book-keeping): no second backward pass.
_CLIPPED_SUM = {
    'vectorized': clipping.vectorized_clipped_sum,
    'ghost': ghost.engine('second_pass'),
    'ghost_bk': ghost.engine('bookkeeping'),
}
ENGINES = tuple(_CLIPPED_SUM)


def clipping_engine(name: str):
  """The clipped-sum function of engine `name` (one of ENGINES)."""
  return _CLIPPED_SUM[name]


# The per-view loss of classification, kept here by name for callers of the
# step; it is defined once, in dp_medtf.losses.
classification_loss = losses.classification_loss


def _zeros_like_vars(variables):
  return [tf.Variable(tf.zeros_like(v), trainable=False,
                      name=v.name.split(':')[0].replace('/', '_') + '_acc')
          for v in variables]


def flatten_views(x: tf.Tensor, y: tf.Tensor):
  """[B, K, ...] inputs and [B, ...] labels -> [B*K, ...] each."""
  k = tf.shape(x)[1]
  flat_x = tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], 0))
  flat_y = tf.repeat(y, k, axis=0)
  return flat_x, flat_y, k


class DPStep:
  """DP-SGD over virtual batches.

  Args:
    model: the Keras model (no BatchNorm).
    loss_fn: per-view loss vector from (labels, outputs).
    optimizer: a Keras optimizer that applies the privatised gradient.
    clip_norm: C.
    noise_multiplier: z; the noise std on the summed gradient is z * C.
    expected_batch_size: B = q N, the divisor of the noised sum.
    seed: None (the default): the noise comes from secret OS entropy; an int
      seeds it (reproducible, not private). Ignored when `generator` is given.
    generator: the noise generator to use (e.g. a MechanismRandomness's); its
      state belongs in the checkpoint, as `self.generator`.
    engine: the per-example clipping engine; one of ENGINES.
    jit_compile: compile the steps with XLA.
  """

  def __init__(self, model: tf.keras.Model, loss_fn, optimizer, *,
               clip_norm: float, noise_multiplier: float,
               expected_batch_size: float, seed: int | None = None,
               generator: tf.random.Generator | None = None,
               engine: str = 'vectorized', jit_compile: bool = False):
    if engine not in ENGINES:
      raise ValueError(f'Unknown engine {engine!r}; choose one of {ENGINES}.')
    if clip_norm <= 0:
      raise ValueError(f'clip_norm must be positive, got {clip_norm}.')
    if noise_multiplier < 0:
      raise ValueError(
          f'noise_multiplier must be non-negative, got {noise_multiplier}.')
    layer_checks.check_model(model, engine)
    self.model = model
    self.loss_fn = loss_fn
    self.optimizer = optimizer
    self.clip_norm = float(clip_norm)
    self.noise_multiplier = float(noise_multiplier)
    self.expected_batch_size = float(expected_batch_size)
    self.engine = engine
    self._clipped_sum = _CLIPPED_SUM[engine]
    logging.info('DP-SGD per-example clipping engine: %s', engine)
    self.jit_compile = jit_compile
    self.generator = (generator if generator is not None else
                      randomness.MechanismRandomness(seed).noise_generator)
    self.accumulators = _zeros_like_vars(model.trainable_variables)
    self.accumulate = tf.function(self._accumulate, jit_compile=jit_compile)
    self.apply = tf.function(self._apply, jit_compile=jit_compile)

  @property
  def noise_stddev(self) -> float:
    """Std of the noise on the summed clipped gradient: z * C."""
    return self.noise_multiplier * self.clip_norm

  def _accumulate(self, x, y, mask):
    summed, _, losses = self._clipped_sum(
        self.model, lambda labels, out: tf.reduce_mean(
            self.loss_fn(labels, out)), x, y, mask, self.clip_norm)
    for acc, g in zip(self.accumulators, summed):
      acc.assign_add(g)
    mask = tf.cast(mask, losses.dtype)
    return tf.reduce_sum(losses * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)

  def privatized_gradient(self):
    """The noised, normalised gradient of the accumulated logical batch."""
    noisy = noise.add_gaussian_noise(
        [acc.read_value() for acc in self.accumulators], self.noise_stddev,
        self.generator)
    return [g / self.expected_batch_size for g in noisy]

  def reset(self):
    """Discards a partly accumulated logical batch (e.g. one interrupted
    between its chunks), so that no example is counted twice when the step
    is run again."""
    for acc in self.accumulators:
      acc.assign(tf.zeros_like(acc))

  def _apply(self):
    grads = self.privatized_gradient()
    self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
    for acc in self.accumulators:
      acc.assign(tf.zeros_like(acc))


class NonPrivateStep:
  """The same model, data and optimizer without clipping or noise.

  The update is the gradient of the mean loss over the logical batch's real
  examples (each example's K views averaged, as in DPStep).
  """

  def __init__(self, model: tf.keras.Model, loss_fn, optimizer, *,
               jit_compile: bool = False):
    self.model = model
    self.loss_fn = loss_fn
    self.optimizer = optimizer
    self.accumulators = _zeros_like_vars(model.trainable_variables)
    self.count = tf.Variable(0.0, trainable=False)
    self.accumulate = tf.function(self._accumulate, jit_compile=jit_compile)
    self.apply = tf.function(self._apply, jit_compile=jit_compile)

  def _accumulate(self, x, y, mask):
    flat_x, flat_y, k = flatten_views(x, y)
    mask = tf.cast(mask, tf.float32)
    with tf.GradientTape() as tape:
      view_losses = self.loss_fn(flat_y, self.model(flat_x, training=True))
      losses = tf.reduce_mean(tf.reshape(view_losses, [-1, k]), axis=1)
      total = tf.reduce_sum(losses * mask)
    grads = tape.gradient(total, self.model.trainable_variables)
    for acc, g in zip(self.accumulators, grads):
      if g is not None:
        acc.assign_add(g)
    self.count.assign_add(tf.reduce_sum(mask))
    return total / tf.maximum(tf.reduce_sum(mask), 1.0)

  def reset(self):
    """Discards a partly accumulated logical batch."""
    for acc in self.accumulators:
      acc.assign(tf.zeros_like(acc))
    self.count.assign(0.0)

  def _apply(self):
    count = tf.maximum(self.count, 1.0)
    grads = [acc / count for acc in self.accumulators]
    self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
    for acc in self.accumulators:
      acc.assign(tf.zeros_like(acc))
    self.count.assign(0.0)
