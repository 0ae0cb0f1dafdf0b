"""Recovers inputs from the gradients of an ImprintBlock.

For bin i with weight gradient gW_i (a column of the kernel gradient, one
entry per pixel) and bias gradient gb_i, an image x that activates the bin
contributes gW_i = x * gb_i. Two kinds of candidates follow:

  * per bin: gW_i / gb_i, exact at batch size 1 for every active bin;
  * per adjacent pair: (gW_i - gW_{i+1}) / (gb_i - gb_{i+1}), which isolates
    the images whose brightness falls between t_i and t_{i+1} when a batch
    holds several.

Every candidate whose denominator is not zero is returned; under DP noise the
scoring decides which, if any, looks like the input.

Example:

  >>> x = np.array([0.25, 0.5], np.float32)
  >>> rec = recover(np.stack([x, x, 0 * x], 1), np.array([1.0, 1.0, 0.0]),
  ...               (1, 2, 1))
  >>> rec.names
  ('bin 0', 'bin 1', 'bins 1-2')
  >>> rec.images[0].ravel().tolist()
  [0.25, 0.5]
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Reconstruction:
  """The candidate reconstructions from one gradient.

  Attributes:
    images: float32 [K, *input_shape], the K candidates.
    names: K labels, 'bin i' or 'bins i-j'.
  """
  images: np.ndarray
  names: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.names)


def recover(kernel_grad: np.ndarray, bias_grad: np.ndarray,
            input_shape: Sequence[int], rtol: float = 1e-6) -> Reconstruction:
  """All candidate inputs from an ImprintBlock's weight and bias gradients.

  Args:
    kernel_grad: [P, N] gradient of the block's kernel (possibly clipped and
      noised), P the number of input pixels.
    bias_grad: [N] gradient of the block's bias.
    input_shape: shape of one input, without the batch axis (prod = P).
    rtol: a denominator counts as zero when its magnitude is at most rtol
      times the largest bias gradient magnitude (float rounding of equal
      gradients); such candidates are left out.

  Returns:
    The candidates, per bin first, then per adjacent pair.
  """
  kernel_grad = np.asarray(kernel_grad, np.float64)
  bias_grad = np.asarray(bias_grad, np.float64).reshape(-1)
  num_pixels, num_bins = kernel_grad.shape
  if bias_grad.shape[0] != num_bins:
    raise ValueError(f'{num_bins} kernel columns but {bias_grad.shape[0]} '
                     'bias entries.')
  input_shape = tuple(int(s) for s in input_shape)
  if int(np.prod(input_shape)) != num_pixels:
    raise ValueError(f'input_shape {input_shape} does not hold {num_pixels} '
                     'pixels.')

  numerators = [kernel_grad[:, i] for i in range(num_bins)]
  denominators = list(bias_grad)
  names = [f'bin {i}' for i in range(num_bins)]
  for i in range(num_bins - 1):
    numerators.append(kernel_grad[:, i] - kernel_grad[:, i + 1])
    denominators.append(bias_grad[i] - bias_grad[i + 1])
    names.append(f'bins {i}-{i + 1}')

  tolerance = rtol * float(np.max(np.abs(bias_grad), initial=0.0))
  images, kept = [], []
  for num, den, name in zip(numerators, denominators, names):
    if abs(den) <= tolerance or den == 0.0:
      continue
    candidate = num / den
    if not np.all(np.isfinite(candidate)):
      continue
    images.append(candidate.reshape(input_shape))
    kept.append(name)
  stacked = (np.stack(images).astype(np.float32) if images
             else np.zeros((0,) + input_shape, np.float32))
  return Reconstruction(stacked, tuple(kept))
