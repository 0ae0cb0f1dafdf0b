"""`make_private(model, config)`: a Keras model whose `fit` runs DP-SGD.

The returned `PrivateModel` wraps the user's model (`private.model` is that
model, trained in place) and keeps Keras's interface: `compile`, `fit`,
`evaluate`, `predict`, callbacks, `save`. Its `fit` trains as the package's
trainer does:

* Poisson sampling: each of the N training examples joins each step with
  probability q = B / N, from a secret 256-bit key;
* a logical batch is cut into fixed-shape, masked physical chunks; the
  clipped per-example gradients of all its chunks are summed and noised once,
  N(0, (z C)^2), then divided by B and handed to the compiled optimizer;
* the privacy ledger records every step; `epsilon` is logged each epoch (in
  the History, the progress bar and any TensorBoard callback), and `fit`
  refuses to run past the budget;
* under a tf.distribute strategy the replicas share each chunk and the noise
  is drawn once, in the cross-replica update.

What a private fit publishes: `epsilon` and the validation metrics. The
training loss and metrics of the private data are not logged.

The secret state (sampling key, noise generator, ledger, step counter) is
part of the model's checkpoints (tf.train.Checkpoint, `save_weights` in the
TensorFlow format, BackupAndRestore, ModelCheckpoint with weights only), so
that a restored run draws the batches and noise an uninterrupted run would;
such checkpoints are secret. It is left out of everything meant for release:
`model.save` (.keras, .h5, SavedModel), `tf.saved_model.save`, `get_weights`.

Example:

  >>> x = np.random.default_rng(0).random([64, 8, 8, 1], np.float32)
  >>> y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(np.int32)
  >>> net = tf.keras.Sequential([tf.keras.Input([8, 8, 1]),
  ...                            tf.keras.layers.Flatten(),
  ...                            tf.keras.layers.Dense(2)])
  >>> config = DPKerasConfig(epsilon=8.0, clipping_norm=1.0, batch_size=16,
  ...                        train_size=64, epochs=2)
  >>> private = make_private(net, config)
  >>> private.compile(optimizer='adam', loss=tf.keras.losses.
  ...                 SparseCategoricalCrossentropy(from_logits=True))
  >>> history = private.fit(x, y, epochs=2, verbose=0)
  >>> [round(e, 2) for e in history.history['epsilon']]
  [6.29, 8.0]
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

from absl import logging
import numpy as np
import tensorflow as tf

from dp_medtf import epsilons as epsilons_lib
from dp_medtf.data import pipeline
from dp_medtf.data import sampling
from dp_medtf.data import split as data_split
from dp_medtf.keras.config import DPKerasConfig
from dp_medtf.privacy import layer_checks
from dp_medtf.privacy import ledger as privacy_ledger
from dp_medtf.privacy import optimizers
from dp_medtf.privacy import randomness
from dp_medtf.privacy import replicated

_STATE = 'dp_state'


class NonFiniteError(RuntimeError):
  """A step left the model with NaN or infinite weights."""


class DPState(tf.Module):
  """The secret and the spent privacy of a private model, checkpointed.

  Attributes:
    randomness: the Poisson sampler's key and the noise generator.
    ledger: the DP-SGD steps taken.
    steps: the steps taken (private or not).
  """

  def __init__(self, insecure_seed: int | None):
    super().__init__(name=_STATE)
    self.randomness = randomness.MechanismRandomness(insecure_seed)
    self.ledger = privacy_ledger.PrivacyLedger()
    self.steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                             name='steps')


def per_view_loss(loss) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
  """The loss of each view [n] from a Keras loss (name, function or Loss).

  Args:
    loss: what `compile(loss=...)` received: one loss.

  Returns:
    (labels, outputs) -> [n]: the loss unreduced over the batch, averaged
    over any other axes.

  Raises:
    ValueError: no loss, or one per output.
  """
  if loss is None:
    raise ValueError('A private model needs compile(loss=...).')
  if isinstance(loss, (dict, list, tuple)):
    raise ValueError('A private model takes one loss, not one per output.')
  fn = tf.keras.losses.get(loss)
  call = fn.call if isinstance(fn, tf.keras.losses.Loss) else fn

  def per_view(labels, outputs):
    values = call(labels, outputs)
    if values.shape.rank and values.shape.rank > 1:
      values = tf.reduce_mean(values, axis=list(range(1, values.shape.rank)))
    return values

  return per_view


def _is_stock_nadam(optimizer) -> bool:
  return type(optimizer) is tf.keras.optimizers.Nadam  # pylint: disable=unidiomatic-typecheck


@tf.keras.utils.register_keras_serializable(package='dp_medtf')
class PrivateModel(tf.keras.Model):
  """A Keras model trained by DP-SGD in `fit` (see the module docstring).

  Args:
    model: the user's built Keras model (functional or Sequential for the
      ghost engines); it is trained in place.
    dp_config: the DPKerasConfig, or its dict.
    flip_probs: augmentation: flip probability per spatial axis (1-based),
      applied independently to each of the K views.
    normalization: {'mean': [...], 'std': [...]} per channel, applied to
      each input before the views and in `call` (fixed constants:
      statistics of private data would be an unaccounted release); None:
      inputs as given.
    **kwargs: tf.keras.Model's (name).
  """

  def __init__(self, model: tf.keras.Model,
               dp_config: DPKerasConfig | Mapping[str, Any],
               flip_probs: Mapping[int, float] | None = None,
               normalization: Mapping[str, Any] | None = None,
               ledger: list[Mapping[str, Any]] | None = None, **kwargs):
    super().__init__(**kwargs)
    if isinstance(dp_config, Mapping):
      dp_config = DPKerasConfig(**dp_config)
    self.model = model
    if model.built:  # Every weight is the wrapped model's.
      self.built = True
      spec = model._get_save_spec(dynamic_batch=True)  # pylint: disable=protected-access
      if spec is None:
        spec = tf.nest.map_structure(
            lambda shape: tf.TensorSpec([None, *shape[1:]], tf.float32),
            model.input_shape, is_leaf=lambda s: isinstance(s, tuple))
      self._set_save_spec(spec)  # So that exports know the input signature.
    self.dp_config = dp_config
    self.flip_probs = {int(k): float(v) for k, v in (flip_probs or {}).items()}
    self.normalization = (dict(mean=list(normalization['mean']),
                               std=list(normalization['std']))
                          if normalization else None)
    self._normalizer = (pipeline.Normalizer.fixed(**self.normalization)
                        if self.normalization else
                        pipeline.Normalizer.fixed(0.0, 1.0))
    insecure = dp_config.insecure_seeded_randomness
    # Set past Keras's attribute tracking: the secret joins checkpoints only
    # (_trackable_children), never weights or exports.
    object.__setattr__(self, '_dp_state',
                       DPState(int(dp_config.seed) if insecure else None))
    # The privacy already spent on the wrapped model's weights, from an
    # earlier wrapper of the same model or from a saved config: it is public
    # (z, q, steps) and counts against this budget too.
    previous = getattr(model, '_dp_medtf_ledger', None) or ledger or []
    for s in (previous.to_dict() if isinstance(
        previous, privacy_ledger.PrivacyLedger) else previous):
      self._dp_state.ledger.record(s['noise_multiplier'], s['sampling_rate'],
                                   s['steps'])
    object.__setattr__(model, '_dp_medtf_ledger', self._dp_state.ledger)
    object.__setattr__(self, '_step', None)
    object.__setattr__(self, '_per_view_loss', None)
    if insecure and dp_config.private:
      logging.warning('insecure_seeded_randomness=True: the Poisson batches '
                      'and the noise derive from the seed; the run is '
                      'reproducible and NOT private.')

  # -- Keras interface ------------------------------------------------------

  def call(self, inputs, training=None):
    if self.normalization:  # As the training pipeline feeds the model.
      inputs = self._normalizer(inputs)
    return self.model(inputs, training=training)

  def get_config(self) -> dict[str, Any]:
    return {'name': self.name,
            'model': tf.keras.saving.serialize_keras_object(self.model),
            'dp_config': dataclasses.asdict(self.dp_config),
            'flip_probs': self.flip_probs,
            'normalization': self.normalization,
            'ledger': self.ledger.to_dict()}

  @classmethod
  def from_config(cls, config, custom_objects=None):
    config = dict(config)
    config['model'] = tf.keras.saving.deserialize_keras_object(
        config['model'], custom_objects=custom_objects)
    return cls(**config)

  def compile(self, optimizer='rmsprop', loss=None, metrics=None, **kwargs):
    """Keras's compile; NAdam becomes the replica-safe dp_medtf NAdam.

    Keras 2.15's NAdam multiplies its momentum-schedule product once per
    variable per step inside tf.function (privacy.optimizers.Nadam); the
    same hyperparameters move to the corrected class.
    """
    with self.distribute_strategy.scope():
      optimizer = tf.keras.optimizers.get(optimizer)
      if _is_stock_nadam(optimizer):
        optimizer = optimizers.Nadam.from_config(optimizer.get_config())
    per_view = per_view_loss(loss)
    super().compile(optimizer=optimizer, loss=loss, metrics=metrics,
                    **kwargs)
    object.__setattr__(self, '_per_view_loss', per_view)
    object.__setattr__(self, '_step', None)

  def compile_from_config(self, config):
    self.compile(**tf.keras.saving.deserialize_keras_object(config))
    if self.built:  # So that a loaded optimizer state has slots to fill.
      optimizers.ensure_built(self.optimizer, self.model.trainable_variables,
                              self.distribute_strategy)

  # -- checkpoints hold the secret; exports do not --------------------------

  def _trackable_children(self, save_type='checkpoint', **kwargs):
    children = super()._trackable_children(save_type, **kwargs)
    if save_type == 'checkpoint':
      children = dict(children)
      children[_STATE] = self._dp_state
    return children

  def _lookup_dependency(self, name, cached_dependencies=None):
    if name == _STATE:
      return self._dp_state
    return super()._lookup_dependency(name, cached_dependencies)

  # -- privacy ----------------------------------------------------------------

  @property
  def ledger(self) -> privacy_ledger.PrivacyLedger:
    """The DP-SGD steps this model has been trained with."""
    return self._dp_state.ledger

  @property
  def steps_taken(self) -> int:
    return int(self._dp_state.steps.numpy())

  @property
  def randomness_mode(self) -> str:
    return self._dp_state.randomness.mode

  def epsilon_spent(self) -> float:
    """Epsilon spent so far at the config's delta (inf without DP)."""
    config = self.dp_config
    if not config.private or config.resolved_noise_multiplier == 0:
      return math.inf if self.steps_taken or not config.private else 0.0
    return self.ledger.epsilon(config.delta)

  def _projected_epsilon(self, last_step: int) -> float:
    config = self.dp_config
    z = config.resolved_noise_multiplier
    if z == 0:
      return math.inf
    return self.ledger.projected_epsilon(config.delta, z, config.sampling_rate,
                                         last_step - self.steps_taken)

  def train_step_object(self):
    """The package's step (accumulate chunks, apply once), built once."""
    if self._step is not None:
      return self._step
    if self._per_view_loss is None:
      raise RuntimeError('Call compile(optimizer=..., loss=...) before fit.')
    config = self.dp_config
    step = replicated.make_step(
        self.distribute_strategy, self.model, self._per_view_loss,
        self.optimizer, private=config.private,
        clip_norm=config.clipping_norm,
        noise_multiplier=config.resolved_noise_multiplier,
        expected_batch_size=config.batch_size,
        generator=self._dp_state.randomness.noise_generator,
        engine=config.engine, jit_compile=config.jit_compile)
    object.__setattr__(self, '_step', step)
    return step

  @tf.function
  def _training_views(self, x, step):
    """Normalised, augmented views of a chunk (before it is split across
    replicas; flip_probs, K and the seed are fixed at the first trace)."""
    return pipeline.training_views(
        x, self._normalizer, self.dp_config.augmentation_multiplicity,
        self.flip_probs, self.dp_config.seed, step)

  @tf.function
  def _weights_finite(self):
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v))
                          for v in self.model.trainable_variables])

  # -- training -----------------------------------------------------------------

  def _training_split(self, x, y):
    """A Split of the training data, checked against the config's N."""
    if isinstance(x, (tf.data.Dataset, tf.keras.utils.Sequence)) or (
        hasattr(x, '__next__')):
      raise ValueError(
          f'A private model cannot fit a {type(x).__name__}: DP-SGD\'s '
          'accounting assumes Poisson sampling, which needs random access '
          'to every example, and a stream can only be read in order. Pass '
          'the training data as arrays (x, y), or as a random-access source '
          '(a dp_medtf.data.Split: len() and load_example(index)).')
    if isinstance(x, data_split.Split) and y is None:
      split = x
    else:
      if y is None:
        raise ValueError('fit(x, y): a private model needs the labels y '
                         'with the arrays x.')
      x, y = np.asarray(x), np.asarray(y)
      if len(x) != len(y):
        raise ValueError(f'fit: x has {len(x)} examples and y {len(y)}.')
      if x.dtype.kind == 'f':
        x = x.astype(np.float32)
      split = data_split.ArraySplit(x, y)
    if len(split) != self.dp_config.train_size:
      raise ValueError(
          f'fit received {len(split)} training examples but '
          f'DPKerasConfig.train_size={self.dp_config.train_size}: the noise '
          'is calibrated for N = train_size; set it to the data\'s size.')
    return split

  def _check_fit_arguments(self, batch_size, steps_per_epoch, class_weight,
                           sample_weight, validation_split, callbacks):
    config = self.dp_config
    if batch_size is not None and int(batch_size) != config.batch_size:
      raise ValueError(
          f'fit(batch_size={batch_size}): the logical batch of a private '
          f'model is DPKerasConfig.batch_size={config.batch_size} (Poisson '
          'batches of that expected size); leave batch_size unset.')
    if steps_per_epoch is not None and int(
        steps_per_epoch) != config.steps_per_epoch:
      raise ValueError(f'fit(steps_per_epoch={steps_per_epoch}): an epoch '
                       f'is {config.steps_per_epoch} steps (train_size // '
                       'batch_size); leave steps_per_epoch unset.')
    if class_weight is not None or sample_weight is not None:
      raise ValueError('fit: class_weight and sample_weight are not '
                       'supported by a private model; weight the loss '
                       'instead (e.g. a custom Loss).')
    if validation_split:
      raise ValueError('fit(validation_split=...) would change N; pass '
                       'held-out validation_data instead.')
    if config.private:
      for callback in callbacks or ():
        monitor = getattr(callback, 'monitor', None)
        if (isinstance(monitor, str) and monitor not in ('epsilon',) and
            not monitor.startswith('val_')):
          raise ValueError(
              f'{type(callback).__name__}(monitor={monitor!r}): a private '
              'fit does not publish training-set losses or metrics; '
              'monitor a validation metric (val_...) instead.')

  def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose='auto',
          callbacks=None, validation_split=0.0, validation_data=None,
          shuffle=True, class_weight=None, sample_weight=None,
          initial_epoch=0, steps_per_epoch=None, validation_steps=None,
          validation_batch_size=None, validation_freq=1,
          validation_fn: Callable[[], Mapping[str, float]] | None = None,
          **kwargs):
    """Trains with DP-SGD (epsilon=inf: without) for `epochs` epochs.

    Args:
      x: training inputs (an array), or a dp_medtf.data.Split with y=None.
      y: training labels.
      batch_size: leave unset (the config's B is the logical batch).
      epochs: the epoch to train up to, as in Keras; at most the config's.
      verbose: 0, 1 or 'auto' (progress bar), 2 (one line per epoch).
      callbacks: Keras callbacks. Checkpointing callbacks save the secret
        state with the weights (see the module docstring).
      validation_split: unsupported (it would change N).
      validation_data: (x, y) held-out data, evaluated each epoch with the
        compiled loss and metrics, logged as val_<name>.
      shuffle: ignored: batches are Poisson samples (DP) or shuffled.
      class_weight, sample_weight: unsupported; weight the loss.
      initial_epoch: ignored: training continues from the steps the model
        (and its restored checkpoint) has taken.
      steps_per_epoch: leave unset (train_size // batch_size).
      validation_steps, validation_batch_size, validation_freq: as in
        Keras's fit, for validation_data.
      validation_fn: () -> {name: value}: more validation metrics, logged
        as val_<name>.
      **kwargs: Keras's remaining fit arguments (ignored).

    Returns:
      The History; each epoch logs `epsilon` (and `loss` only without DP).

    Raises:
      ValueError: for arguments a private fit cannot honour.
      privacy_ledger.BudgetExceededError: `epochs` or the steps already
        taken would spend more than the budget.
      NonFiniteError: a step made the weights NaN or infinite.
    """
    del shuffle, initial_epoch, kwargs
    config = self.dp_config
    self._check_fit_arguments(batch_size, steps_per_epoch, class_weight,
                              sample_weight, validation_split, callbacks)
    split = self._training_split(x, y)
    if int(epochs) > config.epochs_total:
      raise privacy_ledger.BudgetExceededError(
          f'fit(epochs={epochs}) exceeds the {config.epochs_total} epochs '
          f'({config.train_steps_total} steps) the budget was calibrated '
          'for (DPKerasConfig.epochs / train_steps).')
    step = self.train_step_object()
    step.reset()  # A step interrupted between its chunks starts afresh.
    spe = config.steps_per_epoch
    verbose = 1 if verbose == 'auto' else int(verbose)
    if not isinstance(callbacks, tf.keras.callbacks.CallbackList):
      callbacks = tf.keras.callbacks.CallbackList(
          callbacks, add_history=True, add_progbar=verbose != 0, model=self,
          verbose=verbose, epochs=int(epochs), steps=spe)
    self.stop_training = False
    callbacks.on_train_begin()
    # Restoring callbacks (BackupAndRestore) have run: the state is current.
    last_step = min(int(epochs) * spe, config.train_steps_total)
    if config.private and (self._projected_epsilon(last_step) >
                           config.epsilon_target * (1 + 1e-9)):
      raise privacy_ledger.BudgetExceededError(
          f'The ledger ({self.ledger.steps} steps) plus the remaining '
          f'{max(last_step - self.steps_taken, 0)} steps would spend epsilon='
          f'{self._projected_epsilon(last_step):.6g} > target '
          f'{epsilons_lib.epsilon_text(config.epsilon_target)}.')
    key = self._dp_state.randomness.sampling_key() if config.private else None
    chunk = config.chunk_size(self.distribute_strategy.num_replicas_in_sync)
    epoch_logs: dict[str, Any] = {}
    for epoch in range(self.steps_taken // spe, int(epochs)):
      if self.stop_training or self.steps_taken >= last_step:
        break
      plan = sampling.epoch_plan(
          config.train_size, config.batch_size, spe, epoch, chunk,
          private=config.private, sampling_key=key, seed=config.seed,
          first_step=self.steps_taken, last_step=last_step)
      callbacks.on_epoch_begin(epoch)
      dataset = pipeline.train_dataset(split, plan)
      last_chunk = {s: i for i, (s, _) in enumerate(plan)}
      losses, loss_sum, loss_count = [], 0.0, 0
      for i, ((s, _), (xb, yb, mask)) in enumerate(zip(plan, dataset)):
        if not losses:
          callbacks.on_train_batch_begin(s - epoch * spe)
        pipeline.check_flips(tuple(yb.shape[1:]), self.flip_probs)
        xb = self._training_views(xb, tf.constant(s, tf.int64))
        losses.append(step.accumulate(xb, yb, mask))
        if last_chunk[s] != i:
          continue
        step.apply()
        # The update is released, finite or not: it is on the ledger.
        self._dp_state.steps.assign_add(1)
        if config.private and config.resolved_noise_multiplier > 0:
          self.ledger.record(config.resolved_noise_multiplier,
                             config.sampling_rate)
        if not bool(self._weights_finite()):
          raise NonFiniteError(
              f'Step {self.steps_taken}: the weights became NaN or '
              'infinite (learning rate too high, or non-finite inputs); '
              'this step was not checkpointed.')
        batch_logs = {}
        if not config.private:
          batch_logs['loss'] = float(np.mean([float(l) for l in losses]))
          loss_sum += batch_logs['loss']
          loss_count += 1
        losses = []
        callbacks.on_train_batch_end(s - epoch * spe, batch_logs)
        if self.stop_training:
          break
      epoch_logs = {'epsilon': self.epsilon_spent()}
      if loss_count:
        epoch_logs['loss'] = loss_sum / loss_count
      # An epoch cut short (a callback stopped training) is not validated.
      completed = self.steps_taken >= min((epoch + 1) * spe, last_step)
      if (completed and validation_data is not None and
          (epoch + 1) % validation_freq == 0):
        val_x, val_y = validation_data[0], validation_data[1]
        results = self.evaluate(
            val_x, val_y, batch_size=validation_batch_size or
            config.chunk_size(), steps=validation_steps, verbose=0,
            return_dict=True)
        epoch_logs.update({f'val_{k}': v for k, v in results.items()})
      if completed and validation_fn is not None:
        epoch_logs.update({f'val_{k}': v for k, v in validation_fn().items()})
      callbacks.on_epoch_end(epoch, epoch_logs)
    callbacks.on_train_end(epoch_logs)
    return self.history


def make_private(model: tf.keras.Model, config: DPKerasConfig, *,
                 flip_probs: Mapping[int, float] | None = None,
                 normalization: Mapping[str, Any] | None = None
                 ) -> PrivateModel:
  """`model` wrapped so that `fit` trains it with DP-SGD.

  Args:
    model: a built Keras model. Layers that mix examples (BatchNorm in
      training mode, normalisation over the batch axis, layers that update
      state from the batch, shared weights under the ghost engines) are
      refused here, with the layer named.
    config: the DPKerasConfig.
    flip_probs: optional flip augmentation per spatial axis (1-based).
    normalization: optional fixed {'mean', 'std'} per channel.

  Returns:
    The PrivateModel; compile it, then fit. `private.model` is `model`.

  Raises:
    ValueError: an unbuilt model, or a layer that breaks per-example
      clipping.
  """
  if not model.built:
    raise ValueError(f'make_private: build the model {model.name!r} first '
                     '(give it an Input, or call model.build(shape)).')
  if config.private:
    layer_checks.check_model(model, config.engine)
  return PrivateModel(model, config, flip_probs=flip_probs,
                      normalization=normalization)
