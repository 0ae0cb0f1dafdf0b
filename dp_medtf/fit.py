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
from dp_medtf.data import pipeline
from dp_medtf.data import sampling
from dp_medtf.privacy import accounting
from dp_medtf.privacy import ledger as privacy_ledger
from dp_medtf.privacy import replicated
from dp_medtf.privacy import step as dp_step
from dp_medtf.privacy import tf_privacy


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


def _make_optimizer(config: ml_collections.ConfigDict):
  optimizers = {'nadam': tf.keras.optimizers.Nadam,
                'adam': tf.keras.optimizers.Adam}
  if config.optimizer not in optimizers:
    raise ValueError(f'Unknown optimizer {config.optimizer!r}; choose one of '
                     f'{sorted(optimizers)}.')
  return optimizers[config.optimizer](config.learning_rate)


def make_step(config: ml_collections.ConfigDict, plan: PrivacyPlan,
              model: tf.keras.Model,
              strategy: tf.distribute.Strategy | None = None):
  """The training step for the plan: DP (by engine) or non-private.

  With a strategy of several replicas, the DP step sums clipped gradients
  over replicas and noises the total once (replicated.py).
  """
  strategy = strategy or tf.distribute.get_strategy()
  replicas = strategy.num_replicas_in_sync
  loss = losses.for_task(task_of(config), config.get('class_weights', ()))
  with strategy.scope():
    optimizer = _make_optimizer(config)
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
    optimizer = tf_privacy.make_optimizer(
        config.optimizer, clip_norm=plan.clip_norm,
        noise_multiplier=plan.noise_multiplier,
        learning_rate=config.learning_rate)
    return tf_privacy.TfPrivacyStep(model, loss, optimizer)
  kwargs = dict(clip_norm=plan.clip_norm,
                noise_multiplier=plan.noise_multiplier,
                expected_batch_size=plan.expected_batch_size,
                seed=int(config.seed), engine=config.dp.engine,
                jit_compile=bool(config.get('jit_compile', False)))
  if replicas > 1:
    return replicated.ReplicatedDPStep(strategy, model, loss, optimizer,
                                       **kwargs)
  return dp_step.DPStep(model, loss, optimizer, **kwargs)


def _flip_probs(config: ml_collections.ConfigDict) -> dict[int, float]:
  return {1: float(config.augment.flip_vertical),
          2: float(config.augment.flip_horizontal)}


def _epoch_plan(plan: PrivacyPlan, num_train: int, seed: int, epoch: int):
  """(step, chunk) pairs of one epoch."""
  if not plan.private:
    batches = sampling.shuffled_batches(num_train, plan.expected_batch_size,
                                        seed, epoch)
    first = epoch * len(batches)
    return [(first + i, c) for i, c in enumerate(batches)]
  sampler = sampling.PoissonSampler(num_train, plan.sampling_rate, seed)
  first = epoch * plan.steps_per_epoch
  return [(s, c) for s in range(first, first + plan.steps_per_epoch)
          for c in sampling.to_chunks(sampler.step_indices(s), plan.chunk_size)]


def evaluate(model: tf.keras.Model, split, normalizer: pipeline.Normalizer,
             config: ml_collections.ConfigDict) -> dict[str, float]:
  """The recipe's metrics on a split.

  Classification: MCC and accuracy. Segmentation: the mean over volumes of
  each foreground class's Dice ('dice_<class name>').
  """
  predict = tf.function(lambda x: tf.argmax(model(x, training=False), -1))
  truth, pred = [], []
  for x, y in pipeline.eval_dataset(split, normalizer,
                                    int(config.eval_batch_size)):
    truth.append(y.numpy())
    pred.append(predict(x).numpy())
  truth, pred = np.concatenate(truth), np.concatenate(pred)
  num_classes = int(config.num_classes)
  if task_of(config) == 'classification':
    return {'mcc': metrics.mcc(truth, pred, num_classes),
            'accuracy': float(np.mean(pred == truth))}
  dice = metrics.dice_per_class(truth, pred, num_classes)
  names = class_names(config)
  return {f'dice_{names[c]}': float(np.nanmean(dice[:, c]))
          if np.isfinite(dice[:, c]).any() else 0.0
          for c in range(1, num_classes)}


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
  """Writes strict JSON through a temporary file, never truncating `path`."""
  tmp = path + '.tmp'
  with tf.io.gfile.GFile(tmp, 'w') as f:
    json.dump(_strict_json(obj), f, indent=2, allow_nan=False)
  tf.io.gfile.rename(tmp, path, overwrite=True)


class BudgetExceededError(RuntimeError):
  """Training further would spend more than the target epsilon."""


def _read_json(path: str, default: Any) -> Any:
  if not tf.io.gfile.exists(path):
    return default
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       data_dir: str = '', resume: bool = False,
                       strategy: tf.distribute.Strategy | None = None
                       ) -> dict[str, Any]:
  """Trains the recipe's model and writes the run's outputs to `workdir`.

  Checkpoints (model, optimizer, noise generator, privacy ledger) are saved
  every `config.checkpoint_every_steps` steps (0: each epoch). With `resume`,
  the run continues from the last checkpoint and draws exactly the batches
  and noise an uninterrupted run would.

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
    BudgetExceededError: the ledger plus the remaining steps would spend more
      than the target epsilon (for example, a resumed run with more epochs).
  """
  start = time.time()
  tf.io.gfile.makedirs(workdir)
  ckpt_dir = os.path.join(workdir, 'checkpoints')
  latest = tf.train.latest_checkpoint(ckpt_dir)
  if latest and not resume:
    raise FileExistsError(
        f'--workdir={workdir} already holds a checkpoint ({latest}); pass '
        '--resume to continue it, or choose another --workdir.')
  tf.keras.utils.set_random_seed(int(config.seed))
  train = data.load_split(config, 'train', data_dir)
  validation = data.load_split(config, 'validation', data_dir)
  test = data.load_split(config, 'test', data_dir)
  strategy = strategy or tf.distribute.get_strategy()
  plan = plan_privacy(config, len(train), strategy.num_replicas_in_sync)
  normalizer = pipeline.Normalizer.fit(train)
  with strategy.scope():
    model = models.build(config.model, tuple(config.input_shape),
                         int(config.num_classes))
  step = make_step(config, plan, model, strategy)
  if plan.private:
    logging.info('DP-SGD: engine=%s z=%.6g C=%g q=%.5g T=%d chunk=%d '
                 'replicas=%d', config.dp.engine, plan.noise_multiplier,
                 plan.clip_norm, plan.sampling_rate, plan.steps,
                 plan.chunk_size, strategy.num_replicas_in_sync)
  else:
    logging.info('Non-private training: batch %d', plan.expected_batch_size)

  ledger = privacy_ledger.PrivacyLedger()
  progress_var = tf.Variable(0, dtype=tf.int64, trainable=False)
  trackables = dict(model=model, optimizer=step.optimizer, ledger=ledger,
                    steps=progress_var)
  if hasattr(step, 'generator'):
    trackables['noise_generator'] = step.generator
  checkpoint = tf.train.Checkpoint(**trackables)
  manager = tf.train.CheckpointManager(checkpoint, ckpt_dir, max_to_keep=2)
  history_path = os.path.join(workdir, 'history.json')
  history = []
  if latest:
    checkpoint.restore(latest).assert_existing_objects_matched()
    history = [h for h in _read_json(history_path, [])
               if h['steps'] <= int(progress_var.numpy())]
    logging.info('Resumed from %s at step %d.', latest, progress_var.numpy())
  steps_done = int(progress_var.numpy())
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

  writer = tf.summary.create_file_writer(os.path.join(workdir, 'tensorboard'))
  flips = _flip_probs(config)
  metric = primary_metric(config)
  every = int(config.get('checkpoint_every_steps', 0))
  stop_after = int(config.get('stop_after_steps', 0))
  for epoch in range(steps_done // plan.steps_per_epoch, int(config.epochs)):
    if stop_after and steps_done >= stop_after:
      break
    epoch_plan = [(s, c) for s, c in
                  _epoch_plan(plan, len(train), int(config.seed), epoch)
                  if s >= steps_done]
    last_chunk_of_step = {s: i for i, (s, _) in enumerate(epoch_plan)}
    num_steps = len(last_chunk_of_step)
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
    epoch_losses = []
    stopped = False
    for i, ((s, _), (x, y, mask)) in enumerate(zip(epoch_plan, dataset)):
      epoch_losses.append(float(step.accumulate(x, y, mask)))
      if last_chunk_of_step[s] != i:
        continue
      step.apply()
      steps_done += 1
      progress_var.assign(steps_done)
      if plan.private:
        ledger.record(plan.noise_multiplier, plan.sampling_rate)
      progress.add(1, [('loss', epoch_losses[-1])])
      if every and steps_done % every == 0:
        manager.save(checkpoint_number=steps_done)
      if stop_after and steps_done >= stop_after:
        stopped = steps_done < (epoch + 1) * plan.steps_per_epoch
        break
    epsilon = ledger.epsilon(plan.delta) if plan.private else math.inf
    if not stopped:
      val = evaluate(model, validation, normalizer, config)
      progress.update(num_steps, [('epsilon', epsilon),
                                  (f'val_{metric}', val[metric])],
                      finalize=True)
      with writer.as_default(step=epoch + 1):
        tf.summary.scalar('train/loss', float(np.mean(epoch_losses)))
        for name, value in val.items():
          tf.summary.scalar(f'validation/{name}', value)
        tf.summary.scalar('privacy/epsilon_spent', epsilon)
      history.append({'epoch': epoch + 1,
                      'loss': float(np.mean(epoch_losses)),
                      'validation': val, 'epsilon_spent': epsilon,
                      'steps': steps_done})
    manager.save(checkpoint_number=steps_done)
    write_json_atomic(history_path, history)

  finished = steps_done >= plan.steps
  results = {
      'dataset': config.dataset,
      'model': config.model.name,
      'engine': config.dp.engine if plan.private else 'non_private',
      'status': 'finished' if finished else 'interrupted',
      'epsilon_target': plan.epsilon_target,
      'epsilon_spent': ledger.epsilon(plan.delta) if plan.private else math.inf,
      'delta': plan.delta,
      'replicas': strategy.num_replicas_in_sync,
      'noise_multiplier': plan.noise_multiplier,
      'clip_norm': plan.clip_norm,
      'sampling_rate': plan.sampling_rate,
      'steps': steps_done,
      'planned_steps': plan.steps,
      'privacy_ledger': ledger.to_dict(),
      'epochs': int(config.epochs),
      'batch_size': plan.expected_batch_size,
      'physical_batch_size': plan.chunk_size,
      'num_train_examples': len(train),
      'seed': int(config.seed),
      'metrics': (evaluate(model, test, normalizer, config)
                  if finished else None),
      'validation_metrics': history[-1]['validation'] if history else None,
      'history': history,
      'wall_seconds': time.time() - start,
  }
  write_json_atomic(os.path.join(workdir, 'results.json'), results)
  return results
