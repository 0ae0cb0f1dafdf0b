"""The optimizers that apply the privatised gradient, built in one place.

Every engine (ours and TF Privacy's) uses the classes of OPTIMIZERS, all of
the non-legacy Keras family, which can update mirrored variables from the
cross-replica context where the replicated step applies its one noisy
update.

An optimizer's variables (iteration counter, slots) are created where it is
built. Keras builds them lazily, inside the first apply_gradients; under a
tf.distribute strategy that first call runs outside strategy.scope(), so the
slots become single plain variables that every replica's update writes in
turn, and the replicas drift apart. `make_optimizer` therefore constructs
the optimizer and creates its variables inside the scope, and
`ensure_built` checks an optimizer built elsewhere.

Example:

  >>> model = tf.keras.Sequential([tf.keras.layers.Dense(2, name='dense')])
  >>> model.build([None, 3])
  >>> opt = make_optimizer('nadam', 1e-3, model.trainable_variables)
  >>> [v.name for v in opt.variables][:2]
  ['iteration:0', 'm/dense/kernel:0']
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf

# NAdam's momentum schedule mu_s = beta_1 (1 - 0.5 * 0.96^s), s = 1, 2, ...
_DECAY = 0.96
# log prod_{s<=t} (1 - 0.5 * 0.96^s) for t = 1..K. Past K the remaining
# factors change the log by at most sum_{s>K} 0.96^s = 0.96^(K+1) / 0.04,
# 5e-17 for K = 1000: below float64 resolution.
_SCHEDULE_TERMS = 1000
_LOG_SCHEDULE = np.cumsum(
    np.log1p(-0.5 * _DECAY**np.arange(1, _SCHEDULE_TERMS + 1)))


class Nadam(tf.keras.optimizers.Nadam):
  """Keras's NAdam with its momentum-schedule product taken from the step.

  The update is Keras's (non-legacy) NAdam:

      m <- beta_1 m + (1 - beta_1) g,   v <- beta_2 v + (1 - beta_2) g^2
      m_hat = mu_{t+1} m / (1 - P_{t+1}) + (1 - mu_t) g / (1 - P_t)
      w <- w - lr m_hat / (sqrt(v / (1 - beta_2^t)) + epsilon)

  with P_t = prod_{s<=t} mu_s. Keras 2.15 keeps P_t in a variable and
  decides whether to multiply it in with a Python counter; inside a
  tf.function that counter is read once, while tracing, and P_t is
  multiplied by mu_t once per model variable on every step. Here P_t is
  computed from t itself, so graph and eager updates agree, and every
  replica's update (which runs once per device) finds the same value. The
  inherited `_u_product` variable is unused.
  """

  def _schedule(self, step: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """mu_step."""
    step = tf.cast(step, dtype)
    return tf.cast(self.beta_1, dtype) * (
        1.0 - 0.5 * tf.pow(tf.cast(_DECAY, dtype), step))

  def _schedule_product(self, step: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """P_step = prod_{s=1}^{step} mu_s, for an integer step >= 1."""
    index = tf.minimum(step, _SCHEDULE_TERMS) - 1
    log_product = (
        tf.cast(step, tf.float64) * tf.math.log(
            tf.cast(self.beta_1, tf.float64)) +
        tf.gather(tf.constant(_LOG_SCHEDULE, tf.float64), index))
    return tf.cast(tf.exp(log_product), dtype)

  def update_step(self, gradient, variable):
    """Applies one NAdam update to `variable`."""
    if isinstance(gradient, tf.IndexedSlices):
      gradient = tf.convert_to_tensor(gradient)
    dtype = variable.dtype
    lr = tf.cast(self.learning_rate, dtype)
    beta_1 = tf.cast(self.beta_1, dtype)
    beta_2 = tf.cast(self.beta_2, dtype)
    step = self.iterations + 1
    mu_t = self._schedule(step, dtype)
    mu_next = self._schedule(step + 1, dtype)
    product_t = self._schedule_product(step, dtype)
    product_next = product_t * mu_next
    index = self._index_dict[self._var_key(variable)]
    m, v = self._momentums[index], self._velocities[index]
    m.assign_add((gradient - m) * (1 - beta_1))
    v.assign_add((tf.square(gradient) - v) * (1 - beta_2))
    m_hat = (mu_next * m / (1 - product_next) +
             (1 - mu_t) * gradient / (1 - product_t))
    v_hat = v / (1 - tf.pow(beta_2, tf.cast(step, dtype)))
    variable.assign_sub(lr * m_hat / (tf.sqrt(v_hat) + self.epsilon))


OPTIMIZERS = {'adam': tf.keras.optimizers.Adam, 'nadam': Nadam}


def optimizer_class(name: str) -> type[tf.keras.optimizers.Optimizer]:
  """The optimizer class called `name` in recipes (one of OPTIMIZERS).

  Raises:
    ValueError: `name` is not in OPTIMIZERS.
  """
  if name not in OPTIMIZERS:
    raise ValueError(f'Unknown optimizer {name!r}; choose one of '
                     f'{sorted(OPTIMIZERS)}.')
  return OPTIMIZERS[name]


def build(factory: Callable[[], tf.keras.optimizers.Optimizer],
          variables: Sequence[tf.Variable],
          strategy: tf.distribute.Strategy | None = None
          ) -> tf.keras.optimizers.Optimizer:
  """Constructs an optimizer and creates all its variables under `strategy`.

  Args:
    factory: returns the (unbuilt) optimizer.
    variables: the model variables it will update.
    strategy: default: the current strategy.

  Returns:
    The built optimizer.

  Raises:
    TypeError: `factory` returned a legacy Keras optimizer.
  """
  strategy = strategy or tf.distribute.get_strategy()
  with strategy.scope():
    optimizer = factory()
    _check_not_legacy(optimizer)
    optimizer.build(list(variables))
  return optimizer


def make_optimizer(name: str, learning_rate: float,
                   variables: Sequence[tf.Variable],
                   strategy: tf.distribute.Strategy | None = None,
                   **kwargs) -> tf.keras.optimizers.Optimizer:
  """The optimizer `name`, built for `variables` under `strategy`.

  Args:
    name: one of OPTIMIZERS.
    learning_rate: its learning rate.
    variables: the model variables it will update.
    strategy: default: the current strategy.
    **kwargs: further arguments of the optimizer class (epsilon, ...).

  Returns:
    The built optimizer.

  Raises:
    ValueError: unknown `name`.
  """
  cls = optimizer_class(name)
  return build(lambda: cls(learning_rate, **kwargs), variables, strategy)


def ensure_built(optimizer: tf.keras.optimizers.Optimizer,
                 variables: Sequence[tf.Variable],
                 strategy: tf.distribute.Strategy) -> None:
  """Builds `optimizer` under `strategy` if needed; checks its variables.

  Args:
    optimizer: a non-legacy Keras optimizer, constructed under
      `strategy.scope()`.
    variables: the model variables it updates.
    strategy: the strategy of the model's variables.

  Raises:
    TypeError: a legacy Keras optimizer.
    ValueError: some optimizer variable was created outside
      `strategy.scope()` (constructed or built outside it).
  """
  _check_not_legacy(optimizer)
  with strategy.scope():
    optimizer.build(list(variables))
  outside = [v.name for v in optimizer_variables(optimizer)
             if not strategy.extended.variable_created_in_scope(v)]
  if outside:
    raise ValueError(
        f'optimizer: variables {outside[:3]} were created outside '
        'strategy.scope(); construct and build it under the scope, e.g. '
        'with dp_medtf.privacy.optimizers.make_optimizer.')


def optimizer_variables(
    optimizer: tf.keras.optimizers.Optimizer) -> list[tf.Variable]:
  """Every tf.Variable the optimizer holds (slots, counters, hyperparameters).

  Wider than `optimizer.variables`, which leaves out, for example, the
  learning-rate variable.
  """
  return [obj for obj in tf.train.TrackableView(optimizer).descendants()
          if isinstance(obj, tf.Variable)]


def _check_not_legacy(optimizer) -> None:
  if isinstance(optimizer, tf.keras.optimizers.legacy.Optimizer):
    raise TypeError(
        f'optimizer: {type(optimizer).__name__} is a legacy Keras optimizer; '
        'use the tf.keras.optimizers family (dp_medtf.privacy.optimizers).')
