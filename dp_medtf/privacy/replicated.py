"""DP-SGD across the replicas of a tf.distribute strategy, noised once.

Each replica clips the per-example gradients of its share of the global
chunk and adds their sum to its local copy of the accumulators (sync-on-read
variables aggregated by SUM). `apply` runs in cross-replica context: reading
an accumulator sums it over replicas, one Gaussian draw of std z C is added
to that total, and the optimizer applies (total + noise) / B to the mirrored
weights. So the update equals the single-device update in distribution,
whatever the number of replicas (TF Privacy's optimizers instead add full
noise on every replica and then sum: R times the step and sqrt(R) times the
noise).

Example:

  >>> from dp_medtf import losses
  >>> strategy = tf.distribute.get_strategy()  # Or MirroredStrategy, TPU...
  >>> with strategy.scope():
  ...   model = tf.keras.Sequential([tf.keras.layers.Dense(2)])
  ...   model.build([None, 3])
  >>> optimizer = optimizers.make_optimizer('adam', 1e-3,
  ...                                       model.trainable_variables, strategy)
  >>> step = ReplicatedDPStep(strategy, model, losses.classification_loss,
  ...                         optimizer, clip_norm=1.0, noise_multiplier=1.0,
  ...                         expected_batch_size=4, seed=0)
  >>> loss = step.accumulate(tf.ones([4, 1, 3]), tf.constant([0, 1, 0, 1]),
  ...                        tf.ones([4]))
  >>> step.apply()
"""

from __future__ import annotations

import tensorflow as tf

from dp_medtf.privacy import optimizers
from dp_medtf.privacy import step as dp_step


class ReplicatedDPStep(dp_step.DPStep):
  """DPStep whose chunks are split across the replicas of `strategy`.

  Build the model inside `strategy.scope()`, and the optimizer with
  `optimizers.make_optimizer(..., strategy)` (or construct it inside the
  scope); construct this step outside it, so that the noise generator stays
  one generator. The optimizer's variables are created here under the scope
  if they do not exist yet: built lazily, in the first apply, they would be
  single variables that each replica's update writes in turn. The global
  chunk size must be divisible by the number of replicas.

  Args:
    strategy: the tf.distribute strategy.
    *args, **kwargs: as DPStep.

  Raises:
    TypeError: a legacy Keras optimizer (it cannot update mirrored variables
      from the cross-replica context of `apply`).
    ValueError: optimizer variables created outside `strategy.scope()`.
  """

  def __init__(self, strategy: tf.distribute.Strategy, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.strategy = strategy
    optimizers.ensure_built(self.optimizer, self.model.trainable_variables,
                            strategy)
    with strategy.scope():
      self.accumulators = [
          tf.Variable(tf.zeros_like(v), trainable=False,
                      synchronization=tf.VariableSynchronization.ON_READ,
                      aggregation=tf.VariableAggregation.SUM)
          for v in self.model.trainable_variables]
    self.accumulate = tf.function(self._replicated_accumulate,
                                  jit_compile=self.jit_compile)

  def _apply(self):
    # The accumulators already hold the sum over replicas: one noise draw,
    # here in cross-replica context. Each replica then applies that same
    # update to its copy (Keras's own gradient all-reduce skipped), which
    # works inside strategy.scope() as well as outside it.
    grads = self.privatized_gradient()
    variables = self.model.trainable_variables

    def update(*replica_grads):
      self.optimizer.apply_gradients(zip(replica_grads, variables),
                                     skip_gradients_aggregation=True)

    self.strategy.run(update, args=tuple(grads))
    for acc in self.accumulators:
      acc.assign(tf.zeros_like(acc))

  def _replicated_accumulate(self, x, y, mask):
    replicas = self.strategy.num_replicas_in_sync

    def shard(ctx):
      i = ctx.replica_id_in_sync_group
      size = tf.shape(x)[0] // replicas
      return (x[i * size:(i + 1) * size], y[i * size:(i + 1) * size],
              mask[i * size:(i + 1) * size])

    shards = self.strategy.experimental_distribute_values_from_function(shard)
    losses = self.strategy.run(self._accumulate, args=shards)
    return self.strategy.reduce(tf.distribute.ReduceOp.MEAN, losses, axis=None)


def make_step(strategy: tf.distribute.Strategy, model: tf.keras.Model,
              loss_fn, optimizer, *, private: bool, **dp_kwargs):
  """The training step for `strategy`: the one factory of the package.

  Args:
    strategy: the tf.distribute strategy (the default one: one device).
    model: the model, built under `strategy.scope()`.
    loss_fn: the per-view loss.
    optimizer: a (non-legacy) Keras optimizer.
    private: DP-SGD (DPStep, or ReplicatedDPStep for several replicas) or
      the non-private twin (one replica only).
    **dp_kwargs: DPStep's keyword arguments (clip_norm, noise_multiplier,
      expected_batch_size, generator, engine, jit_compile); without DP only
      jit_compile is used.

  Returns:
    The step, with `accumulate(x, y, mask)` and `apply()`.

  Raises:
    ValueError: non-private training under several replicas.
  """
  replicas = strategy.num_replicas_in_sync
  # Slots exist before any checkpoint restores into them, and are mirrored
  # under a strategy.
  optimizers.ensure_built(optimizer, model.trainable_variables, strategy)
  if not private:
    if replicas > 1:
      raise ValueError(f'Non-private training (epsilon=inf) runs on one '
                       f'replica, not {replicas}; drop the strategy.')
    return dp_step.NonPrivateStep(
        model, loss_fn, optimizer,
        jit_compile=bool(dp_kwargs.get('jit_compile', False)))
  if replicas > 1:
    return ReplicatedDPStep(strategy, model, loss_fn, optimizer, **dp_kwargs)
  return dp_step.DPStep(model, loss_fn, optimizer, **dp_kwargs)
