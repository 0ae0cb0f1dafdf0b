"""The training job: recipe -> data -> model -> (DP) steps -> results.json.

`plan_privacy` turns a recipe into the run's privacy parameters (q, T, z,
C); `train_and_evaluate` runs it and writes the run folder (dp_medtf.runs):
results.json, history.json, checkpoints, TensorBoard logs of loss,
validation metric and epsilon spent, and the release model.

Example:

  >>> from dp_medtf import recipes
  >>> plan = plan_privacy(recipes.load('demo'), num_train_examples=2400)
  >>> plan.steps, round(plan.sampling_rate, 4)
  (108, 0.1067)
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf

from dp_medtf import data
from dp_medtf import epsilons as epsilons_lib
from dp_medtf import json_files
from dp_medtf import keras as keras_dp
from dp_medtf import losses
from dp_medtf import metrics
from dp_medtf import models
from dp_medtf import recipes
from dp_medtf import runs as runs_lib
from dp_medtf.data import pipeline
from dp_medtf.privacy import accounting
from dp_medtf.privacy import optimizers
from dp_medtf.privacy import replicated
from dp_medtf.privacy import step as dp_step
from dp_medtf.keras.private_model import NonFiniteError
from dp_medtf.privacy.ledger import BudgetExceededError  # pylint: disable=unused-import


@dataclasses.dataclass(frozen=True)
class PrivacyPlan:
  """The privacy parameters of one run.

  Attributes:
    epsilon_target: the budget (math.inf: non-private).
    delta: target delta.
    sampling_rate: q = B / N.
    steps: T = (N // B) * epochs.
    steps_per_epoch: N // B.
    expected_batch_size: B.
    noise_multiplier: z (0.0 without DP).
    clip_norm: C (None without DP).
    chunk_size: examples per physical chunk.
  """
  epsilon_target: float
  delta: float
  sampling_rate: float
  steps: int
  steps_per_epoch: int
  expected_batch_size: int
  noise_multiplier: float
  clip_norm: float | None
  chunk_size: int

  @property
  def private(self) -> bool:
    return not math.isinf(self.epsilon_target)


def clip_norm_for(config: ml_collections.ConfigDict) -> float:
  """The clip norm of the recipe at its epsilon (per-budget table first).

  dp.clip_norms is keyed by budget, in any spelling epsilons.parse_epsilon
  reads ('8', '8.0', '1e9'); a key that is not a budget raises ValueError.
  """
  table = config.dp.clip_norms or {}
  for key, value in table.items():
    budget = epsilons_lib.parse_epsilon(
        str(key), f'--config.dp.clip_norms key {key!r}')
    if budget == float(config.dp.epsilon):
      return float(value)
  return float(config.dp.clip_norm)


def dp_keras_config(config: ml_collections.ConfigDict,
                    num_train_examples: int) -> keras_dp.DPKerasConfig:
  """The recipe's DP-SGD setting for N training examples.

  Args:
    config: the recipe (dp.*, batch_size, epochs, physical_batch_size, seed).
    num_train_examples: N, counted from the data.

  Returns:
    The DPKerasConfig that `make_private` trains with.

  Raises:
    ValueError: naming the flag, for an impossible setting.
  """
  epsilon, delta = float(config.dp.epsilon), float(config.dp.delta)
  accounting.validate(epsilon=epsilon, delta=delta)
  n, b = int(num_train_examples), int(config.batch_size)
  if b < 1 or b > n:
    raise ValueError(f'--config.batch_size must lie in [1, {n}] (the '
                     f'training-set size), got {b}.')
  if int(config.epochs) < 1:
    raise ValueError(f'--config.epochs must be positive, got '
                     f'{config.epochs}.')
  if config.dp.engine not in dp_step.ENGINES:
    raise ValueError(
        f'--config.dp.engine={config.dp.engine}: the trainer runs one of '
        f'{", ".join(dp_step.ENGINES)} (TF Privacy\'s optimizer is measured '
        'as a reference by python -m dp_medtf.bench).')
  return keras_dp.DPKerasConfig(
      batch_size=b, train_size=n, clipping_norm=clip_norm_for(config),
      epsilon=epsilon, delta=delta, epochs=int(config.epochs),
      physical_batch_size=int(config.physical_batch_size),
      engine=config.dp.engine,
      augmentation_multiplicity=int(config.augment.multiplicity),
      insecure_seeded_randomness=bool(config.dp.insecure_seeded_randomness),
      seed=int(config.seed), jit_compile=bool(config.jit_compile))


def privacy_plan(dp: keras_dp.DPKerasConfig, replicas: int = 1
                 ) -> PrivacyPlan:
  """The PrivacyPlan of a DPKerasConfig (chunks a multiple of `replicas`)."""
  return PrivacyPlan(
      dp.epsilon_target, dp.delta, dp.sampling_rate, dp.train_steps_total,
      dp.steps_per_epoch, dp.batch_size, dp.resolved_noise_multiplier,
      dp.clipping_norm if dp.private else None, dp.chunk_size(replicas))


def plan_privacy(config: ml_collections.ConfigDict, num_train_examples: int,
                 replicas: int = 1) -> PrivacyPlan:
  """Calibrates the run's noise for its budget.

  Args:
    config: the recipe (dp.epsilon, dp.delta, batch_size, epochs, ...).
    num_train_examples: N, counted from the data.
    replicas: chunks are rounded up to a multiple of this.

  Returns:
    The PrivacyPlan.

  Raises:
    ValueError: naming the field, for an impossible setting.
  """
  return privacy_plan(dp_keras_config(config, num_train_examples), replicas)


def make_step(config: ml_collections.ConfigDict, plan: PrivacyPlan,
              model: tf.keras.Model,
              strategy: tf.distribute.Strategy | None = None,
              generator: tf.random.Generator | None = None):
  """The recipe's training step (replicated.make_step with its settings).

  Args:
    config: the recipe.
    plan: the run's privacy plan.
    model: the model to train, built under `strategy`.
    strategy: the tf.distribute strategy (default: the current one).
    generator: the DP noise generator (a MechanismRandomness's); None: the
      step draws a secret one.
  """
  strategy = strategy or tf.distribute.get_strategy()
  loss = losses.for_task(task_of(config), config.class_weights)
  optimizer = optimizers.make_optimizer(
      config.optimizer, config.learning_rate, model.trainable_variables,
      strategy)
  return replicated.make_step(
      strategy, model, loss, optimizer, private=plan.private,
      clip_norm=plan.clip_norm, noise_multiplier=plan.noise_multiplier,
      expected_batch_size=plan.expected_batch_size, generator=generator,
      engine=config.dp.engine,
      jit_compile=bool(config.jit_compile))


def _flip_probs(config: ml_collections.ConfigDict) -> dict[int, float]:
  return {1: float(config.augment.flip_vertical),
          2: float(config.augment.flip_horizontal)}


def evaluate(model: tf.keras.Model, split, normalizer: pipeline.Normalizer,
             config: ml_collections.ConfigDict,
             soft_dice: bool = False) -> dict[str, float]:
  """The recipe's metrics on a split.

  Classification: MCC and accuracy. Segmentation: the mean over volumes of
  each foreground class's Dice ('dice_<class name>').

  Args:
    model: the model.
    split: the data split.
    normalizer: the run's input standardisation.
    config: the recipe.
    soft_dice: segmentation only: also 'soft_dice', the mean over volumes of
      the soft Dice (softmax probabilities) averaged over all classes,
      background included, unweighted: 1 - losses.dice_loss. This is the
      paper authors' model-selection metric (fscore_avg).

  Returns:
    Metric name -> value.
  """
  segmentation = task_of(config) == 'segmentation'
  dice_loss = losses.for_task('segmentation')

  @tf.function
  def predict(x, y):
    logits = model(x, training=False)
    soft = (1.0 - dice_loss(y, logits) if soft_dice and segmentation else
            tf.zeros([tf.shape(x)[0]]))
    return tf.argmax(logits, -1), soft

  truth, pred, soft = [], [], []
  for x, y in pipeline.eval_dataset(split, normalizer,
                                    int(config.eval_batch_size)):
    truth.append(y.numpy())
    p, d = predict(x, y)
    pred.append(p.numpy())
    soft.append(d.numpy())
  truth, pred = np.concatenate(truth), np.concatenate(pred)
  num_classes = int(config.num_classes)
  if not segmentation:
    return {'mcc': metrics.mcc(truth, pred, num_classes),
            'accuracy': float(np.mean(pred == truth))}
  dice = metrics.dice_per_class(truth, pred, num_classes)
  names = class_names(config)
  result = {f'dice_{names[c]}': float(np.nanmean(dice[:, c]))
            if np.isfinite(dice[:, c]).any() else 0.0
            for c in range(1, num_classes)}
  if soft_dice:
    result['soft_dice'] = float(np.mean(np.concatenate(soft)))
  return result


def task_of(config: ml_collections.ConfigDict) -> str:
  """'classification' (the default) or 'segmentation'."""
  return config.task


def class_names(config: ml_collections.ConfigDict) -> list[str]:
  """The recipe's class names, or their indices."""
  names = config.class_names
  return list(names) or [str(c) for c in range(int(config.num_classes))]


def primary_metric(config: ml_collections.ConfigDict) -> str:
  """The metric tracked per epoch: MCC, or the first foreground Dice."""
  if task_of(config) == 'classification':
    return 'mcc'
  return f'dice_{class_names(config)[1]}'


def validation_metric_names(config: ml_collections.ConfigDict) -> list[str]:
  """The names `evaluate` can report on the validation split."""
  if task_of(config) == 'classification':
    return ['mcc', 'accuracy']
  return [f'dice_{name}' for name in class_names(config)[1:]] + ['soft_dice']


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
  """A non-private run's early-stopping rule (the recipe's early_stopping).

  Attributes:
    metric: the validation metric watched.
    mode: 'max' or 'min'.
    patience: epochs without improvement after which training stops.
    min_delta: an improvement must exceed this (absolute; 0.001 is the
      paper's 0.1% of a metric in [0, 1]).
  """
  metric: str
  mode: str
  patience: int
  min_delta: float


def early_stopping_for(config: ml_collections.ConfigDict
                       ) -> EarlyStopping | None:
  """The recipe's early-stopping rule, or None when it is off.

  Args:
    config: the recipe, validated (recipes.validate refuses early stopping in
      a private run).

  Returns:
    The rule; None when `early_stopping` is absent or its patience is 0.

  Raises:
    ValueError: naming the field, for a metric the run does not compute.

  Example:

    >>> config = recipes.load('ham10000', baseline=True)
    >>> early_stopping_for(config)
    EarlyStopping(metric='mcc', mode='max', patience=50, min_delta=0.001)
  """
  stopping = config.early_stopping
  if not stopping or not int(stopping.patience):
    return None
  metric = stopping.metric or primary_metric(config)
  names = validation_metric_names(config)
  if metric not in names:
    raise ValueError(f'--config.early_stopping.metric={metric!r} is not a '
                     f'validation metric of this recipe; choose one of '
                     f'{", ".join(names)} (empty: {primary_metric(config)}).')
  return EarlyStopping(metric, str(stopping.mode), int(stopping.patience),
                       float(stopping.min_delta))


class EarlyStoppingState(tf.Module):
  """The early-stopping counters; checkpointed, so a resumed run keeps them.

  The paper authors' rule (StateDictObjectMetricTracker in
  dptraining/utils/misc.py, cumulative_delta=True): the first epoch sets the
  best value; an epoch improves when its value exceeds best + min_delta
  (mode 'max'; below best - min_delta for 'min'), which resets the wait;
  otherwise the wait grows, and training stops when it reaches the patience.
  The model of the stopping epoch is kept (the authors test it; they do not
  return to the best epoch).

  Example:

    >>> state = EarlyStoppingState(EarlyStopping('mcc', 'max', 2, 0.001))
    >>> [state.update(e, v) for e, v in enumerate([0.5, 0.6, 0.6005, 0.6], 1)]
    [False, False, False, True]
    >>> state.best_epoch.numpy(), state.stopped_epoch.numpy()
    (2, 4)
  """

  def __init__(self, rule: EarlyStopping):
    super().__init__(name='early_stopping')
    self.rule = rule
    self.best = tf.Variable(math.nan, dtype=tf.float64, trainable=False)
    self.best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    self.wait = tf.Variable(0, dtype=tf.int64, trainable=False)
    self.stopped_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)

  @property
  def stopped(self) -> bool:
    return int(self.stopped_epoch.numpy()) > 0

  def update(self, epoch: int, value: float) -> bool:
    """Records an epoch's validation value.

    Args:
      epoch: the epoch just finished, counted from 1.
      value: its validation metric.

    Returns:
      Whether training stops now.
    """
    best, delta = float(self.best.numpy()), self.rule.min_delta
    improved = math.isnan(best) or (value > best + delta
                                    if self.rule.mode == 'max' else
                                    value < best - delta)
    if improved:
      self.best.assign(value)
      self.best_epoch.assign(epoch)
      self.wait.assign(0)
      return False
    self.wait.assign_add(1)
    if int(self.wait.numpy()) >= self.rule.patience:
      self.stopped_epoch.assign(epoch)
    return self.stopped

  def to_dict(self) -> dict[str, Any]:
    """The rule and its outcome, for results.json."""
    return {**dataclasses.asdict(self.rule),
            'best_epoch': int(self.best_epoch.numpy()) or None,
            'best_value': (None if math.isnan(float(self.best.numpy())) else
                           float(self.best.numpy())),
            'stopped_epoch': int(self.stopped_epoch.numpy()) or None}


class CheckpointError(RuntimeError):
  """No checkpoint of the run restores."""


def normalizer_for(config: ml_collections.ConfigDict, train,
                   private: bool) -> pipeline.Normalizer:
  """The input standardisation of a run.

  Private runs use the recipe's fixed constants (`normalization.mean/std`):
  statistics of the private training set computed outside DP would be an
  unaccounted release (replacing one of N=106 volumes moves another batch's
  clipped sum by about C). Only a non-private run may set
  `normalization.fit_on_data` and standardise with the training split's own
  statistics.

  Args:
    config: the recipe.
    train: the training split.
    private: whether the run is DP.

  Returns:
    The Normalizer.

  Raises:
    ValueError: naming the field, for fit_on_data in a private run.
  """
  norm = config.normalization
  if norm.fit_on_data:
    if private:
      raise ValueError(
          '--config.normalization.fit_on_data=True reads statistics of the '
          'private training set outside DP; it is allowed only with '
          '--epsilon=inf. Private runs use the recipe\'s fixed '
          'normalization.mean and normalization.std.')
    return pipeline.Normalizer.fit(train)
  return pipeline.Normalizer.fixed(norm.mean, norm.std)


def _restore_newest_readable(checkpoint: tf.train.Checkpoint,
                             manager: tf.train.CheckpointManager
                             ) -> str | None:
  """Restores the newest checkpoint that reads, skipping damaged ones.

  Returns:
    The restored checkpoint's path, or None when there is none.

  Raises:
    CheckpointError: when checkpoints exist but none of them restores.
  """
  candidates = list(reversed(manager.checkpoints))
  failures = []
  for path in candidates:
    try:
      checkpoint.restore(path).assert_existing_objects_matched()
    except Exception as e:  # pylint: disable=broad-except
      # A damaged file fails in many ways (OpError, IndexError, ...): any
      # failure to restore sends us to the next older checkpoint.
      reason = str(e).strip().splitlines()[0] if str(e).strip() else type(
          e).__name__
      failures.append(path)
      logging.warning('Checkpoint %s does not restore (%s); trying an older '
                      'one.', path, reason[:200])
      continue
    if failures:
      print(f'Checkpoint {failures[0]} is damaged; resuming from {path} '
            'instead.')
    return path
  if candidates:
    raise CheckpointError(
        f'No checkpoint in {manager.directory} restores (tried '
        f'{", ".join(candidates)}); start a new run in another --workdir.')
  return None


def save_release_model(model: tf.keras.Model, path: str) -> None:
  """Writes the model alone (no optimizer, ledger or randomness) to `path`.

  This `.keras` file is what a user may publish: it holds the architecture
  and the trained weights only. Load it with `dp_medtf.models.load_model` or
  tf.keras.models.load_model after `import dp_medtf`.
  """
  tmp = os.path.join(os.path.dirname(path), '.tmp_' + os.path.basename(path))
  model.save(tmp)  # Never compiled here: the archive has no optimizer.
  tf.io.gfile.rename(tmp, path, overwrite=True)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       data_dir: str = '', resume: bool = False,
                       strategy: tf.distribute.Strategy | None = None
                       ) -> dict[str, Any]:
  """Trains the recipe's model and writes the run's outputs to `workdir`.

  Checkpoints (model, optimizer, the mechanism's secret randomness, privacy
  ledger) are saved every `config.checkpoint_every_steps` steps (0: each
  epoch); they are secret. With `resume`, the run continues from the newest
  checkpoint that restores and draws exactly the batches and noise an
  uninterrupted run would. What a private run publishes (results.json,
  history.json, TensorBoard, the console, model.keras) holds held-out
  metrics, epsilon and the ledger, never training-set statistics.

  A non-private run whose recipe sets `early_stopping.patience` stops once
  its validation metric has not improved for that many epochs
  (EarlyStoppingState); the counters live in the checkpoint, and
  results.json's `early_stopping` records the rule, the best epoch and the
  stopping epoch. The model of the last epoch trained is the one tested.

  Args:
    config: the recipe, with flags already applied.
    workdir: output folder (created if missing).
    data_dir: the dataset folder, for datasets read from disk.
    resume: continue from the checkpoint in `workdir`.
    strategy: a tf.distribute strategy (default: the current one).

  Returns:
    The results (dp_medtf.runs.RunResults.to_json), also written to
    workdir/results.json.

  Raises:
    FileExistsError: `workdir` holds a checkpoint and `resume` is False.
    ValueError: naming the field, for a bad recipe (early stopping in a
      private run among them).
    BudgetExceededError: the ledger plus the remaining steps would spend more
      than the target epsilon (for example, a resumed run with more epochs).
    NonFiniteError: a step made the weights NaN or infinite; the workdir
      stays resumable from its last good checkpoint.
  """
  start = time.time()
  config = recipes.apply_budget_rules(config)
  recipes.validate(config)
  stopping_rule = early_stopping_for(config)
  tf.io.gfile.makedirs(workdir)
  layout = runs_lib.RunLayout(workdir)
  latest = tf.train.latest_checkpoint(layout.checkpoints)
  if latest and not resume:
    raise FileExistsError(
        f'--workdir={workdir} already holds a checkpoint ({latest}); pass '
        '--resume to continue it, or choose another --workdir.')
  if resume and not latest:
    print(f'--resume: no checkpoint in {workdir}; starting a new run.')
  if latest:
    try:
      previous = runs_lib.read_results(workdir, missing_ok=True)
    except json_files.JsonFileError as e:
      # Rewritten when this run ends; the checkpoint is what resumes.
      logging.warning('%s The run resumes from its checkpoint.', e)
      previous = None
    if (previous and previous.finished and
        previous.epochs == int(config.epochs)):
      print(f'The run in {workdir} has finished; nothing to resume.')
      return previous.to_json()
  tf.keras.utils.set_random_seed(int(config.seed))
  train = data.load_split(config, 'train', data_dir)
  validation = data.load_split(config, 'validation', data_dir)
  test = data.load_split(config, 'test', data_dir)
  strategy = strategy or tf.distribute.get_strategy()
  dp = dp_keras_config(config, len(train))
  plan = privacy_plan(dp, strategy.num_replicas_in_sync)
  normalizer = normalizer_for(config, train, plan.private)
  with strategy.scope():
    model = models.build(config.model, tuple(config.input_shape),
                         int(config.num_classes))
    private = keras_dp.make_private(
        model, dp, flip_probs=_flip_probs(config),
        normalization={'mean': normalizer.mean.tolist(),
                       'std': normalizer.std.tolist()})
    private.compile(
        optimizer=optimizers.make_optimizer(
            config.optimizer, config.learning_rate,
            model.trainable_variables, strategy),
        loss=losses.for_task(task_of(config), config.class_weights))
    step = private.train_step_object()
  if plan.private:
    logging.info('DP-SGD: engine=%s z=%.6g C=%g q=%.5g T=%d chunk=%d '
                 'replicas=%d randomness=%s', config.dp.engine,
                 plan.noise_multiplier, plan.clip_norm, plan.sampling_rate,
                 plan.steps, plan.chunk_size, strategy.num_replicas_in_sync,
                 private.randomness_mode)
  else:
    logging.info('Non-private training: batch %d', plan.expected_batch_size)

  wall_var = tf.Variable(0.0, dtype=tf.float64, trainable=False)
  trackables = dict(model=private, wall_seconds=wall_var)
  stopping = None
  if stopping_rule is not None:
    stopping = EarlyStoppingState(stopping_rule)
    trackables['early_stopping'] = stopping
  checkpoint = tf.train.Checkpoint(**trackables)
  manager = tf.train.CheckpointManager(checkpoint, layout.checkpoints,
                                       max_to_keep=2)
  history = []
  if latest:
    restored = _restore_newest_readable(checkpoint, manager)
    history = [h for h in json_files.read_json(layout.history, [])
               if h['steps'] <= private.steps_taken]
    logging.info('Resumed from %s at step %d.', restored,
                 private.steps_taken)
    # The checkpoint restores the optimizer's learning rate too; the recipe
    # (and its --config.learning_rate) stays the source of truth.
    step.optimizer.learning_rate = float(config.learning_rate)
  wall_before = float(wall_var.numpy())
  outputs = _RunOutputs(
      config, plan, checkpoint_manager=manager, wall=wall_var,
      wall_before=wall_before, start=start, history=history,
      history_path=layout.history, stopping=stopping,
      writer=tf.summary.create_file_writer(layout.tensorboard))
  segmentation_soft_dice = (task_of(config) == 'segmentation' and
                            stopping_rule is not None and
                            stopping_rule.metric == 'soft_dice')
  if not (stopping is not None and stopping.stopped):
    try:
      private.fit(
          train, epochs=int(config.epochs), verbose=1, callbacks=[outputs],
          validation_fn=lambda: evaluate(model, validation, normalizer,
                                         config,
                                         soft_dice=segmentation_soft_dice))
    except NonFiniteError as e:
      raise NonFiniteError(
          f'{e} --config.learning_rate={config.learning_rate} may be too '
          'high. The workdir can be resumed from its last checkpoint with '
          '--resume.') from e
  steps_done = private.steps_taken
  finished = steps_done >= plan.steps or (stopping is not None and
                                          stopping.stopped)
  save_release_model(model, layout.model)
  results = runs_lib.RunResults(
      dataset=config.dataset,
      recipe=config.recipe or config.dataset,
      model=config.model.name,
      engine=config.dp.engine if plan.private else 'non_private',
      status=runs_lib.FINISHED if finished else runs_lib.INTERRUPTED,
      epsilon_target=plan.epsilon_target,
      epsilon_spent=private.epsilon_spent(),
      delta=plan.delta,
      randomness=private.randomness_mode if plan.private else None,
      replicas=strategy.num_replicas_in_sync,
      noise_multiplier=plan.noise_multiplier,
      clip_norm=plan.clip_norm,
      sampling_rate=plan.sampling_rate,
      steps=steps_done,
      planned_steps=plan.steps,
      privacy_ledger=private.ledger.to_dict(),
      epochs=int(config.epochs),
      early_stopping=stopping.to_dict() if stopping is not None else None,
      batch_size=plan.expected_batch_size,
      physical_batch_size=plan.chunk_size,
      num_train_examples=len(train),
      seed=int(config.seed),
      metrics=(evaluate(model, test, normalizer, config)
               if finished else None),
      validation_metrics=history[-1]['validation'] if history else None,
      history=history,
      wall_seconds=wall_before + time.time() - start)
  runs_lib.write_results(workdir, results)
  return results.to_json()


class _RunOutputs(tf.keras.callbacks.Callback):
  """The trainer's outputs of a private fit: checkpoints every
  `checkpoint_every_steps` steps and at each epoch's end, history.json,
  TensorBoard scalars, early stopping and `stop_after_steps`.

  What it publishes of a private run is what fit logs: held-out metrics and
  epsilon, never training-set statistics.
  """

  def __init__(self, config, plan: PrivacyPlan, *, checkpoint_manager, wall,
               wall_before: float, start: float, history: list,
               history_path: str, stopping: EarlyStoppingState | None,
               writer):
    super().__init__()
    self.config, self.plan = config, plan
    self.manager, self.wall = checkpoint_manager, wall
    self.wall_before, self.start = wall_before, start
    self.history_entries, self.history_path = history, history_path
    self.stopping, self.writer = stopping, writer
    self.every = int(config.checkpoint_every_steps)
    self.stop_after = int(config.stop_after_steps)
    self.metric = primary_metric(config)

  @property
  def steps(self) -> int:
    return self.model.steps_taken

  def _save(self) -> None:
    self.wall.assign(self.wall_before + time.time() - self.start)
    self.manager.save(checkpoint_number=self.steps)

  def on_train_batch_end(self, batch, logs=None):
    if self.every and self.steps % self.every == 0:
      self._save()
    if self.stop_after and self.steps >= self.stop_after:
      self.model.stop_training = True

  def on_epoch_end(self, epoch, logs=None):
    logs = logs or {}
    validation = {k[len('val_'):]: float(v) for k, v in logs.items()
                  if k.startswith('val_')}
    stop_early = False
    if validation:  # Epochs cut short by stop_after_steps are not validated.
      entry = {'epoch': epoch + 1, 'validation': validation,
               'epsilon_spent': float(logs['epsilon']), 'steps': self.steps}
      with self.writer.as_default(step=epoch + 1):
        if 'loss' in logs:
          entry['loss'] = float(logs['loss'])
          tf.summary.scalar('train/loss', entry['loss'])
        for name, value in validation.items():
          tf.summary.scalar(f'validation/{name}', value)
        tf.summary.scalar('privacy/epsilon_spent', entry['epsilon_spent'])
      self.history_entries.append(entry)
      if self.stopping is not None:
        stop_early = self.stopping.update(
            epoch + 1, validation[self.stopping.rule.metric])
    self._save()
    json_files.write_json(self.history_path, self.history_entries)
    if stop_early:
      rule = self.stopping.rule
      print(f'Early stopping after epoch {epoch + 1}: validation '
            f'{rule.metric} has not improved by more than '
            f'{rule.min_delta:g} for {rule.patience} epochs (best '
            f'{float(self.stopping.best.numpy()):.4g} at epoch '
            f'{int(self.stopping.best_epoch.numpy())}).')
      self.model.stop_training = True
