"""The embedded demo dataset: synthetic dermatoscopy-like skin lesions.

Generated deterministically in code, so the package runs end to end with no
download. Each image shows a pigmented lesion on skin, with shading, pixel
noise and occasional hairs. Like HAM10000 reduced to "needs immediate
treatment", the label is binary and imbalanced (about 30% positive), and it
depends on two clinical cues that overlap between the classes:

  * border irregularity (the amplitude of high-frequency harmonics of the
    lesion outline), and
  * colour asymmetry (a darker, bluish patch on one side of the lesion).

Positives show each cue with probability 0.85 and benign lesions with
probability 0.1, independently, so no single pixel or cue gives the label
away: even a classifier that reads both cues perfectly reaches an MCC of at
most 0.78 (the Bayes-optimal rule on the two cues).

Example:

  >>> splits = load(image_size=32, seed=0)
  >>> splits['train'].images.shape, splits['train'].images.dtype
  ((2400, 32, 32, 3), dtype('float32'))
"""

from __future__ import annotations

import functools

import numpy as np

from dp_medtf.data.split import ArraySplit  # Re-exported: older imports.

SPLIT_SIZES = {'train': 2400, 'validation': 300, 'test': 300}
POSITIVE_RATE = 0.3
CUE_RATE = {1: 0.85, 0: 0.1}


def make_lesions(num: int, image_size: int,
                 rng: np.random.Generator) -> ArraySplit:
  """Draws `num` synthetic lesion images and their labels.

  Args:
    num: number of images.
    image_size: height and width in pixels.
    rng: the random generator; the result is a function of its state.

  Returns:
    An ArraySplit with RGB images in [0, 1].
  """
  s = image_size
  labels = (rng.random(num) < POSITIVE_RATE).astype(np.int32)
  cue_p = np.where(labels == 1, CUE_RATE[1], CUE_RATE[0])
  irregular = rng.random(num) < cue_p
  asymmetric = rng.random(num) < cue_p

  yy, xx = np.meshgrid(np.arange(s) + 0.5, np.arange(s) + 0.5, indexing='ij')
  cy = s / 2 + rng.normal(0, s * 0.06, num)
  cx = s / 2 + rng.normal(0, s * 0.06, num)
  dy = yy[None] - cy[:, None, None]
  dx = xx[None] - cx[:, None, None]
  dist = np.hypot(dy, dx)
  theta = np.arctan2(dy, dx)

  # Lesion outline: radius modulated by harmonics 2..7.
  r0 = s * rng.uniform(0.18, 0.30, num)
  amplitude = np.where(irregular, rng.uniform(0.10, 0.22, num),
                       rng.uniform(0.0, 0.05, num))
  outline = np.ones((num, s, s))
  for k in range(2, 8):
    a_k = amplitude * rng.uniform(0.3, 1.0, num) / np.sqrt(k - 1)
    phase = rng.uniform(0, 2 * np.pi, num)
    outline += a_k[:, None, None] * np.cos(k * theta + phase[:, None, None])
  # An elliptical stretch common to both classes.
  stretch = rng.uniform(0.0, 0.15, num)
  tilt = rng.uniform(0, np.pi, num)
  outline *= 1 + stretch[:, None, None] * np.cos(
      2 * (theta - tilt[:, None, None]))
  edge = dist - r0[:, None, None] * outline
  mask = 1.0 / (1.0 + np.exp(edge / rng.uniform(0.5, 1.2, num)[:, None, None]))

  # Colours: skin tone and lesion brown, varying per image.
  skin = np.stack([rng.uniform(0.75, 0.92, num), rng.uniform(0.55, 0.72, num),
                   rng.uniform(0.45, 0.62, num)], -1)
  brown = np.stack([rng.uniform(0.35, 0.55, num), rng.uniform(0.22, 0.35, num),
                    rng.uniform(0.15, 0.25, num)], -1)
  dark = np.array([0.18, 0.15, 0.30])
  side = rng.uniform(0, 2 * np.pi, num)
  patch_weight = np.clip(np.cos(theta - side[:, None, None]), 0, 1)
  patch_weight *= np.where(asymmetric, rng.uniform(0.6, 0.9, num),
                           rng.uniform(0.0, 0.15, num))[:, None, None]
  lesion = (brown[:, None, None] * (1 - patch_weight[..., None]) +
            dark * patch_weight[..., None])

  shading = 1 + 0.08 * np.cos(
      (xx[None] * rng.uniform(-0.2, 0.2, num)[:, None, None]) +
      (yy[None] * rng.uniform(-0.2, 0.2, num)[:, None, None]))
  images = (skin[:, None, None] * (1 - mask[..., None]) +
            lesion * mask[..., None]) * shading[..., None]

  # Hairs: a few thin dark lines on a third of the images.
  for i in np.flatnonzero(rng.random(num) < 0.33):
    for _ in range(rng.integers(1, 4)):
      angle, offset = rng.uniform(0, np.pi), rng.uniform(-s / 2, s / 2)
      line = np.abs((xx - s / 2) * np.sin(angle) - (yy - s / 2) * np.cos(angle)
                    - offset)
      images[i] *= 1 - 0.6 * np.exp(-(line / 0.6) ** 2)[..., None]

  images += rng.normal(0, 0.03, images.shape)
  return ArraySplit(np.clip(images, 0, 1).astype(np.float32), labels)


@functools.lru_cache(maxsize=4)
def load(image_size: int = 32, seed: int = 0,
         sizes: tuple[tuple[str, int], ...] | None = None
         ) -> dict[str, ArraySplit]:
  """Builds the demo splits.

  The data depend on `seed` only, never on the training seed, so that runs
  with different training seeds see the same data.

  Args:
    image_size: height and width of the images.
    seed: the data seed.
    sizes: (split, number of images) pairs; defaults to SPLIT_SIZES.

  Returns:
    A dict from split name ('train', 'validation', 'test') to ArraySplit.
  """
  sizes = dict(SPLIT_SIZES if sizes is None else sizes)
  rng = np.random.default_rng(seed)
  return {name: make_lesions(n, image_size, rng) for name, n in sizes.items()}


def load_split(config, split: str, data_dir: str = '') -> ArraySplit:
  """One split of the demo for a recipe (`data_dir` is not used)."""
  del data_dir
  return load(config.data.image_size, config.data.data_seed)[split]
