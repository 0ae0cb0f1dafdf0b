"""The training job: recipe -> data -> model -> (DP) steps -> results.json.

`plan_privacy` turns a recipe into the run's privacy parameters (q, T, z,
C); `train_and_evaluate` runs it and writes, in the workdir, results.json, a
checkpoint and TensorBoard logs of loss, validation metric and epsilon spent.

Example:

  >>> from dp_medtf import recipes
  >>> plan = plan_privacy(recipes.load('demo'), num_train_examples=2400)
  >>> plan.steps, round(plan.sampling_rate, 4)
  (108, 0.1067)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf

from dp_medtf import data
from dp_medtf import losses
from dp_medtf import metrics
from dp_medtf import models
from dp_medtf import recipes
from dp_medtf.data import pipeline
from dp_medtf.data import sampling
from dp_medtf.privacy import accounting
from dp_medtf.privacy import layer_checks
from dp_medtf.privacy import ledger as privacy_ledger
from dp_medtf.privacy import optimizers
from dp_medtf.privacy import randomness as dp_randomness
from dp_medtf.privacy import replicated
from dp_medtf.privacy import step as dp_step
from dp_medtf.privacy import tf_privacy
from dp_medtf.keras.private_model import NonFiniteError
from dp_medtf.privacy.ledger import BudgetExceededError


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
  """The clip norm of the recipe at its epsilon (per-budget table first)."""
  table = config.dp.get('clip_norms', {}) or {}
  for key, value in table.items():
    if float(key) == float(config.dp.epsilon):
      return float(value)
  return float(config.dp.clip_norm)


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
  epsilon, delta = float(config.dp.epsilon), float(config.dp.delta)
  accounting.validate(epsilon=epsilon, delta=delta)
  n, b = int(num_train_examples), int(config.batch_size)
  if b < 1 or b > n:
    raise ValueError(f'batch_size must lie in [1, {n}] (the training-set '
                     f'size), got {b}.')
  if int(config.epochs) < 1:
    raise ValueError(f'epochs must be positive, got {config.epochs}.')
  steps_per_epoch = n // b
  steps = steps_per_epoch * int(config.epochs)
  q = b / n
  if math.isinf(epsilon):
    # Shuffled fixed-size batches: every example once an epoch.
    steps_per_epoch = math.ceil(n / b)
    return PrivacyPlan(epsilon, delta, q, steps_per_epoch * int(config.epochs),
                       steps_per_epoch, b, 0.0, None, b)
  z = accounting.calibrate_noise_multiplier(epsilon, delta, q, steps)
  if config.dp.engine == 'tf_privacy':
    # TF Privacy noises every call: a whole logical batch in one chunk.
    chunk = sampling.poisson_bound(n, q, steps, failure_prob=1e-6)
  else:
    chunk = (int(config.physical_batch_size) or
             sampling.poisson_bound(n, q, steps))
  chunk = -(-chunk // replicas) * replicas
  return PrivacyPlan(epsilon, delta, q, steps, steps_per_epoch, b, z,
                     clip_norm_for(config), chunk)


def _make_optimizer(config: ml_collections.ConfigDict, model: tf.keras.Model,
                    strategy: tf.distribute.Strategy):
  """The recipe's optimizer, its variables created under `strategy`."""
  return optimizers.make_optimizer(config.optimizer, config.learning_rate,
                                   model.trainable_variables, strategy)


def make_step(config: ml_collections.ConfigDict, plan: PrivacyPlan,
              model: tf.keras.Model,
              strategy: tf.distribute.Strategy | None = None,
              generator: tf.random.Generator | None = None):
  """The training step for the plan: DP (by engine) or non-private.

  With a strategy of several replicas, the DP step sums clipped gradients
  over replicas and noises the total once (replicated.py).

  Args:
    config: the recipe.
    plan: the run's privacy plan.
    model: the model to train.
    strategy: the tf.distribute strategy (default: the current one).
    generator: the DP noise generator (a MechanismRandomness's); None: the
      step draws a secret one.
  """
  strategy = strategy or tf.distribute.get_strategy()
  replicas = strategy.num_replicas_in_sync
  loss = losses.for_task(task_of(config), config.get('class_weights', ()))
  optimizer = _make_optimizer(config, model, strategy)
  if replicas > 1 and not (plan.private and
                           config.dp.engine != 'tf_privacy'):
    raise ValueError(
        f'--strategy with {replicas} replicas needs DP training with the '
        f'vectorized or ghost engine (got epsilon={plan.epsilon_target}, '
        f'engine={config.dp.engine}); TF Privacy\'s optimizers add noise on '
        'every replica.')
  if not plan.private:
    return dp_step.NonPrivateStep(model, loss, optimizer)
  if config.dp.engine == 'tf_privacy':
    # TF Privacy differentiates each example's loss of one batched forward
    # pass: the same layer rules as the vectorized engine apply.
    layer_checks.check_model(model, 'vectorized')
    optimizer = tf_privacy.make_optimizer(
        config.optimizer, clip_norm=plan.clip_norm,
        noise_multiplier=plan.noise_multiplier,
        learning_rate=config.learning_rate,
        variables=model.trainable_variables)
    return tf_privacy.TfPrivacyStep(
        model, loss, optimizer, expected_batch_size=plan.expected_batch_size)
  kwargs = dict(clip_norm=plan.clip_norm,
                noise_multiplier=plan.noise_multiplier,
                expected_batch_size=plan.expected_batch_size,
                generator=generator, engine=config.dp.engine,
                jit_compile=bool(config.get('jit_compile', False)))
  if replicas > 1:
    return replicated.ReplicatedDPStep(strategy, model, loss, optimizer,
                                       **kwargs)
  return dp_step.DPStep(model, loss, optimizer, **kwargs)


def _flip_probs(config: ml_collections.ConfigDict) -> dict[int, float]:
  return {1: float(config.augment.flip_vertical),
          2: float(config.augment.flip_horizontal)}


def _epoch_plan(plan: PrivacyPlan, num_train: int, seed: int, epoch: int,
                sampling_key=None):
  """(step, chunk) pairs of one epoch.

  Private runs draw Poisson batches from `sampling_key` (secret); the
  non-private baseline shuffles with the training seed.
  """
  if not plan.private:
    batches = sampling.shuffled_batches(num_train, plan.expected_batch_size,
                                        seed, epoch)
    first = epoch * len(batches)
    return [(first + i, c) for i, c in enumerate(batches)]
  sampler = sampling.PoissonSampler(num_train, plan.sampling_rate,
                                    sampling_key)
  first = epoch * plan.steps_per_epoch
  return [(s, c) for s in range(first, first + plan.steps_per_epoch)
          for c in sampling.to_chunks(sampler.step_indices(s), plan.chunk_size)]


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
  return config.get('task', 'classification')


def class_names(config: ml_collections.ConfigDict) -> list[str]:
  """The recipe's class names, or their indices."""
  names = config.get('class_names', ())
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
  stopping = config.get('early_stopping')
  if not stopping or not int(stopping.patience):
    return None
  metric = stopping.get('metric') or primary_metric(config)
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


def _strict_json(obj: Any) -> Any:
  """Infinite floats become the string 'inf' (JSON has no infinity)."""
  if isinstance(obj, float) and math.isinf(obj):
    return 'inf' if obj > 0 else '-inf'
  if isinstance(obj, dict):
    return {k: _strict_json(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_strict_json(v) for v in obj]
  return obj


def write_json_atomic(path: str, obj: Any) -> None:
  """Writes strict JSON through a temporary file, never truncating `path`.

  The object is serialised before anything is written, so an object JSON
  cannot hold (NaN) raises ValueError and leaves no file behind.
  """
  text = json.dumps(_strict_json(obj), indent=2, allow_nan=False)
  tmp = path + '.tmp'
  with tf.io.gfile.GFile(tmp, 'w') as f:
    f.write(text)
  tf.io.gfile.rename(tmp, path, overwrite=True)


class CheckpointError(RuntimeError):
  """No checkpoint of the run restores."""


def _read_json(path: str, default: Any) -> Any:
  if not tf.io.gfile.exists(path):
    return default
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


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
  if norm.get('fit_on_data', False):
    if private:
      raise ValueError(
          '--config.normalization.fit_on_data=True reads statistics of the '
          'private training set outside DP; it is allowed only with '
          '--epsilon=inf. Private runs use the recipe\'s fixed '
          'normalization.mean and normalization.std.')
    return pipeline.Normalizer.fit(train)
  return pipeline.Normalizer.fixed(norm.mean, norm.std)


def _all_finite(variables) -> tf.Tensor:
  return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v))
                        for v in variables])


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
    The results dict, also written to workdir/results.json.

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
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  results_path = os.path.join(workdir, 'results.json')
  latest = tf.train.latest_checkpoint(ckpt_dir)
  if latest and not resume:
    raise FileExistsError(
        f'--workdir={workdir} already holds a checkpoint ({latest}); pass '
        '--resume to continue it, or choose another --workdir.')
  if resume and not latest:
    print(f'--resume: no checkpoint in {workdir}; starting a new run.')
  if latest:
    previous = _read_json(results_path, None)
    if (previous and previous.get('status') == 'finished' and
        previous.get('epochs') == int(config.epochs)):
      print(f'The run in {workdir} has finished; nothing to resume.')
      return previous
  tf.keras.utils.set_random_seed(int(config.seed))
  train = data.load_split(config, 'train', data_dir)
  validation = data.load_split(config, 'validation', data_dir)
  test = data.load_split(config, 'test', data_dir)
  strategy = strategy or tf.distribute.get_strategy()
  plan = plan_privacy(config, len(train), strategy.num_replicas_in_sync)
  normalizer = normalizer_for(config, train, plan.private)
  with strategy.scope():
    model = models.build(config.model, tuple(config.input_shape),
                         int(config.num_classes))
  mechanism = None
  if plan.private:
    insecure = bool(config.dp.insecure_seeded_randomness)
    if config.dp.engine == 'tf_privacy' and not insecure:
      raise ValueError(
          '--config.dp.engine=tf_privacy draws its noise from TensorFlow\'s '
          'global seed (set by the training seed), so anyone who knows the '
          'seed can remove it; it runs only with '
          '--config.dp.insecure_seeded_randomness=true, as a reference.')
    mechanism = dp_randomness.make(insecure, int(config.seed))
    if insecure:
      logging.warning('--config.dp.insecure_seeded_randomness=true: the '
                      'Poisson batches and the noise derive from the seed; '
                      'the run is reproducible and NOT private.')
  step = make_step(config, plan, model, strategy,
                   generator=mechanism.noise_generator if mechanism else None)
  if plan.private:
    logging.info('DP-SGD: engine=%s z=%.6g C=%g q=%.5g T=%d chunk=%d '
                 'replicas=%d randomness=%s', config.dp.engine,
                 plan.noise_multiplier, plan.clip_norm, plan.sampling_rate,
                 plan.steps, plan.chunk_size, strategy.num_replicas_in_sync,
                 mechanism.mode)
  else:
    logging.info('Non-private training: batch %d', plan.expected_batch_size)

  ledger = privacy_ledger.PrivacyLedger()
  progress_var = tf.Variable(0, dtype=tf.int64, trainable=False)
  wall_var = tf.Variable(0.0, dtype=tf.float64, trainable=False)
  # The running training loss of the current epoch (non-private runs only),
  # so that a resumed epoch reports the mean over all its steps.
  loss_sum = tf.Variable(0.0, dtype=tf.float64, trainable=False)
  loss_count = tf.Variable(0, dtype=tf.int64, trainable=False)
  trackables = dict(model=model, optimizer=step.optimizer, ledger=ledger,
                    steps=progress_var, wall_seconds=wall_var,
                    epoch_loss_sum=loss_sum, epoch_loss_count=loss_count)
  if mechanism is not None:
    trackables['mechanism_randomness'] = mechanism
  stopping = None
  if stopping_rule is not None:
    stopping = EarlyStoppingState(stopping_rule)
    trackables['early_stopping'] = stopping
  checkpoint = tf.train.Checkpoint(**trackables)
  manager = tf.train.CheckpointManager(checkpoint, ckpt_dir, max_to_keep=2)
  history_path = os.path.join(workdir, 'history.json')
  history = []
  if latest:
    restored = _restore_newest_readable(checkpoint, manager)
    history = [h for h in _read_json(history_path, [])
               if h['steps'] <= int(progress_var.numpy())]
    logging.info('Resumed from %s at step %d.', restored, progress_var.numpy())
    # The checkpoint restores the optimizer's learning rate too; the recipe
    # (and its --config.learning_rate) stays the source of truth.
    step.optimizer.learning_rate = float(config.learning_rate)
  steps_done = int(progress_var.numpy())
  wall_before = float(wall_var.numpy())
  if plan.private:
    projected = privacy_ledger.PrivacyLedger()
    for segment in ledger.segments:
      projected.record(segment.noise_multiplier, segment.sampling_rate,
                       segment.steps)
    if plan.steps > steps_done:
      projected.record(plan.noise_multiplier, plan.sampling_rate,
                       plan.steps - steps_done)
    if projected.epsilon(plan.delta) > plan.epsilon_target * (1 + 1e-9):
      raise BudgetExceededError(
          f'Stopping: the ledger ({ledger.steps} steps) plus the remaining '
          f'{max(plan.steps - steps_done, 0)} steps would spend epsilon='
          f'{projected.epsilon(plan.delta):.6g} > target '
          f'{plan.epsilon_target:g}.')

  def save() -> None:
    wall_var.assign(wall_before + time.time() - start)
    manager.save(checkpoint_number=steps_done)

  weights_finite = tf.function(
      lambda: _all_finite(model.trainable_variables))
  writer = tf.summary.create_file_writer(os.path.join(workdir, 'tensorboard'))
  flips = _flip_probs(config)
  metric = primary_metric(config)
  every = int(config.checkpoint_every_steps)
  stop_after = int(config.stop_after_steps)
  sampling_key = mechanism.sampling_key() if mechanism else None
  for epoch in range(steps_done // plan.steps_per_epoch, int(config.epochs)):
    if (stop_after and steps_done >= stop_after) or (
        stopping is not None and stopping.stopped):
      break
    epoch_plan = [(s, c) for s, c in
                  _epoch_plan(plan, len(train), int(config.seed), epoch,
                              sampling_key)
                  if s >= steps_done]
    last_chunk_of_step = {s: i for i, (s, _) in enumerate(epoch_plan)}
    num_steps = len(last_chunk_of_step)
    if steps_done == epoch * plan.steps_per_epoch:
      loss_sum.assign(0.0)
      loss_count.assign(0)
    if (plan.private and config.dp.engine == 'tf_privacy' and
        len(epoch_plan) > num_steps):
      raise RuntimeError(
          f'A Poisson batch exceeded {plan.chunk_size} examples; the '
          'tf_privacy engine cannot split it. Use engine=vectorized.')
    print(f'Epoch {epoch + 1}/{config.epochs}')
    progress = tf.keras.utils.Progbar(num_steps, stateful_metrics=['epsilon'])
    dataset = pipeline.train_dataset(
        train, epoch_plan, normalizer, int(config.augment.multiplicity), flips,
        int(config.seed))
    chunk_losses = []
    stopped = False
    for i, ((s, _), (x, y, mask)) in enumerate(zip(epoch_plan, dataset)):
      chunk_losses.append(step.accumulate(x, y, mask))
      if last_chunk_of_step[s] != i:
        continue
      step.apply()
      # A post-processing check of the released (noised) update.
      if not bool(weights_finite()):
        raise NonFiniteError(
            f'Step {steps_done + 1}: the model\'s weights became NaN or '
            'infinite (likely cause: --config.learning_rate='
            f'{config.learning_rate} too high or not finite, or non-finite '
            'input data). Nothing of this step was saved; the workdir can '
            'be resumed from its last checkpoint with --resume.')
      steps_done += 1
      progress_var.assign(steps_done)
      if plan.private:
        ledger.record(plan.noise_multiplier, plan.sampling_rate)
        # The training loss of private data is not published.
        progress.add(1)
      else:
        step_loss = float(np.mean([float(l) for l in chunk_losses]))
        loss_sum.assign_add(step_loss)
        loss_count.assign_add(1)
        progress.add(1, [('loss', step_loss)])
      chunk_losses = []
      if every and steps_done % every == 0:
        save()
      if stop_after and steps_done >= stop_after:
        stopped = steps_done < (epoch + 1) * plan.steps_per_epoch
        break
    epsilon = ledger.epsilon(plan.delta) if plan.private else math.inf
    stop_early = False
    if not stopped:
      val = evaluate(model, validation, normalizer, config,
                     soft_dice=task_of(config) == 'segmentation' and
                     stopping_rule is not None and
                     stopping_rule.metric == 'soft_dice')
      progress.update(num_steps, [('epsilon', epsilon),
                                  (f'val_{metric}', val[metric])],
                      finalize=True)
      entry = {'epoch': epoch + 1, 'validation': val,
               'epsilon_spent': epsilon, 'steps': steps_done}
      with writer.as_default(step=epoch + 1):
        if not plan.private:
          entry['loss'] = float(loss_sum.numpy()) / max(
              int(loss_count.numpy()), 1)
          tf.summary.scalar('train/loss', entry['loss'])
        for name, value in val.items():
          tf.summary.scalar(f'validation/{name}', value)
        tf.summary.scalar('privacy/epsilon_spent', epsilon)
      history.append(entry)
      if stopping is not None:
        stop_early = stopping.update(epoch + 1, val[stopping_rule.metric])
    save()
    write_json_atomic(history_path, history)
    if stop_early:
      print(f'Early stopping after epoch {epoch + 1}: validation '
            f'{stopping_rule.metric} has not improved by more than '
            f'{stopping_rule.min_delta:g} for {stopping_rule.patience} epochs '
            f'(best {float(stopping.best.numpy()):.4g} at epoch '
            f'{int(stopping.best_epoch.numpy())}).')
      break

  finished = steps_done >= plan.steps or (stopping is not None and
                                          stopping.stopped)
  save_release_model(model, os.path.join(workdir, 'model.keras'))
  results = {
      'dataset': config.dataset,
      'recipe': config.get('recipe', config.dataset),
      'model': config.model.name,
      'engine': config.dp.engine if plan.private else 'non_private',
      'status': 'finished' if finished else 'interrupted',
      'epsilon_target': plan.epsilon_target,
      'epsilon_spent': ledger.epsilon(plan.delta) if plan.private else math.inf,
      'delta': plan.delta,
      'randomness': mechanism.mode if mechanism else None,
      'replicas': strategy.num_replicas_in_sync,
      'noise_multiplier': plan.noise_multiplier,
      'clip_norm': plan.clip_norm,
      'sampling_rate': plan.sampling_rate,
      'steps': steps_done,
      'planned_steps': plan.steps,
      'privacy_ledger': ledger.to_dict(),
      'epochs': int(config.epochs),
      'early_stopping': stopping.to_dict() if stopping is not None else None,
      'batch_size': plan.expected_batch_size,
      'physical_batch_size': plan.chunk_size,
      'num_train_examples': len(train),
      'seed': int(config.seed),
      'metrics': (evaluate(model, test, normalizer, config)
                  if finished else None),
      'validation_metrics': history[-1]['validation'] if history else None,
      'history': history,
      'wall_seconds': wall_before + time.time() - start,
  }
  write_json_atomic(results_path, results)
  return results
