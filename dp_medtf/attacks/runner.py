"""Runs the imprint attack over images for several privacy budgets.

The malicious server's imprinted model takes one gradient per batch of
`batch_size` images (1 by default: the server sets the batch size). For each
budget, that gradient goes through exactly what DP-SGD at that budget does:
each example's gradient is clipped over all trainable variables together to
global L2 norm C, the clipped gradients are summed, Gaussian noise of
standard deviation z * C is added to every coordinate and the sum divided by
the batch size. epsilon = inf is non-private training: the mean gradient, no
clipping and no noise. The noisy gradient of the imprint block is divided
out into candidates; every image of the batch is scored against all of them,
and its reconstruction error is the minimum of 1 - SSIM.

z is calibrated by the project's accountant with the training app's own
rules (`make_budgets`, `budgets_from_config`: q = B / N, T = (N // B) *
epochs for N training examples), or taken from a finished training run
(`budget_from_run`: that run's z, q, T and C).

Near-empty images (at most 10% non-zero pixels) can be left unscored
(`skip_near_empty`, on for RadImageNet as in the paper): they still count in
their batch's gradient, as in training, and are listed in `skipped`.

Example:

  >>> model = tf.keras.Sequential([tf.keras.Input((16, 16, 1)),
  ...                              tf.keras.layers.Flatten(),
  ...                              tf.keras.layers.Dense(2)])
  >>> images = np.random.default_rng(0).uniform(size=(4, 16, 16, 1))
  >>> budgets = make_budgets([1e12, math.inf], delta=8e-7,
  ...                        num_train_examples=2400, epochs=12, clip_norm=1.0)
  >>> result = run_attack(imprint.imprint_model(model), images, None, budgets)
  >>> result.summary()['inf']['share_below_0.1']
  1.0
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import ml_collections
import numpy as np
import tensorflow as tf

from dp_medtf import epsilons as epsilons_lib
from dp_medtf import recipes
from dp_medtf import runs as runs_lib
from dp_medtf.attacks import imprint
from dp_medtf.attacks import recovery
from dp_medtf.attacks import scoring
from dp_medtf.privacy import accounting
from dp_medtf.privacy import clipping
from dp_medtf.privacy import noise

Loss = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
THRESHOLDS = (0.1, 0.2, 0.3)


@dataclasses.dataclass(frozen=True)
class Budget:
  """DP-SGD at one privacy budget, as seen by the attack.

  Attributes:
    epsilon: the budget; math.inf for non-private training.
    delta: the target delta.
    noise_multiplier: z; 0.0 for epsilon = inf.
    clip_norm: C; None for epsilon = inf (no clipping).
    sampling_rate: q of the calibration.
    steps: T of the calibration.
    run_dir: the training run whose z, q, T and C these are; None when
      calibrated for the attack's own setting.
  """
  epsilon: float
  delta: float
  noise_multiplier: float
  clip_norm: float | None
  sampling_rate: float
  steps: int
  run_dir: str | None = None

  @property
  def key(self) -> str:
    """The budget's name in outputs: epsilons.epsilon_text ('1e9', 'inf')."""
    return epsilons_lib.epsilon_text(self.epsilon)

  @property
  def private(self) -> bool:
    return math.isfinite(self.epsilon)


def make_budgets(epsilons: Sequence[float], *, delta: float,
                 num_train_examples: int, epochs: int,
                 clip_norm: float | Mapping[str, float],
                 batch_size: int = 1) -> list[Budget]:
  """Calibrates the noise of each budget as a training run would.

  q and T follow the training app (accounting.sampling_rate_and_steps):
  q = B / N and T = (N // B) * epochs steps; without DP, ceil(N / B) * epochs.

  Args:
    epsilons: the budgets (positive; math.inf allowed).
    delta: the target delta.
    num_train_examples: size N of the training split, counted from the data.
    epochs: training epochs.
    clip_norm: C for all budgets, or a mapping from epsilon_text(epsilon)
      to C.
    batch_size: the expected batch size B, in [1, N].

  Returns:
    One Budget per epsilon, in order.

  Raises:
    ValueError: naming the argument, for an impossible setting.
  """
  sampling_rate, steps = accounting.sampling_rate_and_steps(
      num_train_examples, batch_size, epochs)
  budgets = []
  for epsilon in epsilons:
    accounting.validate(epsilon=epsilon, delta=delta)
    if math.isinf(epsilon):
      budgets.append(Budget(math.inf, delta, 0.0, None, sampling_rate,
                            accounting.sampling_rate_and_steps(
                                num_train_examples, batch_size, epochs,
                                private=False)[1]))
      continue
    c = (clip_norm[epsilons_lib.epsilon_text(epsilon)]
         if isinstance(clip_norm, Mapping) else clip_norm)
    if not c > 0:
      raise ValueError(f'clip_norm must be positive, got {c}.')
    z = accounting.calibrate_noise_multiplier(epsilon, delta, sampling_rate,
                                              steps)
    budgets.append(Budget(float(epsilon), delta, z, float(c), sampling_rate,
                          steps))
  return budgets


def recipe_clip_norm(config: ml_collections.ConfigDict,
                     epsilon: float) -> float:
  """The clip norm a training run of the recipe at `epsilon` uses.

  The recipe's budget rules are applied first, then its dp.clip_norms entry
  for `epsilon` (else dp.clip_norm) is read, as dp_medtf.fit does.
  """
  from dp_medtf import fit  # pylint: disable=g-import-not-at-top
  config = ml_collections.ConfigDict(config.to_dict())
  config.dp.epsilon = float(epsilon)
  return fit.clip_norm_for(recipes.apply_budget_rules(config))


def budgets_from_config(config: ml_collections.ConfigDict,
                        epsilons: Sequence[float], num_train_examples: int,
                        *, batch_size: int = 1,
                        clip_norm: float | None = None) -> list[Budget]:
  """make_budgets with the delta, epochs and clip norms of a recipe.

  Args:
    config: a dataset recipe, with overrides applied.
    epsilons: the budgets.
    num_train_examples: N, the size of the training split in the data (not
      the recipe's num_train_examples estimate).
    batch_size: the attack's batch size B; q = B / N.
    clip_norm: C for every budget; None takes each budget's from the recipe.
  """
  norms = {epsilons_lib.epsilon_text(e): clip_norm if clip_norm is not None
           else recipe_clip_norm(config, e) for e in epsilons if
           math.isfinite(e)}
  return make_budgets(epsilons, delta=config.dp.delta,
                      num_train_examples=num_train_examples,
                      epochs=config.epochs, clip_norm=norms,
                      batch_size=batch_size)


def budget_from_run(results: runs_lib.RunResults, run_dir: str) -> Budget:
  """The budget of a finished training run, from its results.json.

  The attack then applies that run's own noise: z * C on the clipped sum,
  with the run's z, C, q and T, so that it and the run's privacy bounds
  describe the same mechanism.

  Args:
    results: the run's results (runs.read_results).
    run_dir: the run's workdir, for messages and the summary.

  Returns:
    The Budget.

  Raises:
    ValueError: naming the file, for an unfinished run.
  """
  if not results.finished:
    raise ValueError(f'{runs_lib.RunLayout(run_dir).results}: the run is '
                     f'{results.status}, not finished; finish it (train '
                     '--resume) first.')
  private = results.private
  return Budget(
      epsilon=results.epsilon_target, delta=results.delta,
      noise_multiplier=results.noise_multiplier if private else 0.0,
      clip_norm=results.clip_norm if private else None,
      sampling_rate=results.sampling_rate, steps=results.steps,
      run_dir=run_dir)


def clip_example(grads: Sequence[tf.Tensor], norm: tf.Tensor,
                 budget: Budget) -> list[tf.Tensor]:
  """One example's gradient scaled to global L2 norm at most C.

  Args:
    grads: (part of) the example's gradient.
    norm: the global L2 norm of its whole gradient (all trainable
      variables), which clipping bounds.
    budget: the budget; non-private budgets leave the gradient unchanged.
  """
  if not budget.private:
    return list(grads)
  factor = clipping.clip_factor(norm, budget.clip_norm)
  return [g * factor for g in grads]


def privatize(clipped_sum: Sequence[tf.Tensor], budget: Budget,
              generator: tf.random.Generator,
              batch_size: int = 1) -> list[tf.Tensor]:
  """The update DP-SGD at `budget` releases: (clipped sum + noise) / B.

  Args:
    clipped_sum: the sum of the batch's clipped per-example gradients (or of
      some of their variables: noise is independent per coordinate).
    budget: the budget; noise of standard deviation z * C, none without DP.
    generator: the noise generator.
    batch_size: B, the batch size the sum is divided by.

  Returns:
    The released gradient.
  """
  released = list(clipped_sum)
  if budget.private:
    released = noise.add_gaussian_noise(
        released, budget.noise_multiplier * budget.clip_norm, generator)
  return [g / batch_size for g in released]


@dataclasses.dataclass(frozen=True)
class Record:
  """One image attacked at one budget.

  Attributes:
    image_id: the image's index in the split.
    budget: the budget's key (Budget.key).
    error: the minimum of 1 - SSIM over the candidates.
    candidate: the name of the best candidate ('' if there was none).
  """
  image_id: int
  budget: str
  error: float
  candidate: str


@dataclasses.dataclass(frozen=True)
class Example:
  """A well reconstructed image, for figures.

  Attributes:
    image_id: the image's index in the split.
    error: its reconstruction error.
    image: the true image.
    reconstruction: the best candidate, clipped to the value range.
  """
  image_id: int
  error: float
  image: np.ndarray
  reconstruction: np.ndarray


@dataclasses.dataclass
class AttackResult:
  """Everything one attack run measured.

  Attributes:
    budgets: the budgets, in order.
    records: one Record per scored image and budget.
    skipped: ids of the near-empty images that were not scored.
    best: budget key -> the best reconstructed Examples, best first.
    batch_size: images per attacked gradient.
  """
  budgets: list[Budget]
  records: list[Record]
  skipped: list[int]
  best: dict[str, list[Example]]
  batch_size: int = 1

  def errors(self, key: str) -> np.ndarray:
    """The reconstruction errors at the budget named `key`."""
    return np.array([r.error for r in self.records if r.budget == key])

  def summary(self) -> dict[str, dict[str, Any]]:
    """Budget key -> noise, q, T, C, B and statistics of the errors."""
    out = {}
    for budget in self.budgets:
      errors = self.errors(budget.key)
      entry = {'noise_multiplier': budget.noise_multiplier}
      for threshold in THRESHOLDS:
        entry[f'share_below_{threshold}'] = (
            float(np.mean(errors < threshold)) if errors.size else None)
      entry.update(
          median_error=float(np.median(errors)) if errors.size else None,
          num_images=int(errors.size), num_skipped=len(self.skipped),
          sampling_rate=budget.sampling_rate, steps=budget.steps,
          clip_norm=budget.clip_norm, batch_size=self.batch_size,
          run_dir=budget.run_dir)
      out[budget.key] = entry
    return out


def _sparse_cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  return tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
      labels, logits, from_logits=True))


def attack(model: tf.keras.Model,
           examples: Iterable[tuple[int, np.ndarray, Any]],
           budgets: Sequence[Budget], *, batch_size: int = 1, seed: int = 0,
           loss_fn: Loss | None = None,
           value_range: tuple[float, float] = (0.0, 1.0), top_k: int = 5,
           skip_near_empty: bool = False,
           progress: Callable[[int], None] | None = None) -> AttackResult:
  """Attacks consecutive batches of examples at each budget.

  Each batch's per-example gradients are taken one example at a time
  (exact for models without cross-example layers, which DP-SGD requires),
  clipped per budget and summed; only the imprint block's part is kept, as
  recovery reads nothing else, but the clipping norm is that of the whole
  gradient.

  Args:
    model: an imprinted model (see imprint.imprint_model).
    examples: (image id, image in value_range, label) triples, streamed.
    budgets: the budgets to attack at.
    batch_size: images per gradient; the last batch may be smaller.
    seed: seed of the DP noise.
    loss_fn: (labels [1, ...], outputs [1, ...]) -> scalar loss; sparse
      categorical cross-entropy on logits by default.
    value_range: (low, high) of the images.
    top_k: how many best reconstructions to keep per budget.
    skip_near_empty: leave images with at most 10% non-zero pixels unscored.
    progress: called with the number of images done after each batch.

  Returns:
    The AttackResult.
  """
  if batch_size < 1:
    raise ValueError(f'batch_size must be positive, got {batch_size}.')
  loss_fn = loss_fn or _sparse_cross_entropy
  block = imprint.find_imprint_block(model)
  variables = model.trainable_variables
  refs = [v.ref() for v in variables]
  kernel_at, bias_at = refs.index(block.kernel.ref()), refs.index(
      block.bias.ref())
  generator = tf.random.Generator.from_seed(seed)

  @tf.function
  def gradient(x, y):
    """The global norm and imprint part of one example's gradient."""
    with tf.GradientTape() as tape:
      loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, variables)
    grads = [tf.zeros_like(v) if g is None else g
             for v, g in zip(variables, grads)]
    return clipping.global_norm(grads), grads[kernel_at], grads[bias_at]

  records, skipped = [], []
  heaps = {b.key: [] for b in budgets}
  done = 0

  def attack_batch(batch):
    empty = [skip_near_empty and scoring.is_near_empty(e[1]) for e in batch]
    scored = [e for e, out in zip(batch, empty) if not out]
    skipped.extend(int(e[0]) for e, out in zip(batch, empty) if out)
    if not scored:
      return
    sums = {}  # budget key -> the clipped sum of the imprint gradients.
    for _, image, label in batch:
      norm, kernel, bias = gradient(tf.constant(image[None], tf.float32),
                                    tf.constant(np.asarray(label)[None]))
      for budget in budgets:
        clipped = clip_example([kernel, bias], norm, budget)
        total = sums.get(budget.key)
        sums[budget.key] = (clipped if total is None else
                            [a + b for a, b in zip(total, clipped)])
    for budget in budgets:
      kernel, bias = privatize(sums[budget.key], budget, generator,
                               batch_size)
      rec = recovery.recover(kernel.numpy(), bias.numpy(), batch[0][1].shape)
      for image_id, image, _ in scored:
        match = scoring.best_match(image, rec.images, value_range)
        name = rec.names[match.index] if match.index >= 0 else ''
        records.append(Record(int(image_id), budget.key, match.error, name))
        best = (np.clip(rec.images[match.index], *value_range)
                if match.index >= 0 else np.zeros_like(image))
        # Max-heap on error via negation; ties keep the earlier image.
        entry = (-match.error, -len(records), Example(
            int(image_id), match.error, image, best))
        heap = heaps[budget.key]
        if len(heap) < top_k:
          heapq.heappush(heap, entry)
        elif entry[:2] > heap[0][:2]:
          heapq.heapreplace(heap, entry)

  batch = []
  for image_id, image, label in examples:
    batch.append((image_id, np.asarray(image, np.float32), label))
    if len(batch) == batch_size:
      attack_batch(batch)
      done += len(batch)
      batch = []
      if progress is not None:
        progress(done)
  if batch:
    attack_batch(batch)
    done += len(batch)
    if progress is not None:
      progress(done)
  best = {key: [e for _, _, e in sorted(heap, key=lambda t: (-t[0], -t[1]))]
          for key, heap in heaps.items()}
  return AttackResult(list(budgets), records, skipped, best, batch_size)


def run_attack(model: tf.keras.Model, images: np.ndarray,
               labels: np.ndarray | None, budgets: Sequence[Budget], *,
               image_ids: Sequence[int] | None = None,
               **kwargs) -> AttackResult:
  """`attack` over images held in an array.

  Args:
    model: an imprinted model (see imprint.imprint_model).
    images: [M, ...] images.
    labels: [M, ...] labels for the loss; None uses class 0 for all.
    budgets: the budgets to attack at.
    image_ids: ids recorded for the images; 0..M-1 by default.
    **kwargs: batch_size, seed, loss_fn, value_range, top_k,
      skip_near_empty, progress, as for `attack`.

  Returns:
    The AttackResult.
  """
  images = np.asarray(images, np.float32)
  labels = (np.zeros(len(images), np.int32) if labels is None
            else np.asarray(labels))
  image_ids = list(range(len(images)) if image_ids is None else image_ids)
  return attack(model, zip(image_ids, images, labels), budgets, **kwargs)
