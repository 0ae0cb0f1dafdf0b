"""Runs the imprint attack over images for several privacy budgets.

For every image, the malicious server's imprinted model takes one gradient at
batch size 1. For each budget, that gradient then goes through exactly what
DP-SGD at that budget does to one example's gradient: clipping of all
trainable variables together to global L2 norm C, and Gaussian noise of
standard deviation z * C on every coordinate, z calibrated by the project's
accountant for the attack's own setting (batch size 1 over the training
split: q = 1 / N_train and T = epochs * N_train steps). epsilon = inf is
non-private training: no clipping and no noise. The noisy gradient of the
imprint block is divided out into candidates, and the image's reconstruction
error is the minimum of 1 - SSIM over them. Near-empty images are skipped.

Example:

  >>> budgets = make_budgets([1e12, math.inf], delta=8e-7,
  ...                        num_train_examples=2400, epochs=12, clip_norm=1.0)
  >>> result = run_attack(imprint_model(model), images, labels, budgets)
  >>> result.summary()['inf']['share_below_0.1']
  1.0
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from typing import Callable, Mapping, Sequence

import ml_collections
import numpy as np
import tensorflow as tf

from dp_medtf.attacks import imprint
from dp_medtf.attacks import recovery
from dp_medtf.attacks import scoring
from dp_medtf.privacy import accounting
from dp_medtf.privacy import clipping
from dp_medtf.privacy import noise

Loss = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
THRESHOLDS = (0.1, 0.2, 0.3)


def budget_key(epsilon: float) -> str:
  """The text naming a budget in outputs: 'inf', '1e+09', '8', ..."""
  return 'inf' if math.isinf(epsilon) else f'{epsilon:g}'


@dataclasses.dataclass(frozen=True)
class Budget:
  """DP-SGD at one privacy budget, as seen by the attack.

  Attributes:
    epsilon: the budget; math.inf for non-private training.
    delta: the target delta.
    noise_multiplier: z; 0.0 for epsilon = inf.
    clip_norm: C; None for epsilon = inf (no clipping).
    sampling_rate: q of the attack's setting (batch size 1).
    steps: T of the attack's setting.
  """
  epsilon: float
  delta: float
  noise_multiplier: float
  clip_norm: float | None
  sampling_rate: float
  steps: int

  @property
  def key(self) -> str:
    return budget_key(self.epsilon)

  @property
  def private(self) -> bool:
    return math.isfinite(self.epsilon)


def make_budgets(epsilons: Sequence[float], *, delta: float,
                 num_train_examples: int, epochs: int,
                 clip_norm: float | Mapping[str, float]) -> list[Budget]:
  """Calibrates the noise of each budget for batch size 1.

  Args:
    epsilons: the budgets (positive; math.inf allowed).
    delta: the target delta.
    num_train_examples: size N of the training split; q = 1 / N.
    epochs: training epochs; T = epochs * N.
    clip_norm: C for all budgets, or a mapping from budget_key(epsilon) to C.

  Returns:
    One Budget per epsilon, in order.
  """
  if num_train_examples < 1:
    raise ValueError(
        f'num_train_examples must be positive, got {num_train_examples}.')
  if epochs < 1:
    raise ValueError(f'epochs must be positive, got {epochs}.')
  sampling_rate = 1.0 / num_train_examples
  steps = int(epochs) * int(num_train_examples)
  budgets = []
  for epsilon in epsilons:
    accounting.validate(epsilon=epsilon, delta=delta)
    if math.isinf(epsilon):
      budgets.append(Budget(math.inf, delta, 0.0, None, sampling_rate, steps))
      continue
    c = (clip_norm[budget_key(epsilon)] if isinstance(clip_norm, Mapping)
         else clip_norm)
    if not c > 0:
      raise ValueError(f'clip_norm must be positive, got {c}.')
    z = accounting.calibrate_noise_multiplier(epsilon, delta, sampling_rate,
                                              steps)
    budgets.append(Budget(float(epsilon), delta, z, float(c), sampling_rate,
                          steps))
  return budgets


def recipe_clip_norm(config: ml_collections.ConfigDict,
                     epsilon: float) -> float:
  """The recipe's clip norm at a budget.

  Args:
    config: a dataset recipe.
    epsilon: the budget.

  Returns:
    The dp.clip_norms entry whose key parses to `epsilon`, else dp.clip_norm.
  """
  table = config.dp.get('clip_norms', {}) or {}
  for key, value in table.items():
    if float(key) == float(epsilon):
      return float(value)
  return float(config.dp.clip_norm)


def budgets_from_config(config: ml_collections.ConfigDict,
                        epsilons: Sequence[float],
                        clip_norm: float | None = None) -> list[Budget]:
  """make_budgets with the delta, N, epochs and clip norms of a recipe.

  Args:
    config: a dataset recipe.
    epsilons: the budgets.
    clip_norm: C for every budget; None takes each budget's from the recipe.
  """
  norms = {budget_key(e): clip_norm if clip_norm is not None
           else recipe_clip_norm(config, e) for e in epsilons}
  return make_budgets(epsilons, delta=config.dp.delta,
                      num_train_examples=config.num_train_examples,
                      epochs=config.epochs, clip_norm=norms)


def privatize(grads: Sequence[tf.Tensor], budget: Budget,
              generator: tf.random.Generator) -> list[tf.Tensor]:
  """One example's gradient as DP-SGD at `budget` releases it.

  Args:
    grads: the gradient of all trainable variables.
    budget: the budget; non-private budgets return the gradient unchanged.
    generator: the noise generator.

  Returns:
    The clipped and noised gradient.
  """
  if not budget.private:
    return list(grads)
  clipped, _ = clipping.clip_by_global_norm(grads, budget.clip_norm)
  return noise.add_gaussian_noise(
      clipped, budget.noise_multiplier * budget.clip_norm, generator)


@dataclasses.dataclass(frozen=True)
class Record:
  """One image attacked at one budget.

  Attributes:
    image_id: the image's index in the split.
    budget: budget_key of the budget.
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
    records: one Record per attacked image and budget.
    skipped: ids of the near-empty images that were not attacked.
    best: budget key -> the best reconstructed Examples, best first.
  """
  budgets: list[Budget]
  records: list[Record]
  skipped: list[int]
  best: dict[str, list[Example]]

  def errors(self, key: str) -> np.ndarray:
    """The reconstruction errors at the budget named `key`."""
    return np.array([r.error for r in self.records if r.budget == key])

  def summary(self) -> dict[str, dict[str, float | int | None]]:
    """Budget key -> noise, q, T and statistics of the errors."""
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
          sampling_rate=budget.sampling_rate, steps=budget.steps)
      out[budget.key] = entry
    return out


def _sparse_cross_entropy(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
  return tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
      labels, logits, from_logits=True))


def run_attack(model: tf.keras.Model, images: np.ndarray,
               labels: np.ndarray | None, budgets: Sequence[Budget], *,
               seed: int = 0, image_ids: Sequence[int] | None = None,
               loss_fn: Loss | None = None,
               value_range: tuple[float, float] = (0.0, 1.0),
               top_k: int = 5,
               progress: Callable[[int], None] | None = None
               ) -> AttackResult:
  """Attacks each image at each budget.

  Args:
    model: an imprinted model (see imprint.imprint_model).
    images: [M, ...] images in value_range.
    labels: [M] labels for loss_fn; None uses class 0 for all.
    budgets: the budgets to attack at.
    seed: seed of the DP noise.
    image_ids: ids recorded for the images; 0..M-1 by default.
    loss_fn: (labels [1], outputs [1, ...]) -> scalar loss; sparse
      categorical cross-entropy on logits by default.
    value_range: (low, high) of the normalised images.
    top_k: how many best reconstructions to keep per budget.
    progress: called with the number of images done after each image.

  Returns:
    The AttackResult.
  """
  images = np.asarray(images, np.float32)
  labels = (np.zeros(len(images), np.int32) if labels is None
            else np.asarray(labels))
  image_ids = list(range(len(images)) if image_ids is None else image_ids)
  loss_fn = loss_fn or _sparse_cross_entropy
  block = imprint.find_imprint_block(model)
  variables = model.trainable_variables
  refs = [v.ref() for v in variables]
  kernel_at, bias_at = refs.index(block.kernel.ref()), refs.index(
      block.bias.ref())
  generator = tf.random.Generator.from_seed(seed)

  @tf.function
  def gradient(x, y):
    with tf.GradientTape() as tape:
      loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, variables)
    return [tf.zeros_like(v) if g is None else g
            for v, g in zip(variables, grads)]

  records, skipped = [], []
  heaps = {b.key: [] for b in budgets}
  for done, (image_id, image, label) in enumerate(
      zip(image_ids, images, labels), start=1):
    if scoring.is_near_empty(image):
      skipped.append(int(image_id))
    else:
      grads = gradient(tf.constant(image[None]), tf.constant(label[None]))
      for budget in budgets:
        released = privatize(grads, budget, generator)
        rec = recovery.recover(released[kernel_at].numpy(),
                               released[bias_at].numpy(), image.shape)
        match = scoring.best_match(image, rec.images, value_range)
        name = rec.names[match.index] if match.index >= 0 else ''
        records.append(Record(int(image_id), budget.key, match.error, name))
        best = (np.clip(rec.images[match.index], *value_range)
                if match.index >= 0 else np.zeros_like(image))
        # Max-heap on error via negation; ties keep the earlier image.
        entry = (-match.error, -done, Example(int(image_id), match.error,
                                              image, best))
        heap = heaps[budget.key]
        if len(heap) < top_k:
          heapq.heappush(heap, entry)
        elif entry[:2] > heap[0][:2]:
          heapq.heapreplace(heap, entry)
    if progress is not None:
      progress(done)
  best = {key: [e for _, _, e in sorted(heap, key=lambda t: (-t[0], -t[1]))]
          for key, heap in heaps.items()}
  return AttackResult(list(budgets), records, skipped, best)
