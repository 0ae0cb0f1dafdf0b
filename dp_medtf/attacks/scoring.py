"""Scores reconstructions against the images they came from.

The reconstruction error is 1 - SSIM, computed by scikit-image's
`structural_similarity` with the settings of Wang et al. (2004): a Gaussian
window of standard deviation 1.5 truncated to 11 x 11 pixels, population
covariances, K1 = 0.01, K2 = 0.03, and the data range of the normalised
images (1.0 for images in [0, 1]). Candidates are first clipped to that value
range, as any attacker who knows the normalisation would. Colour channels
are averaged; a 3D volume [D, H, W, C] is scored slice by slice along D and
the slices' SSIM averaged. An image's error is the minimum over the
candidates from the gradient that contained it, found by `best_match`.

Example:

  >>> image = np.random.default_rng(0).random((16, 16, 1))
  >>> float(round(reconstruction_error(image, image), 6))
  0.0
  >>> best_match(image, np.stack([1 - image, image])).index
  1
"""

from __future__ import annotations

import dataclasses

import numpy as np
from skimage import metrics

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # Radius int(3.5 * 1.5 + 0.5) = 5: an 11 x 11 window.
WINDOW_SIZE = 11
NEAR_EMPTY_FRACTION = 0.1


def _ssim_2d(reference: np.ndarray, candidate: np.ndarray,
             data_range: float) -> float:
  """SSIM of two [H, W, C] images."""
  if min(reference.shape[:2]) < WINDOW_SIZE:
    raise ValueError(f'SSIM needs images of at least {WINDOW_SIZE} x '
                     f'{WINDOW_SIZE} pixels, got {reference.shape[:2]}.')
  return float(metrics.structural_similarity(
      reference, candidate, data_range=data_range, channel_axis=-1,
      gaussian_weights=True, sigma=SSIM_SIGMA, truncate=SSIM_TRUNCATE,
      use_sample_covariance=False))


def ssim(reference: np.ndarray, candidate: np.ndarray,
         value_range: tuple[float, float] = (0.0, 1.0)) -> float:
  """SSIM of a candidate against a reference image or volume.

  Args:
    reference: the true image, [H, W], [H, W, C] or [D, H, W, C].
    candidate: a reconstruction of the same shape; clipped to value_range.
    value_range: (low, high) of the normalised images; high - low is SSIM's
      data range.

  Returns:
    SSIM in [-1, 1]; for a volume, the mean over its D slices.
  """
  reference = np.asarray(reference, np.float64)
  candidate = np.asarray(candidate, np.float64)
  if reference.shape != candidate.shape:
    raise ValueError(f'Shapes differ: {reference.shape} vs {candidate.shape}.')
  low, high = value_range
  candidate = np.clip(candidate, low, high)
  data_range = high - low
  if reference.ndim == 2:
    return _ssim_2d(reference[..., None], candidate[..., None], data_range)
  if reference.ndim == 3:
    return _ssim_2d(reference, candidate, data_range)
  if reference.ndim == 4:
    return float(np.mean([_ssim_2d(r, c, data_range)
                          for r, c in zip(reference, candidate)]))
  raise ValueError(f'Expected [H, W], [H, W, C] or [D, H, W, C], got '
                   f'{reference.shape}.')


def reconstruction_error(reference: np.ndarray, candidate: np.ndarray,
                         value_range: tuple[float, float] = (0.0, 1.0)
                         ) -> float:
  """1 - SSIM: 0 for a perfect reconstruction, about 1 for an unrelated one."""
  return 1.0 - ssim(reference, candidate, value_range)


@dataclasses.dataclass(frozen=True)
class Match:
  """The best of an image's candidates.

  Attributes:
    error: the minimum reconstruction error; 1.0 without candidates.
    index: the candidate reaching it; -1 without candidates.
  """
  error: float
  index: int


def best_match(reference: np.ndarray, candidates: np.ndarray,
               value_range: tuple[float, float] = (0.0, 1.0)) -> Match:
  """The candidate with the smallest reconstruction error.

  Args:
    reference: the true image.
    candidates: [K, *reference.shape]; K may be 0.
    value_range: as for ssim().

  Returns:
    The minimum error and its candidate's index.
  """
  errors = [reconstruction_error(reference, c, value_range)
            for c in candidates]
  if not errors:
    return Match(1.0, -1)
  index = int(np.argmin(errors))
  return Match(errors[index], index)


def error_matrix(references: np.ndarray, candidates: np.ndarray,
                 value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
  """Pairwise reconstruction errors, [M references, K candidates].

  For a gradient of several images, each image's error is its row minimum.
  """
  return np.array([[reconstruction_error(r, c, value_range)
                    for c in candidates] for r in references]).reshape(
                        len(references), len(candidates))


def is_near_empty(image: np.ndarray,
                  max_nonzero_fraction: float = NEAR_EMPTY_FRACTION) -> bool:
  """Whether at most `max_nonzero_fraction` of an image's pixels are non-zero.

  A pixel (one position, all channels) is non-zero when any channel is.
  Nearly black images carry no structure to reconstruct and are skipped.

  Args:
    image: [..., C] image or volume with a trailing channel axis.
    max_nonzero_fraction: the largest share of non-zero pixels that still
      counts as empty.
  """
  image = np.asarray(image)
  nonzero = np.any(image != 0, axis=-1) if image.ndim > 2 else image != 0
  return float(np.mean(nonzero)) <= max_nonzero_fraction
