"""Figures of an attack run: the paper's Fig. 3, left and right.

Example:

  >>> figure = plot_error_cdf({'inf': np.array([0.0, 0.05]),
  ...                          '1e9': np.array([0.9])}, 'cdf.png')
  >>> plt.close(figure)
  >>> image = np.full((16, 16, 1), 0.5, np.float32)
  >>> best = {'inf': [runner.Example(image_id=0, error=0.0, image=image,
  ...                                reconstruction=image)]}
  >>> plot_best_reconstructions(best, 'best.png')
  >>> import os
  >>> sorted(os.listdir('.'))
  ['best.png', 'cdf.png']
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib

matplotlib.use('Agg')
from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from dp_medtf.attacks import runner


def plot_error_cdf(errors: Mapping[str, np.ndarray], path: str) -> plt.Figure:
  """The share of images with a reconstruction error below x, per budget.

  The legend sits outside the axes and the axes reach a little past [0, 1]
  on both scales, so that no curve hides under the legend or on the border
  (a budget whose images all have error 1 rises at the right edge). Curves
  that coincide are told apart by their line style.

  Args:
    errors: budget key -> the errors (1 - SSIM) of its attacked images.
    path: where to write the PNG.

  Returns:
    The (closed) figure, for inspection.
  """
  fig, ax = plt.subplots(figsize=(6.5, 4))
  grid = np.linspace(0.0, 1.0, 201)
  styles = ('-', '--', '-.', ':')
  for i, (key, values) in enumerate(errors.items()):
    values = np.sort(np.asarray(values))
    share = (np.searchsorted(values, grid, side='right') / len(values)
             if len(values) else np.zeros_like(grid))
    ax.step(grid, share, where='post', linestyle=styles[i % len(styles)],
            linewidth=1.8,
            label=f'$\\varepsilon$ = {key} (n={len(values)})')
  ax.set_xlim(-0.02, 1.03)
  ax.set_ylim(-0.03, 1.05)
  ax.set_xlabel('reconstruction error (1 - SSIM)')
  ax.set_ylabel('share of images with a lower error')
  ax.grid(alpha=0.3)
  ax.legend(loc='center left', bbox_to_anchor=(1.02, 0.5), fontsize='small',
            frameon=False)
  fig.tight_layout()
  fig.savefig(path, dpi=120, bbox_inches='tight')
  plt.close(fig)
  return fig


def _displayable(image: np.ndarray) -> np.ndarray:
  """A 2D [H, W] or RGB [H, W, 3] view; a volume shows its middle slice."""
  image = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
  if image.ndim == 4:
    image = image[image.shape[0] // 2]
  if image.ndim == 3 and image.shape[-1] != 3:
    image = image[..., 0]
  return image


def plot_best_reconstructions(best: Mapping[str, Sequence[runner.Example]],
                              path: str, top_k: int = 5) -> None:
  """The best reconstructed images and their reconstructions, per budget.

  Each budget has two rows: the true images above, their best candidates
  below, titled with the image id and the error.

  Args:
    best: budget key -> Examples, best first (AttackResult.best).
    path: where to write the PNG.
    top_k: number of columns.
  """
  keys = list(best)
  rows = max(2 * len(keys), 2)
  fig, axes = plt.subplots(rows, top_k, figsize=(1.6 * top_k, 1.7 * rows),
                           squeeze=False)
  for ax in axes.ravel():
    ax.axis('off')
  for row, key in enumerate(keys):
    for col, example in enumerate(list(best[key])[:top_k]):
      top, bottom = axes[2 * row, col], axes[2 * row + 1, col]
      for ax, image in ((top, example.image),
                        (bottom, example.reconstruction)):
        shown = _displayable(image)
        ax.imshow(shown, cmap='gray' if shown.ndim == 2 else None,
                  vmin=0.0, vmax=1.0)
      top.set_title(f'#{example.image_id}', fontsize=8)
      bottom.set_title(f'err {example.error:.3f}', fontsize=8)
    axes[2 * row, 0].text(-0.15, 0.5, f'eps={key}\ntrue',
                          transform=axes[2 * row, 0].transAxes, ha='right',
                          va='center', fontsize=8)
    axes[2 * row + 1, 0].text(-0.15, 0.5, 'recon.',
                              transform=axes[2 * row + 1, 0].transAxes,
                              ha='right', va='center', fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
